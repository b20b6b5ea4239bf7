//! What each provider kind is sent and answers, for each protocol a client
//! speaks: the upstream path and body for a client's request, and the
//! client's answer (whole or streamed) from the upstream's. OpenAI clients
//! (`/v1/chat/completions` and the rest) pass through to `openai` and
//! `mock` providers and are translated for `anthropic` ones; Anthropic
//! clients (`/v1/messages`) pass through to `anthropic` providers and are
//! translated for the others ([`crate::translate::anthropic`]). Errors go
//! back in OpenAI's shape here; the `/v1/messages` route turns them into
//! Anthropic's ([`anthropic_error_response`]).

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use std::borrow::Cow;

use obleth_config::model::{ProviderKind, ProviderOptions};
use serde_json::Value;

mod bedrock;

pub use bedrock::{with_error_type, CONVERSE, CONVERSE_STREAM, INVOKE, INVOKE_STREAM};

use crate::error::ApiError;
use crate::reframe::{Reframe, Reframed};
use crate::relay::Tokens;
use crate::translate::anthropic::{
    anthropic_error_to_openai, chat_completion_to_message, chat_request_to_messages,
    message_to_chat_completion, messages_request_to_chat, openai_error_to_anthropic,
    usage_from_anthropic, ChunkTranslator, EventTranslator,
};
use crate::translate::gemini::{
    chat_request_to_gemini, gemini_error_to_openai, gemini_to_chat_completion, StreamTranslator,
};
use crate::translate::google_embeddings::{
    embeddings_answer, embeddings_asked, embeddings_request,
};
use crate::translate::Usage;
use crate::upstream::UpBody;

/// The protocol a client speaks to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// OpenAI's: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
    OpenAi,
    /// Anthropic's Messages API: `/v1/messages`.
    Anthropic,
}

/// `max_tokens` sent to an Anthropic provider when the client set none
/// (Anthropic requires one; OpenAI's default is the model's limit).
pub const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 4096;

/// The most of one upstream SSE event held while it arrives (its lines and
/// data together); a longer event ends the stream with an error.
pub const EVENT_CAP: usize = 1 << 20;

/// The upstream path and body for a client's request of `path` (such as
/// `/chat/completions`, or `/messages` for an Anthropic client), `body`
/// being the client's JSON with the model it named; `upstream_model`
/// replaces that model. `None` for an OpenAI client of a provider that
/// speaks OpenAI's protocol: the body goes as it is (the caller edits the
/// model itself).
pub fn upstream_request(
    client: Client,
    kind: ProviderKind,
    provider: &str,
    path: &'static str,
    body: &[u8],
    upstream_model: Option<&str>,
    public_model: &str,
) -> Option<Result<(&'static str, Bytes), ApiError>> {
    let model = upstream_model.unwrap_or(public_model);
    match (client, kind) {
        (Client::OpenAi, ProviderKind::Mock) if path == "/responses" => {
            Some(Err(ApiError::BadRequest(format!(
                "provider `{provider}` (kind mock) does not serve the Responses API"
            ))))
        }
        (Client::OpenAi, ProviderKind::OpenAi | ProviderKind::Mock | ProviderKind::Azure) => None,
        (Client::OpenAi, ProviderKind::Anthropic) => {
            Some(anthropic_request(provider, path, body, model))
        }
        (Client::Anthropic, ProviderKind::Anthropic) => Some(with_model(body, model, "/messages")),
        (Client::Anthropic, ProviderKind::OpenAi | ProviderKind::Mock | ProviderKind::Azure) => {
            Some(chat_request(body, model))
        }
        (Client::OpenAi, kind @ (ProviderKind::Gemini | ProviderKind::Vertex)) => {
            Some(gemini_request(kind, provider, path, body, model))
        }
        (Client::Anthropic, ProviderKind::Gemini | ProviderKind::Vertex) => {
            Some(gemini_messages_request(body, model))
        }
        (client, ProviderKind::Bedrock) => {
            Some(bedrock::request(client, provider, path, body, model))
        }
    }
}

/// The method a `gemini` or `vertex` provider is sent a whole answer's
/// request to (the model's path comes first, [`provider_path`]).
pub const GEMINI_GENERATE: &str = ":generateContent";
/// The method and query of a streamed one (server-sent events).
pub const GEMINI_STREAM: &str = ":streamGenerateContent?alt=sse";
/// Google AI Studio's embeddings method (a `gemini` provider).
pub const GEMINI_EMBED: &str = ":batchEmbedContents";
/// Vertex AI's embeddings method (a `vertex` provider).
pub const VERTEX_PREDICT: &str = ":predict";

/// An Anthropic request as Gemini's `generateContent` body, through an
/// OpenAI chat completion request.
fn gemini_messages_request(body: &[u8], model: &str) -> Result<(&'static str, Bytes), ApiError> {
    let value = json_body(body)?;
    let stream = value.get("stream").and_then(Value::as_bool) == Some(true);
    let chat =
        messages_request_to_chat(&value, model).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let translated =
        chat_request_to_gemini(&chat).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let method = if stream {
        GEMINI_STREAM
    } else {
        GEMINI_GENERATE
    };
    Ok((method, to_bytes(&translated)?))
}

