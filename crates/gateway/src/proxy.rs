//! The OpenAI-compatible routes: authenticate, apply the key's policy, route the
//! model to its providers in order (falling back only before anything reached
//! the client), and relay the answer.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use obleth_config::model::ProviderKind;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::answer;
use crate::auth::AuthorizedKey;
use crate::catalog::{Authorization, CredentialPick, ProviderRuntime};
use crate::error::ApiError;
use crate::estimate;
use crate::keycache::KeyRecord;
use crate::metrics;
use crate::peek::peek;
use crate::policy;
use crate::protocol::{self, Client};
use crate::quota::Demand;
use crate::relay::{Completion, RelayBody, Tokens};
use crate::request_id;
use crate::retry;
use crate::state::AppState;
use crate::timeouts::{self, FirstByteError};
use crate::trace::{self, InSpan, RequestSpan, TraceContext};
use crate::upstream::{BoxError, UpBody, UpstreamError};

/// Idle time allowed between two chunks of a stream before it is cut, for
/// a provider without `options.idle_timeout_ms`.
const STREAM_IDLE: Duration = Duration::from_secs(300);

pub async fn chat_completions(
    State(state): State<AppState>,
    auth: AuthorizedKey,
    request: Request,
) -> Response {
    proxy(
        state,
        auth,
        Client::OpenAi,
        "chat_completions",
        "/chat/completions",
        request,
    )
    .await
}

/// `POST /v1/responses`: OpenAI's Responses API, passed through to
/// providers that speak it; a 400 naming the provider for those that do not.
pub async fn responses(
    State(state): State<AppState>,
    auth: AuthorizedKey,
    request: Request,
) -> Response {
    proxy(
        state,
        auth,
        Client::OpenAi,
        "responses",
        "/responses",
        request,
    )
    .await
}

/// `POST /v1/messages`: Anthropic's Messages API, with the same auth,
/// policy, limits and usage as chat completions; errors in Anthropic's
/// shape (the route's layer, [`protocol::anthropic_error_response`]).
pub async fn messages(
    State(state): State<AppState>,
    auth: AuthorizedKey,
    request: Request,
) -> Response {
    proxy(
        state,
        auth,
        Client::Anthropic,
        "messages",
        "/messages",
        request,
    )
    .await
}

pub async fn completions(
    State(state): State<AppState>,
    auth: AuthorizedKey,
    request: Request,
) -> Response {
    proxy(
        state,
        auth,
        Client::OpenAi,
        "completions",
        "/completions",
        request,
    )
    .await
}

pub async fn embeddings(
    State(state): State<AppState>,
    auth: AuthorizedKey,
    request: Request,
) -> Response {
    proxy(
        state,
        auth,
        Client::OpenAi,
        "embeddings",
        "/embeddings",
        request,
    )
    .await
}

/// `GET /v1/models`: the routed models this key may use.
pub async fn models(State(state): State<AppState>, auth: AuthorizedKey) -> Response {
    let catalog = state.catalog.get();
    let data: Vec<Value> = catalog
        .models()
        .into_iter()
        .filter(|m| policy::model_allowed(&auth.key, m))
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "obleth"}))
        .collect();
    state
        .metrics
        .count_request("models", 200, metrics::NO_MODEL, metrics::NO_PROVIDER);
    drop(auth);
    Json(json!({"object": "list", "data": data})).into_response()
}

