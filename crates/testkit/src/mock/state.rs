//! What a running mock shares between requests: its config, counters and the last request.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::body::Bytes;
use axum::http::request::Parts;

use super::config::MockConfig;

/// A request as the mock received it, for tests to inspect.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query, such as `/v1/chat/completions`.
    pub path: String,
    /// Every header in arrival order, names lowercase. This includes
    /// `authorization`, so tests can check which credential the gateway sent.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `None` when it is empty or not JSON.
    pub body: Option<serde_json::Value>,
}

impl RecordedRequest {
    /// The first value of the header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The raw form of a [`RecordedRequest`]. Parsing waits until a test asks, so
/// that serving a request costs a few reference counts, not a JSON parse.
#[derive(Debug)]
struct Raw {
    parts: Parts,
    body: Bytes,
}

#[derive(Debug)]
pub(crate) struct Shared {
    config: RwLock<MockConfig>,
    /// How many more requests `fail_first` fails; reset by `set_config`.
    fail_first_left: AtomicU32,
    requests: AtomicU64,
    in_flight: AtomicU64,
    last: Mutex<Option<Raw>>,
    /// STS exchanges answered.
    sts_calls: AtomicU64,
    /// The token endpoints' counters and issued tokens.
    pub oauth: super::oauth::OAuthState,
}

impl Shared {
    pub fn new(config: MockConfig) -> Shared {
        Shared {
            fail_first_left: AtomicU32::new(config.fail_first),
            config: RwLock::new(config),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            last: Mutex::new(None),
            sts_calls: AtomicU64::new(0),
            oauth: super::oauth::OAuthState::default(),
        }
    }

    pub fn config(&self) -> MockConfig {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_config(&self, config: MockConfig) {
        let mut current = self.config.write().unwrap_or_else(PoisonError::into_inner);
        self.fail_first_left
            .store(config.fail_first, Ordering::SeqCst);
        *current = config;
    }

    /// Counts a request and returns its sequence number, from 0.
    pub fn arrive(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::SeqCst)
    }

    /// Counts an STS exchange.
    pub fn count_sts(&self) {
        self.sts_calls.fetch_add(1, Ordering::SeqCst);
    }

    pub fn sts_calls(&self) -> u64 {
        self.sts_calls.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Marks a request in flight until the returned guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn record(&self, parts: &Parts, body: Bytes) {
        let raw = Raw {
            parts: parts.clone(),
            body,
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(raw);
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let raw = last.as_ref()?;
        Some(RecordedRequest {
            method: raw.parts.method.to_string(),
            path: raw.parts.uri.path().to_owned(),
            headers: raw
                .parts
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body: serde_json::from_slice(&raw.body).ok(),
        })
    }

    /// The status the config injects into request number `seq`, if any.
    pub fn injected_failure(&self, config: &MockConfig, seq: u64) -> Option<u16> {
        let first = self
            .fail_first_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            });
        if first.is_ok() {
            return Some(config.fail_status.unwrap_or(500));
        }
        if config.fail_first == 0 {
            if let Some(status) = config.fail_status {
                return Some(status);
            }
        }
        rate_fails(config.fail_rate, seq).then_some(500)
    }
}

/// Whether request `seq` is one of the `rate` share that fail. Failures are
/// spread evenly: of any run of requests from the start, the number failed is
/// `rate` times the count, rounded down.
fn rate_fails(rate: f64, seq: u64) -> bool {
    let rate = if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    };
    let failed_before = (seq as f64 * rate).floor();
    ((seq + 1) as f64 * rate).floor() > failed_before
}

/// Holds one request in the in-flight count.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_rate_fails_the_expected_share_evenly() {
        for (rate, expected) in [(0.0, 0), (0.1, 10), (0.25, 25), (0.5, 50), (1.0, 100)] {
            let failed = (0..100).filter(|&seq| rate_fails(rate, seq)).count();
            assert_eq!(failed, expected, "rate {rate}");
        }
        assert!(
            !rate_fails(0.5, 0),
            "the first request succeeds below rate 1"
        );
        assert!(rate_fails(0.5, 1));
    }

    #[test]
    fn fail_first_counts_down_then_stops() {
        let config = MockConfig {
            fail_first: 2,
            fail_status: Some(503),
            ..MockConfig::default()
        };
        let shared = Shared::new(config.clone());
        let statuses: Vec<_> = (0..4)
            .map(|seq| shared.injected_failure(&config, seq))
            .collect();
        assert_eq!(statuses, [Some(503), Some(503), None, None]);
    }
}