/// An OpenAI chat completion request as Gemini's `generateContent` body
/// (the method is the streaming one when the client asked for a stream),
/// or an embeddings request as `batchEmbedContents` (`gemini`) or
/// `predict` (`vertex`) for `model`.
fn gemini_request(
    kind: ProviderKind,
    provider: &str,
    path: &'static str,
    body: &[u8],
    model: &str,
) -> Result<(&'static str, Bytes), ApiError> {
    if path == "/embeddings" {
        let vertex = kind == ProviderKind::Vertex;
        let (translated, _) = embeddings_request(&json_body(body)?, model, vertex)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let method = if vertex { VERTEX_PREDICT } else { GEMINI_EMBED };
        return Ok((method, to_bytes(&translated)?));
    }
    if path != "/chat/completions" {
        return Err(ApiError::BadRequest(format!(
            "provider `{provider}` (kind {kind}) serves chat completions and embeddings only, not {}",
            path.trim_start_matches('/')
        )));
    }
    let value = json_body(body)?;
    let stream = value.get("stream").and_then(Value::as_bool) == Some(true);
    let translated =
        chat_request_to_gemini(&value).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let method = if stream {
        GEMINI_STREAM
    } else {
        GEMINI_GENERATE
    };
    Ok((method, to_bytes(&translated)?))
}

/// Where a provider of `kind` is sent a request for `path` (what
/// [`upstream_request`] chose), `model` being the model sent upstream: the
/// path itself, except for Azure OpenAI, whose model is a deployment in the
/// path (`/openai/deployments/{model}/chat/completions?api-version=...`)
/// and whose Responses API is its `v1` one (`/openai/v1/responses`).
pub fn provider_path<'p>(
    kind: ProviderKind,
    options: &ProviderOptions,
    provider: &str,
    path: &'p str,
    model: &str,
) -> Result<Cow<'p, str>, ApiError> {
    match kind {
        ProviderKind::Azure => {}
        ProviderKind::Bedrock => return bedrock::path(provider, path, model),
        ProviderKind::Gemini | ProviderKind::Vertex => {
            let method_of_kind = match kind {
                ProviderKind::Gemini => GEMINI_EMBED,
                _ => VERTEX_PREDICT,
            };
            if !matches!(path, GEMINI_GENERATE | GEMINI_STREAM) && path != method_of_kind {
                return Err(ApiError::BadRequest(format!(
                    "provider `{provider}` (kind {kind}) does not serve {}",
                    path.trim_start_matches('/')
                )));
            }
            if !is_deployment_name(model) {
                return Err(ApiError::BadRequest(format!(
                    "model `{model}` is not a Gemini model name (letters, digits, `.`, `_` and `-`) for provider `{provider}`"
                )));
            }
            if kind == ProviderKind::Gemini {
                return Ok(Cow::Owned(format!("/models/{model}{path}")));
            }
            let (Some(project), Some(location)) = (&options.project, &options.location) else {
                return Err(ApiError::BadRequest(format!(
                    "provider `{provider}` (kind vertex) names no project and location"
                )));
            };
            return Ok(Cow::Owned(format!(
                "/projects/{project}/locations/{location}/publishers/google/models/{model}{path}"
            )));
        }
        _ => return Ok(Cow::Borrowed(path)),
    }
    match path {
        "/chat/completions" | "/completions" | "/embeddings" => {
            if !is_deployment_name(model) {
                return Err(ApiError::BadRequest(format!(
                    "model `{model}` is not an Azure deployment name (letters, digits, `.`, `_` and `-`) for provider `{provider}`"
                )));
            }
            Ok(Cow::Owned(format!(
                "/openai/deployments/{model}{path}?api-version={}",
                options.azure_api_version()
            )))
        }
        "/responses" => Ok(Cow::Borrowed("/openai/v1/responses")),
        other => Err(ApiError::BadRequest(format!(
            "provider `{provider}` (kind azure) does not serve {}",
            other.trim_start_matches('/')
        ))),
    }
}

/// An Azure deployment name: 1 to 64 letters, digits, `.`, `_` and `-`,
/// which go into a URL path as they are.
fn is_deployment_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))
}

fn to_bytes(value: &Value) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|_| ApiError::Internal)
}

/// An Anthropic request as it is, to `path`, naming `model`.
fn with_model(
    body: &[u8],
    model: &str,
    path: &'static str,
) -> Result<(&'static str, Bytes), ApiError> {
    let mut value = json_body(body)?;
    let Some(object) = value.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "request body must be a JSON object".to_owned(),
        ));
    };
    object.insert("model".to_owned(), Value::String(model.to_owned()));
    Ok((path, to_bytes(&value)?))
}

/// An Anthropic request as an OpenAI chat completion request.
fn chat_request(body: &[u8], model: &str) -> Result<(&'static str, Bytes), ApiError> {
    let value = json_body(body)?;
    let translated =
        messages_request_to_chat(&value, model).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(("/chat/completions", to_bytes(&translated)?))
}

fn anthropic_request(
    provider: &str,
    path: &'static str,
    body: &[u8],
    model: &str,
) -> Result<(&'static str, Bytes), ApiError> {
    if path != "/chat/completions" {
        return Err(ApiError::BadRequest(format!(
            "provider `{provider}` (kind anthropic) serves chat completions only, not {}",
            path.trim_start_matches('/')
        )));
    }
    let value = json_body(body)?;
    let translated = chat_request_to_messages(&value, model, ANTHROPIC_DEFAULT_MAX_TOKENS)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(("/messages", to_bytes(&translated)?))
}

