//! Relaying an upstream answer to the client: a body wrapper that forwards each
//! frame as it arrives, reads token usage from the SSE stream, and records the
//! request's usage exactly once when the stream ends, fails or is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use hyper::body::{Body, Frame, SizeHint};
use obleth_config::model::{ApiKey, UsageEvent};
use serde_json::Value;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use uuid::Uuid;

use crate::metrics;
use crate::quota::Admission;
use crate::state::{AppState, InFlightGuard};
use crate::upstream::{BoxError, UpBody};

/// Token counts an upstream reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: Option<i32>,
    pub completion: Option<i32>,
    pub total: Option<i32>,
}

impl Tokens {
    /// Reads OpenAI's `usage` object from a response or chunk.
    pub fn from_json(value: &Value) -> Option<Tokens> {
        let usage = value.get("usage")?;
        if usage.is_null() {
            return None;
        }
        // An upstream's counts are untrusted: a negative count would give
        // tokens back to a rate limit or budget, so only counts from 0 to
        // i32::MAX are read, and a missing total is their saturating sum.
        let field = |name: &str| {
            usage
                .get(name)
                .and_then(Value::as_u64)
                .and_then(|n| i32::try_from(n).ok())
        };
        let prompt = field("prompt_tokens");
        let completion = field("completion_tokens");
        let total = field("total_tokens")
            .or_else(|| Some(prompt.unwrap_or(0).saturating_add(completion.unwrap_or(0))));
        Some(Tokens {
            prompt,
            completion,
            total,
        })
    }

    pub fn total_or_zero(&self) -> i64 {
        i64::from(self.total.unwrap_or(0))
    }
}

/// Everything needed to write the usage record once the answer is complete.
#[derive(Debug)]
pub struct Completion {
    /// The quota reservations, settled with the tokens used.
    pub admission: Option<Admission>,
    pub state: AppState,
    pub key: Arc<ApiKey>,
    pub request_id: Uuid,
    pub route: &'static str,
    pub model: String,
    pub provider: Option<String>,
    pub started: Instant,
    pub streamed: bool,
    pub guard: Option<InFlightGuard>,
}

impl Completion {
    /// Records usage, counters and the request metric, and leaves flight.
    pub fn finish(mut self, status: u16, tokens: Tokens) {
        self.record(status, tokens);
    }

    fn record(&mut self, status: u16, tokens: Tokens) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let latency = self.started.elapsed();
        let state = &self.state;
        let total = tokens.total_or_zero();
        if let Some(admission) = self.admission.take() {
            admission.settle(total, 0);
        }
        // Label values only from the operator's catalog and fixed sets: a
        // client naming random models must not create series.
        let catalog = state.catalog.get();
        state
            .metrics
            .requests
            .with_label_values(&[
                self.route,
                &metrics::status_label(status),
                metrics::model_label(&catalog, &self.model),
            ])
            .inc();
        state.usage.record(UsageEvent {
            request_id: self.request_id,
            key_id: Some(self.key.id),
            model: self.model.clone(),
            provider: self.provider.clone(),
            prompt_tokens: tokens.prompt,
            completion_tokens: tokens.completion,
            total_tokens: tokens.total,
            status: i16::try_from(status).unwrap_or(i16::MAX),
            latency_ms: i32::try_from(latency.as_millis()).unwrap_or(i32::MAX),
            streamed: self.streamed,
            node_id: Some(state.node_id.clone()),
            created_at: Utc::now(),
            cost_micros: None,
            estimated: false,
            team_id: None,
        });
        drop(guard);
    }
}

impl Drop for Completion {
    /// A request dropped before it finished (the client went away, or the
    /// process is ending) is still recorded, with status 499.
    fn drop(&mut self) {
        self.record(499, Tokens::default());
    }
}

/// Finds `data:` lines with a `usage` object in an SSE byte stream, keeping
/// only the current unfinished line between chunks.
#[derive(Debug, Default)]
pub struct SseUsage {
    partial: Vec<u8>,
    pub tokens: Option<Tokens>,
}

impl SseUsage {
    /// How many bytes of an unfinished line are held between chunks.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.line(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole);
            }
        }
        // Guard against an upstream that never ends a line.
        if self.partial.len() + rest.len() <= 1 << 20 {
            self.partial.extend_from_slice(rest);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if !contains(data, b"\"usage\"") {
            return;
        }
        if let Ok(value) = serde_json::from_slice::<Value>(data) {
            if let Some(tokens) = Tokens::from_json(&value) {
                self.tokens = Some(tokens);
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The streaming body handed to the client.
pub struct RelayBody {
    inner: UpBody,
    usage: SseUsage,
    status: u16,
    completion: Option<Completion>,
    idle_timeout: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl std::fmt::Debug for RelayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBody")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl RelayBody {
    /// Relays `inner`; `cut` ends the stream when the drain timeout passes.
    pub fn new(
        inner: UpBody,
        status: u16,
        completion: Completion,
        idle_timeout: Duration,
        cut: CancellationToken,
    ) -> Self {
        RelayBody {
            inner,
            usage: SseUsage::default(),
            status,
            completion: Some(completion),
            idle_timeout,
            idle: None,
            cut: Box::pin(cut.cancelled_owned()),
        }
    }

    fn complete(&mut self, status: u16) {
        if let Some(c) = self.completion.take() {
            c.finish(status, self.usage.tokens.unwrap_or_default());
        }
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.completion.is_some() && this.cut.as_mut().poll(cx).is_ready() {
            if let Some(c) = &this.completion {
                c.state.metrics.streams_cut.inc();
            }
            this.complete(503);
            return Poll::Ready(Some(Err(
                "stream ended: the gateway's drain timeout passed".into(),
            )));
        }
        if this.completion.is_none() && this.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle = None;
                if let Some(data) = frame.data_ref() {
                    this.usage.feed(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "Upstream stream failed part-way.");
                this.complete(502);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                let status = this.status;
                this.complete(status);
                Poll::Ready(None)
            }
            Poll::Pending => {
                // An upstream that goes silent mid-stream is cut after the idle timeout.
                let timeout = this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    this.complete(504);
                    return Poll::Ready(Some(Err("upstream stream idle for too long".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        // Dropped before the end: the client went away. The record is still
        // written, with status 499.
        self.complete(499);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_usage_is_found_across_chunk_boundaries() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\n\ndata: [DONE]\n\n";
        for split in 1..stream.len() {
            let mut scanner = SseUsage::default();
            scanner.feed(&stream[..split]);
            scanner.feed(&stream[split..]);
            assert_eq!(
                scanner.tokens,
                Some(Tokens {
                    prompt: Some(3),
                    completion: Some(5),
                    total: Some(8)
                }),
                "split at {split}"
            );
        }
    }

    #[test]
    fn counts_an_upstream_reports_never_overflow_or_go_negative() {
        let mut scanner = SseUsage::default();
        scanner.feed(b"data: {\"usage\":{\"prompt_tokens\":2147483647,\"completion_tokens\":1}}\n");
        assert_eq!(scanner.tokens.and_then(|t| t.total), Some(i32::MAX));
        let mut scanner = SseUsage::default();
        scanner.feed(b"data: {\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":3,\"total_tokens\":-2}}\n");
        assert_eq!(
            scanner.tokens,
            Some(Tokens {
                prompt: None,
                completion: Some(3),
                total: Some(3)
            })
        );
    }

    #[test]
    fn null_usage_is_ignored() {
        let mut scanner = SseUsage::default();
        scanner.feed(b"data: {\"usage\":null,\"choices\":[]}\n");
        assert_eq!(scanner.tokens, None);
    }
}
