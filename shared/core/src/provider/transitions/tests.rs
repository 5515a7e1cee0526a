use super::*;
use crate::provider::ProviderRecord;
use crate::state::expr::{apply, eval};
use crate::state::{from_ms, Item, Value, KEY_ATTR};

fn reg(wallet: &str) -> Registration {
    crate::messages::sample_registration("p1", wallet, 1)
}

fn run(t: &Transition, item: Option<&Item>) -> Option<Item> {
    eval(&t.cond, item).then(|| apply(item, KEY_ATTR, "p1", &t.ops).unwrap())
}

#[test]
fn provider_lifecycle_transitions() {
    // The node name the broker assigns provider p1 on host GPU-01.
    let n01: &'static str = Box::leak(node_name("p1", "GPU-01").into_boxed_str());
    let now = Utc::now();
    let w = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
    let created = run(&register_pending(&reg(w), "1-0", now), None).expect("new provider");
    let rec = ProviderRecord::from_item(&created).unwrap();
    assert_eq!(
        (rec.state, rec.node_name.as_str(), rec.gpu_model.as_str(), rec.price_micros),
        (ProviderState::Pending, n01, "RTX-4090", 500_000)
    );
    // Redelivery of the same entry: nothing to write.
    assert!(run(&register_pending(&reg(w), "1-0", now), Some(&created)).is_none());
    // Another wallet: refused.
    assert!(run(
        &register_pending(&reg("0x0000000000000000000000000000000000000001"), "2-0", now),
        Some(&created)
    )
    .is_none());
    // The same wallet again, with a new entry: still pending.
    let again = run(
        &register_pending(&reg(&w.to_uppercase().replace("0X", "0x")), "2-0", now),
        Some(&created),
    )
    .unwrap();
    // Approval needs the reserved token.
    assert!(run(&approve("abcdef", "2-0", now, now), Some(&again)).is_none());
    let reserved = run(&reserve_token("abcdef", now + chrono::Duration::hours(1), now), Some(&again)).unwrap();
    assert!(
        run(&reserve_token("zzzzzz", now + chrono::Duration::hours(1), now), Some(&reserved)).is_none(),
        "a valid reservation stays"
    );
    let later = now + chrono::Duration::hours(2);
    assert!(
        run(&reserve_token("zzzzzz", later, later), Some(&reserved)).is_some(),
        "an expired one is replaced"
    );
    let expires = now + chrono::Duration::hours(1);
    let approved = run(&approve("abcdef", "2-0", expires, now), Some(&reserved)).unwrap();
    let rec = ProviderRecord::from_item(&approved).unwrap();
    assert_eq!((rec.state, rec.hb_at), (ProviderState::Approved, from_ms(ms(expires))));
    assert!(
        run(&approve("abcdef", "2-0", expires, now), Some(&approved)).is_none(),
        "approve is once"
    );
    // Approved providers are not reset by a new registration.
    assert!(run(&register_pending(&reg(w), "3-0", now), Some(&approved)).is_none());
    assert!(run(&mark_answered("2-0", now), Some(&approved)).is_none());
    assert!(run(&mark_answered("3-0", now), Some(&approved)).is_some());

    // The heartbeat lifecycle.
    let t = |s: i64| now + chrono::Duration::seconds(s);
    let hb = |at, node: &'static str| HeartbeatFacts {
        node_name: node,
        at,
        received_at: at,
        seq: None,
        claimed_status: "available",
        active_jobs: 0,
        usage_json: "{}".into(),
    };
    assert!(
        run(&record_heartbeat(&hb(t(30), n01), Some(w), Duration::zero()), Some(&approved)).is_none(),
        "approved takes the join path"
    );
    assert!(
        run(&join(&hb(t(30), "other-node"), None, t(30)), Some(&approved)).is_none(),
        "not its node"
    );
    let joined = run(&join(&hb(t(30), n01), None, t(30)), Some(&approved)).unwrap();
    let available = run(&make_available(ProviderState::Joined, None, None, t(31)), Some(&joined)).unwrap();
    let table: Vec<(HeartbeatFacts, Option<&str>, bool)> = vec![
        (hb(t(60), n01), Some(w), true),
        (hb(t(60), n01), None, true),
        (hb(t(30), n01), Some(w), false),
        (hb(t(10), n01), Some(w), false),
        (hb(t(60), "gpu-02"), Some(w), false),
        (hb(t(60), n01), Some("0x0000000000000000000000000000000000000001"), false),
    ];
    for (h, signer, applies) in table {
        assert_eq!(
            run(&record_heartbeat(&h, signer, Duration::zero()), Some(&available)).is_some(),
            applies,
            "{h:?} {signer:?}"
        );
    }
    // Offline only while still stale at write time.
    let beat = run(&record_heartbeat(&hb(t(60), n01), Some(w), Duration::zero()), Some(&available)).unwrap();
    assert!(
        run(&mark_offline_if_stale(t(60), t(200)), Some(&beat)).is_none(),
        "a heartbeat at the stale bound wins"
    );
    let beat = run(&file_for_placement("t4".into()), Some(&beat)).unwrap();
    assert!(run(&file_for_placement("t4".into()), Some(&beat)).is_none(), "filed once");
    let offline = run(&mark_offline_if_stale(t(61), t(200)), Some(&beat)).unwrap();
    assert_eq!(ProviderRecord::from_item(&offline).unwrap().state, ProviderState::Offline);
    assert!(
        !ProviderRecord::from_item(&offline).unwrap().placement_filed,
        "offline leaves the placement index"
    );
    assert!(
        run(&file_for_placement("t4".into()), Some(&offline)).is_none(),
        "only available ones are filed"
    );
    let back = run(&record_heartbeat(&hb(t(210), n01), Some(w), Duration::zero()), Some(&offline)).unwrap();
    let recovered = run(
        &make_available(ProviderState::Offline, None, Some("t4".into()), t(210)),
        Some(&back),
    )
    .unwrap();
    assert_eq!(ProviderRecord::from_item(&recovered).unwrap().state, ProviderState::Available);
    // A provider stored before the placement index is filed in it once available again.
    assert_eq!(recovered.get(crate::state::PLACEMENT_MODEL_ATTR), Some(&Value::from("t4")));
    // A contradicting node: joined but never available.
    let odd = run(&join(&hb(t(30), n01), Some("node reports 8 GPUs"), t(30)), Some(&approved)).unwrap();
    assert!(run(&make_available(ProviderState::Joined, None, None, t(31)), Some(&odd)).is_none());
    // Expiry of approvals that never joined.
    assert!(run(&expire_if_unjoined(now), Some(&approved)).is_none());
    assert!(run(&expire_if_unjoined(expires), Some(&approved)).is_some());
}

