//! What a `bedrock` provider is sent and answers. OpenAI clients' chat
//! completions go to Converse (`/model/{id}/converse`, or
//! `/converse-stream` for a stream); Anthropic clients (`/v1/messages`) of
//! an Anthropic model (`anthropic.…`, `us.anthropic.…`) go natively to
//! InvokeModel (`/invoke`, `/invoke-with-response-stream`) with the
//! Anthropic body, and those of other models through chat completions to
//! Converse. Streams arrive in AWS event-stream framing, read as SSE
//! ([`crate::aws::frames`]) and translated here into the client's events.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::{
    broken_chunk, chunk_lines, data_line, done_lines, event_lines, json_body, to_bytes, tokens_of,
    unix_now, Answer, ChunkEvents, Client, SseEvents, StreamTranslation, Translating,
};
use crate::aws::frames::EventStreamSse;
use crate::error::ApiError;
use crate::translate::anthropic::{
    chat_completion_to_message, messages_request_to_chat, usage_from_anthropic,
};
use crate::translate::bedrock::{
    bedrock_error_to_openai, chat_request_to_converse, converse_to_chat_completion,
    exception_status, is_anthropic_model, messages_request_to_invoke, StreamTranslator,
};
use crate::upstream::UpBody;
use obleth_config::model::ProviderKind;

/// The methods a `bedrock` provider is sent requests to, after the model's
/// path ([`path`]).
pub const CONVERSE: &str = "/converse";
pub const CONVERSE_STREAM: &str = "/converse-stream";
pub const INVOKE: &str = "/invoke";
pub const INVOKE_STREAM: &str = "/invoke-with-response-stream";

/// Everything but RFC 3986's unreserved characters is escaped in the
/// model's path segment: `:` (`…-v1:0`) and `/` (an inference profile's
/// ARN) included, as AWS's SDKs send them.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The upstream method and body for a client's request of `path`.
pub fn request(
    client: Client,
    provider: &str,
    path: &'static str,
    body: &[u8],
    model: &str,
) -> Result<(&'static str, Bytes), ApiError> {
    let value = json_body(body)?;
    let stream = value.get("stream").and_then(Value::as_bool) == Some(true);
    let bad = |e: crate::translate::TranslateError| ApiError::BadRequest(e.to_string());
    let converse = |chat: &Value| -> Result<(&'static str, Bytes), ApiError> {
        let translated = chat_request_to_converse(chat).map_err(bad)?;
        let method = if stream { CONVERSE_STREAM } else { CONVERSE };
        Ok((method, to_bytes(&translated)?))
    };
    match client {
        Client::OpenAi if path == "/chat/completions" => converse(&value),
        Client::OpenAi => Err(ApiError::BadRequest(format!(
            "provider `{provider}` (kind bedrock) serves chat completions only, not {}",
            path.trim_start_matches('/')
        ))),
        Client::Anthropic if is_anthropic_model(model) => {
            let translated = messages_request_to_invoke(&value).map_err(bad)?;
            let method = if stream { INVOKE_STREAM } else { INVOKE };
            Ok((method, to_bytes(&translated)?))
        }
        Client::Anthropic => converse(&messages_request_to_chat(&value, model).map_err(bad)?),
    }
}

/// A Bedrock model id or inference profile ARN: 1 to 512 letters, digits
/// and `.`, `_`, `-`, `:`, `/`.
fn is_model_id(model: &str) -> bool {
    (1..=512).contains(&model.len())
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'))
}

/// `/model/{id}{method}`, the id percent-encoded as one path segment.
pub fn path<'p>(provider: &str, method: &'p str, model: &str) -> Result<Cow<'p, str>, ApiError> {
    if !matches!(method, CONVERSE | CONVERSE_STREAM | INVOKE | INVOKE_STREAM) {
        return Err(ApiError::BadRequest(format!(
            "provider `{provider}` (kind bedrock) does not serve {}",
            method.trim_start_matches('/')
        )));
    }
    if !is_model_id(model) {
        return Err(ApiError::BadRequest(format!(
            "model `{}` is not a Bedrock model id (letters, digits, `.`, `_`, `-`, `:` and `/`) for provider `{provider}`",
            model.escape_debug()
        )));
    }
    Ok(Cow::Owned(format!(
        "/model/{}{method}",
        utf8_percent_encode(model, SEGMENT)
    )))
}

