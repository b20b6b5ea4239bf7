//! Strict Amazon Bedrock runtime endpoints: `POST /model/{modelId}/converse`
//! and `/converse-stream` (Converse), `/invoke` and
//! `/invoke-with-response-stream` (InvokeModel, Anthropic models only),
//! every request SigV4-signed ([`super::aws::verify`]: a wrong or missing
//! signature, an unknown key, another region or service, a missing or
//! unexpected session token are 403s), and STS at `POST /sts/`.
//!
//! Refused as Bedrock refuses (`{"message"}` with `x-amzn-errortype`): a
//! model not in [`BedrockMock::models`] is 404 `ResourceNotFoundException`;
//! a Converse body with unknown fields, no messages, turns that do not
//! alternate starting with `user`, a content block that is not exactly one
//! of `text`, `image`, `toolUse`, `toolResult`, a `toolResult` answering no
//! `toolUse` of the turn before, tool blocks without `toolConfig`, or an
//! `inferenceConfig` with unknown fields or a `maxTokens` below 1 is 400
//! `ValidationException`; so is an InvokeModel body with a `model` or
//! `stream` field, without `anthropic_version: bedrock-2023-05-31`, without
//! `max_tokens` or `messages`, or sent to a model that is not Anthropic's.
//!
//! The answer is `tok1 tok2 ...` as the config's token count (cut by
//! `maxTokens`, then `max_tokens`), or, when the body declares tools and
//! the last user turn's text contains "use a tool" ([`super::TOOL_TRIGGER`]),
//! a `toolUse` of the first tool with input `{"text": "tok1 ..."}` (for
//! InvokeModel, a `tool_use` block; its `tool_result`s must answer the
//! `tool_use` ids of the message before). Input
//! tokens count the words of the system prompt and every text block.
//! Streams are event-stream frames, one delta a token after the token
//! delay; [`BedrockMock::stream_exception_after`] ends a Converse stream
//! with a `throttlingException` after that many deltas.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use super::anthropic::TOOL_TRIGGER;
use super::aws::{error, event_frame, exception_frame, verify};
use super::config::Plan;
use super::state::Shared;
use super::wire;

mod request;

use request::Converse;

/// The long-term access key a default [`BedrockMock`] accepts (no session
/// token).
pub const BEDROCK_ACCESS_KEY_ID: &str = "AKIDMOCKBEDROCK";
pub const BEDROCK_SECRET_ACCESS_KEY: &str = "mock/bedrock+secret/KEY";
/// Temporary credentials a default [`BedrockMock`] accepts, only with
/// their session token.
pub const BEDROCK_SESSION_ACCESS_KEY_ID: &str = "ASIAMOCKSESSION";
pub const BEDROCK_SESSION_SECRET_ACCESS_KEY: &str = "mock/session+secret/KEY";
pub const BEDROCK_SESSION_TOKEN: &str = "mock-session-token/FwoGZXIvYXdzE";
/// The web identity token the mock STS accepts, and the role.
pub const WEB_IDENTITY_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.mock-web-identity.sig";
pub const WEB_IDENTITY_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/obleth-mock";
/// The temporary credentials the mock STS hands out (accepted by Bedrock).
pub const STS_ACCESS_KEY_ID: &str = "ASIAMOCKFROMSTS";

/// One set of credentials the mock knows.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// How the Bedrock endpoints and STS behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockMock {
    /// The region requests must be signed for.
    pub region: String,
    /// The credentials accepted, besides [`BedrockMock::sts_key`].
    pub keys: Vec<AwsKey>,
    /// What STS hands out (and Bedrock then accepts).
    pub sts_key: AwsKey,
    /// The role STS lets assume, and the token it wants.
    pub role_arn: String,
    pub web_identity_token: String,
    /// How long STS's credentials are valid, in seconds.
    pub sts_lifetime_secs: u32,
    /// The models that exist.
    pub models: Vec<String>,
    /// Reported as `cacheReadInputTokens` / `cacheWriteInputTokens`.
    pub cache_read_tokens: Option<u32>,
    pub cache_write_tokens: Option<u32>,
    /// A Converse stream ends with a `throttlingException` after this many
    /// deltas.
    pub stream_exception_after: Option<u32>,
}

