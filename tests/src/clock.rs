//! The wall clock's minute, which rate-limit windows are cut on.
//!
//! `rpm_limit` and `tpm_limit` count in fixed UTC minutes (with a sliding
//! estimate that carries part of the previous minute over). A burst that
//! straddles a minute boundary is measured against two windows, so what it
//! may be admitted is no longer the limit but something between one and two
//! limits. A scenario that asserts "admitted within the limit in that minute"
//! therefore starts each burst with enough of the minute left.
//!
//! Waiting here is not a sleep used as synchronisation: nothing in the system
//! under test is awaited, and no outcome depends on how long the wait takes.
//! It picks when the experiment starts relative to the clock the limit is
//! defined on, as a test of a daily budget would pick its date; a poll has
//! nothing to poll for.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What is left of the current UTC minute.
pub fn left_in_minute() -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into = Duration::from_nanos((now.as_nanos() % 60_000_000_000) as u64);
    Duration::from_secs(60).saturating_sub(into)
}

/// Returns at once when at least `room` is left in the current UTC minute;
/// otherwise waits until the next minute has begun (plus a quarter second, so
/// that every process's clock agrees it has). Answers how long it waited.
pub async fn room_in_minute(room: Duration) -> Duration {
    let left = left_in_minute();
    if left >= room {
        return Duration::ZERO;
    }
    let wait = left + Duration::from_millis(250);
    tokio::time::sleep(wait).await;
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_left_of_a_minute_is_at_most_a_minute() {
        let left = left_in_minute();
        assert!(left > Duration::ZERO && left <= Duration::from_secs(60));
    }

    #[tokio::test]
    async fn no_wait_when_any_room_will_do() {
        assert_eq!(room_in_minute(Duration::ZERO).await, Duration::ZERO);
    }
}