#[test]
fn token_replacement_and_creation_record() {
    let now = Utc::now();
    let exp = now + chrono::Duration::hours(1);
    let w = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
    let pending = run(&register_pending(&reg(w), "1-0", now), None).unwrap();
    let reserved = run(&reserve_token("aaaaaa", exp, now), Some(&pending)).unwrap();
    // Created is recorded only for the reserved id, with the sealed join when there is one.
    assert!(run(&record_token_created("bbbbbb", None, now), Some(&reserved)).is_none());
    let created = run(&record_token_created("aaaaaa", Some(("c2VhbGVk", "a2V5")), now), Some(&reserved)).unwrap();
    let rec = ProviderRecord::from_item(&created).unwrap();
    assert_eq!(
        (rec.token_created.as_deref(), rec.sealed_join.as_deref(), rec.sealed_to.as_deref()),
        (Some("aaaaaa"), Some("c2VhbGVk"), Some("a2V5"))
    );
    // A replacement only of the id still reserved; it forgets the old token's record.
    assert!(run(&replace_token("zzzzzz", "bbbbbb", exp, ProviderState::Pending, now), Some(&created)).is_none());
    assert!(run(
        &replace_token("aaaaaa", "bbbbbb", exp, ProviderState::Approved, now),
        Some(&created)
    )
    .is_none());
    let replaced = run(&replace_token("aaaaaa", "bbbbbb", exp, ProviderState::Pending, now), Some(&created)).unwrap();
    let rec = ProviderRecord::from_item(&replaced).unwrap();
    assert_eq!(rec.token_id.as_deref(), Some("bbbbbb"));
    assert_eq!((rec.token_created, rec.sealed_join, rec.sealed_to), (None, None, None));
    // While approved, the index sort key follows the new expiry.
    let approved = run(&approve("bbbbbb", "1-0", exp, now), Some(&replaced)).unwrap();
    let later = exp + chrono::Duration::minutes(30);
    let rekeyed = run(
        &replace_token("bbbbbb", "cccccc", later, ProviderState::Approved, now),
        Some(&approved),
    )
    .unwrap();
    let rec = ProviderRecord::from_item(&rekeyed).unwrap();
    assert_eq!(
        (rec.state, rec.hb_at, rec.token_expires_at),
        (ProviderState::Approved, from_ms(ms(later)), Some(from_ms(ms(later))))
    );
    // A refused join leaves the provider approved, with the reason recorded.
    let node = rec.node_name.clone();
    assert!(run(&refuse_join("elsewhere", "x", now), Some(&rekeyed)).is_none());
    let refused = run(&refuse_join(&node, "node_owned_by_another_provider: …", now), Some(&rekeyed)).unwrap();
    let rec = ProviderRecord::from_item(&refused).unwrap();
    assert_eq!(rec.state, ProviderState::Approved);
    assert!(rec.unschedulable.unwrap().starts_with("node_owned_by_another_provider"));
}

