//! Traces over OTLP: with `[telemetry] otlp_endpoint` set, every proxied
//! request's `request` span (see [`crate::proxy`]) becomes an OpenTelemetry
//! span with the GenAI semantic conventions' attributes, batched and posted
//! as OTLP/HTTP protobuf to the collector.
//!
//! The SDK's batch processor exports from a thread of its own, without a
//! runtime; [`Export`] hands each export to the gateway's tokio runtime,
//! where a hyper client (rustls, the public roots) sends it with a timeout.
//! No egress policy applies: the endpoint is the operator's, from the
//! settings file, never from the admin API.
//!
//! A request that carries a valid W3C `traceparent` continues that trace
//! (and follows its sampled flag); the upstream then gets the gateway's own
//! span as its parent ([`continue_trace`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_http::{HeaderExtractor, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::Layer;

use crate::settings::TelemetrySettings;

/// Whether spans are exported: read on every request, set once at start.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The largest collector answer read (a partial-success message at most).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Whether this process exports spans.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The running export: its layer goes to the subscriber; [`Export::shutdown`]
/// sends what is still queued.
pub struct Export {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export").finish_non_exhaustive()
    }
}

/// The subscriber layer that turns spans into OpenTelemetry spans.
pub type ExportLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

impl Export {
    /// Starts the export `settings` describe, sending through `runtime`;
    /// `None` when no endpoint is set. Errors name the setting.
    pub fn start(
        settings: &TelemetrySettings,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Option<(Export, ExportLayer)>> {
        let Some(url) = settings.traces_url() else {
            return Ok(None);
        };
        let timeout = Duration::from_millis(settings.otlp_timeout_ms);
        let headers: HashMap<String, String> = settings
            .otlp_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime::new(runtime, timeout))
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(timeout)
            .with_headers(headers)
            .build()
            .context("cannot set up the export of telemetry.otlp_endpoint")?;
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("obleth-gateway");
        // The request spans and what is logged inside them at info and
        // above (the gateway's) or warn and above (anyone's), whatever
        // `[log] filter` keeps for the log lines.
        let only = Targets::new()
            .with_target("obleth_gateway", LevelFilter::INFO)
            .with_default(LevelFilter::WARN);
        // The conventions' attributes only: no source location, thread,
        // target or busy/idle timings.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(only)
            .boxed();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some((Export { provider }, layer)))
    }

    /// Exports what is queued and stops; blocks (call it off the runtime's
    /// workers, with the runtime still running).
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "Could not export the last spans.");
        }
    }
}

/// The `traceparent` an upstream gets when spans are exported: `span`'s own
/// context, as the child of the client's trace when `continues` (the
/// headers hold a valid `traceparent`). `None` when the span is not traced
/// (no export layer).
pub fn continue_trace(
    span: &tracing::Span,
    headers: &HeaderMap,
    continues: bool,
) -> Option<HeaderValue> {
    if continues {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let _ = span.set_parent(parent);
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    if !own.is_valid() {
        return None;
    }
    let value = format!(
        "00-{}-{}-{:02x}",
        own.trace_id(),
        own.span_id(),
        own.trace_flags().to_u8()
    );
    HeaderValue::from_str(&value).ok()
}

/// Sets attribute `key` on `span`'s exported span only (not a log field).
pub fn set(span: &tracing::Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    span.set_attribute(key, value);
}

/// Records the status the client got on `span`'s exported span: a 5xx is
/// an error (`error.type` the status), as the HTTP server conventions say.
pub fn set_status(span: &tracing::Span, status: u16) {
    span.set_attribute("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.set_attribute("error.type", status.to_string());
        span.set_status(opentelemetry::trace::Status::error(status.to_string()));
    }
}

/// Renames `span`'s exported span (the conventions' `<operation> <model>`,
/// known only once the body is read, after the span started).
pub fn rename(span: &tracing::Span, name: String) {
    span.context().span().update_name(name);
}

/// The exporter's HTTP client: each export runs as a task on the gateway's
/// runtime (the batch processor's thread has none), bounded by a timeout.
#[derive(Debug)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl OnRuntime {
    fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> OnRuntime {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(https);
        OnRuntime {
            runtime,
            client,
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let export = async move {
            let request = request.map(Full::new);
            let answer = client.request(request).await?;
            let (parts, body) = answer.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        self.runtime
            .spawn(async move {
                tokio::time::timeout(timeout, export)
                    .await
                    .map_err(|_| HttpError::from("the collector did not answer in time"))?
            })
            .await?
    }
}