/// Any other path: OpenAI's 404 shape.
pub async fn not_found() -> Response {
    let body = ApiError::body("unknown endpoint", "invalid_request_error", "not_found");
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// A known path with the wrong method.
pub async fn method_not_allowed() -> Response {
    let body = ApiError::body(
        "method not allowed",
        "invalid_request_error",
        "method_not_allowed",
    );
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// Refuses a request before it has a `Completion`: counts it once (refusal
/// and request, the model unknown), logs it and answers the error.
pub fn reject(state: &AppState, route: &'static str, error: ApiError) -> Response {
    state
        .metrics
        .rejected
        .with_label_values(&[error.code()])
        .inc();
    state.metrics.count_request(
        route,
        error.status().as_u16(),
        metrics::NO_MODEL,
        metrics::NO_PROVIDER,
    );
    if error.status().is_server_error() {
        tracing::warn!(route, code = error.code(), "{error}");
    } else {
        tracing::debug!(route, code = error.code(), "{error}");
    }
    error.into_response()
}

/// One proxied request, in its `request` span (the request id in every log
/// line, the answer's body included) with its trace context current for
/// the upstream calls.
async fn proxy(
    state: AppState,
    auth: AuthorizedKey,
    client: Client,
    route: &'static str,
    path: &'static str,
    request: Request,
) -> Response {
    let request_id = request_id::next();
    let span = trace::request_span(request_id, route, path, auth.key.public_id());
    let context = TraceContext::for_span(request_id, request.headers(), &span);
    let id = context.request_id_header();
    let mut response = context
        .scope(proxy_in_span(
            state, auth, client, route, path, request, request_id,
        ))
        .instrument(span.clone())
        .await;
    span.record_status(response.status().as_u16());
    // Every answer, an error's too, names its request.
    response.headers_mut().insert(trace::X_REQUEST_ID, id);
    response.map(|body| InSpan::wrap(body, span))
}

async fn proxy_in_span(
    state: AppState,
    auth: AuthorizedKey,
    client: Client,
    route: &'static str,
    path: &'static str,
    request: Request,
    request_id: uuid::Uuid,
) -> Response {
    let AuthorizedKey {
        key,
        started,
        guard,
    } = auth;
    let (parts, body) = request.into_parts();
    if !is_json(&parts.headers) {
        return reject(&state, route, ApiError::UnsupportedMediaType);
    }
    let body = match read_body(&state, &parts.headers, body).await {
        Ok(body) => body,
        Err(e) => return reject(&state, route, e),
    };
    let (model, stream, include_usage, max_output_tokens) = match peek(&body) {
        Ok(p) => (
            p.model.clone().into_owned(),
            p.stream,
            p.include_usage,
            p.max_output_tokens(),
        ),
        Err(e) => return reject(&state, route, ApiError::BadRequest(e.to_string())),
    };
    let span = tracing::Span::current();
    span.record_model(path, &model);
    // A stream reports its token usage only when asked, and rate limits,
    // budgets and spend count tokens: every streamed completion asks for it,
    // whatever the client sent. A client that did not ask itself does not get
    // the usage chunk (the relay removes it), as OpenAI would not send it.
    // (An Anthropic or a Responses API stream always reports its usage; an
    // Anthropic request's translation for an OpenAI-protocol provider asks
    // for it.)
    let ask_usage = client == Client::OpenAi
        && stream
        && matches!(path, "/chat/completions" | "/completions")
        && include_usage != Some(true);
    let request_bytes = body.len();
    let body = if ask_usage {
        match edit_body(&body, None, true) {
            Ok(b) => b,
            Err(e) => return reject(&state, route, e.into()),
        }
    } else {
        body
    };
    // Every check of the request itself has passed: from here on the request
    // is recorded exactly once, by its completion.
    let demand = demand(&state, &model, request_bytes, max_output_tokens);
    let completion = Completion {
        admission: None,
        state: state.clone(),
        key: key.clone(),
        request_id,
        route,
        model: model.clone(),
        provider: None,
        started,
        streamed: stream,
        request_bytes,
        client_usage: !ask_usage,
        guard: Some(guard),
        span,
    };
    let call = Call {
        client,
        path,
        model,
        body,
        stream,
        demand,
    };
    // Boxed: the forwarding future is large, and the request's future is
    // moved whole through axum's and tracing's wrappers (perf: 5% of the
    // gateway's time in memmove before this).
    match Box::pin(forward(&state, &key, call, completion)).await {
        Ok(response) => response,
        Err((error, completion)) => {
            state
                .metrics
                .rejected
                .with_label_values(&[error.code()])
                .inc();
            let status = error.status().as_u16();
            if let Some(c) = completion {
                c.finish(status, Tokens::default());
            }
            error.into_response()
        }
    }
}

/// Reads the body within the size limit and the body timeout.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.settings.server.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let timeout = Duration::from_secs(state.settings.server.body_timeout_secs);
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Ok(Err(e)) => Err(ApiError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

type Failure = (ApiError, Option<Completion>);

/// What `forward` sends: the upstream path, the public model, the body as it
/// goes upstream, whether it streams, and what it is expected to use.
struct Call {
    client: Client,
    path: &'static str,
    model: String,
    body: Bytes,
    stream: bool,
    demand: Demand,
}

/// What a request reserves at admission (see `estimate::reservation`): its
/// tokens, and their cost at the model's price (none when unpriced).
fn demand(state: &AppState, model: &str, request_bytes: usize, max_output: Option<u32>) -> Demand {
    let default_completion = state.settings.limits.default_completion_tokens;
    let tokens = estimate::reservation(request_bytes, max_output, default_completion);
    let micros = state.prices.get().price_for(model).map_or(0, |price| {
        price.cost_micros(
            estimate::tokens_for_bytes(request_bytes as u64),
            i64::from(max_output.unwrap_or(default_completion)),
        )
    });
    Demand { tokens, micros }
}

/// Policy, routing and the upstream attempts. On failure the completion comes
/// back so the caller records the request once.
async fn forward(
    state: &AppState,
    key: &KeyRecord,
    call: Call,
    mut completion: Completion,
) -> Result<Response, Failure> {
    let Call {
        client,
        path,
        model,
        body,
        stream,
        demand,
    } = call;
    if !policy::model_allowed(key, &model) {
        return Err((ApiError::ModelNotAllowed(model), Some(completion)));
    }
    let team = key.team_id().and_then(|id| state.keys.team(id));
    match state.quota.admit(key, team.as_deref(), demand).await {
        Ok(admission) => completion.admission = Some(admission),
        Err(e) => return Err((e, Some(completion))),
    }
    let catalog = state.catalog.get();
    let Some(targets) = catalog.route(&model) else {
        return Err((ApiError::UnknownModel(model), Some(completion)));
    };
    let mut last_error = ApiError::UpstreamFailed;
    // The last 429 a target answered: the client gets it when no attempt
    // succeeds, with its `retry-after`.
    let mut rate_limited: Option<(http::response::Parts, Bytes, ProviderKind)> = None;
    let mut upstream_wait = Duration::ZERO;
    let mut attempts = retry::Attempts::new(targets, &state.settings.routing);
    let mut failed_before: Option<&'static str> = None;
    while let Some(step) = attempts.next_step() {
        if !step.wait.is_zero() {
            tokio::time::sleep(step.wait).await;
            upstream_wait += step.wait;
        }
        let provider = &step.target.provider;
        let upstream_model = step.target.upstream_model.as_deref();
        let (upstream_path, payload) = match protocol::upstream_request(
            client,
            provider.kind,
            &provider.name,
            path,
            &body,
            upstream_model,
            &model,
        ) {
            Some(Ok(translated)) => translated,
            // This provider cannot take the request; another one may.
            Some(Err(e)) => {
                last_error = e;
                attempts.unusable(step.index);
                continue;
            }
            None => match upstream_model {
                Some(upstream_model) => match edit_body(&body, Some(upstream_model), false) {
                    Ok(payload) => (path, payload),
                    Err(e) => return Err((e.into(), Some(completion))),
                },
                None => (path, body.clone()),
            },
        };
        let upstream_path = match protocol::provider_path(
            provider.kind,
            &provider.options,
            &provider.name,
            upstream_path,
            upstream_model.unwrap_or(&model),
        ) {
            Ok(upstream_path) => upstream_path,
            Err(e) => {
                last_error = e;
                attempts.unusable(step.index);
                continue;
            }
        };
        if let Some(after) = failed_before.take() {
            state
                .metrics
                .upstream_retries
                .with_label_values(&[&provider.name, after])
                .inc();
        }
        let credential = provider.pick_credential();
        let first_byte = provider
            .options
            .first_byte_timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        let sent_at = tokio::time::Instant::now();
        let sent = attempt(
            state,
            provider,
            &credential,
            &upstream_path,
            payload,
            Limits {
                headers: step.headers_within,
                first_byte,
            },
            &mut upstream_wait,
        )
        .await;
        // A token the gateway minted that Vertex AI refused is not sent
        // again: the next attempt mints a new one.
        if let (Ok(response), Authorization::GoogleToken(tokens)) =
            (&sent, &credential.authorization)
        {
            if response.status() == StatusCode::UNAUTHORIZED {
                tracing::warn!(provider = %provider.name, "Upstream refused the minted access token; the next request mints a new one.");
                tokens.forget();
            }
        }
        // With a key pool, a 429, 401 or 403 is the credential's: it is
        // benched, and while another is ready the same target is tried
        // again at once with it, with no back-off and no mark on the
        // target's health.
        let next_credential = match &sent {
            Ok(response)
                if provider.credential_count() > 1
                    && matches!(response.status().as_u16(), 401 | 403 | 429) =>
            {
                credential_failed(state, provider, &credential, response.status());
                // Without an attempt left, the answer is the client's as
                // without a pool.
                provider.another_credential_ready(credential.index) && attempts.attempt_left()
            }
            _ => false,
        };
        let response = match sent {
            Ok(response)
                if next_credential && response.status() != StatusCode::TOO_MANY_REQUESTS =>
            {
                let outcome = if response.status() == StatusCode::FORBIDDEN {
                    "status_403"
                } else {
                    "status_401"
                };
                count_attempt(state, provider, outcome);
                attempts.again_at_once(step.index);
                failed_before = Some(outcome);
                continue;
            }
            Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                count_attempt(state, provider, "status_429");
                let wait = retry::retry_after(response.headers());
                tracing::warn!(provider = %provider.name, retry_after = ?wait, "Upstream answered 429; trying another attempt.");
                if next_credential {
                    attempts.again_at_once(step.index);
                } else {
                    target_failed(state, provider);
                    attempts.failed(step.index, wait);
                }
                failed_before = Some("status_429");
                let (parts, body) = response.into_parts();
                let limit = state.settings.server.max_response_bytes.min(64 * 1024);
                let read = tokio::time::timeout(provider.timeout, read_answer(body, limit)).await;
                let bytes = match read {
                    Ok(Ok(bytes)) => bytes,
                    _ => Bytes::new(),
                };
                let bytes = protocol::with_error_type(provider.kind, &parts, bytes);
                rate_limited = Some((parts, bytes, provider.kind));
                continue;
            }
            Ok(response) => response,
            Err((error, outcome)) => {
                target_failed(state, provider);
                attempts.failed(step.index, None);
                failed_before = Some(outcome);
                last_error = error;
                continue;
            }
        };
        let (mut parts, upstream_body) = response.into_parts();
        // Nothing has reached the client yet: a first byte too late is a
        // failed attempt like any timeout.
        let upstream_body = match first_byte {
            Some(limit) => {
                let t1 = Instant::now();
                let primed = timeouts::first_byte(upstream_body, sent_at + limit).await;
                upstream_wait += t1.elapsed();
                match primed {
                    Ok(body) => body,
                    Err(e) => {
                        let (error, outcome) = match e {
                            FirstByteError::Timeout => {
                                tracing::warn!(provider = %provider.name, first_byte_timeout = ?limit, "Upstream sent no body byte in time; trying another attempt.");
                                (ApiError::UpstreamTimeout, "first_byte_timeout")
                            }
                            FirstByteError::Broken(e) => {
                                tracing::warn!(provider = %provider.name, error = %e, "Upstream broke off its answer; trying another attempt.");
                                (ApiError::UpstreamFailed, "error")
                            }
                        };
                        count_attempt(state, provider, outcome);
                        target_failed(state, provider);
                        attempts.failed(step.index, None);
                        failed_before = Some(outcome);
                        last_error = error;
                        continue;
                    }
                }
            }
            None => upstream_body,
        };
        let idle = provider
            .options
            .idle_timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        completion.provider = Some(provider.name.clone());
        completion
            .span
            .record_provider(provider.kind, &provider.name);
        // Bedrock streams in AWS's event-stream framing; the client gets
        // server-sent events translated from it.
        let event_stream =
            provider.kind == ProviderKind::Bedrock && is_event_stream(&parts.headers);
        if event_stream {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        if stream && (event_stream || is_sse(&parts.headers)) {
            let upstream_body = timeouts::idle(upstream_body, idle.unwrap_or(STREAM_IDLE));
            let upstream_body =
                protocol::client_stream(client, provider.kind, upstream_body, &model);
            count_attempt(state, provider, "ok");
            target_answered(state, provider);
            observe_overhead(state, &completion, upstream_wait);
            let status = parts.status.as_u16();
            let head = head(parts, provider, &mut completion);
            let mut relay = RelayBody::new(
                upstream_body,
                status,
                completion,
                state.settings.server.max_stream(),
                state.cut_streams.clone(),
            );
            if client == Client::Anthropic {
                relay = relay.reading_anthropic_usage();
            }
            return head
                .body(Body::new(relay))
                .map_err(|_| (ApiError::Internal, None));
        }
        // Not streamed: read the whole answer before sending anything, so a
        // failure while reading, a silence past the idle timeout included,
        // can still move on to another attempt.
        let upstream_body = match idle {
            Some(limit) => timeouts::idle(upstream_body, limit),
            None => upstream_body,
        };
        let bytes = match read_whole(state, provider, upstream_body, &mut upstream_wait).await {
            Ok(bytes) => bytes,
            // Too large again if asked again: the target itself is fine.
            Err((error, outcome @ "too_large")) => {
                attempts.done_with(step.index);
                failed_before = Some(outcome);
                last_error = error;
                continue;
            }
            Err((error, outcome)) => {
                target_failed(state, provider);
                attempts.failed(step.index, None);
                failed_before = Some(outcome);
                last_error = error;
                continue;
            }
        };
        let bytes = protocol::with_error_type(provider.kind, &parts, bytes);
        let answered = if path == "/embeddings"
            && matches!(provider.kind, ProviderKind::Gemini | ProviderKind::Vertex)
        {
            protocol::google_embeddings_answer(provider.kind, parts.status, &bytes, &body, &model)
        } else {
            protocol::client_answer(client, provider.kind, parts.status, bytes, &model)
        };
        let (status, bytes, reported) = match answered {
            Ok(answer) => answer,
            Err(e) => {
                count_attempt(state, provider, "error");
                target_failed(state, provider);
                attempts.failed(step.index, None);
                failed_before = Some("error");
                last_error = e;
                continue;
            }
        };
        count_attempt(state, provider, "ok");
        target_answered(state, provider);
        parts.status = status;
        let tokens = if status.is_success() {
            // An answer without usage is charged an estimate.
            reported
                .or_else(|| answer::tokens(&bytes))
                .unwrap_or_else(|| {
                    estimate::usage(completion.request_bytes, estimate::text_bytes(&bytes))
                })
        } else {
            Tokens::default()
        };
        observe_overhead(state, &completion, upstream_wait);
        if status.is_success() && !bytes.is_empty() {
            completion.first_byte();
        }
        let head = head(parts, provider, &mut completion);
        completion.finish(status.as_u16(), tokens);
        return head
            .body(Body::from(bytes))
            .map_err(|_| (ApiError::Internal, None));
    }
    // Every attempt failed; a target's 429 says best when to come back.
    if let Some((mut parts, bytes, kind)) = rate_limited {
        let (status, bytes, _) = protocol::client_answer(client, kind, parts.status, bytes, &model)
            .unwrap_or((parts.status, Bytes::new(), None));
        parts.status = status;
        let mut builder = Response::builder().status(status);
        if let Some(headers) = builder.headers_mut() {
            for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
                if let Some(v) = parts.headers.remove(&name) {
                    headers.insert(name, v);
                }
            }
            if let Some(admission) = &mut completion.admission {
                headers.extend(std::mem::take(&mut admission.headers));
            }
        }
        completion.finish(status.as_u16(), Tokens::default());
        return builder
            .body(Body::from(bytes))
            .map_err(|_| (ApiError::Internal, None));
    }
    Err((last_error, Some(completion)))
}

/// Whether the request declares a JSON body (`application/json`, any case,
/// parameters allowed), without allocating.
fn is_json(headers: &HeaderMap) -> bool {
    const JSON: &[u8] = b"application/json";
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes().trim_ascii_start();
        v.len() >= JSON.len() && v[..JSON.len()].eq_ignore_ascii_case(JSON)
    })
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(crate::aws::frames::EVENT_STREAM.as_bytes())
    })
}

fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

fn count_attempt(state: &AppState, provider: &ProviderRuntime, outcome: &str) {
    state
        .metrics
        .upstream_attempts
        .with_label_values(&[&provider.name, outcome])
        .inc();
}

/// The time the request spent in the gateway itself, not waiting upstream.
fn observe_overhead(state: &AppState, completion: &Completion, upstream_wait: Duration) {
    state.metrics.overhead_seconds.observe(
        completion
            .started
            .elapsed()
            .saturating_sub(upstream_wait)
            .as_secs_f64(),
    );
}

/// Records a target's failed attempt in its health; an ejection is a
/// metric and a log line.
fn target_failed(state: &AppState, provider: &ProviderRuntime) {
    if provider.health.failed(&state.settings.routing) == retry::Transition::Ejected {
        state
            .metrics
            .upstream_ejections
            .with_label_values(&[&provider.name])
            .inc();
        tracing::warn!(
            provider = %provider.name,
            failures = state.settings.routing.eject_after_failures,
            eject_ms = state.settings.routing.eject_ms,
            "Provider ejected after consecutive failures; one request will try it again after the cool-down."
        );
    }
}

/// Benches a credential of a key pool that was refused or rate limited,
/// for `routing.eject_ms`; benching it is a metric and a log line, which
/// name it by its slot and reference, never its value.
fn credential_failed(
    state: &AppState,
    provider: &ProviderRuntime,
    credential: &CredentialPick,
    status: StatusCode,
) {
    let eject_ms = state.settings.routing.eject_ms;
    if provider.bench_credential(credential.index, eject_ms) {
        state
            .metrics
            .credentials_benched
            .with_label_values(&[&provider.name, &credential.slot.to_string()])
            .inc();
        tracing::warn!(
            provider = %provider.name,
            credential = credential.slot,
            reference = provider.credential_reference(credential.index).unwrap_or_default(),
            status = status.as_u16(),
            eject_ms,
            "Provider credential benched; the pool's other credentials are used meanwhile."
        );
    }
}

