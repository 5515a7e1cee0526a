use super::*;
use crate::provider::{make_available, ProviderRecord};
use crate::state::expr::{apply, eval};
use crate::state::KEY_ATTR;
use chrono::{Duration, TimeZone};

fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap() + Duration::seconds(s)
}

fn run(tr: &Transition, item: Option<&Item>) -> Option<Item> {
    eval(&tr.cond, item).then(|| apply(item, KEY_ATTR, "p1", &tr.ops).unwrap())
}

/// Provider p1, available on its node since t(0), in `state`.
fn provider(state: ProviderState) -> (Item, String) {
    let reg = crate::messages::sample_registration("p1", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", 1);
    let mut item = run(&crate::placement::seed_available(&reg, t(0), true), None).unwrap();
    item.insert(attr::STATE.into(), Value::from(state));
    let node = ProviderRecord::from_item(&item).unwrap().node_name;
    (item, node)
}

#[test]
fn only_a_live_provider_on_that_node_goes_offline() {
    let mark = |node: &str| mark_offline_for_node(node, Symptom::LeaseStale, "Lease last renewed …", t(100), t(600));
    let table = [
        (ProviderState::Available, true, true),
        (ProviderState::Joined, true, true),
        (ProviderState::Offline, true, false),
        (ProviderState::Approved, true, false),
        (ProviderState::Pending, true, false),
        (ProviderState::Expired, true, false),
        (ProviderState::Available, false, false),
    ];
    for (state, same_node, applies) in table {
        let (item, node) = provider(state);
        let target = if same_node { node } else { "another-node".to_string() };
        assert_eq!(
            run(&mark(&target), Some(&item)).is_some(),
            applies,
            "{state:?} on its node: {same_node}"
        );
    }
    assert!(run(&mark("gpu-01"), None).is_none(), "no provider, no write");
}

#[test]
fn the_offline_write_records_why_and_since_and_leaves_the_placement_index() {
    let (item, node) = provider(ProviderState::Available);
    assert!(item.contains_key(attr::PLACE_MODEL));
    let since = t(100);
    let off = run(
        &mark_offline_for_node(&node, Symptom::NotReady, "Ready=False since …", since, t(600)),
        Some(&item),
    )
    .unwrap();
    let rec = ProviderRecord::from_item(&off).unwrap();
    assert_eq!(rec.state, ProviderState::Offline);
    assert_eq!(rec.offline_at, Some(t(600)));
    assert_eq!(rec.offline_reason.as_deref(), Some("node_not_ready: Ready=False since …"));
    assert_eq!(rec.node_unhealthy_since, Some(since));
    assert!(!off.contains_key(attr::PLACE_MODEL), "out of the placement index");
    assert_eq!(rec.hb_at, t(0), "heartbeats untouched");

    // A since after now (it never is, from `assess`) is recorded as now.
    let late = run(&mark_offline_for_node(&node, Symptom::NotReady, "", t(900), t(600)), Some(&item)).unwrap();
    assert_eq!(ProviderRecord::from_item(&late).unwrap().node_unhealthy_since, Some(t(600)));

    // Back: the recovery forgets the trouble, and a later offline for stale heartbeats carries
    // no stale reason nor bill.
    let back = run(
        &forgetting_node_trouble(make_available(ProviderState::Offline, None, None, t(700))),
        Some(&off),
    )
    .unwrap();
    let rec = ProviderRecord::from_item(&back).unwrap();
    assert_eq!(rec.state, ProviderState::Available);
    assert_eq!((rec.offline_reason, rec.node_unhealthy_since, rec.offline_at), (None, None, None));
    assert_eq!(interrupted_at_for(&back), Some(t(0)), "billed to the last heartbeat again");
}

#[test]
fn interrupted_jobs_are_billed_never_later_than_the_trouble() {
    // (last heartbeat, node unhealthy since, now) → billed to
    let table = [
        (t(590), Some(t(100)), t(600), t(100)), // the kubelet died at 100, the agent still beats
        (t(50), Some(t(100)), t(600), t(50)),   // the agent fell silent first
        (t(590), None, t(600), t(590)),         // offline for stale heartbeats: the last heartbeat
        (t(700), None, t(600), t(600)),         // never after now
        (t(700), Some(t(650)), t(600), t(600)),
    ];
    for (hb, since, now, want) in table {
        assert_eq!(interrupted_at(hb, since, now), want, "{hb} {since:?} {now}");
    }
    let (mut item, node) = provider(ProviderState::Available);
    item.insert(attr::HB_AT.into(), Value::from(ms(t(590))));
    assert_eq!(interrupted_at_for(&item), Some(t(590)));
    let off = run(&mark_offline_for_node(&node, Symptom::Unreachable, "", t(100), t(600)), Some(&item)).unwrap();
    let mut beating = off.clone();
    beating.insert(attr::HB_AT.into(), Value::from(ms(t(2000))));
    assert_eq!(interrupted_at_for(&beating), Some(t(100)), "later heartbeats move nothing");
    beating.remove(attr::HB_AT);
    assert_eq!(interrupted_at_for(&beating), None);
}
