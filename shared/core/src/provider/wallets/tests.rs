use super::*;
use crate::provider::{approve, register_pending, reserve_token};
use crate::state::expr::{apply, eval};
use crate::state::KEY_ATTR;

fn pending(version: Option<i64>, joins: &[(&str, i64)]) -> Pending {
    Pending {
        version,
        joins: joins.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

fn list(joins: &[(&str, i64)]) -> BTreeMap<String, i64> {
    joins.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// `decide` at now = 100 for provider `p`, wanted until 500, limit 3.
#[test]
fn a_wallet_holds_at_most_its_limit_of_pending_joins() {
    use Decision::*;
    let table: Vec<(&str, Pending, Option<BTreeSet<String>>, Decision)> = vec![
        (
            "the first registration takes a slot",
            pending(None, &[]),
            None,
            Write(list(&[("p", 500)])),
        ),
        (
            "below the limit: added beside the others",
            pending(Some(2), &[("a", 400), ("b", 400)]),
            None,
            Write(list(&[("a", 400), ("b", 400), ("p", 500)])),
        ),
        (
            "a replay finds itself listed: nothing written, never counted twice",
            pending(Some(2), &[("a", 400), ("p", 500)]),
            None,
            Listed,
        ),
        (
            "listed at a full wallet: still ours (a lost answer's redo)",
            pending(Some(3), &[("a", 400), ("b", 400), ("p", 500)]),
            None,
            Listed,
        ),
        (
            "listed with an earlier expiry (a new token): extended, not added",
            pending(Some(3), &[("a", 400), ("p", 300)]),
            None,
            Write(list(&[("a", 400), ("p", 500)])),
        ),
        ("a later expiry is never shortened", pending(Some(3), &[("p", 900)]), None, Listed),
        (
            "expired entries are pruned and free their slots",
            pending(Some(7), &[("a", 50), ("b", 100), ("c", 400)]),
            None,
            Write(list(&[("c", 400), ("p", 500)])),
        ),
        (
            "at the limit: the listed ones are checked first",
            pending(Some(3), &[("a", 400), ("b", 400), ("c", 400)]),
            None,
            Check(vec!["a".into(), "b".into(), "c".into()]),
        ),
        (
            "checked, all still waiting to join: full",
            pending(Some(3), &[("a", 400), ("b", 400), ("c", 400)]),
            Some(set(&[])),
            Full,
        ),
        (
            "checked, one joined: its slot is taken",
            pending(Some(3), &[("a", 400), ("b", 400), ("c", 400)]),
            Some(set(&["b"])),
            Write(list(&[("a", 400), ("c", 400), ("p", 500)])),
        ),
        (
            "an expired own entry at a full wallet is a new registration: checked",
            pending(Some(3), &[("a", 400), ("b", 400), ("c", 400), ("p", 100)]),
            None,
            Check(vec!["a".into(), "b".into(), "c".into()]),
        ),
    ];
    for (name, p, gone, want) in table {
        assert_eq!(decide(&p, "p", 500, 100, 3, gone.as_ref()), want, "{name}");
    }
    // A limit of one: a second provider waits for the first.
    assert_eq!(
        decide(&pending(Some(1), &[("a", 400)]), "p", 500, 100, 1, Some(&set(&[]))),
        Decision::Full
    );
}

#[test]
fn every_write_requires_the_version_it_read_and_stays_out_of_the_state_index() {
    let now = Utc::now();
    let first = write("0xABC", &list(&[("p", 5)]), None, now);
    assert!(eval(&first.cond, None));
    let item = apply(None, KEY_ATTR, &key("0xABC"), &first.ops).unwrap();
    assert_eq!(key("0xABC"), "wallet#0xabc");
    assert!(!item.contains_key(crate::state::INDEX_STATE_ATTR) && !item.contains_key(crate::state::INDEX_SORT_ATTR));
    let read = Pending::from_item(Some(&item));
    assert_eq!(read, pending(Some(1), &[("p", 5)]));
    // A second writer that read nothing, or an older version, loses.
    assert!(!eval(&first.cond, Some(&item)));
    assert!(!eval(&write("0xabc", &list(&[("q", 5)]), Some(0), now).cond, Some(&item)));
    let next = write("0xabc", &list(&[("p", 5), ("q", 6)]), read.version, now);
    assert!(eval(&next.cond, Some(&item)));
    let item = apply(Some(&item), KEY_ATTR, &key("0xabc"), &next.ops).unwrap();
    assert_eq!(Pending::from_item(Some(&item)), pending(Some(2), &[("p", 5), ("q", 6)]));
    assert!(
        crate::validation::check_provider_id(&key("0xabc")).is_err(),
        "never a provider's key"
    );
    assert!(crate::provider::nodes::is_not_a_provider(&item));
}

#[test]
fn only_providers_still_waiting_to_join_hold_a_slot() {
    let now = Utc::now();
    let w = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
    let reg = crate::messages::sample_registration("p1", w, 1);
    let run = |t: Transition, item: Option<&Item>| {
        assert!(eval(&t.cond, item));
        apply(item, KEY_ATTR, "p1", &t.ops)
    };
    let pending_item = run(register_pending(&reg, "1-0", now), None).unwrap();
    let exp = now + chrono::Duration::hours(1);
    let reserved = run(reserve_token("abcdef", exp, now), Some(&pending_item)).unwrap();
    let approved = run(approve("abcdef", "1-0", exp, now), Some(&reserved)).unwrap();
    let rec = |i: &Item| ProviderRecord::from_item(i).unwrap();
    let mut joined = rec(&approved);
    joined.state = ProviderState::Joined;
    let mut expired = rec(&approved);
    expired.state = ProviderState::Expired;
    let table = [
        ("pending: being issued", Some(rec(&pending_item)), now, true),
        ("approved, token live", Some(rec(&approved)), now, true),
        ("approved, token run out", Some(rec(&approved)), exp, false),
        ("joined", Some(joined), now, false),
        ("expired", Some(expired), now, false),
        ("no such provider", None, now, false),
    ];
    for (name, r, at, want) in table {
        assert_eq!(awaits_join(r.as_ref(), at), want, "{name}");
    }
}
