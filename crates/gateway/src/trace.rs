//! A proxied request's trace context: its request id, carried by a
//! `request` span that every log line of the request is written in (the
//! answer's body too, [`InSpan`]), and sent upstream as `x-request-id` with
//! a W3C `traceparent`. With spans exported ([`crate::otel`]) that is the
//! request span's own context, in the client's trace when the client sent
//! a valid `traceparent`; without, the client's when valid, else one whose
//! trace id is the request id.
//!
//! The exported span's attributes follow the OpenTelemetry GenAI semantic
//! conventions ([`RequestSpan`]); the log lines carry a few of them.
//!
//! The context travels in a task-local ([`TraceContext::scope`]), so the
//! upstream client reads it where it builds the request without every call
//! in between passing it along.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::HeaderValue;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use uuid::Uuid;

/// The W3C trace context header.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// The request id's header, on the answer and upstream.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CONTEXT: TraceContext;
}

/// What a request sends upstream to be traced.
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub request_id: Uuid,
    pub traceparent: HeaderValue,
}

impl TraceContext {
    /// The context of request `request_id`, continuing the client's trace
    /// when `client` is a valid `traceparent`.
    pub fn new(request_id: Uuid, client: Option<&HeaderValue>) -> TraceContext {
        let traceparent = client
            .filter(|v| v.to_str().is_ok_and(is_traceparent))
            .cloned()
            .unwrap_or_else(|| own_traceparent(request_id));
        TraceContext {
            request_id,
            traceparent,
        }
    }

    /// The context of request `request_id` served in `span`: with spans
    /// exported, the span continues the client's trace (`headers`' valid
    /// `traceparent`) and is the upstream's parent; without, [`Self::new`].
    pub fn for_span(
        request_id: Uuid,
        headers: &http::HeaderMap,
        span: &tracing::Span,
    ) -> TraceContext {
        let client = headers.get(TRACEPARENT);
        if crate::otel::enabled() {
            let continues = client.is_some_and(|v| v.to_str().is_ok_and(is_traceparent));
            if let Some(traceparent) = crate::otel::continue_trace(span, headers, continues) {
                return TraceContext {
                    request_id,
                    traceparent,
                };
            }
        }
        TraceContext::new(request_id, client)
    }

    /// The request id as a header value.
    pub fn request_id_header(&self) -> HeaderValue {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = self.request_id.hyphenated().encode_lower(&mut buf);
        HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("unknown"))
    }

    /// The context of the request this task serves, if any.
    pub fn current() -> Option<TraceContext> {
        CONTEXT.try_with(Clone::clone).ok()
    }

    /// Runs `f` with this context as the current one.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        CONTEXT.scope(self, f).await
    }
}

/// The `request` span of a proxied request to `path` (`/chat/completions`),
/// by key `key_id` (its public id). Its fields, in every log line of the
/// request, are few and set once (a JSON log line's span fields are
/// re-serialised at each record): the request id, the route, the key's
/// public id and, once read, the model (`gen_ai.request.model`). With spans
/// exported ([`crate::otel`]) the exported span also gets the OpenTelemetry
/// GenAI and HTTP attributes as the request goes ([`RequestSpan`]), set on
/// it alone; without, those cost nothing.
pub fn request_span(
    request_id: Uuid,
    route: &'static str,
    path: &'static str,
    key_id: Option<&str>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        request_id = %request_id,
        route,
        gen_ai.request.model = tracing::field::Empty,
        obleth.key.id = key_id,
    );
    if crate::otel::enabled() {
        crate::otel::set(&span, "gen_ai.operation.name", operation(path));
        crate::otel::set(&span, "http.route", http_route(path));
    }
    span
}

/// The GenAI operation a route performs (`gen_ai.operation.name`).
fn operation(path: &str) -> &'static str {
    match path {
        "/completions" => "text_completion",
        "/embeddings" => "embeddings",
        _ => "chat",
    }
}

/// The route's template (`http.route`).
fn http_route(path: &str) -> &'static str {
    match path {
        "/chat/completions" => "/v1/chat/completions",
        "/responses" => "/v1/responses",
        "/messages" => "/v1/messages",
        "/completions" => "/v1/completions",
        "/embeddings" => "/v1/embeddings",
        _ => "/v1",
    }
}

/// The longest model name a span carries: the client chooses it.
const MAX_MODEL_LEN: usize = 256;