impl Default for BedrockMock {
    fn default() -> Self {
        BedrockMock {
            region: "us-east-1".to_owned(),
            keys: vec![
                AwsKey {
                    access_key_id: BEDROCK_ACCESS_KEY_ID.to_owned(),
                    secret_access_key: BEDROCK_SECRET_ACCESS_KEY.to_owned(),
                    session_token: None,
                },
                AwsKey {
                    access_key_id: BEDROCK_SESSION_ACCESS_KEY_ID.to_owned(),
                    secret_access_key: BEDROCK_SESSION_SECRET_ACCESS_KEY.to_owned(),
                    session_token: Some(BEDROCK_SESSION_TOKEN.to_owned()),
                },
            ],
            sts_key: AwsKey {
                access_key_id: STS_ACCESS_KEY_ID.to_owned(),
                secret_access_key: "mock/sts+secret/KEY".to_owned(),
                session_token: Some("mock-sts-session-token/IQoJb3JpZ2lu".to_owned()),
            },
            role_arn: WEB_IDENTITY_ROLE_ARN.to_owned(),
            web_identity_token: WEB_IDENTITY_TOKEN.to_owned(),
            sts_lifetime_secs: 3600,
            models: [
                "anthropic.claude-3-5-sonnet-20240620-v1:0",
                "us.anthropic.claude-3-5-haiku-20241022-v1:0",
                "amazon.nova-pro-v1:0",
            ]
            .map(str::to_owned)
            .to_vec(),
            cache_read_tokens: None,
            cache_write_tokens: None,
            stream_exception_after: None,
        }
    }
}

impl BedrockMock {
    /// The known credentials of `access_key_id`.
    pub(crate) fn key(&self, access_key_id: &str) -> Option<&AwsKey> {
        self.keys
            .iter()
            .chain(std::iter::once(&self.sts_key))
            .find(|k| k.access_key_id == access_key_id)
    }
}

fn invalid(message: impl AsRef<str>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "ValidationException",
        message.as_ref(),
    )
}

fn is_anthropic(model: &str) -> bool {
    model.starts_with("anthropic.") || model.contains(".anthropic.")
}

