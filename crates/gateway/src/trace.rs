//! A proxied request's trace context: its request id, carried by a
//! `request` span that every log line of the request is written in (the
//! answer's body too, [`InSpan`]), and sent upstream as `x-request-id` with
//! a W3C `traceparent`: the client's when it sent a valid one, else one
//! whose trace id is the request id.
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
