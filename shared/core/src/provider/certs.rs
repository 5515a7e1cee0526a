//! The provider's kubelet certificates as the CSR approver records them
//! ([`crate::certificates`] decides them).

use chrono::{DateTime, Utc};

use super::{attr, Transition};
use crate::messages::ProviderState;
use crate::state::{ms, Cond, Op};

/// Records `csr` as the provider's one kubelet client certificate, before the approval is
/// written to the cluster: only while the provider is approved with `token_id` as its current
/// token and no other CSR is recorded. Recording the same CSR again is a no-op that succeeds
/// (its replay after a lost answer), so the approval is written again; another CSR fails the
/// condition and is denied.
pub fn record_client_csr(csr: &str, token_id: &str, now: DateTime<Utc>) -> Transition {
    let ours = Cond::eq(attr::CLIENT_CSR, csr);
    let first = Cond::AttrNotExists(attr::CLIENT_CSR.into())
        .and(Cond::eq(attr::STATE, ProviderState::Approved))
        .and(Cond::eq(attr::TOKEN_ID, token_id))
        .and(Cond::eq(attr::TOKEN_CREATED, token_id));
    Transition::new(
        Cond::Or(vec![ours, first]),
        vec![Op::set(attr::CLIENT_CSR, csr), Op::set(attr::CLIENT_CSR_AT, ms(now))],
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

    #[test]
    fn one_client_csr_per_provider_and_its_replay_succeeds() {
        let now = Utc::now();
        let item = approved("abcdef");
        let t = record_client_csr("csr-1", "abcdef", now);
        assert!(eval(&t.cond, Some(&item)));
        let after = apply(Some(&item), KEY_ATTR, "p1", &t.ops).unwrap();
        assert!(eval(&t.cond, Some(&after)), "the same CSR again: a replay");
        assert!(!eval(&record_client_csr("csr-2", "abcdef", now).cond, Some(&after)), "a second CSR");
        assert!(!eval(&record_client_csr("csr-1", "zzzzzz", now).cond, Some(&item)), "another token");
        let mut joined = item.clone();
        joined.insert(attr::STATE.into(), Value::from(ProviderState::Joined));
        assert!(
            !eval(&record_client_csr("csr-1", "abcdef", now).cond, Some(&joined)),
            "not waiting to join"
        );
        assert!(!eval(&record_client_csr("csr-1", "abcdef", now).cond, None), "no provider");
    }
}