/// A Bedrock error answer with its `x-amzn-errortype` header's type
/// (`ThrottlingException`) put into the body as `__type`, where
/// [`answer`], which sees only the body, reads it. Other answers, and
/// other kinds', are as they were.
pub fn with_error_type(kind: ProviderKind, parts: &http::response::Parts, body: Bytes) -> Bytes {
    if kind != ProviderKind::Bedrock || parts.status.is_success() {
        return body;
    }
    let Some(kind) = parts
        .headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.split(':').next().unwrap_or(t))
        .filter(|t| !t.is_empty())
    else {
        return body;
    };
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut object)) => {
            object.insert("__type".into(), Value::String(kind.to_owned()));
            serde_json::to_vec(&object).map_or(body, Bytes::from)
        }
        _ => body,
    }
}

/// A whole Bedrock answer in the client's protocol, with its tokens; an
/// error in OpenAI's shape (the `/v1/messages` route reshapes it).
pub fn answer(
    client: Client,
    status: StatusCode,
    answer: &[u8],
    public_model: &str,
) -> Result<Answer, ApiError> {
    if !status.is_success() {
        let body = bedrock_error_to_openai(status.as_u16(), None, answer);
        return Ok((status, to_bytes(&body)?, None));
    }
    let unreadable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "Bedrock answer could not be translated.");
        ApiError::UpstreamFailed
    };
    let mut value: Value = serde_json::from_slice(answer).map_err(|e| unreadable(&e))?;
    // InvokeModel's answer to an Anthropic client is Anthropic's message.
    if client == Client::Anthropic && value.get("output").is_none() {
        if value.get("type").and_then(Value::as_str) != Some("message") {
            return Err(unreadable(&"neither a Converse answer nor a message"));
        }
        let tokens = value
            .get("usage")
            .map(usage_from_anthropic)
            .map(|u| tokens_of(&u));
        value["model"] = Value::String(public_model.to_owned());
        return Ok((status, to_bytes(&value)?, tokens));
    }
    let id = format!("chatcmpl-bedrock-{}", uuid::Uuid::new_v4().simple());
    let (completion, usage) = converse_to_chat_completion(&value, public_model, unix_now(), &id)
        .map_err(|e| unreadable(&e))?;
    let tokens = usage.as_ref().map(tokens_of);
    if client == Client::Anthropic {
        let (message, _) =
            chat_completion_to_message(&completion, public_model).map_err(|e| unreadable(&e))?;
        return Ok((status, to_bytes(&message)?, tokens));
    }
    Ok((status, to_bytes(&completion)?, tokens))
}

/// A Bedrock stream in the client's protocol.
pub fn stream(client: Client, upstream: UpBody, public_model: &str) -> UpBody {
    let events = EventStreamSse::boxed(upstream);
    let id = format!("chatcmpl-bedrock-{}", uuid::Uuid::new_v4().simple());
    let translator = StreamTranslator::new(public_model, unix_now(), id);
    match client {
        Client::OpenAi => Translating::boxed(events, BedrockChunks { translator }),
        Client::Anthropic => Translating::boxed(
            events,
            BedrockEvents {
                translator,
                events: ChunkEvents::new(public_model),
                public_model: public_model.to_owned(),
            },
        ),
    }
}

/// An `exception` event's type and message.
fn exception(data: &[u8]) -> (String, String) {
    let value: Option<Value> = serde_json::from_slice(data).ok();
    let field = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    (field("exception"), field("message"))
}

/// ConverseStream's events as OpenAI chunks; after `messageStop` and the
/// end of the stream, the usage chunk and `data: [DONE]`. An exception, a
/// malformed event or a stream that ends before `messageStop` ends the
/// client's stream with an OpenAI error payload and no `[DONE]`.
struct BedrockChunks {
    translator: StreamTranslator,
}

impl StreamTranslation for BedrockChunks {
    fn broken(&mut self, why: &str, out: &mut BytesMut) {
        broken_chunk(out, why);
    }

