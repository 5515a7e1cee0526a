//! The provider's kubelet certificates as the CSR approver records them
//! ([`crate::certificates`] decides them).

use chrono::{DateTime, Utc};

use super::{attr, Transition};
use crate::messages::ProviderState;
use crate::state::{ms, Cond, Op};

/// A CSR as the record names it.
#[derive(Debug, Clone, Copy)]
pub struct ApprovedCsr<'a> {
    /// Its name (for people).
    pub name: &'a str,
    /// Its uid (what a replay is recognised by).
    pub uid: &'a str,
    /// The join token it was made with.
    pub token_id: &'a str,
}

/// Records `csr` as the kubelet client certificate of the provider's join token, before the
/// approval is written to the cluster: only while the provider is approved with that token as
/// its current one and no CSR is recorded for that token. Recording the same CSR (by uid, for the
/// same token) again succeeds (its replay after a lost answer), so the approval is written
/// again; another CSR for that token fails the condition and is denied.
pub fn record_client_csr(csr: ApprovedCsr<'_>, now: DateTime<Utc>) -> Transition {
    let ours = Cond::eq(attr::CLIENT_CSR_UID, csr.uid).and(Cond::eq(attr::CLIENT_CSR_TOKEN, csr.token_id));
    let first = Cond::Not(Box::new(Cond::eq(attr::CLIENT_CSR_TOKEN, csr.token_id)))
        .and(Cond::eq(attr::STATE, ProviderState::Approved))
        .and(Cond::eq(attr::TOKEN_ID, csr.token_id))
        .and(Cond::eq(attr::TOKEN_CREATED, csr.token_id));
    Transition::new(
        Cond::Or(vec![ours, first]),
        vec![
            Op::set(attr::CLIENT_CSR, csr.name),
            Op::set(attr::CLIENT_CSR_UID, csr.uid),
            Op::set(attr::CLIENT_CSR_TOKEN, csr.token_id),
            Op::set(attr::CLIENT_CSR_AT, ms(now)),
        ],
    )
}

/// Records why one of the provider's certificate requests was denied (`<code>: <message>`), for
/// `worldland providers show`. Only on an existing provider.
pub fn record_csr_refusal(why: &str, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::AttrExists(attr::STATE.into()),
        vec![Op::set(attr::CSR_REFUSAL, why), Op::set(attr::CSR_REFUSED_AT, ms(now))],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::expr::{apply, eval};
    use crate::state::{Item, Value, KEY_ATTR};

    fn approved(token: &str) -> Item {
        Item::from([
            (attr::STATE.to_string(), Value::from(ProviderState::Approved)),
            (attr::TOKEN_ID.to_string(), Value::from(token)),
            (attr::TOKEN_CREATED.to_string(), Value::from(token)),
        ])
    }

    fn csr<'a>(uid: &'a str, token_id: &'a str) -> ApprovedCsr<'a> {
        ApprovedCsr {
            name: "node-csr-x",
            uid,
            token_id,
        }
    }

    #[test]
    fn one_client_csr_per_token_and_its_replay_succeeds() {
        let now = Utc::now();
        let item = approved("abcdef");
        let t = record_client_csr(csr("uid-1", "abcdef"), now);
        assert!(eval(&t.cond, Some(&item)));
        let after = apply(Some(&item), KEY_ATTR, "p1", &t.ops).unwrap();
        assert!(eval(&t.cond, Some(&after)), "the same CSR again: a replay");
        assert!(
            !eval(&record_client_csr(csr("uid-2", "abcdef"), now).cond, Some(&after)),
            "a second CSR, same name or not"
        );
        assert!(
            !eval(&record_client_csr(csr("uid-1", "zzzzzz"), now).cond, Some(&item)),
            "another token"
        );
        let mut joined = after.clone();
        joined.insert(attr::STATE.into(), Value::from(ProviderState::Joined));
        assert!(eval(&t.cond, Some(&joined)), "the replay, once joined");
        assert!(
            !eval(&record_client_csr(csr("uid-2", "abcdef"), now).cond, Some(&joined)),
            "not waiting to join"
        );
        assert!(!eval(&record_client_csr(csr("uid-1", "abcdef"), now).cond, None), "no provider");
        // A new token (registered again after the join timed out): one more certificate.
        let mut renewed = after.clone();
        renewed.insert(attr::TOKEN_ID.into(), Value::from("zzzzzz"));
        renewed.insert(attr::TOKEN_CREATED.into(), Value::from("zzzzzz"));
        assert!(eval(&record_client_csr(csr("uid-3", "zzzzzz"), now).cond, Some(&renewed)));
        assert!(
            !eval(&record_client_csr(csr("uid-3", "abcdef"), now).cond, Some(&renewed)),
            "the old token"
        );
    }
}
