use super::*;

fn t0() -> DateTime<Utc> {
    chrono::TimeZone::timestamp_opt(&Utc, 1_800_000_000, 0).unwrap()
}

fn pod(phase: PodPhase) -> PodView {
    PodView {
        phase,
        node: Some("node-a".into()),
        reason: None,
        running: phase == PodPhase::Running,
        waiting: None,
        terminated: None,
        deleting: false,
    }
}

fn exited(code: i32, reason: &str) -> PodView {
    PodView {
        terminated: Some(Terminated {
            exit_code: code,
            reason: Some(reason.into()),
        }),
        ..pod(if code == 0 { PodPhase::Succeeded } else { PodPhase::Failed })
    }
}

fn waiting(why: &str) -> PodView {
    PodView {
        waiting: Some(why.into()),
        ..pod(PodPhase::Pending)
    }
}

#[test]
fn every_observation_has_one_verdict() {
    let s = |secs| t0() + Duration::seconds(secs);
    let starting = Stage::Starting { since: t0() };
    let running = Stage::Running { since: t0() };
    let mining = Stage::AwaitingMiningStop { since: t0() };
    let rel = |end, at| Verdict::Release { end, at };
    let evicted = PodView {
        reason: Some("Evicted".into()),
        ..pod(PodPhase::Failed)
    };
    let elsewhere = PodView {
        node: Some("node-b".into()),
        ..pod(PodPhase::Running)
    };
    let deleting = PodView {
        deleting: true,
        ..pod(PodPhase::Running)
    };
    let done_while_deleting = PodView {
        deleting: true,
        ..exited(0, "Completed")
    };
    let unscheduled = PodView {
        node: None,
        ..pod(PodPhase::Pending)
    };
    #[rustfmt::skip]
    let table: Vec<(&str, Stage, Option<PodView>, i64, Verdict)> = vec![
        ("mining stop not acked yet", mining, None, 30, Verdict::Wait),
        ("mining stop never acked", mining, None, 61, rel(RentalEnd::MiningNotStopped, s(61))),
        ("no pod yet", starting, None, 5, Verdict::Create),
        ("pod gone while starting", starting, None, 599, Verdict::Create),
        ("never created within the start timeout", starting, None, 601, rel(RentalEnd::StartFailed, s(601))),
        ("pod gone after running", running, None, 5_000, rel(RentalEnd::Lost, s(5_000))),
        ("pulling", starting, Some(waiting("ContainerCreating")), 30, Verdict::Wait),
        ("image never pulls", starting, Some(waiting("ImagePullBackOff")), 601, rel(RentalEnd::StartFailed, s(601))),
        ("unscheduled, late", starting, Some(unscheduled), 700, rel(RentalEnd::StartFailed, s(700))),
        ("first seen running", starting, Some(pod(PodPhase::Running)), 42, Verdict::MarkRunning { at: s(42) }),
        ("seen running again", running, Some(pod(PodPhase::Running)), 90, Verdict::Wait),
        ("running long after the start timeout", running, Some(pod(PodPhase::Running)), 9_000, Verdict::Wait),
        ("completed", running, Some(exited(0, "Completed")), 3_600, rel(RentalEnd::Completed, s(3_600))),
        ("completed before seen running", starting, Some(exited(0, "Completed")), 20, rel(RentalEnd::Completed, s(20))),
        ("failed", running, Some(exited(3, "Error")), 100, rel(RentalEnd::Failed { exit_code: 3 }, s(100))),
        ("oom", running, Some(exited(137, "OOMKilled")), 100, rel(RentalEnd::OomKilled, s(100))),
        ("evicted", running, Some(evicted), 100, rel(RentalEnd::Evicted, s(100))),
        ("deleted by someone else", running, Some(deleting), 100, rel(RentalEnd::Deleted, s(100))),
        ("completed while being deleted", running, Some(done_while_deleting), 100, rel(RentalEnd::Completed, s(100))),
        ("on another node", starting, Some(elsewhere.clone()), 10, Verdict::DeleteMisplaced),
        ("on another node, running", running, Some(elsewhere), 10, Verdict::DeleteMisplaced),
    ];
    for (what, stage, view, at, want) in table {
        assert_eq!(decide(stage, "node-a", view.as_ref(), s(at), Timeouts::default()), want, "{what}");
    }
}

#[test]
fn the_same_observation_twice_decides_the_same() {
    let failed = exited(1, "Error");
    let stage = Stage::Running { since: t0() };
    let now = t0() + Duration::seconds(60);
    let first = decide(stage, "node-a", Some(&failed), now, Timeouts::default());
    assert_eq!(first, decide(stage, "node-a", Some(&failed), now, Timeouts::default()));
}

#[test]
fn billing_runs_from_the_brokers_first_sight_of_running() {
    let ran = t0() + Duration::seconds(40);
    assert_eq!(billed(Some(ran), ran + Duration::seconds(3_600)), Duration::seconds(3_600));
    assert_eq!(
        billed(None, t0() + Duration::seconds(700)),
        Duration::zero(),
        "never ran: nothing billed"
    );
    assert_eq!(billed(Some(ran), t0()), Duration::zero(), "never negative");
    assert_eq!(PodPhase::parse(Some("Succeeded")), PodPhase::Succeeded);
    assert_eq!(PodPhase::parse(Some("Weird")), PodPhase::Unknown);
    let names: Vec<&str> = [
        RentalEnd::Completed,
        RentalEnd::Failed { exit_code: 2 },
        RentalEnd::OomKilled,
        RentalEnd::Evicted,
        RentalEnd::Deleted,
        RentalEnd::Lost,
        RentalEnd::StartFailed,
        RentalEnd::MiningNotStopped,
    ]
    .iter()
    .map(|e| e.as_str())
    .collect();
    assert_eq!(
        names,
        [
            "completed",
            "failed",
            "oom_killed",
            "evicted",
            "deleted",
            "lost",
            "start_failed",
            "mining_not_stopped"
        ]
    );
}