/// Provider p1 joined and available, its last heartbeat recorded by `first`.
fn available_after(first: &HeartbeatFacts<'_>, now: DateTime<Utc>) -> Item {
    let w = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
    let created = run(&register_pending(&reg(w), "1-0", now), None).unwrap();
    let expires = now + chrono::Duration::hours(1);
    let reserved = run(&reserve_token("abcdef", expires, now), Some(&created)).unwrap();
    let approved = run(&approve("abcdef", "1-0", expires, now), Some(&reserved)).unwrap();
    let joined = run(&join(first, None, now), Some(&approved)).unwrap();
    run(&make_available(ProviderState::Joined, None, None, now), Some(&joined)).unwrap()
}

#[test]
fn sequenced_heartbeats_are_ordered_by_seq_not_the_agent_clock() {
    let n01: &'static str = Box::leak(node_name("p1", "GPU-01").into_boxed_str());
    let now = Utc::now();
    let t = |s: i64| now + chrono::Duration::seconds(s);
    let hb = |at, seq| HeartbeatFacts {
        node_name: n01,
        at,
        received_at: at,
        seq,
        claimed_status: "available",
        active_jobs: 0,
        usage_json: "{}".into(),
    };
    let item = available_after(&hb(t(0), Some(100)), now);
    let rec = ProviderRecord::from_item(&item).unwrap();
    assert_eq!((rec.hb_seq, rec.last_heartbeat), (Some(100), None));
    assert_eq!(
        rec.last_received(),
        Some(from_ms(ms(t(0)))),
        "received times are kept for every agent"
    );
    // (timestamp, seq, applies): the clock may step back; the sequence must grow.
    let table = [
        (t(30), Some(101), true),
        (t(-240), Some(101), true),
        (t(30), Some(100), false),
        (t(300), Some(99), false),
        (t(300), Some(i64::MAX), true),
        // Without seq: today's rule on the agent's timestamp (`last_hb`, kept by unsequenced ones).
        (t(-1), None, true),
    ];
    for (at, seq, applies) in table {
        let h = hb(at, seq);
        assert_eq!(
            run(&record_heartbeat(&h, None, Duration::zero()), Some(&item)).is_some(),
            applies,
            "{h:?}"
        );
    }
    // A replay of a recorded heartbeat changes nothing.
    let next = run(&record_heartbeat(&hb(t(-240), Some(101)), None, Duration::zero()), Some(&item)).unwrap();
    assert!(run(&record_heartbeat(&hb(t(-240), Some(101)), None, Duration::zero()), Some(&next)).is_none());
    // Unsequenced heartbeats keep their own order (an agent downgraded to an old version).
    let legacy = run(&record_heartbeat(&hb(t(60), None), None, Duration::zero()), Some(&next)).unwrap();
    assert!(run(&record_heartbeat(&hb(t(60), None), None, Duration::zero()), Some(&legacy)).is_none());
    assert!(run(&record_heartbeat(&hb(t(61), None), None, Duration::zero()), Some(&legacy)).is_some());
}

