//! A fixed-rate load generator that records the outcome of every request, so a
//! scenario can say: sent N, succeeded N, failed 0 (by cause).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The load's client: idle connections are dropped well before HAProxy's
/// 120 s client timeout would close them under it.
pub(crate) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http()
}

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The proxy's base URL, e.g. `http://127.0.0.1:PORT`.
    pub base_url: String,
    pub key: String,
    pub model: String,
    /// Requests per second.
    pub rate: u32,
    /// Every n-th request streams (0: none).
    pub stream_every: u32,
}

/// Every request's fate.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub sent: u64,
    pub succeeded: u64,
    pub streams_succeeded: u64,
    pub failed: BTreeMap<String, u64>,
}

impl Report {
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// The evidence, printed for the reader of the test log.
    pub fn print(&self, scenario: &str) {
        crate::evidence(&format!(
            "[{scenario}] sent {} succeeded {} (streams {}) failed {} {:?}",
            self.sent,
            self.succeeded,
            self.streams_succeeded,
            self.failed_total(),
            self.failed
        ));
    }
}

/// A running load.
#[derive(Debug)]
pub struct Load {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Report>,
    in_flight: Arc<AtomicU64>,
}

impl Load {
    pub fn start(spec: LoadSpec) -> Load {
        let stop = CancellationToken::new();
        let in_flight = Arc::new(AtomicU64::new(0));
        let handle = tokio::spawn(run(spec, stop.clone(), Arc::clone(&in_flight)));
        Load {
            stop,
            handle,
            in_flight,
        }
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Stops sending, waits for every request in flight, and reports.
    pub async fn finish(self) -> Report {
        self.stop.cancel();
        self.handle.await.unwrap_or_default()
    }
}

async fn run(spec: LoadSpec, stop: CancellationToken, in_flight: Arc<AtomicU64>) -> Report {
    let client = client();
    let report = Arc::new(Mutex::new(Report::default()));
    let mut tasks = JoinSet::new();
    let mut tick =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(spec.rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let stream = spec.stream_every > 0 && n.is_multiple_of(u64::from(spec.stream_every));
        let (client, spec, report, in_flight) = (
            client.clone(),
            spec.clone(),
            Arc::clone(&report),
            Arc::clone(&in_flight),
        );
        in_flight.fetch_add(1, Ordering::AcqRel);
        report.lock().unwrap_or_else(|e| e.into_inner()).sent += 1;
        tasks.spawn(async move {
            let outcome =
                tokio::time::timeout(Duration::from_secs(90), one(&client, &spec, stream)).await;
            let outcome = outcome.unwrap_or_else(|_| Err("timeout".to_owned()));
            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                Ok(()) => {
                    r.succeeded += 1;
                    if stream {
                        r.streams_succeeded += 1;
                    }
                }
                Err(cause) => *r.failed.entry(cause).or_default() += 1,
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let r = report.lock().unwrap_or_else(|e| e.into_inner()).clone();
    r
}

/// One request; `Err` names the cause of failure.
pub(crate) async fn one(client: &HttpClient, spec: &LoadSpec, stream: bool) -> Result<(), String> {
    let body = serde_json::json!({
        "model": spec.model,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello from the load generator"}],
    });
    let request = http::Request::post(format!("{}/v1/chat/completions", spec.base_url))
        .header("authorization", format!("Bearer {}", spec.key))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("request: {e}"))?;
    let response = client.request(request).await.map_err(|e| {
        if e.is_connect() {
            "connect error".to_owned()
        } else {
            "transport error".to_owned()
        }
    })?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|_| {
            if stream {
                "stream broken"
            } else {
                "body broken"
            }
            .to_owned()
        })?
        .to_bytes();
    if status != 200 {
        let code = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("status {status} {code}").trim_end().to_owned());
    }
    if stream {
        let text = String::from_utf8_lossy(&bytes);
        if !text.trim_end().ends_with("data: [DONE]") {
            return Err("stream incomplete".to_owned());
        }
    } else {
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| "body not JSON".to_owned())?;
        if v["choices"].as_array().is_none_or(Vec::is_empty) {
            return Err("no choices".to_owned());
        }
    }
    Ok(())
}