/// `POST /model/{modelId}/{operation}`.
pub(crate) async fn model(
    State(shared): State<Arc<Shared>>,
    Extension(plan): Extension<Plan>,
    Path((model, operation)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = shared.config().bedrock;
    if let Err(refusal) = verify(&config, &method, &uri, &headers, &body) {
        return refusal;
    }
    if !config.models.contains(&model) {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "Could not resolve the foundation model from the provided model identifier.",
        );
    }
    match operation.as_str() {
        "converse" | "converse-stream" => {
            let request = match Converse::parse(&body) {
                Ok(request) => request,
                Err(message) => return invalid(message),
            };
            let answer = Answer::new(&config, &plan, &request);
            if operation == "converse" {
                Json(answer.converse(&model)).into_response()
            } else {
                stream(
                    answer.converse_events(config.stream_exception_after),
                    plan.token_delay,
                )
            }
        }
        "invoke" | "invoke-with-response-stream" => {
            if !is_anthropic(&model) {
                return invalid("The mock serves InvokeModel for Anthropic models only.");
            }
            let request = match Converse::parse_anthropic(&body) {
                Ok(request) => request,
                Err(message) => return invalid(message),
            };
            let answer = Answer::new(&config, &plan, &request);
            if operation == "invoke" {
                Json(answer.message(&model)).into_response()
            } else {
                stream(answer.anthropic_events(&model), plan.token_delay)
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "The operation is not known.",
        ),
    }
}

fn stream(frames: Vec<Bytes>, token_delay: std::time::Duration) -> Response {
    let stream = futures_util::stream::iter(frames).then(move |frame| async move {
        if !token_delay.is_zero() {
            tokio::time::sleep(token_delay).await;
        }
        Ok::<_, Infallible>(frame)
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    response
}

/// What the mock answers a request.
struct Answer {
    tool: Option<String>,
    tokens: u32,
    stop: &'static str,
    prompt_tokens: u32,
    cache_read: Option<u32>,
    cache_write: Option<u32>,
}

impl Answer {
    fn new(config: &BedrockMock, plan: &Plan, request: &Converse) -> Answer {
        let tool = request
            .tool
            .clone()
            .filter(|_| request.last_user_text.to_lowercase().contains(TOOL_TRIGGER));
        let (tokens, stop) = match request.max_tokens {
            Some(limit) if limit < u64::from(plan.completion_tokens) => {
                (u32::try_from(limit).unwrap_or(u32::MAX), "max_tokens")
            }
            _ if tool.is_some() => (plan.completion_tokens, "tool_use"),
            _ => (plan.completion_tokens, "end_turn"),
        };
        Answer {
            tool,
            tokens,
            stop,
            prompt_tokens: request.prompt_tokens,
            cache_read: config.cache_read_tokens,
            cache_write: config.cache_write_tokens,
        }
    }

    fn text(&self) -> String {
        (1..=self.tokens).map(wire::token).collect()
    }

    fn usage(&self) -> Value {
        let mut usage = json!({
            "inputTokens": self.prompt_tokens,
            "outputTokens": self.tokens,
            "totalTokens": self.prompt_tokens + self.tokens + self.cache_read.unwrap_or(0) + self.cache_write.unwrap_or(0),
        });
        if let Some(n) = self.cache_read {
            usage["cacheReadInputTokens"] = json!(n);
        }
        if let Some(n) = self.cache_write {
            usage["cacheWriteInputTokens"] = json!(n);
        }
        usage
    }

    fn tool_use_id(&self) -> String {
        format!("tooluse_{}", uuid::Uuid::new_v4().simple())
    }

    fn converse(&self, _model: &str) -> Value {
        let block = match &self.tool {
            Some(name) => {
                json!({"toolUse": {"toolUseId": self.tool_use_id(), "name": name, "input": {"text": self.text()}}})
            }
            None => json!({"text": self.text()}),
        };
        json!({
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": self.stop,
            "usage": self.usage(),
            "metrics": {"latencyMs": 1},
        })
    }

    fn converse_events(&self, exception_after: Option<u32>) -> Vec<Bytes> {
        let mut frames = vec![event_frame("messageStart", &json!({"role": "assistant"}))];
        match &self.tool {
            Some(name) => {
                frames.push(event_frame("contentBlockStart", &json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": self.tool_use_id(), "name": name}}})));
                let input = json!({"text": self.text()}).to_string();
                let (a, b) = input.split_at(input.len() / 2);
                for piece in [a, b] {
                    frames.push(event_frame(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}),
                    ));
                }
            }
            None => {
                for i in 1..=self.tokens {
                    if exception_after == Some(i - 1) {
                        frames.push(exception_frame(
                            "throttlingException",
                            "Too many tokens, please wait before trying again.",
                        ));
                        return frames;
                    }
                    frames.push(event_frame(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": 0, "delta": {"text": wire::token(i)}}),
                    ));
                }
            }
        }
        frames.push(event_frame(
            "contentBlockStop",
            &json!({"contentBlockIndex": 0}),
        ));
        frames.push(event_frame(
            "messageStop",
            &json!({"stopReason": self.stop}),
        ));
        frames.push(event_frame(
            "metadata",
            &json!({"usage": self.usage(), "metrics": {"latencyMs": 1}}),
        ));
        frames
    }

    fn anthropic_usage(&self) -> Value {
        json!({
            "input_tokens": self.prompt_tokens,
            "output_tokens": self.tokens,
            "cache_read_input_tokens": self.cache_read.unwrap_or(0),
            "cache_creation_input_tokens": self.cache_write.unwrap_or(0),
        })
    }

    fn anthropic_block(&self) -> Value {
        match &self.tool {
            Some(name) => {
                json!({"type": "tool_use", "id": format!("toolu_bdrk_{}", uuid::Uuid::new_v4().simple()), "name": name, "input": {"text": self.text()}})
            }
            None => json!({"type": "text", "text": self.text()}),
        }
    }

    fn message(&self, model: &str) -> Value {
        json!({
            "id": format!("msg_bdrk_{}", uuid::Uuid::new_v4().simple()),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [self.anthropic_block()],
            "stop_reason": self.stop,
            "stop_sequence": null,
            "usage": self.anthropic_usage(),
        })
    }

    fn anthropic_events(&self, model: &str) -> Vec<Bytes> {
        let chunk = |event: Value| {
            let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
            event_frame("chunk", &json!({"bytes": bytes}))
        };
        let mut start_usage = self.anthropic_usage();
        start_usage["output_tokens"] = json!(1);
        let mut frames = vec![chunk(json!({"type": "message_start", "message": {
            "id": format!("msg_bdrk_{}", uuid::Uuid::new_v4().simple()), "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage,
        }}))];
        if self.tool.is_some() {
            let mut block = self.anthropic_block();
            let input = block["input"].to_string();
            block["input"] = json!({});
            frames.push(chunk(
                json!({"type": "content_block_start", "index": 0, "content_block": block}),
            ));
            frames.push(chunk(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input}})));
        } else {
            frames.push(chunk(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            for i in 1..=self.tokens {
                frames.push(chunk(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": wire::token(i)}})));
            }
        }
        frames.push(chunk(json!({"type": "content_block_stop", "index": 0})));
        frames.push(chunk(json!({"type": "message_delta", "delta": {"stop_reason": self.stop, "stop_sequence": null}, "usage": {"output_tokens": self.tokens}})));
        frames.push(chunk(json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": self.prompt_tokens, "outputTokenCount": self.tokens}})));
        frames
    }
}