#[test]
fn at_most_one_heartbeat_is_recorded_per_minimum_interval() {
    let n01: &'static str = Box::leak(node_name("p1", "GPU-01").into_boxed_str());
    let now = Utc::now();
    let ms_after = |n: i64| now + Duration::milliseconds(n);
    let hb = |received: DateTime<Utc>, seq: i64| HeartbeatFacts {
        node_name: n01,
        at: received,
        received_at: received,
        seq: Some(seq),
        claimed_status: "available",
        active_jobs: seq % 2,
        usage_json: "{}".into(),
    };
    let ten = Duration::seconds(10);
    let mut item = available_after(&hb(now, 1), now);
    // A flood: one heartbeat every millisecond for 25 s (newer each time) makes 2 more writes,
    // at 10 s and 20 s, and each other one is the rate limit's to refuse.
    let mut writes = vec![];
    for n in 1..=25_000 {
        let h = hb(ms_after(n), 1 + n);
        let recorded = ProviderRecord::from_item(&item).unwrap().hb_at;
        match run(&record_heartbeat(&h, None, ten), Some(&item)) {
            Some(next) => {
                assert!(!within_min_interval(recorded, h.received_at, ten));
                writes.push(n);
                item = next;
            }
            None => assert!(within_min_interval(recorded, h.received_at, ten), "{n}"),
        }
    }
    assert_eq!(writes, vec![10_000, 20_000]);
    // Without a limit, every newer heartbeat is recorded.
    assert!(run(
        &record_heartbeat(&hb(ms_after(20_001), 30_000), None, Duration::zero()),
        Some(&item)
    )
    .is_some());
    let table = [
        (0, 0, false),
        (9_999, 10, true),
        (10_000, 10, false),
        (10_001, 10, false),
        (5, 0, false),
    ];
    for (gap_ms, min_s, within) in table {
        let got = within_min_interval(now, ms_after(gap_ms), Duration::seconds(min_s));
        assert_eq!(got, within, "{gap_ms} {min_s}");
    }
}

#[test]
fn the_active_jobs_label_is_patched_on_change_at_most_once_per_interval() {
    let now = Utc::now();
    let w = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
    let mut rec = ProviderRecord::from_item(&run(&register_pending(&reg(w), "1-0", now), None).unwrap()).unwrap();
    let minute = Duration::seconds(60);
    // (reported, labelled, labelled seconds ago, due)
    let table = [
        (1, None, None, true),
        (1, Some(1), Some(5), false),
        (2, Some(1), Some(5), false),
        (2, Some(1), Some(60), true),
        (1, Some(1), Some(600), false),
        (0, Some(1), None, true),
    ];
    for (reported, labelled, ago, due) in table {
        rec.active_jobs = reported;
        rec.labelled_jobs = labelled;
        rec.labelled_at = ago.map(|s| now - Duration::seconds(s));
        assert_eq!(rec.active_jobs_label_due(now, minute), due, "{reported} {labelled:?} {ago:?}");
    }
    let noted = run(
        &note_node_write(Some((2, now)), None),
        Some(&run(&register_pending(&reg(w), "1-0", now), None).unwrap()),
    )
    .unwrap();
    let noted = ProviderRecord::from_item(&noted).unwrap();
    assert_eq!(
        (noted.labelled_jobs, noted.labelled_at.map(|t| t.timestamp_millis())),
        (Some(2), Some(now.timestamp_millis()))
    );
}
