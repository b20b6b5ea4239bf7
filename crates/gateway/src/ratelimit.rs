//! Requests-per-minute and tokens-per-minute limits per key, counted per replica
//! with a sliding-window estimate (the previous minute weighted by how much of
//! it still overlaps the last 60 seconds).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use moka::sync::Cache;
use obleth_config::model::ApiKey;
use uuid::Uuid;

use crate::error::ApiError;

#[derive(Debug, Default)]
struct Window {
    minute: u64,
    requests: i64,
    prev_requests: i64,
    tokens: i64,
    prev_tokens: i64,
}

impl Window {
    fn roll(&mut self, minute: u64) {
        if minute == self.minute {
            return;
        }
        if minute == self.minute + 1 {
            self.prev_requests = self.requests;
            self.prev_tokens = self.tokens;
        } else {
            self.prev_requests = 0;
            self.prev_tokens = 0;
        }
        self.requests = 0;
        self.tokens = 0;
        self.minute = minute;
    }

    fn estimate(current: i64, previous: i64, into_minute: f64) -> i64 {
        // Rounded up: near a minute boundary the estimate errs on the strict side.
        current + (previous as f64 * (1.0 - into_minute)).ceil() as i64
    }
}

/// Rate-limit state of this replica.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    windows: Cache<Uuid, Arc<Mutex<Window>>>,
}

/// What the limits looked like when a request was admitted, for response headers.
#[derive(Debug, Clone, Default)]
pub struct RateInfo {
    pub headers: HeaderMap,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            windows: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(180))
                .build(),
        }
    }
}

fn now_parts() -> (u64, f64, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs_f64();
    let minute = (secs / 60.0) as u64;
    let into = (secs - minute as f64 * 60.0) / 60.0;
    let reset = 60 - (now.as_secs() % 60);
    (minute, into, reset)
}

impl RateLimiter {
    /// Admits and counts one request of `key`, or refuses it with 429 and the
    /// `retry-after` and `x-ratelimit-*` headers.
    pub fn admit(&self, key: &ApiKey) -> Result<RateInfo, ApiError> {
        if key.rpm_limit.is_none() && key.tpm_limit.is_none() {
            return Ok(RateInfo::default());
        }
        let (minute, into, reset) = now_parts();
        let window = self.windows.get_with(key.id, Default::default);
        let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
        w.roll(minute);
        let requests = Window::estimate(w.requests, w.prev_requests, into);
        let tokens = Window::estimate(w.tokens, w.prev_tokens, into);
        let mut headers = HeaderMap::new();
        if let Some(limit) = key.rpm_limit.map(i64::from) {
            let remaining = (limit - requests - 1).max(0);
            put(&mut headers, "x-ratelimit-limit-requests", limit);
            put(&mut headers, "x-ratelimit-remaining-requests", remaining);
            put_str(
                &mut headers,
                "x-ratelimit-reset-requests",
                &format!("{reset}s"),
            );
            if requests >= limit {
                return Err(ApiError::RateLimited {
                    what: "requests",
                    limit,
                    retry_after_secs: reset,
                    headers: Box::new(headers),
                });
            }
        }
        if let Some(limit) = key.tpm_limit.map(i64::from) {
            put(&mut headers, "x-ratelimit-limit-tokens", limit);
            put(
                &mut headers,
                "x-ratelimit-remaining-tokens",
                (limit - tokens).max(0),
            );
            put_str(
                &mut headers,
                "x-ratelimit-reset-tokens",
                &format!("{reset}s"),
            );
            if tokens >= limit {
                return Err(ApiError::RateLimited {
                    what: "tokens",
                    limit,
                    retry_after_secs: reset,
                    headers: Box::new(headers),
                });
            }
        }
        w.requests += 1;
        Ok(RateInfo { headers })
    }

    /// Counts tokens the upstream reported for a request of `key_id`.
    pub fn add_tokens(&self, key_id: Uuid, tokens: i64) {
        if tokens <= 0 {
            return;
        }
        if let Some(window) = self.windows.get(&key_id) {
            let (minute, _, _) = now_parts();
            let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
            w.roll(minute);
            w.tokens += tokens;
        }
    }
}

fn put(headers: &mut HeaderMap, name: &'static str, value: i64) {
    headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
}

fn put_str(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_estimate_weights_the_previous_minute() {
        assert_eq!(Window::estimate(10, 100, 0.0), 110);
        assert_eq!(Window::estimate(10, 100, 0.5), 60);
        assert_eq!(Window::estimate(0, 2, 0.001), 2);
        assert_eq!(Window::estimate(10, 100, 1.0), 10);
    }

    #[test]
    fn roll_keeps_only_the_adjacent_minute() {
        let mut w = Window {
            minute: 5,
            requests: 3,
            tokens: 30,
            ..Default::default()
        };
        w.roll(6);
        assert_eq!((w.requests, w.prev_requests, w.prev_tokens), (0, 3, 30));
        w.roll(9);
        assert_eq!((w.requests, w.prev_requests), (0, 0));
    }
}
