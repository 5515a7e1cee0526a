//! Retry schedules, built with `backon` rather than by hand: a message that asks to be retried
//! waits 100 ms, then twice as long for each earlier delivery, never more than 5 s. No jitter, so
//! the schedule is the same every time and can be tested.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The wait before the first retry.
const FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two deliveries.
const MAX: Duration = Duration::from_secs(5);

/// The schedule: 100 ms, 200 ms, 400 ms, … capped at 5 s, without end.
fn schedule() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(FIRST)
        .with_factor(2.0)
        .with_max_delay(MAX)
        .without_max_times()
}

/// How long to wait before redelivering a message that has been delivered `previous_deliveries`
/// times already.
pub fn retry_delay(previous_deliveries: u32) -> Duration {
    let mut delay = FIRST;
    // Walk the schedule up to this delivery, stopping early once it has reached its cap (so a
    // huge delivery count costs a handful of steps, not billions).
    for (step, d) in schedule().build().enumerate() {
        delay = d;
        if step as u64 >= u64::from(previous_deliveries) || d >= MAX {
            break;
        }
    }
    // backon multiplies in f32 seconds, which can leave a few nanoseconds of noise on the
    // non-binary 100 ms steps; the schedule is in whole milliseconds.
    Duration::from_millis((delay.as_secs_f64() * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_doubles_from_100ms_and_caps_at_5s() {
        let table: [(u32, u64); 11] = [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1_600),
            (5, 3_200),
            (6, 5_000),
            (7, 5_000),
            (10, 5_000),
            (64, 5_000),
            (u32::MAX, 5_000),
        ];
        for (deliveries, millis) in table {
            assert_eq!(
                retry_delay(deliveries),
                Duration::from_millis(millis),
                "after {deliveries} deliveries"
            );
        }
    }

    #[test]
    fn the_schedule_matches_the_hand_written_formula() {
        // The formula this module replaced: 100 ms shifted left once per delivery, capped at 5 s.
        for deliveries in 0..100u32 {
            let expected = Duration::from_millis((100u64 << deliveries.min(6)).min(5_000));
            assert_eq!(retry_delay(deliveries), expected, "after {deliveries} deliveries");
        }
    }
}
