//! An allocated job's rental stage, as stored on its item: each step one conditional write that
//! a replay (or a second event saying the same) finds already taken and writes nothing.
//!
//! `allocated` stays the job's state (its index partition, its due time, every closing path);
//! the rental's progress is kept beside it: `awaiting_mining_stop` (the allocation took mining
//! GPUs; the pod waits for the provider's ack) → `starting` (the pod is being made) → `running`
//! (the broker first saw its container running: `running_at`, the start of billing). A job never
//! seen running is billed nothing.

use chrono::{DateTime, Utc};

use super::{attr, JobState, Transition};
use crate::rental::life::Stage;
use crate::state::{from_ms, ms, Cond, Item, Op, Value};

/// Attribute names of a job's rental.
pub mod rental_attr {
    /// `awaiting_mining_stop`, `starting` or `running`; absent until the controller takes the job.
    pub const STAGE: &str = "rental_stage";
    /// When the current stage began (epoch ms, the broker's clock).
    pub const STAGE_SINCE: &str = "rental_stage_since";
    /// When the broker first saw the container running (epoch ms): billing starts here.
    pub const RUNNING_AT: &str = "running_at";
}

const AWAITING: &str = "awaiting_mining_stop";
const STARTING: &str = "starting";
const RUNNING: &str = "running";

fn stage_is(names: &[&str]) -> Cond {
    Cond::Or(names.iter().map(|n| Cond::eq(rental_attr::STAGE, *n)).collect())
}

fn open() -> Cond {
    Cond::eq(attr::STATE, JobState::Allocated)
}

/// The controller takes an allocated job: `starting`, or `awaiting_mining_stop` when the
/// allocation took GPUs from mining. Only once per job.
pub fn begin_rental(awaiting_mining_stop: bool, now: DateTime<Utc>) -> Transition {
    let stage = if awaiting_mining_stop { AWAITING } else { STARTING };
    Transition::new(
        open().and(Cond::AttrNotExists(rental_attr::STAGE.into())),
        vec![Op::set(rental_attr::STAGE, stage), Op::set(rental_attr::STAGE_SINCE, ms(now))],
    )
}

/// The provider acknowledged `mining.stop`: the pod may be made.
pub fn mining_stopped(now: DateTime<Utc>) -> Transition {
    Transition::new(
        open().and(stage_is(&[AWAITING])),
        vec![Op::set(rental_attr::STAGE, STARTING), Op::set(rental_attr::STAGE_SINCE, ms(now))],
    )
}

/// The broker saw the container running at `at` for the first time: billing starts. A second
/// sighting writes nothing (the first one's time stands).
pub fn mark_running(at: DateTime<Utc>) -> Transition {
    Transition::new(
        open().and(stage_is(&[AWAITING, STARTING])),
        vec![
            Op::set(rental_attr::STAGE, RUNNING),
            Op::set(rental_attr::STAGE_SINCE, ms(at)),
            Op::set(rental_attr::RUNNING_AT, ms(at)),
        ],
    )
}

/// The rental stage stored on a job item; `None` before the controller took it (or for a job
/// that is not open).
pub fn stage_of(job: &Item) -> Option<Stage> {
    if JobState::of(job) != Some(JobState::Allocated) {
        return None;
    }
    let since = from_ms(job.get(rental_attr::STAGE_SINCE).and_then(Value::as_i64)?);
    match job.get(rental_attr::STAGE).and_then(Value::as_str)? {
        AWAITING => Some(Stage::AwaitingMiningStop { since }),
        STARTING => Some(Stage::Starting { since }),
        RUNNING => Some(Stage::Running { since }),
        _ => None,
    }
}

/// When the broker first saw the job's container running, if it has.
pub fn running_at(job: &Item) -> Option<DateTime<Utc>> {
    job.get(rental_attr::RUNNING_AT).and_then(Value::as_i64).map(from_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::expr::{apply, eval};
    use crate::state::KEY_ATTR;

    fn run(t: &Transition, item: &Item) -> Option<Item> {
        eval(&t.cond, Some(item)).then(|| apply(Some(item), KEY_ATTR, "job-1", &t.ops).unwrap())
    }

    fn allocated() -> Item {
        Item::from([(attr::STATE.to_string(), Value::from(JobState::Allocated))])
    }

    #[test]
    fn a_rental_moves_forward_once_and_only_while_the_job_is_open() {
        let t = |s: i64| from_ms(1_800_000_000_000 + s * 1000);
        let job = allocated();
        assert_eq!(stage_of(&job), None);
        let waiting = run(&begin_rental(true, t(0)), &job).unwrap();
        assert_eq!(stage_of(&waiting), Some(Stage::AwaitingMiningStop { since: t(0) }));
        assert!(run(&begin_rental(false, t(1)), &waiting).is_none(), "taken once");
        let starting = run(&mining_stopped(t(5)), &waiting).unwrap();
        assert_eq!(stage_of(&starting), Some(Stage::Starting { since: t(5) }));
        assert!(run(&mining_stopped(t(6)), &starting).is_none(), "a second ack writes nothing");
        let running = run(&mark_running(t(40)), &starting).unwrap();
        assert_eq!(stage_of(&running), Some(Stage::Running { since: t(40) }));
        assert_eq!(running_at(&running), Some(t(40)));
        assert!(run(&mark_running(t(90)), &running).is_none(), "the first sighting's time stands");
        let mut closed = running.clone();
        closed.insert(attr::STATE.into(), Value::from(JobState::Released));
        assert!(run(&mark_running(t(95)), &closed).is_none(), "never after the job closed");
        assert_eq!(stage_of(&closed), None);
        // Straight to starting when no mining GPUs were taken; running from there.
        let direct = run(&begin_rental(false, t(0)), &allocated()).unwrap();
        assert_eq!(stage_of(&direct), Some(Stage::Starting { since: t(0) }));
        assert!(run(&mark_running(t(3)), &direct).is_some());
    }
}
