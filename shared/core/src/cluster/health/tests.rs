use super::*;
use chrono::TimeZone;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap()
}

/// `s` seconds before now (after it, when negative).
fn ago(s: i64) -> Option<DateTime<Utc>> {
    Some(now() - Duration::seconds(s))
}

fn ready(status: ReadyStatus, since: Option<DateTime<Utc>>) -> Option<ReadyCondition> {
    Some(ReadyCondition { status, since })
}

fn node(ready: Option<ReadyCondition>, lease_renewed: Option<DateTime<Utc>>) -> NodeHealth {
    NodeHealth {
        name: "gpu-01".into(),
        provider_id: Some("p1".into()),
        marked_offline: false,
        ready,
        lease_renewed,
    }
}

/// (what, Ready condition, Lease renewed, wanted)
type Row<W> = (&'static str, Option<ReadyCondition>, Option<DateTime<Utc>>, W);

fn unhealthy(why: Symptom, since_s: i64) -> Verdict {
    Verdict::Unhealthy {
        why,
        since: now() - Duration::seconds(since_s),
    }
}

#[test]
fn assess_table() {
    use ReadyStatus::{False, True, Unknown};
    use Symptom::{LeaseStale, NotReady, Unreachable};
    // Threshold 120 s; the provider's clock may be 300 s off, so its times count after 420 s.
    let policy = HealthPolicy::default();
    let table: &[Row<Verdict>] = &[
        ("a live kubelet", ready(True, ago(3600)), ago(5), Verdict::Healthy),
        ("no Ready condition, no Lease: nothing to go on", None, None, Verdict::Healthy),
        (
            "Ready with no Lease (judged by Ready)",
            ready(True, ago(3600)),
            None,
            Verdict::Healthy,
        ),
        // Unknown is the control plane's word and clock: the threshold alone.
        (
            "Unknown, not yet for the threshold",
            ready(Unknown, ago(120)),
            ago(160),
            Verdict::Healthy,
        ),
        (
            "Unknown past the threshold, billed from the Lease's last renewal",
            ready(Unknown, ago(121)),
            ago(161),
            unhealthy(Unreachable, 161),
        ),
        (
            "Unknown past the threshold, no Lease",
            ready(Unknown, ago(500)),
            None,
            unhealthy(Unreachable, 500),
        ),
        (
            "Unknown with a fresh Lease (the kubelet just came back)",
            ready(Unknown, ago(130)),
            ago(2),
            unhealthy(Unreachable, 130),
        ),
        (
            "Unknown without a transition time: for how long?",
            ready(Unknown, None),
            None,
            Verdict::Healthy,
        ),
        // False and the Lease are the provider's clock: threshold + allowance.
        (
            "NotReady a moment (or a clock 5 min behind)",
            ready(False, ago(400)),
            ago(5),
            Verdict::Healthy,
        ),
        (
            "NotReady past threshold + allowance",
            ready(False, ago(421)),
            ago(5),
            unhealthy(NotReady, 421),
        ),
        (
            "a Lease renewing on a clock 290 s behind",
            ready(True, ago(3600)),
            ago(290),
            Verdict::Healthy,
        ),
        (
            "a Lease stale for threshold + allowance, Ready still True (no controller)",
            ready(True, ago(3600)),
            ago(421),
            unhealthy(LeaseStale, 421),
        ),
        (
            "a Lease stale and NotReady since: the older one is why",
            ready(False, ago(430)),
            ago(900),
            unhealthy(LeaseStale, 900),
        ),
        (
            "NotReady lasting, the Lease a sign but not lasting",
            ready(False, ago(500)),
            ago(200),
            unhealthy(NotReady, 500),
        ),
        (
            "Unknown lasting, the Lease not a sign before the threshold",
            ready(Unknown, ago(130)),
            ago(100),
            unhealthy(Unreachable, 130),
        ),
        // Times in the future count as now.
        (
            "a Lease renewed in the future (a clock ahead)",
            ready(True, ago(3600)),
            ago(-900),
            Verdict::Healthy,
        ),
        ("NotReady since the future", ready(False, ago(-900)), ago(-900), Verdict::Healthy),
        (
            "Unknown since the future (a control plane clock ahead)",
            ready(Unknown, ago(-10)),
            None,
            Verdict::Healthy,
        ),
    ];
    for (what, r, lease, want) in table {
        assert_eq!(assess(&node(*r, *lease), now(), policy), *want, "{what}");
    }
}

#[test]
fn the_allowance_and_threshold_are_the_policy() {
    let tight = HealthPolicy {
        stale_after: Duration::seconds(60),
        clock_allowance: Duration::zero(),
    };
    let n = node(ready(ReadyStatus::False, ago(61)), ago(61));
    assert_eq!(assess(&n, now(), tight), unhealthy(Symptom::NotReady, 61));
    assert_eq!(assess(&n, now(), HealthPolicy::default()), Verdict::Healthy);
}

#[test]
fn fit_to_sell_table() {
    use ReadyStatus::{False, True, Unknown};
    let policy = HealthPolicy::default();
    let table: &[Row<Option<Symptom>>] = &[
        ("Ready, Lease fresh", ready(True, ago(10)), ago(5), None),
        ("Ready, no Lease", ready(True, None), None, None),
        ("Ready, Lease on a clock 5 min behind", ready(True, ago(10)), ago(400), None),
        (
            "Ready, Lease stale as the sweeper marks",
            ready(True, ago(10)),
            ago(421),
            Some(Symptom::LeaseStale),
        ),
        ("NotReady a moment", ready(False, ago(1)), ago(5), Some(Symptom::NotReady)),
        ("Unknown", ready(Unknown, ago(1)), ago(5), Some(Symptom::Unreachable)),
        ("no Ready condition", None, ago(5), Some(Symptom::Unreachable)),
    ];
    for (what, r, lease, want) in table {
        assert_eq!(unfit_to_sell(&node(*r, *lease), now(), policy), *want, "{what}");
    }
}

#[test]
fn ready_status_spellings() {
    let table = [
        ("True", ReadyStatus::True),
        ("False", ReadyStatus::False),
        ("Unknown", ReadyStatus::Unknown),
        ("", ReadyStatus::Unknown),
        ("true", ReadyStatus::Unknown),
    ];
    for (s, want) in table {
        assert_eq!(ReadyStatus::parse(s), want, "{s:?}");
    }
}