/// Records that a target answered; a recovery is a metric and a log line.
fn target_answered(state: &AppState, provider: &ProviderRuntime) {
    if provider.health.succeeded() == retry::Transition::Recovered {
        state
            .metrics
            .upstream_recoveries
            .with_label_values(&[&provider.name])
            .inc();
        tracing::info!(provider = %provider.name, "Ejected provider answered again; back in rotation.");
    }
}

/// A failed attempt: the error the client gets if no later attempt
/// answers, and the outcome label (`obleth_upstream_retries_total`).
type AttemptFailure = (ApiError, &'static str);

/// How long an attempt may wait for its response head: at most `headers`
/// (the request's deadline), and at most `first_byte` (the provider's
/// first-byte timeout), as no body byte comes before the head.
struct Limits {
    headers: Duration,
    first_byte: Option<Duration>,
}

/// Sends one attempt with `credential` and waits for its response head,
/// within `limits`. A 5xx or a failure to get one is the error the client
/// would get if no later attempt answers.
async fn attempt(
    state: &AppState,
    provider: &ProviderRuntime,
    credential: &CredentialPick,
    path: &str,
    payload: Bytes,
    limits: Limits,
    upstream_wait: &mut Duration,
) -> Result<http::Response<UpBody>, AttemptFailure> {
    let within = limits
        .first_byte
        .map_or(limits.headers, |fb| fb.min(limits.headers));
    // Whether a timeout is the first-byte timeout's, not the provider's.
    let first_byte_bound = limits
        .first_byte
        .is_some_and(|fb| fb < provider.timeout.min(limits.headers));
    let t0 = Instant::now();
    let sent = state
        .upstream
        .send_within(provider, &credential.authorization, path, payload, within)
        .await;
    let waited = t0.elapsed();
    *upstream_wait += waited;
    state
        .metrics
        .upstream_seconds
        .with_label_values(&[&provider.name])
        .observe(waited.as_secs_f64());
    match sent {
        Ok(response) if response.status().is_server_error() => {
            count_attempt(state, provider, "status_5xx");
            tracing::warn!(provider = %provider.name, status = %response.status(), "Upstream answered with a server error; trying another attempt.");
            Err((ApiError::UpstreamFailed, "status_5xx"))
        }
        Ok(response) => Ok(response),
        Err(e) => {
            let outcome = match e {
                UpstreamError::Timeout { .. } if first_byte_bound => "first_byte_timeout",
                _ => e.outcome(),
            };
            count_attempt(state, provider, outcome);
            // The detail (refused, DNS, TLS...) goes to the log only.
            tracing::warn!(provider = %provider.name, error = %e, "Upstream attempt failed; trying another attempt.");
            Err(match e {
                UpstreamError::Timeout { .. } => (ApiError::UpstreamTimeout, outcome),
                UpstreamError::Token { .. } => (ApiError::UpstreamAuthFailed, outcome),
                _ => (ApiError::UpstreamFailed, outcome),
            })
        }
    }
}

/// Reads a non-streamed answer whole, within `server.max_response_bytes`
/// and the provider's timeout; the answer is held in memory, so its size is
/// capped.
async fn read_whole(
    state: &AppState,
    provider: &ProviderRuntime,
    body: UpBody,
    upstream_wait: &mut Duration,
) -> Result<Bytes, AttemptFailure> {
    let t1 = Instant::now();
    let limit = state.settings.server.max_response_bytes;
    let collected = tokio::time::timeout(provider.timeout, read_answer(body, limit)).await;
    *upstream_wait += t1.elapsed();
    match collected {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(AnswerError::TooLarge)) => {
            count_attempt(state, provider, "too_large");
            tracing::warn!(
                provider = %provider.name,
                limit,
                "Upstream answer larger than server.max_response_bytes; trying another attempt."
            );
            Err((ApiError::UpstreamResponseTooLarge, "too_large"))
        }
        Ok(Err(AnswerError::Broken(e))) if timeouts::is_idle_timeout(e.as_ref()) => {
            count_attempt(state, provider, "idle_timeout");
            tracing::warn!(provider = %provider.name, error = %e, "Upstream went silent in its answer; trying another attempt.");
            Err((ApiError::UpstreamTimeout, "idle_timeout"))
        }
        Ok(Err(AnswerError::Broken(e))) => {
            count_attempt(state, provider, "error");
            tracing::warn!(provider = %provider.name, error = %e, "Upstream broke off its answer; trying another attempt.");
            Err((ApiError::UpstreamFailed, "error"))
        }
        Err(_) => {
            count_attempt(state, provider, "timeout");
            Err((ApiError::UpstreamTimeout, "timeout"))
        }
    }
}