    fn translate(&mut self, events: &mut SseEvents, at_end: bool, out: &mut BytesMut) -> bool {
        while let Some((name, data)) = events.next_event() {
            if name == "exception" {
                let (kind, message) = exception(&data);
                tracing::warn!(exception = %kind, "Bedrock stream ended with an exception.");
                let error = serde_json::json!({"error": {
                    "message": format!("the upstream stream failed: {message}"),
                    "type": if exception_status(&kind) == 429 { "rate_limit_error" } else { "upstream_error" },
                    "code": kind,
                }});
                data_line(out, &error.to_string());
                return true;
            }
            match self.translator.feed(&name, &data) {
                Ok(chunks) => chunk_lines(out, &chunks),
                Err(e) => {
                    broken_chunk(out, &e.to_string());
                    return true;
                }
            }
        }
        if at_end {
            if !self.translator.is_finished() {
                broken_chunk(out, "it ended before messageStop");
                return true;
            }
            done_lines(out, self.translator.finish());
            return true;
        }
        false
    }
}

/// A Bedrock stream as Anthropic's events, for a `/v1/messages` client:
/// InvokeModelWithResponseStream's events are Anthropic's already and pass
/// as they are (the model renamed to the public one); ConverseStream's go
/// through OpenAI chunks ([`StreamTranslator`]) to Anthropic events
/// ([`ChunkEvents`]). An exception ends with an `error` event.
struct BedrockEvents {
    translator: StreamTranslator,
    events: ChunkEvents,
    public_model: String,
}

impl BedrockEvents {
    fn error(&mut self, out: &mut BytesMut, kind: &str, message: &str) {
        tracing::warn!(%message, "Bedrock stream ended with an error.");
        let data =
            serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
        event_lines(out, "error", &data);
    }

    /// Whether `name` is one of ConverseStream's events.
    fn is_converse(name: &str) -> bool {
        matches!(
            name,
            "messageStart"
                | "contentBlockStart"
                | "contentBlockDelta"
                | "contentBlockStop"
                | "messageStop"
                | "metadata"
        )
    }
}

impl StreamTranslation for BedrockEvents {
    fn broken(&mut self, why: &str, out: &mut BytesMut) {
        self.error(
            out,
            "api_error",
            &format!("the upstream stream broke off: {why}"),
        );
    }

