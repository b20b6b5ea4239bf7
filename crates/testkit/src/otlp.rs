//! A small OTLP/HTTP trace receiver on loopback: it takes what an exporter
//! posts to `/v1/traces` (protobuf, as the OpenTelemetry collector does),
//! decodes it and keeps every span for the test to inspect.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;
use tokio_util::sync::CancellationToken;

/// An attribute's value, as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Arrays, maps and bytes: not used by the gateway.
    Other,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Double(n) => Some(*n),
            _ => None,
        }
    }
}

/// One received span, its ids in lowercase hex.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP's `SpanKind`: 2 is server, 3 client.
    pub kind: i32,
    /// OTLP's `StatusCode`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub attributes: BTreeMap<String, Value>,
    /// The resource's attributes (`service.name`...).
    pub resource: BTreeMap<String, Value>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    pub fn str_attr(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(Value::as_str)
    }

    pub fn int_attr(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(Value::as_i64)
    }
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    /// Posts that were not a decodable export request.
    refused: Mutex<u64>,
    /// The headers of the last export.
    headers: Mutex<Option<HeaderMap>>,
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Received>,
    stop: CancellationToken,
}

impl OtlpReceiver {
    /// Listens on a free loopback port.
    pub async fn start() -> anyhow::Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Received::default());
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(Arc::clone(&received));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
        });
        Ok(OtlpReceiver {
            addr,
            received,
            stop,
        })
    }

    /// The base URL an exporter is given (`/v1/traces` is appended).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.received.spans).clone()
    }

    /// Posts that did not decode as an export request.
    pub fn refused(&self) -> u64 {
        *lock(&self.received.refused)
    }

    /// The headers of the last export received.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        lock(&self.received.headers).clone()
    }

    /// Waits up to `within` for a span `matches` accepts.
    pub async fn wait_for(
        &self,
        within: Duration,
        matches: impl Fn(&ReceivedSpan) -> bool,
    ) -> Option<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(span) = self.spans().into_iter().find(|s| matches(s)) {
                return Some(span);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl std::fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn export(
    State(received): State<Arc<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    let protobuf = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) if protobuf => request,
        _ => {
            *lock(&received.refused) += 1;
            return (StatusCode::BAD_REQUEST, Vec::new());
        }
    };
    *lock(&received.headers) = Some(headers);
    let mut spans = lock(&received.spans);
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ReceivedSpan {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    status_code: span.status.map_or(0, |s| s.code),
                    attributes: attributes(span.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attributes(kvs: Vec<KeyValue>) -> BTreeMap<String, Value> {
    kvs.into_iter()
        .map(|kv| (kv.key, value(kv.value)))
        .collect()
}

fn value(v: Option<AnyValue>) -> Value {
    match v.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => Value::Str(s),
        Some(any_value::Value::IntValue(n)) => Value::Int(n),
        Some(any_value::Value::DoubleValue(n)) => Value::Double(n),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        _ => Value::Other,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
