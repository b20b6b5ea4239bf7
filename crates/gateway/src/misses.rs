//! Database lookups of keys the store does not hold, while it is incomplete
//! (warming, or the change feed not live): coalesced, one query per hash at a
//! time, and bounded globally by a rate and a small concurrency limit, so a
//! spray of unknown keys cannot turn into a flood of queries.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OnceCell, Semaphore};

use crate::keycache::{Hash, KeyRecord};

/// Most miss lookups running at once, across all hashes.
pub const MISS_LOOKUP_CONCURRENCY: usize = 4;

/// What one database lookup found.
#[derive(Debug, Clone)]
pub enum Outcome {
    Found(KeyRecord),
    Unknown,
    /// The query failed or timed out; nothing is remembered.
    Failed,
}

/// The lookup was not made: the rate or the concurrency bound was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("key lookups are rate-limited")]
pub struct Throttled;

/// Coalescing and limits for miss lookups.
#[derive(Debug)]
pub struct MissGate {
    bucket: Mutex<Bucket>,
    permits: Semaphore,
    pending: Mutex<HashMap<Hash, Arc<OnceCell<Outcome>>>>,
}

/// A token bucket: `rate` lookups a second, bursts of up to one second's worth.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let burst = self.rate.max(1.0);
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(burst);
        self.at = now;
        if self.rate > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Forgets a hash's pending lookup when its caller finishes or goes away, so
/// an abandoned lookup leaves nothing behind. Callers already waiting on the
/// cell keep it.
struct Pending<'a> {
    gate: &'a MissGate,
    hash: Hash,
    cell: Arc<OnceCell<Outcome>>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut pending = self.gate.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending
            .get(&self.hash)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            pending.remove(&self.hash);
        }
    }
}

impl MissGate {
    /// `rate` lookups a second at most (0: none).
    pub fn new(rate: u32) -> Self {
        MissGate {
            bucket: Mutex::new(Bucket {
                rate: f64::from(rate),
                tokens: f64::from(rate),
                at: Instant::now(),
            }),
            permits: Semaphore::new(MISS_LOOKUP_CONCURRENCY),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `query` for `hash` unless a lookup of the same hash is under way,
    /// in which case its outcome is shared. A new query needs a free slot and
    /// a token of the rate; without either it is not made.
    pub async fn lookup<F, Fut>(&self, hash: Hash, query: F) -> Result<Outcome, Throttled>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let cell = Arc::clone(
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(hash)
                .or_default(),
        );
        let pending = Pending {
            gate: self,
            hash,
            cell,
        };
        let outcome = pending
            .cell
            .get_or_try_init(|| async {
                let _permit = self.permits.try_acquire().map_err(|_| Throttled)?;
                if !self.bucket.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    return Err(Throttled);
                }
                Ok(query().await)
            })
            .await
            .cloned();
        drop(pending);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_lookups_of_one_hash_make_one_query() {
        let gate = MissGate::new(100);
        let queries = AtomicUsize::new(0);
        let query = || async {
            queries.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Outcome::Unknown
        };
        let all =
            futures_util::future::join_all((0..20).map(|_| gate.lookup([1; 32], query))).await;
        assert!(all.iter().all(|o| matches!(o, Ok(Outcome::Unknown))));
        assert_eq!(queries.load(Ordering::SeqCst), 1);
        assert!(
            gate.pending.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }

    #[tokio::test]
    async fn lookups_past_the_rate_are_refused_without_a_query() {
        let gate = MissGate::new(3);
        let queries = AtomicUsize::new(0);
        let mut refused = 0;
        for i in 0..10u8 {
            let outcome = gate
                .lookup([i; 32], || async {
                    queries.fetch_add(1, Ordering::SeqCst);
                    Outcome::Unknown
                })
                .await;
            if outcome.is_err() {
                refused += 1;
            }
        }
        assert_eq!(queries.load(Ordering::SeqCst), 3, "the burst, then nothing");
        assert_eq!(refused, 7);
    }

    #[tokio::test]
    async fn a_zero_rate_makes_no_query() {
        let gate = MissGate::new(0);
        let outcome = gate.lookup([1; 32], || async { Outcome::Unknown }).await;
        assert_eq!(outcome.err(), Some(Throttled));
    }
}
