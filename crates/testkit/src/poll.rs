//! Waiting with a deadline instead of sleeping: poll a condition every 20 ms
//! until it holds, and fail naming what was awaited once the limit passes.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use http_body_util::Full;

use crate::http::client;

/// How often a condition is polled.
const INTERVAL: Duration = Duration::from_millis(20);

/// How long one readiness probe may take before it counts as not ready.
const PROBE_LIMIT: Duration = Duration::from_secs(1);

/// Polls `check` until it holds and answers how long that took; panics
/// naming `what` once `limit` has passed.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Polls `check` until it answers `Some` and answers that value; panics
/// naming `what` once `limit` has passed.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Polls `http://{addr}/readyz` until it answers 200 and answers how long
/// that took; an error once `limit` has passed. Each probe may take a second,
/// so a listener that accepts but never answers does not stall the wait.
pub async fn wait_ready(addr: SocketAddr, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = client();
    let uri: http::Uri = format!("http://{addr}/readyz").parse()?;
    loop {
        let probe = http::Request::get(uri.clone()).body(Full::default())?;
        if let Ok(Ok(r)) = tokio::time::timeout(PROBE_LIMIT, client.request(probe)).await {
            if r.status() == 200 {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > limit {
            bail!("{uri} not ready after {limit:?}");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