/// The client's response head: the upstream's status, content type and
/// cache control, the rate-limit headers of the admission and the provider
/// (the request id is added to every answer, in [`proxy`]).
fn head(
    parts: http::response::Parts,
    provider: &ProviderRuntime,
    completion: &mut Completion,
) -> http::response::Builder {
    let mut builder = Response::builder().status(parts.status);
    if let Some(headers) = builder.headers_mut() {
        let mut upstream = parts.headers;
        for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
            if let Some(v) = upstream.remove(&name) {
                headers.insert(name, v);
            }
        }
        if let Some(admission) = &mut completion.admission {
            headers.extend(std::mem::take(&mut admission.headers));
        }
        if let Some(v) = &provider.name_header {
            headers.insert(X_OBLETH_PROVIDER, v.clone());
        }
    }
    builder
}

const X_OBLETH_PROVIDER: header::HeaderName = header::HeaderName::from_static("x-obleth-provider");

/// Why a non-streamed answer could not be read whole.
enum AnswerError {
    TooLarge,
    Broken(BoxError),
}

/// Reads a non-streamed upstream answer whole, within `limit` bytes: the
/// answer is held in memory before it is sent, so an upstream must not be able
/// to make the gateway hold more. A declared length past the limit is refused
/// before reading.
async fn read_answer(mut body: UpBody, limit: usize) -> Result<Bytes, AnswerError> {
    if hyper::body::Body::size_hint(&body)
        .exact()
        .is_some_and(|n| n > limit as u64)
    {
        return Err(AnswerError::TooLarge);
    }
    let mut answer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(AnswerError::Broken)?;
        if let Ok(data) = frame.into_data() {
            if answer.len() + data.len() > limit {
                return Err(AnswerError::TooLarge);
            }
            answer.extend_from_slice(&data);
        }
    }
    Ok(answer.freeze())
}