/// What a request's span learns as the request goes.
pub trait RequestSpan {
    /// The model the client asked for; the exported span is named
    /// `<operation> <model>`, as the conventions ask.
    fn record_model(&self, path: &str, model: &str);
    /// The provider whose answer the client gets.
    fn record_provider(&self, kind: obleth_config::model::ProviderKind, name: &str);
    /// The status the client got (a 5xx marks the span as an error).
    fn record_status(&self, status: u16);
    /// The tokens charged, and whether they are an estimate.
    fn record_tokens(&self, input: Option<i32>, output: Option<i32>, estimated: bool);
    /// The time from the request's arrival to the first byte of its answer.
    fn record_first_byte(&self, elapsed: std::time::Duration);
}

impl RequestSpan for tracing::Span {
    fn record_model(&self, path: &str, model: &str) {
        let mut end = model.len().min(MAX_MODEL_LEN);
        while !model.is_char_boundary(end) {
            end -= 1;
        }
        let model = &model[..end];
        self.record("gen_ai.request.model", model);
        if crate::otel::enabled() {
            crate::otel::rename(self, format!("{} {model}", operation(path)));
        }
    }

    fn record_provider(&self, kind: obleth_config::model::ProviderKind, name: &str) {
        use obleth_config::model::ProviderKind;
        if !crate::otel::enabled() {
            return;
        }
        // The conventions' well-known values, else the kind's own name.
        let system = match kind {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Azure => "azure.ai.openai",
            ProviderKind::Gemini => "gcp.gemini",
            ProviderKind::Vertex => "gcp.vertex_ai",
            ProviderKind::Bedrock => "aws.bedrock",
            ProviderKind::Mock => "obleth.mock",
        };
        crate::otel::set(self, "gen_ai.provider.name", system);
        crate::otel::set(self, "obleth.provider", name.to_owned());
    }

    fn record_status(&self, status: u16) {
        if crate::otel::enabled() {
            crate::otel::set_status(self, status);
        }
    }

    fn record_tokens(&self, input: Option<i32>, output: Option<i32>, estimated: bool) {
        if !crate::otel::enabled() {
            return;
        }
        if let Some(n) = input {
            crate::otel::set(self, "gen_ai.usage.input_tokens", i64::from(n));
        }
        if let Some(n) = output {
            crate::otel::set(self, "gen_ai.usage.output_tokens", i64::from(n));
        }
        crate::otel::set(self, "obleth.usage.estimated", estimated);
    }

    fn record_first_byte(&self, elapsed: std::time::Duration) {
        if crate::otel::enabled() {
            crate::otel::set(
                self,
                "obleth.time_to_first_byte_ms",
                elapsed.as_secs_f64() * 1000.0,
            );
        }
    }
}

/// `00-<trace id>-<parent id>-<flags>`, lowercase hex, ids not all zeros
/// (W3C Trace Context, version 00).
fn is_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && nonzero(parts[1])
        && hex(parts[2], 16)
        && nonzero(parts[2])
        && hex(parts[3], 2)
}

/// A new trace: the request id as the trace id, its low half as the
/// parent id, not sampled (the gateway records no span of its own).
fn own_traceparent(request_id: Uuid) -> HeaderValue {
    let (_, low) = request_id.as_u64_pair();
    let value = format!("00-{}-{:016x}-00", request_id.simple(), low.max(1));
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(
        "00-00000000000000000000000000000001-0000000000000001-00",
    ))
}

/// A body whose frames are produced inside `span`: log lines written while
/// an answer streams (a translator's, the relay's) carry the request's
/// fields.
pub struct InSpan {
    inner: Body,
    span: tracing::Span,
}

impl std::fmt::Debug for InSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InSpan")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl InSpan {
    pub fn wrap(inner: Body, span: tracing::Span) -> Body {
        Body::new(InSpan { inner, span })
    }
}

impl HttpBody for InSpan {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_client_traceparent_is_kept_and_anything_else_replaced() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let client =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(TraceContext::new(id, Some(&client)).traceparent, client);
        let own = "00-0123456789abcdef0011223344556677-0011223344556677-00";
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert_eq!(TraceContext::new(id, Some(&v)).traceparent, own, "{bad}");
        }
        assert_eq!(TraceContext::new(id, None).traceparent, own);
        assert_eq!(
            TraceContext::new(id, None).request_id_header(),
            "01234567-89ab-cdef-0011-223344556677"
        );
    }
}