/// The tokens of an Anthropic answer's usage, as a usage record counts them:
/// cache reads and writes are prompt tokens.
pub fn tokens_of(usage: &Usage) -> Tokens {
    let clamp = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    let prompt = usage.prompt_tokens();
    Tokens {
        prompt: Some(clamp(prompt)),
        completion: Some(clamp(usage.output)),
        total: Some(clamp(prompt.saturating_add(usage.output))),
        estimated: false,
    }
}

/// A client's answer: its status, its body, and its tokens when the
/// protocol read them (`None`: the caller reads OpenAI's `usage`).
pub type Answer = (StatusCode, Bytes, Option<Tokens>);

/// The client's status and body for a whole (not streamed) upstream answer.
/// An answer that cannot be read is the upstream's failure (502). Error
/// answers come back in OpenAI's shape whatever the client speaks.
pub fn client_answer(
    client: Client,
    kind: ProviderKind,
    status: StatusCode,
    answer: Bytes,
    public_model: &str,
) -> Result<Answer, ApiError> {
    let anthropic_upstream = kind == ProviderKind::Anthropic;
    if matches!(kind, ProviderKind::Gemini | ProviderKind::Vertex) {
        return gemini_answer(client, status, &answer, public_model);
    }
    if kind == ProviderKind::Bedrock {
        return bedrock::answer(client, status, &answer, public_model);
    }
    if !status.is_success() {
        if !anthropic_upstream {
            return Ok((status, answer, None));
        }
        let (status, body) = anthropic_error_to_openai(status.as_u16(), &answer);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return Ok((status, to_bytes(&body)?, None));
    }
    let unreadable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "Upstream answer could not be translated.");
        ApiError::UpstreamFailed
    };
    match (client, anthropic_upstream) {
        (Client::OpenAi, false) => Ok((status, answer, None)),
        (Client::OpenAi, true) => {
            let value: Value = serde_json::from_slice(&answer).map_err(|e| unreadable(&e))?;
            let (completion, _) = message_to_chat_completion(&value, public_model, unix_now())
                .map_err(|e| unreadable(&e))?;
            Ok((status, to_bytes(&completion)?, None))
        }
        (Client::Anthropic, true) => {
            let value: Value = serde_json::from_slice(&answer).map_err(|e| unreadable(&e))?;
            let usage = value.get("usage").map(usage_from_anthropic);
            Ok((status, answer, usage.as_ref().map(tokens_of)))
        }
        (Client::Anthropic, false) => {
            let value: Value = serde_json::from_slice(&answer).map_err(|e| unreadable(&e))?;
            let (message, usage) =
                chat_completion_to_message(&value, public_model).map_err(|e| unreadable(&e))?;
            let tokens = value.get("usage").is_some().then(|| tokens_of(&usage));
            Ok((status, to_bytes(&message)?, tokens))
        }
    }
}

/// Google's embeddings answer (whole) to an OpenAI client's `request` as
/// OpenAI's embeddings list, with its tokens: Google's count, else the
/// estimate of the input, marked estimated (AI Studio counts none); a
/// Google error as OpenAI's.
pub fn google_embeddings_answer(
    kind: ProviderKind,
    status: StatusCode,
    answer: &[u8],
    request: &[u8],
    public_model: &str,
) -> Result<Answer, ApiError> {
    if !status.is_success() {
        let body = gemini_error_to_openai(status.as_u16(), answer);
        return Ok((status, to_bytes(&body)?, None));
    }
    let unreadable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "Upstream embeddings answer could not be translated.");
        ApiError::UpstreamFailed
    };
    let asked = serde_json::from_slice::<Value>(request)
        .map(|r| embeddings_asked(&r))
        .map_err(|e| unreadable(&e))?;
    let value: Value = serde_json::from_slice(answer).map_err(|e| unreadable(&e))?;
    let vertex = kind == ProviderKind::Vertex;
    let (body, reported) =
        embeddings_answer(&value, vertex, public_model, asked).map_err(|e| unreadable(&e))?;
    let clamp = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    let prompt = clamp(reported.unwrap_or_else(|| asked.input_bytes.div_ceil(4)));
    let tokens = Tokens {
        prompt: Some(prompt),
        completion: None,
        total: Some(prompt),
        estimated: reported.is_none(),
    };
    Ok((status, to_bytes(&body)?, Some(tokens)))
}

/// A Gemini answer (whole) as an OpenAI chat completion (for an Anthropic
/// client, then as a message), with its tokens; a Google error as OpenAI's.
fn gemini_answer(
    client: Client,
    status: StatusCode,
    answer: &[u8],
    public_model: &str,
) -> Result<Answer, ApiError> {
    if !status.is_success() {
        let body = gemini_error_to_openai(status.as_u16(), answer);
        return Ok((status, to_bytes(&body)?, None));
    }
    let unreadable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "Upstream answer could not be translated.");
        ApiError::UpstreamFailed
    };
    let value: Value = serde_json::from_slice(answer).map_err(|e| unreadable(&e))?;
    let (completion, usage) =
        gemini_to_chat_completion(&value, public_model, unix_now()).map_err(|e| unreadable(&e))?;
    let clamp = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    let tokens = usage.map(|u| Tokens {
        prompt: Some(clamp(u.prompt)),
        completion: Some(clamp(u.completion)),
        total: Some(clamp(u.total)),
        estimated: false,
    });
    if client == Client::Anthropic {
        let (message, _) =
            chat_completion_to_message(&completion, public_model).map_err(|e| unreadable(&e))?;
        return Ok((status, to_bytes(&message)?, tokens));
    }
    Ok((status, to_bytes(&completion)?, tokens))
}

