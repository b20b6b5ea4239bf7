//! A rate limit for repeated warnings: at most one line per period, carrying
//! how many events happened since the previous line. Used wherever a client
//! or an outage can make the same warning repeat (refused connections, wrong
//! admin tokens, usage records dropped), so logs stay readable and cheap.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Counts events and says when one may be logged.
#[derive(Debug)]
pub struct RateLimitedLog {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    count: u64,
}

impl RateLimitedLog {
    pub fn new(every: Duration) -> Self {
        RateLimitedLog {
            every,
            state: Mutex::default(),
        }
    }

    /// Counts one event now. Answers how many events to report (this one and
    /// those held back since the last line) when a line may be logged now.
    pub fn hit(&self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    /// [`hit`](Self::hit) at a given instant.
    pub fn hit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.count += 1;
        if state
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.every)
        {
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_since_the_last() {
        let log = RateLimitedLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.hit_at(t0), Some(1));
        let passed = (1..=13_822u64)
            .filter(|i| log.hit_at(t0 + Duration::from_micros(*i)).is_some())
            .count();
        assert_eq!(passed, 0);
        assert_eq!(log.hit_at(t0 + Duration::from_secs(10)), Some(13_823));
        assert_eq!(log.hit_at(t0 + Duration::from_secs(11)), None);
    }
}
