//! A rate limit for repeated warnings: at most one line per period, carrying
//! how many events happened since the previous line.

use std::sync::Mutex;
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

    /// Counts one event. Answers how many events to report (this one and
    /// those suppressed since the last line) when a line may be logged now.
    pub fn hit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.count += 1;
        let now = Instant::now();
        if state
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
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
        let log = RateLimitedLog::new(Duration::from_millis(50));
        assert_eq!(log.hit(), Some(1));
        assert_eq!(log.hit(), None);
        assert_eq!(log.hit(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(log.hit(), Some(3));
    }
}
