//! Relaying an upstream answer to the client: a body wrapper that forwards each
//! frame as it arrives, reads token usage from the SSE stream (removing the
//! usage chunk for a client that did not ask for it), and records the
//! request's usage exactly once when the stream ends, fails or is dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use hyper::body::{Body, Frame, SizeHint};
use obleth_config::model::UsageEvent;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use uuid::Uuid;

use crate::estimate;
use crate::keycache::KeyRecord;
use crate::metrics;
use crate::protocol::AnthropicUsage;
use crate::quota::Admission;
pub use crate::sse::SseUsage;
use crate::sse::UsageStrip;
use crate::state::{AppState, InFlightGuard};
use crate::trace::RequestSpan;
use crate::upstream::{BoxError, UpBody};

/// Token counts an upstream reported, or the gateway estimated when it
/// reported none (`estimated`, see [`estimate`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: Option<i32>,
    pub completion: Option<i32>,
    pub total: Option<i32>,
    pub estimated: bool,
}

impl Tokens {
    /// Reads OpenAI's `usage` object from a response or chunk.
    pub fn from_json(value: &Value) -> Option<Tokens> {
        Tokens::from_usage(value.get("usage")?)
    }

    /// Reads the usage of a stream event: a chunk's `usage`, or the
    /// `response.usage` of a Responses API event (`response.completed`).
    pub fn from_event(value: &Value) -> Option<Tokens> {
        Tokens::from_json(value).or_else(|| Tokens::from_json(value.get("response")?))
    }

