//! The one place a handler's result becomes what happens to its message (kube-rs'
//! `error_policy`): counted, logged with its reason or its whole error chain, then acked,
//! dead-lettered or retried by the transport.

use worldland_core::worker::Failure;

/// What the transport does with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done (or already done before): acknowledge it.
    Ack,
    /// Refused for good: park it with its reason code and message.
    DeadLetter { reason: &'static str, detail: String },
    /// Transient: deliver it again later.
    Retry,
}

/// `e` and every source under it, joined by ": ", for one log line.
pub fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        // Error types that print their source in their own message would repeat it.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// Counts, logs and decides what becomes of one message of `worker` (`id` names it in the log).
pub fn disposition(worker: &str, id: Option<&str>, result: &Result<(), Failure>) -> Disposition {
    match result {
        Ok(()) => {
            crate::metrics::message(worker, "done", "");
            Disposition::Ack
        }
        Err(Failure::Refuse(r)) => {
            crate::metrics::message(worker, "refused", r.reason.code());
            tracing::warn!(worker, reason = r.reason.code(), message = %r.message, id, "message refused");
            Disposition::DeadLetter {
                reason: r.reason.code(),
                detail: r.message.clone(),
            }
        }
        Err(retry @ Failure::Retry(_)) => {
            crate::metrics::message(worker, "retried", "");
            tracing::warn!(worker, why = %report(retry), id, "will retry");
            Disposition::Retry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use worldland_core::refusal::Reason;
    use worldland_core::state::StoreError;

    #[test]
    fn each_result_has_one_disposition() {
        assert_eq!(disposition("policy-test", None, &Ok(())), Disposition::Ack);
        let refused = Err(Failure::refuse(Reason::InvalidHostname, "bad host"));
        assert_eq!(
            disposition("policy-test", Some("m1"), &refused),
            Disposition::DeadLetter {
                reason: "invalid_hostname",
                detail: "bad host".into()
            }
        );
        let down = Err(Failure::from(StoreError::Backend("timeout".into())));
        assert_eq!(disposition("policy-test", None, &down), Disposition::Retry);
    }

    #[test]
    fn reports_carry_the_whole_chain_once() {
        let f = Failure::from(StoreError::Backend("connection reset".into()));
        assert_eq!(report(&f), "will retry: state store backend: connection reset");
    }
}
