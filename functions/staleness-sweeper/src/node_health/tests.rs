use super::*;
use chrono::TimeZone;
use worldland_core::cluster::health::{ReadyCondition, ReadyStatus};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap()
}

/// Node `i` of provider `p<i>`: dead for ten minutes (Unknown, Lease stale) or alive.
fn node(i: usize, dead: bool, marked_offline: bool) -> NodeHealth {
    let ago = |s| Some(now() - Duration::seconds(s));
    NodeHealth {
        name: format!("gpu-{i:02}"),
        provider_id: Some(format!("p{i}")),
        marked_offline,
        ready: Some(ReadyCondition {
            status: if dead { ReadyStatus::Unknown } else { ReadyStatus::True },
            since: ago(if dead { 560 } else { 3600 }),
        }),
        lease_renewed: ago(if dead { 600 } else { 5 }),
    }
}

/// `dead` dead nodes then `alive` live ones, then `gone` dead ones of providers already offline.
fn window(dead: usize, alive: usize, gone: usize) -> Vec<NodeHealth> {
    (0..dead)
        .map(|i| node(i, true, false))
        .chain((dead..dead + alive).map(|i| node(i, false, false)))
        .chain((dead + alive..dead + alive + gone).map(|i| node(i, true, true)))
        .collect()
}

#[test]
fn judge_table() {
    let guard = StallGuard { share: 0.5, min: 5 };
    let policy = HealthPolicy::default();
    // (dead, alive, already offline) → (live, unhealthy, guard holds)
    type Row = ((usize, usize, usize), (usize, usize, Option<Stall>));
    let table: &[Row] = &[
        ((0, 10, 0), (10, 0, None)),
        ((1, 9, 0), (10, 1, None)),
        ((5, 5, 0), (10, 5, None)), // half is not more than half
        ((6, 4, 0), (10, 6, Some(Stall::Share { fleet: 10, stale: 6 }))),
        ((4, 0, 0), (4, 4, None)), // below the minimum: all may go
        ((10, 0, 0), (10, 10, Some(Stall::Share { fleet: 10, stale: 10 }))),
        // Offline providers' nodes count for neither side: a fleet of dead machines already
        // offline never holds the guard for the one that just died.
        ((1, 3, 20), (4, 1, None)),
        ((0, 0, 0), (0, 0, None)),
    ];
    for &((dead, alive, gone), (live, unhealthy, held)) in table {
        let j = judge(&window(dead, alive, gone), now(), policy, guard);
        assert_eq!(
            (j.live, j.unhealthy.len(), j.held),
            (live, unhealthy, held),
            "{dead} dead, {alive} alive, {gone} gone"
        );
    }
}

#[test]
fn an_unhealthy_node_names_its_provider_and_since_when() {
    let mut nodes = window(1, 1, 0);
    let j = judge(&nodes, now(), HealthPolicy::default(), StallGuard::default());
    assert_eq!(j.unhealthy.len(), 1);
    let u = &j.unhealthy[0];
    assert_eq!((u.provider_id.as_str(), u.why), ("p0", Symptom::LeaseStale));
    assert_eq!(u.since, now() - Duration::seconds(600), "the Lease's last renewal");
    assert!(
        detail(u).starts_with("node gpu-00: Ready=Unknown since 2026-05-01T11:50:40Z, Lease renewed 2026-05-01T11:50:00Z"),
        "{}",
        detail(u)
    );
    // A node without a provider label is nobody's to mark.
    nodes[0].provider_id = None;
    assert!(judge(&nodes, now(), HealthPolicy::default(), StallGuard::default())
        .unhealthy
        .is_empty());
}