    /// Reads a `usage` object (none when it is null).
    pub fn from_usage(usage: &Value) -> Option<Tokens> {
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
        // Chat completions say prompt and completion; the Responses API
        // says input and output.
        let prompt = field("prompt_tokens").or_else(|| field("input_tokens"));
        let completion = field("completion_tokens").or_else(|| field("output_tokens"));
        let total = field("total_tokens")
            .or_else(|| Some(prompt.unwrap_or(0).saturating_add(completion.unwrap_or(0))));
        Some(Tokens {
            prompt,
            completion,
            total,
            estimated: false,
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
    pub key: KeyRecord,
    pub request_id: Uuid,
    pub route: &'static str,
    pub model: String,
    pub provider: Option<String>,
    pub started: Instant,
    pub streamed: bool,
    /// The size of the body the client sent, for an estimate of its prompt.
    pub request_bytes: usize,
    /// Whether the client asked for the stream's usage chunk
    /// (`stream_options.include_usage: true`); the upstream is always asked.
    pub client_usage: bool,
    pub guard: Option<InFlightGuard>,
    /// The request's span ([`crate::trace::request_span`]): the outcome is
    /// recorded on it.
    pub span: tracing::Span,
}

impl Completion {
    /// Records usage, counters and the request metric, and leaves flight.
    pub fn finish(mut self, status: u16, tokens: Tokens) {
        self.record(status, tokens);
    }

    /// Observes `obleth_time_to_first_token_seconds`: the first byte of a
    /// successful answer's body is being handed to the client now. The
    /// caller calls it once, and only while the request is in flight.
    pub fn first_byte(&self) {
        let Some(provider) = self.provider.as_deref() else {
            return;
        };
        self.span.record_first_byte(self.started.elapsed());
        let catalog = self.state.catalog.get();
        self.state
            .metrics
            .time_to_first_token
            .with_label_values(&[metrics::model_label(&catalog, &self.model), provider])
            .observe(self.started.elapsed().as_secs_f64());
    }

    fn record(&mut self, status: u16, tokens: Tokens) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let latency = self.started.elapsed();
        self.span.record_status(status);
        self.span
            .record_tokens(tokens.prompt, tokens.completion, tokens.estimated);
        let state = &self.state;
        // What the request is charged: its tokens (reported or estimated)
        // and their cost at the price of the model the client asked for.
        // Computed once, here, and handed to the counters below.
        let total = tokens.total_or_zero();
        let cost_micros = crate::pricing::cost_micros(&state.prices.get(), &self.model, &tokens);
        if let Some(admission) = self.admission.take() {
            admission.settle(total, cost_micros.unwrap_or(0));
        }
        // Label values only from the operator's catalog and fixed sets: a
        // client naming random models must not create series.
        let catalog = state.catalog.get();
        let model = metrics::model_label(&catalog, &self.model);
        let provider = self.provider.as_deref().unwrap_or(metrics::NO_PROVIDER);
        state
            .metrics
            .count_request(self.route, status, model, provider);
        for (kind, count) in [("prompt", tokens.prompt), ("completion", tokens.completion)] {
            if let Some(count) = count.and_then(|n| u64::try_from(n).ok()).filter(|n| *n > 0) {
                state
                    .metrics
                    .tokens
                    .with_label_values(&[model, provider, kind])
                    .inc_by(count);
            }
        }
        state.usage.record_with(|| UsageEvent {
            request_id: self.request_id,
            key_id: Some(self.key.id),
            // Recorded once (the guard is taken): moved, not copied.
            model: std::mem::take(&mut self.model),
            provider: self.provider.take(),
            prompt_tokens: tokens.prompt,
            completion_tokens: tokens.completion,
            total_tokens: tokens.total,
            status: i16::try_from(status).unwrap_or(i16::MAX),
            latency_ms: i32::try_from(latency.as_millis()).unwrap_or(i32::MAX),
            streamed: self.streamed,
            node_id: Some(state.node_id.clone()),
            created_at: Utc::now(),
            cost_micros,
            estimated: tokens.estimated,
            team_id: self.key.team_id(),
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

/// The streaming body handed to the client.
pub struct RelayBody {
    inner: UpBody,
    usage: SseUsage,
    /// Set when the client did not ask for usage: the usage chunk the
    /// gateway asked for on its own is removed from what the client gets.
    strip: Option<UsageStrip>,
    /// Set for an Anthropic event stream (`/v1/messages`), whose usage is
    /// read from its events instead of OpenAI's usage chunk.
    anthropic: Option<AnthropicUsage>,
    /// The upstream's body has ended (and what was held was passed on).
    done: bool,
    /// A byte of the body has been handed to the client (time to first
    /// token observed).
    started_body: bool,
    status: u16,
    completion: Option<Completion>,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    /// `server.max_stream_secs` from the relay's start: past it the stream
    /// is ended, so no request outlives what the drain covers.
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl std::fmt::Debug for RelayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBody")
            .field("status", &self.status)
            .field("strip", &self.strip.is_some())
            .finish_non_exhaustive()
    }
}

impl RelayBody {
    /// Relays `inner`; `cut` ends the stream when the drain timeout passes,
    /// and so does `max_stream` from now. The usage chunk is removed unless
    /// the completion's client asked for it. An upstream gone silent is
    /// `inner`'s to end, with a [`crate::timeouts::IdleTimeout`].
    pub fn new(
        inner: UpBody,
        status: u16,
        completion: Completion,
        max_stream: Duration,
        cut: CancellationToken,
    ) -> Self {
        RelayBody {
            inner,
            usage: SseUsage::default(),
            strip: (!completion.client_usage).then(UsageStrip::default),
            anthropic: None,
            done: false,
            started_body: false,
            status,
            completion: Some(completion),
            cut: Box::pin(cut.cancelled_owned()),
            deadline: Box::pin(tokio::time::sleep(max_stream)),
        }
    }

    /// Reads the usage from Anthropic's events (`message_start`,
    /// `message_delta`): the stream is Anthropic's, passed on whole.
    pub fn reading_anthropic_usage(mut self) -> Self {
        self.strip = None;
        self.anthropic = Some(AnthropicUsage::default());
        self
    }

    /// Records the request with the usage the stream reported or, when an
    /// upstream that answered 2xx reported none, the estimate: however the
    /// stream ended, what it generated is charged.
    fn complete(&mut self, status: u16) {
        if let Some(c) = self.completion.take() {
            let (reported, generated) = match &self.anthropic {
                Some(a) => (a.tokens(), a.seen_bytes()),
                None => (self.usage.tokens, self.usage.generated_bytes()),
            };
            let tokens = match reported {
                Some(tokens) => tokens,
                None if (200..300).contains(&self.status) => {
                    estimate::usage(c.request_bytes, generated)
                }
                None => Tokens::default(),
            };
            c.finish(status, tokens);
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
        if this.done {
            return Poll::Ready(None);
        }
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
        if this.completion.is_some() && this.deadline.as_mut().poll(cx).is_ready() {
            if let Some(c) = &this.completion {
                c.state.metrics.streams_too_long.inc();
            }
            this.complete(504);
            return Poll::Ready(Some(Err(
                "stream ended: longer than server.max_stream_secs".into(),
            )));
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(data) => match &mut this.strip {
                            Some(strip) => {
                                let out = strip.filter(&mut this.usage, data);
                                if out.is_empty() {
                                    // All of it held (an unfinished event)
                                    // or removed: read on.
                                    continue;
                                }
                                Frame::data(out)
                            }
                            None => {
                                match &mut this.anthropic {
                                    Some(a) => a.feed(&data),
                                    None => this.usage.feed(&data),
                                }
                                Frame::data(data)
                            }
                        },
                        Err(other) => other,
                    };
                    if !this.started_body && frame.data_ref().is_some_and(|d| !d.is_empty()) {
                        this.started_body = true;
                        if let Some(c) =
                            this.completion.as_ref().filter(|_| is_success(this.status))
                        {
                            c.first_byte();
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) if crate::timeouts::is_idle_timeout(e.as_ref()) => {
                    // Charged like any other cut-off: what was generated.
                    if let Some(c) = &this.completion {
                        let provider = c.provider.as_deref().unwrap_or_default();
                        c.state
                            .metrics
                            .streams_idle
                            .with_label_values(&[provider])
                            .inc();
                        tracing::warn!(provider, error = %e, "Upstream stream went silent; the stream is cut.");
                    }
                    this.complete(504);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "Upstream stream failed part-way.");
                    this.complete(502);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = match &mut this.strip {
                        Some(strip) => strip.finish(&mut this.usage),
                        None => Bytes::new(),
                    };
                    let status = this.status;
                    this.complete(status);
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
            || (self.inner.is_end_stream() && self.strip.as_ref().is_none_or(|s| s.buffered() == 0))
    }

    fn size_hint(&self) -> SizeHint {
        // Removing the usage chunk changes the length.
        match self.strip {
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        // Dropped before the end: the client went away. The record is still
        // written, with status 499.
        self.complete(499);
    }
}