/// Why a request body could not be edited; the client gets it as a 400.
#[derive(Debug, thiserror::Error)]
enum BodyEditError {
    #[error("request body is not valid JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("request body must be a JSON object")]
    NotObject,
    #[error("{0}")]
    Serialize(serde_json::Error),
}

impl From<BodyEditError> for ApiError {
    fn from(e: BodyEditError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// Edits a JSON object body: replaces `model`, and asks a stream to report
/// its usage (`stream_options.include_usage: true`, keeping the client's
/// other `stream_options`).
fn edit_body(body: &[u8], model: Option<&str>, ask_usage: bool) -> Result<Bytes, BodyEditError> {
    let mut value: Value = serde_json::from_slice(body).map_err(BodyEditError::NotJson)?;
    let object = value.as_object_mut().ok_or(BodyEditError::NotObject)?;
    if let Some(model) = model {
        object.insert("model".to_owned(), Value::String(model.to_owned()));
    }
    if ask_usage {
        match object.get_mut("stream_options") {
            Some(Value::Object(options)) => {
                options.insert("include_usage".to_owned(), Value::Bool(true));
            }
            _ => {
                object.insert("stream_options".to_owned(), json!({"include_usage": true}));
            }
        }
    }
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(BodyEditError::Serialize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_body_refuses_with_typed_errors_and_keeps_the_client_messages() {
        let e = edit_body(b"[\"model\"]", Some("up"), false).unwrap_err();
        assert!(matches!(e, BodyEditError::NotObject), "{e:?}");
        assert_eq!(e.to_string(), "request body must be a JSON object");
        let e = edit_body(b"{\"model\":", None, true).unwrap_err();
        assert!(matches!(e, BodyEditError::NotJson(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("request body is not valid JSON: "),
            "{e}"
        );
        match ApiError::from(e) {
            ApiError::BadRequest(m) => assert!(m.starts_with("request body is not valid JSON")),
            other => panic!("{other:?}"),
        }
        let edited = edit_body(br#"{"model":"m","stream":true}"#, Some("up"), true).unwrap();
        let value: Value = serde_json::from_slice(&edited).unwrap();
        assert_eq!(value["model"], "up");
        assert_eq!(value["stream_options"]["include_usage"], true);
    }

    #[test]
    fn a_json_content_type_is_recognised_in_any_case_with_parameters() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("  Application/JSON; charset=utf-8"));
        assert!(!with("text/plain"));
        assert!(!with("application/js"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn asking_for_usage_overrides_include_usage_and_keeps_other_stream_options() {
        let edited = edit_body(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
            None,
            true,
        )
        .unwrap();
        let value: Value = serde_json::from_slice(&edited).unwrap();
        assert_eq!(
            value["stream_options"],
            json!({"include_usage": true, "x": 1})
        );
        let edited = edit_body(
            br#"{"model":"m","stream":true,"stream_options":null}"#,
            None,
            true,
        )
        .unwrap();
        let value: Value = serde_json::from_slice(&edited).unwrap();
        assert_eq!(value["stream_options"], json!({"include_usage": true}));
    }
}