    fn translate(&mut self, events: &mut SseEvents, at_end: bool, out: &mut BytesMut) -> bool {
        while let Some((name, data)) = events.next_event() {
            if name == "exception" {
                let (kind, message) = exception(&data);
                let anthropic_kind = match exception_status(&kind) {
                    429 => "rate_limit_error",
                    400 => "invalid_request_error",
                    503 => "overloaded_error",
                    _ => "api_error",
                };
                self.error(
                    out,
                    anthropic_kind,
                    &format!("the upstream stream failed: {message}"),
                );
                return true;
            }
            if !Self::is_converse(&name) {
                // Anthropic's own event (InvokeModelWithResponseStream).
                let Ok(mut value) = serde_json::from_slice::<Value>(&data) else {
                    self.broken("an event that is not JSON", out);
                    return true;
                };
                if name == "message_start" {
                    if let Some(message) = value.get_mut("message").and_then(Value::as_object_mut) {
                        message.insert("model".into(), Value::String(self.public_model.clone()));
                    }
                }
                event_lines(out, &name, &value);
                if name == "message_stop" || name == "error" {
                    return true;
                }
                continue;
            }
            match self.translator.feed(&name, &data) {
                Ok(chunks) => {
                    if self.events.chunks(&chunks, out) {
                        return true;
                    }
                }
                Err(e) => {
                    self.broken(&e.to_string(), out);
                    return true;
                }
            }
        }
        if at_end {
            if self.translator.is_finished() {
                self.events.finish(self.translator.finish(), out);
            } else {
                self.broken("it ended before the message did", out);
            }
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_one_encoded_segment_and_unsafe_ones_refused() {
        for (model, expected) in [
            ("anthropic.claude-3-5-sonnet-20240620-v1:0", "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"),
            ("us.amazon.nova-pro-v1:0", "/model/us.amazon.nova-pro-v1%3A0/converse"),
            (
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0",
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            ),
        ] {
            assert_eq!(path("p", CONVERSE, model).unwrap(), expected);
        }
        assert_eq!(
            path("p", INVOKE_STREAM, "a.b").unwrap(),
            "/model/a.b/invoke-with-response-stream"
        );
        for model in [
            "",
            "a b",
            "a?b",
            "a#b",
            "a%2Fb",
            "ä",
            "a\nb",
            &"x".repeat(513),
        ] {
            let e = path("p", CONVERSE, model).unwrap_err();
            assert!(
                e.to_string().contains("not a Bedrock model id"),
                "{model}: {e}"
            );
        }
        assert!(path("p", "/chat/completions", "a").is_err());
    }

    #[test]
    fn the_error_type_header_reaches_the_clients_error_code() {
        let parts = |status: u16, errortype: Option<&str>| {
            let mut builder = http::Response::builder().status(status);
            if let Some(t) = errortype {
                builder = builder.header("x-amzn-errortype", t);
            }
            builder.body(()).unwrap().into_parts().0
        };
        let body = Bytes::from_static(br#"{"message":"Too many requests"}"#);
        let typed = with_error_type(
            ProviderKind::Bedrock,
            &parts(
                429,
                Some("ThrottlingException:http://internal.amazon.com/coral/"),
            ),
            body.clone(),
        );
        let (status, answer, _) =
            super::answer(Client::OpenAi, StatusCode::TOO_MANY_REQUESTS, &typed, "m").unwrap();
        assert_eq!(status, 429);
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["error"]["code"], "ThrottlingException");
        assert_eq!(answer["error"]["type"], "rate_limit_error");
        assert_eq!(answer["error"]["message"], "Too many requests");
        // Successes, other kinds, bodies that are not objects: untouched.
        for (kind, status, body) in [
            (ProviderKind::Bedrock, 200, body.clone()),
            (ProviderKind::OpenAi, 429, body.clone()),
            (ProviderKind::Bedrock, 429, Bytes::from_static(b"<html>")),
        ] {
            let out = with_error_type(kind, &parts(status, Some("X")), body.clone());
            assert_eq!(out, body);
        }
    }

    #[test]
    fn requests_pick_converse_or_invoke_by_client_model_and_stream() {
        let chat = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let chat_stream =
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let messages =
            br#"{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#;
        let messages_stream = br#"{"model":"m","stream":true,"max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#;
        let claude = "anthropic.claude-3-haiku-20240307-v1:0";
        for (client, body, model, method) in [
            (Client::OpenAi, &chat[..], claude, CONVERSE),
            (Client::OpenAi, &chat_stream[..], claude, CONVERSE_STREAM),
            (Client::Anthropic, &messages[..], claude, INVOKE),
            (
                Client::Anthropic,
                &messages_stream[..],
                claude,
                INVOKE_STREAM,
            ),
            (
                Client::Anthropic,
                &messages[..],
                "amazon.nova-pro-v1:0",
                CONVERSE,
            ),
            (
                Client::Anthropic,
                &messages_stream[..],
                "amazon.nova-pro-v1:0",
                CONVERSE_STREAM,
            ),
        ] {
            let path = if client == Client::OpenAi {
                "/chat/completions"
            } else {
                "/messages"
            };
            let (sent_to, sent) = request(client, "p", path, body, model).unwrap();
            assert_eq!(sent_to, method, "{client:?} {model}");
            let sent: Value = serde_json::from_slice(&sent).unwrap();
            assert!(
                sent.get("model").is_none() && sent.get("stream").is_none(),
                "{sent}"
            );
            if method == INVOKE {
                assert_eq!(sent["anthropic_version"], "bedrock-2023-05-31");
            } else if method == CONVERSE {
                assert!(
                    sent.get("messages").is_some() && sent.get("max_tokens").is_none(),
                    "{sent}"
                );
            }
        }
        for path in ["/embeddings", "/completions", "/responses"] {
            let e = request(Client::OpenAi, "p", path, chat, claude).unwrap_err();
            assert!(e.to_string().contains("kind bedrock"), "{e}");
        }
        assert!(request(Client::OpenAi, "p", "/chat/completions", b"nope", claude).is_err());
    }
}