/// An error response in OpenAI's shape as Anthropic's (`/v1/messages`):
/// the same status and headers, the body `{"type":"error","error":{...}}`.
/// Other responses pass as they are. Error bodies are the gateway's own or
/// already read whole, so reading one again is bounded.
pub async fn anthropic_error_response(
    response: axum::response::Response,
) -> axum::response::Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match http_body_util::Limited::new(body, 1 << 20).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let reshaped = openai_error_to_anthropic(status.as_u16(), &bytes);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    axum::response::Response::from_parts(parts, axum::body::Body::from(reshaped.to_string()))
}

/// The client's stream from an upstream stream, in the client's protocol.
/// For an OpenAI client the stream reports its usage in a last chunk
/// (`stream_options.include_usage`), which the relay removes for a client
/// that did not ask; an Anthropic client's stream reports it in its events
/// (the relay reads them with [`AnthropicUsage`]).
pub fn client_stream(
    client: Client,
    kind: ProviderKind,
    upstream: UpBody,
    public_model: &str,
) -> UpBody {
    if matches!(kind, ProviderKind::Gemini | ProviderKind::Vertex) {
        let translator = StreamTranslator::new(public_model, unix_now());
        return match client {
            Client::OpenAi => Translating::boxed(upstream, GeminiChunks { translator }),
            Client::Anthropic => Translating::boxed(
                upstream,
                GeminiEvents {
                    translator,
                    events: ChunkEvents::new(public_model),
                },
            ),
        };
    }
    if kind == ProviderKind::Bedrock {
        return bedrock::stream(client, upstream, public_model);
    }
    let anthropic_upstream = kind == ProviderKind::Anthropic;
    match (client, anthropic_upstream) {
        (Client::OpenAi, false) | (Client::Anthropic, true) => upstream,
        (Client::OpenAi, true) => Translating::boxed(
            upstream,
            AnthropicChunks {
                translator: ChunkTranslator::new(public_model, unix_now(), true),
            },
        ),
        (Client::Anthropic, false) => Translating::boxed(
            upstream,
            OpenAiEvents {
                translator: EventTranslator::new(public_model),
            },
        ),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Translates a server-sent event stream into another protocol's, one
/// upstream frame at a time: [`Translating`] feeds it the frames and sends on
/// what it writes.
trait StreamTranslation {
    /// Translates the complete events `events` holds into `out` (with
    /// `at_end`, the upstream stream has ended); answers whether the
    /// client's stream is complete.
    fn translate(&mut self, events: &mut SseEvents, at_end: bool, out: &mut BytesMut) -> bool;

    /// Ends the client's stream in `out` because the upstream's events
    /// could not be split (`why`).
    fn broken(&mut self, why: &str, out: &mut BytesMut);
}

/// An upstream stream read through a [`StreamTranslation`] (the body is a
/// [`Reframed`]): each upstream frame's complete events become one frame
/// for the client; once the translation says the stream is complete,
/// nothing more is read.
struct Translating<T> {
    events: SseEvents,
    translation: T,
}

impl<T: StreamTranslation + Send + Unpin + 'static> Translating<T> {
    fn boxed(inner: UpBody, translation: T) -> UpBody {
        let translating = Translating {
            events: SseEvents::default(),
            translation,
        };
        Reframed::boxed(inner, translating)
    }
}

impl<T: StreamTranslation> Translating<T> {
    /// Translates `chunk` (with `at_end`, what is left) into one frame in
    /// `out`; answers whether the client's stream is complete.
    fn feed(&mut self, chunk: &[u8], at_end: bool, out: &mut VecDeque<Bytes>) -> bool {
        let mut frame = BytesMut::new();
        let ended = if at_end {
            self.events.finish();
            self.translation
                .translate(&mut self.events, true, &mut frame)
        } else if let Err(why) = self.events.push(chunk) {
            self.translation.broken(why, &mut frame);
            true
        } else {
            self.translation
                .translate(&mut self.events, false, &mut frame)
        };
        if !frame.is_empty() {
            out.push_back(frame.freeze());
        }
        ended
    }
}

impl<T: StreamTranslation> Reframe for Translating<T> {
    fn data(&mut self, data: &[u8], out: &mut VecDeque<Bytes>) -> bool {
        self.feed(data, false, out)
    }

    fn end(&mut self, out: &mut VecDeque<Bytes>) {
        self.feed(&[], true, out);
    }
}

/// An Anthropic event stream as OpenAI chunks: `data:` lines, and after
/// `message_stop`, `data: [DONE]`. An error event, a malformed event or an
/// upstream that ends early ends the client's stream with an OpenAI error
/// payload and no `[DONE]`.
struct AnthropicChunks {
    translator: ChunkTranslator,
}

impl StreamTranslation for AnthropicChunks {
    fn broken(&mut self, why: &str, out: &mut BytesMut) {
        broken_chunk(out, why);
    }

    fn translate(&mut self, events: &mut SseEvents, at_end: bool, out: &mut BytesMut) -> bool {
        while let Some((event, data)) = events.next_event() {
            match self.translator.feed(&event, &data) {
                Ok(chunks) => {
                    for chunk in chunks {
                        data_line(out, &chunk.to_string());
                    }
                    if self.translator.is_done() {
                        data_line(out, "[DONE]");
                        return true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Anthropic stream ended with an error.");
                    data_line(out, &e.to_openai().to_string());
                    return true;
                }
            }
        }
        if at_end {
            broken_chunk(out, "it ended before message_stop");
            return true;
        }
        false
    }
}

/// A Gemini event stream (`streamGenerateContent?alt=sse`) as OpenAI
/// chunks. Gemini's stream has no end marker: when it ends after a finish
/// reason, the usage chunk and `data: [DONE]` follow; an error event, a
/// malformed one or a stream that ends before a finish reason ends the
/// client's stream with an OpenAI error payload and no `[DONE]`.
struct GeminiChunks {
    translator: StreamTranslator,
}

impl StreamTranslation for GeminiChunks {
    fn broken(&mut self, why: &str, out: &mut BytesMut) {
        broken_chunk(out, why);
    }

    fn translate(&mut self, events: &mut SseEvents, at_end: bool, out: &mut BytesMut) -> bool {
        while let Some((_, data)) = events.next_event() {
            match self.translator.feed(&data) {
                Ok(chunks) => chunk_lines(out, &chunks),
                Err(e) => {
                    tracing::warn!(error = %e, "Gemini stream ended with an error.");
                    let error = serde_json::json!({"error": {
                        "message": format!("the upstream stream failed: {e}"),
                        "type": "upstream_error",
                        "code": "upstream_failed",
                    }});
                    data_line(out, &error.to_string());
                    return true;
                }
            }
        }
        if at_end {
            if !self.translator.is_finished() {
                broken_chunk(out, "it ended before a finish reason");
                return true;
            }
            done_lines(out, self.translator.finish());
            return true;
        }
        false
    }
}

/// A Gemini event stream as Anthropic's events, for a `/v1/messages`
/// client: each Gemini event becomes OpenAI chunks ([`StreamTranslator`]),
/// each chunk Anthropic events ([`ChunkEvents`]); the end of Gemini's
/// stream the usage and `message_stop`. A broken or failed stream ends with
/// an `error` event.
struct GeminiEvents {
    translator: StreamTranslator,
    events: ChunkEvents,
}

impl StreamTranslation for GeminiEvents {
    fn broken(&mut self, why: &str, out: &mut BytesMut) {
        tracing::warn!("Upstream stream broken: {why}.");
        let message = format!("the upstream stream broke off: {why}");
        event_lines(out, "error", &anthropic_api_error(&message));
    }

    fn translate(&mut self, events: &mut SseEvents, at_end: bool, out: &mut BytesMut) -> bool {
        while let Some((_, data)) = events.next_event() {
            match self.translator.feed(&data) {
                Ok(chunks) => {
                    if self.events.chunks(&chunks, out) {
                        return true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Gemini stream ended with an error.");
                    let message = format!("the upstream stream failed: {e}");
                    event_lines(out, "error", &anthropic_api_error(&message));
                    return true;
                }
            }
        }
        if at_end {
            if !self.translator.is_finished() {
                self.broken("it ended before a finish reason", out);
                return true;
            }
            self.events.finish(self.translator.finish(), out);
            return true;
        }
        false
    }
}

/// Ends an OpenAI client's stream with an error payload naming `why`.
fn broken_chunk(out: &mut BytesMut, why: &str) {
    tracing::warn!("Upstream stream broken: {why}.");
    let error = serde_json::json!({"error": {
        "message": format!("the upstream stream broke off: {why}"),
        "type": "upstream_error",
        "code": "upstream_failed",
    }});
    data_line(out, &error.to_string());
}

/// Writes OpenAI chunks as `data:` lines.
fn chunk_lines(out: &mut BytesMut, chunks: &[Value]) {
    for chunk in chunks {
        data_line(out, &chunk.to_string());
    }
}

/// Ends the OpenAI stream of an upstream stream that finished: its usage
/// chunk, when it reported one, then `data: [DONE]`.
fn done_lines(out: &mut BytesMut, usage: Option<Value>) {
    if let Some(usage) = usage {
        data_line(out, &usage.to_string());
    }
    data_line(out, "[DONE]");
}

fn data_line(frame: &mut BytesMut, payload: &str) {
    frame.extend_from_slice(b"data: ");
    frame.extend_from_slice(payload.as_bytes());
    frame.extend_from_slice(b"\n\n");
}

/// An OpenAI chunk stream as Anthropic's events, for a `/v1/messages` client
/// of a provider that speaks OpenAI's protocol: each `data:` payload goes
/// through an [`EventTranslator`] (`[DONE]` ends the message), each event is
/// written as `event:` and `data:` lines. An upstream that ends early gets
/// its message ended well-formed; a broken upstream stream ends with an
/// `error` event.
struct OpenAiEvents {
    translator: EventTranslator,
}

impl StreamTranslation for OpenAiEvents {
    fn broken(&mut self, why: &str, out: &mut BytesMut) {
        tracing::warn!("Upstream stream broken: {why}.");
        let message = format!("the upstream stream broke off: {why}");
        event_lines(out, "error", &anthropic_api_error(&message));
    }

    fn translate(&mut self, events: &mut SseEvents, at_end: bool, out: &mut BytesMut) -> bool {
        while let Some((_, data)) = events.next_event() {
            match self.translator.feed(&data) {
                Ok(translated) => {
                    for (name, data) in translated {
                        event_lines(out, name, &data);
                    }
                    if self.translator.is_done() {
                        return true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Upstream stream ended with an error.");
                    event_lines(out, "error", &anthropic_api_error(&e.to_string()));
                    return true;
                }
            }
        }
        if at_end {
            for (name, data) in self.translator.finish() {
                event_lines(out, name, &data);
            }
            return true;
        }
        false
    }
}

/// OpenAI chunks as Anthropic's events, for a `/v1/messages` client of a
/// provider whose stream is first translated into OpenAI chunks (Gemini,
/// Converse): each chunk goes through an [`EventTranslator`]. A chunk it
/// cannot translate ends the stream with an `error` event.
struct ChunkEvents {
    translator: EventTranslator,
}

impl ChunkEvents {
    fn new(public_model: &str) -> ChunkEvents {
        ChunkEvents {
            translator: EventTranslator::new(public_model),
        }
    }

    /// Writes the events of `chunks`; answers whether the message has
    /// ended (the rest of `chunks` then goes unwritten).
    fn chunks(&mut self, chunks: &[Value], out: &mut BytesMut) -> bool {
        chunks
            .iter()
            .any(|chunk| self.chunk(chunk.to_string().as_bytes(), out))
    }

    /// Ends the message of an upstream stream that finished: its usage
    /// chunk, when it reported one, then `[DONE]`.
    fn finish(&mut self, usage: Option<Value>, out: &mut BytesMut) {
        if let Some(usage) = usage {
            if self.chunk(usage.to_string().as_bytes(), out) {
                return;
            }
        }
        self.chunk(b"[DONE]", out);
    }

    /// Writes the events of one chunk's `data:` payload; answers whether
    /// the message has ended.
    fn chunk(&mut self, chunk: &[u8], out: &mut BytesMut) -> bool {
        match self.translator.feed(chunk) {
            Ok(translated) => {
                for (name, data) in translated {
                    event_lines(out, name, &data);
                }
                self.translator.is_done()
            }
            Err(e) => {
                tracing::warn!(error = %e, "Upstream stream could not be translated.");
                event_lines(out, "error", &anthropic_api_error(&e.to_string()));
                true
            }
        }
    }
}

fn anthropic_api_error(message: &str) -> Value {
    serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}})
}

fn event_lines(frame: &mut BytesMut, name: &str, data: &Value) {
    frame.extend_from_slice(b"event: ");
    frame.extend_from_slice(name.as_bytes());
    frame.extend_from_slice(b"\ndata: ");
    frame.extend_from_slice(data.to_string().as_bytes());
    frame.extend_from_slice(b"\n\n");
}

/// The usage an Anthropic event stream reports, read as it passes (the
/// relay's, for `/v1/messages` streams): input and cache counts from
/// `message_start`, output from the last `message_delta`.
#[derive(Debug)]
pub struct AnthropicUsage {
    events: SseEvents,
    translator: ChunkTranslator,
    reported: bool,
    seen: u64,
    broken: bool,
}

impl Default for AnthropicUsage {
    fn default() -> Self {
        AnthropicUsage {
            events: SseEvents::default(),
            translator: ChunkTranslator::new("", 0, false),
            reported: false,
            seen: 0,
            broken: false,
        }
    }
}

impl AnthropicUsage {
    pub fn feed(&mut self, chunk: &[u8]) {
        self.seen = self.seen.saturating_add(chunk.len() as u64);
        if self.broken {
            return;
        }
        if self.events.push(chunk).is_err() {
            self.broken = true;
            return;
        }
        while let Some((name, data)) = self.events.next_event() {
            if matches!(name.as_str(), "message_start" | "message_delta") {
                self.reported = true;
            }
            // Only the counts matter here; the chunks are dropped.
            let _ = self.translator.feed(&name, &data);
        }
    }

    /// The tokens reported, if any event reported usage.
    pub fn tokens(&self) -> Option<Tokens> {
        self.reported.then(|| tokens_of(&self.translator.usage()))
    }

    /// Bytes of the stream seen, for an estimate when it reported nothing.
    pub fn seen_bytes(&self) -> u64 {
        self.seen
    }
}

/// Server-sent events split out of a byte stream as it arrives: lines end
/// with LF, CRLF or CR, an empty line ends an event, `event:` names it,
/// `data:` lines are joined with LF, comments and other fields are skipped.
/// It holds at most [`EVENT_CAP`] bytes of an unfinished event.
#[derive(Debug, Default)]
struct SseEvents {
    buf: BytesMut,
    /// The event being read: its name and data so far.
    name: String,
    data: Vec<u8>,
    has_data: bool,
    ready: VecDeque<(String, Vec<u8>)>,
}

impl SseEvents {
    fn push(&mut self, chunk: &[u8]) -> Result<(), &'static str> {
        self.buf.extend_from_slice(chunk);
        while let Some(line) = self.next_line(false) {
            self.line(&line);
        }
        if self.buf.len() + self.data.len() > EVENT_CAP {
            return Err("an event longer than 1 MiB");
        }
        Ok(())
    }

    /// The stream ended: a last line without its end still counts, an
    /// unfinished event does not.
    fn finish(&mut self) {
        while let Some(line) = self.next_line(true) {
            self.line(&line);
        }
    }

    fn next_event(&mut self) -> Option<(String, Vec<u8>)> {
        self.ready.pop_front()
    }

    /// The next whole line, without its end. A CR at the end of the buffer
    /// waits for the next byte (an LF would belong to it) unless `at_end`.
    fn next_line(&mut self, at_end: bool) -> Option<BytesMut> {
        let pos = self.buf.iter().position(|&b| b == b'\n' || b == b'\r')?;
        let end = match self.buf[pos] {
            b'\r' if pos + 1 == self.buf.len() && !at_end => return None,
            b'\r' if self.buf.get(pos + 1) == Some(&b'\n') => pos + 2,
            _ => pos + 1,
        };
        let mut line = self.buf.split_to(end);
        line.truncate(pos);
        Some(line)
    }

    fn line(&mut self, line: &[u8]) {
        if line.is_empty() {
            if self.has_data || !self.name.is_empty() {
                let name = std::mem::take(&mut self.name);
                let data = std::mem::take(&mut self.data);
                self.ready.push_back((name, data));
            }
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"event" => self.name = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_and_vertex_paths_carry_the_model_and_method() {
        let vertex = ProviderOptions {
            project: Some("my-project".into()),
            location: Some("europe-west4".into()),
            ..Default::default()
        };
        let none = ProviderOptions::default();
        assert_eq!(
            provider_path(
                ProviderKind::Gemini,
                &none,
                "p",
                GEMINI_GENERATE,
                "gemini-2.0-flash"
            )
            .unwrap(),
            "/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            provider_path(ProviderKind::Vertex, &vertex, "p", GEMINI_STREAM, "gemini-2.5-pro")
                .unwrap(),
            "/projects/my-project/locations/europe-west4/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert!(provider_path(ProviderKind::Vertex, &none, "p", GEMINI_GENERATE, "g").is_err());
        assert!(provider_path(ProviderKind::Gemini, &none, "p", "/chat/completions", "g").is_err());
        assert_eq!(
            provider_path(ProviderKind::Gemini, &none, "p", GEMINI_EMBED, "e").unwrap(),
            "/models/e:batchEmbedContents"
        );
        assert_eq!(
            provider_path(ProviderKind::Vertex, &vertex, "p", VERTEX_PREDICT, "e").unwrap(),
            "/projects/my-project/locations/europe-west4/publishers/google/models/e:predict"
        );
        // Each kind's embeddings method only.
        assert!(provider_path(ProviderKind::Gemini, &none, "p", VERTEX_PREDICT, "e").is_err());
        assert!(provider_path(ProviderKind::Vertex, &vertex, "p", GEMINI_EMBED, "e").is_err());
        for model in ["models/x", "../x", "a:b", "", "a?b"] {
            let e = provider_path(ProviderKind::Gemini, &none, "p", GEMINI_GENERATE, model)
                .unwrap_err();
            assert!(
                e.to_string().contains("not a Gemini model name"),
                "{model}: {e}"
            );
        }
    }

    #[test]
    fn gemini_requests_pick_the_method_and_refuse_other_endpoints() {
        let body = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let (path, sent) = upstream_request(
            Client::OpenAi,
            ProviderKind::Gemini,
            "p",
            "/chat/completions",
            body,
            None,
            "m",
        )
        .unwrap()
        .unwrap();
        assert_eq!(path, GEMINI_STREAM);
        let sent: Value = serde_json::from_slice(&sent).unwrap();
        assert!(sent.get("stream").is_none() && sent.get("model").is_none());
        // Embeddings: batchEmbedContents for AI Studio (each request naming
        // the upstream model), predict for Vertex AI.
        let embed = br#"{"model":"m","input":["a","b"],"dimensions":8}"#;
        for (kind, method) in [
            (ProviderKind::Gemini, GEMINI_EMBED),
            (ProviderKind::Vertex, VERTEX_PREDICT),
        ] {
            let (path, sent) = upstream_request(
                Client::OpenAi,
                kind,
                "p",
                "/embeddings",
                embed,
                Some("gemini-embedding-001"),
                "m",
            )
            .unwrap()
            .unwrap();
            assert_eq!(path, method);
            let sent: Value = serde_json::from_slice(&sent).unwrap();
            match kind {
                ProviderKind::Gemini => {
                    assert_eq!(sent["requests"][1]["model"], "models/gemini-embedding-001");
                    assert_eq!(sent["requests"][1]["outputDimensionality"], 8);
                }
                _ => assert_eq!(sent["instances"][1]["content"], "b"),
            }
        }
        let e = upstream_request(
            Client::OpenAi,
            ProviderKind::Gemini,
            "p",
            "/embeddings",
            br#"{"model":"m","input":[[1,2]]}"#,
            None,
            "m",
        )
        .unwrap()
        .unwrap_err();
        assert!(e.to_string().contains("`input[0]`"), "{e}");
        for path in ["/responses", "/completions"] {
            let e = upstream_request(
                Client::OpenAi,
                ProviderKind::Vertex,
                "p",
                path,
                body,
                None,
                "m",
            )
            .unwrap()
            .unwrap_err();
            assert!(e.to_string().contains("kind vertex"), "{path}: {e}");
        }
        // An Anthropic request goes through a chat completion request.
        let messages = br#"{"model":"m","max_tokens":9,"system":"be brief","messages":[{"role":"user","content":"hi"}]}"#;
        let (path, sent) = upstream_request(
            Client::Anthropic,
            ProviderKind::Gemini,
            "p",
            "/messages",
            messages,
            Some("g"),
            "m",
        )
        .unwrap()
        .unwrap();
        assert_eq!(path, GEMINI_GENERATE);
        let sent: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(sent["generationConfig"]["maxOutputTokens"], 9);
        assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "be brief");
    }

    #[test]
    fn azure_paths_carry_the_deployment_and_api_version_and_others_pass() {
        let options = ProviderOptions {
            api_version: Some("2025-01-01-preview".into()),
            ..Default::default()
        };
        let path = |kind, path, model| provider_path(kind, &options, "p", path, model);
        assert_eq!(
            path(ProviderKind::Azure, "/chat/completions", "gpt-4o").unwrap(),
            "/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview"
        );
        assert_eq!(
            provider_path(
                ProviderKind::Azure,
                &ProviderOptions::default(),
                "p",
                "/embeddings",
                "emb.v3_small"
            )
            .unwrap(),
            "/openai/deployments/emb.v3_small/embeddings?api-version=2024-10-21"
        );
        assert_eq!(
            path(ProviderKind::Azure, "/responses", "gpt-4o").unwrap(),
            "/openai/v1/responses"
        );
        for model in ["gpt/4o", "../admin", "a?b", "", "x y"] {
            let e = path(ProviderKind::Azure, "/chat/completions", model).unwrap_err();
            assert!(
                e.to_string().contains("not an Azure deployment name"),
                "{model}: {e}"
            );
        }
        assert!(path(ProviderKind::Azure, "/messages", "gpt-4o").is_err());
        for kind in [
            ProviderKind::OpenAi,
            ProviderKind::Anthropic,
            ProviderKind::Mock,
        ] {
            assert_eq!(
                path(kind, "/chat/completions", "gpt/4o").unwrap(),
                "/chat/completions"
            );
        }
    }
    use http_body_util::Full;

    fn events(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut sse = SseEvents::default();
        let mut out = Vec::new();
        for c in chunks {
            sse.push(c).unwrap();
            while let Some((name, data)) = sse.next_event() {
                out.push((name, String::from_utf8(data).unwrap()));
            }
        }
        sse.finish();
        while let Some((name, data)) = sse.next_event() {
            out.push((name, String::from_utf8(data).unwrap()));
        }
        out
    }

    #[test]
    fn events_split_on_any_line_end_and_across_chunks() {
        let whole: &[u8] = b"event: ping\ndata: {}\n\n: comment\r\nevent:a\r\ndata: 1\r\ndata: 2\r\n\r\nevent: b\rdata: x\r\r";
        let expected = vec![
            ("ping".to_owned(), "{}".to_owned()),
            ("a".to_owned(), "1\n2".to_owned()),
            ("b".to_owned(), "x".to_owned()),
        ];
        assert_eq!(events(&[whole]), expected);
        // Byte by byte, every split point (a CR then LF across chunks too).
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(events(&bytes), expected);
    }

    #[test]
    fn an_event_past_the_cap_is_an_error() {
        let mut sse = SseEvents::default();
        let big = vec![b'x'; EVENT_CAP + 1];
        assert!(sse.push(b"data: ").is_ok());
        assert!(sse.push(&big).is_err());
    }

    async fn client_text(upstream: &'static [u8]) -> String {
        let body: UpBody = Full::new(Bytes::from_static(upstream))
            .map_err(|e| match e {})
            .boxed_unsync();
        let out = client_stream(Client::OpenAi, ProviderKind::Anthropic, body, "public")
            .collect()
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn an_anthropic_stream_becomes_openai_chunks_then_done() {
        let text = client_text(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        )
        .await;
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(text.contains("\"content\":\"Hi\""), "{text}");
        assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
        assert!(text.contains("\"model\":\"public\""), "{text}");
        let usage = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
            .expect("a usage chunk");
        assert_eq!(usage["prompt_tokens"], 7);
        assert_eq!(usage["completion_tokens"], 3);
    }

    #[tokio::test]
    async fn a_stream_cut_short_or_failing_ends_with_an_error_and_no_done() {
        let cut = client_text(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n",
        )
        .await;
        assert!(!cut.contains("[DONE]"), "{cut}");
        assert!(cut.contains("ended before message_stop"), "{cut}");
        let failed = client_text(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        )
        .await;
        assert!(!failed.contains("[DONE]"), "{failed}");
        assert!(failed.contains("\"error\""), "{failed}");
    }

    #[test]
    fn requests_translate_for_anthropic_and_refuse_other_endpoints() {
        let body = br#"{"model":"public","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}]}"#;
        let (path, sent) = upstream_request(
            Client::OpenAi,
            ProviderKind::Anthropic,
            "claude",
            "/chat/completions",
            body,
            Some("claude-x"),
            "public",
        )
        .unwrap()
        .unwrap();
        assert_eq!(path, "/messages");
        let sent: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(sent["model"], "claude-x");
        assert_eq!(sent["system"], "Be brief.");
        assert_eq!(sent["max_tokens"], ANTHROPIC_DEFAULT_MAX_TOKENS);
        let e = upstream_request(
            Client::OpenAi,
            ProviderKind::Anthropic,
            "claude",
            "/embeddings",
            body,
            None,
            "public",
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.to_string().contains("chat completions only"), "{e}");
        assert!(upstream_request(
            Client::OpenAi,
            ProviderKind::OpenAi,
            "o",
            "/chat/completions",
            body,
            None,
            "public"
        )
        .is_none());
    }

    #[test]
    fn anthropic_errors_reach_the_client_in_openai_shape() {
        let (status, body, _) = client_answer(
            Client::OpenAi,
            ProviderKind::Anthropic,
            StatusCode::TOO_MANY_REQUESTS,
            Bytes::from_static(
                br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
            ),
            "public",
        )
        .unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["message"], "slow down");
        assert!(body["error"]["type"].is_string(), "{body}");
    }
}
