//! Bedrock's streamed answers (`application/vnd.amazon.eventstream`) as
//! server-sent events, so the protocol layer's SSE translations read them:
//! each event-stream message, decoded with `aws-smithy-eventstream`,
//! becomes one SSE event. A message of `:event-type` `chunk`
//! (InvokeModelWithResponseStream: `{"bytes": <base64 JSON event>}`)
//! becomes the JSON event it carries, named by its `type`; other events
//! (ConverseStream's `messageStart`, `contentBlockDelta` ...) keep their
//! type as the SSE event name and their JSON payload as its data; an
//! exception or error message becomes an `exception` event
//! `{"exception": <type>, "message": ...}`. A frame that cannot be
//! decoded, or a stream that ends inside one, ends with an `exception`
//! event of type `frame`.

use std::collections::VecDeque;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use crate::reframe::{Reframe, Reframed};
use crate::upstream::UpBody;

/// The content type of Bedrock's streamed answers.
pub const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// The most of one frame held while it arrives; past it the stream ends.
const FRAME_CAP: usize = 1 << 20;

/// An event-stream body read as server-sent events.
pub struct EventStreamSse {
    buffer: BytesMut,
    decoder: MessageFrameDecoder,
}

impl std::fmt::Debug for EventStreamSse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStreamSse")
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl EventStreamSse {
    pub fn boxed(inner: UpBody) -> UpBody {
        let decoding = EventStreamSse {
            buffer: BytesMut::new(),
            decoder: MessageFrameDecoder::new(),
        };
        Reframed::boxed(inner, decoding)
    }

    /// Decodes the complete frames buffered into `out`; false once the
    /// stream must end (a frame that cannot be decoded, or too long).
    fn decode(&mut self, out: &mut VecDeque<Bytes>) -> bool {
        loop {
            match self.decoder.decode_frame(&mut self.buffer) {
                Ok(DecodedFrame::Complete(message)) => {
                    let mut event = BytesMut::new();
                    sse_of(&message, &mut event);
                    out.push_back(event.freeze());
                }
                Ok(DecodedFrame::Incomplete) => {
                    if self.buffer.len() > FRAME_CAP {
                        broken(out, "a frame longer than 1 MiB");
                        return false;
                    }
                    return true;
                }
                Err(e) => {
                    broken(out, &e.to_string());
                    return false;
                }
            }
        }
    }
}

impl Reframe for EventStreamSse {
    fn data(&mut self, data: &[u8], out: &mut VecDeque<Bytes>) -> bool {
        self.buffer.extend_from_slice(data);
        !self.decode(out)
    }

    fn end(&mut self, out: &mut VecDeque<Bytes>) {
        if !self.buffer.is_empty() {
            broken(out, "it ended inside a frame");
        }
    }
}

/// Ends the stream with an `exception` event of type `frame` naming `why`.
fn broken(out: &mut VecDeque<Bytes>, why: &str) {
    tracing::warn!(why, "Bedrock event stream could not be decoded.");
    let mut event = BytesMut::new();
    let data = json!({"exception": "frame", "message": format!("the upstream event stream broke off: {why}")});
    write_event(&mut event, "exception", &data.to_string());
    out.push_back(event.freeze());
}

/// A string header of a message.
fn header<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

/// One message as one SSE event (see the module's documentation).
fn sse_of(message: &Message, out: &mut BytesMut) {
    let payload = message.payload();
    match header(message, ":message-type") {
        Some("event") | None => {}
        Some(kind) => {
            let exception = match kind {
                "exception" => header(message, ":exception-type"),
                _ => header(message, ":error-code"),
            }
            .unwrap_or("unknown");
            let message_text = serde_json::from_slice::<Value>(payload)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .or_else(|| v.get("Message"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .or_else(|| header(message, ":error-message").map(str::to_owned))
                .unwrap_or_else(|| format!("the upstream stream reported {exception}"));
            let data = json!({"exception": exception, "message": message_text});
            write_event(out, "exception", &data.to_string());
            return;
        }
    }
    let event = header(message, ":event-type").unwrap_or("");
    let Ok(value) = serde_json::from_slice::<Value>(payload) else {
        let data = json!({"exception": "frame", "message": format!("the upstream event `{event}` is not JSON")});
        write_event(out, "exception", &data.to_string());
        return;
    };
    if event == "chunk" {
        let inner = value
            .get("bytes")
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        match inner {
            Some(inner) => {
                let name = inner
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                write_event(out, &name, &inner.to_string());
            }
            None => {
                let data = json!({"exception": "frame", "message": "an upstream chunk is not base64 JSON"});
                write_event(out, "exception", &data.to_string());
            }
        }
        return;
    }
    write_event(out, event, &value.to_string());
}

fn write_event(out: &mut BytesMut, name: &str, data: &str) {
    // Names come from the upstream: no line breaks may pass into the frame.
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue};
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    use crate::upstream::BoxError;

    fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut message = Message::new(Bytes::copy_from_slice(payload));
        for (k, v) in headers {
            message = message.add_header(Header::new(
                k.to_string(),
                HeaderValue::String(v.to_string().into()),
            ));
        }
        let mut out = Vec::new();
        write_message_to(&message, &mut out).unwrap();
        out
    }

    async fn read(pieces: Vec<Vec<u8>>) -> String {
        let stream = futures_util::stream::iter(
            pieces
                .into_iter()
                .map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from(p)))),
        );
        let body = StreamBody::new(stream).boxed_unsync();
        let bytes = EventStreamSse::boxed(body)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn frames_split_anywhere_become_events_chunks_and_exceptions() {
        let mut all = frame(
            &[
                (":message-type", "event"),
                (":event-type", "contentBlockDelta"),
            ],
            br#"{"contentBlockIndex":0,"delta":{"text":"hi"}}"#,
        );
        let inner = base64::engine::general_purpose::STANDARD.encode(br#"{"type":"message_stop"}"#);
        all.extend(frame(
            &[(":message-type", "event"), (":event-type", "chunk")],
            format!(r#"{{"bytes":"{inner}"}}"#).as_bytes(),
        ));
        all.extend(frame(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"slow down"}"#,
        ));
        // One byte at a time: frames are put together across reads.
        let text = read(all.iter().map(|b| vec![*b]).collect()).await;
        assert_eq!(
            text,
            "event: contentBlockDelta\ndata: {\"contentBlockIndex\":0,\"delta\":{\"text\":\"hi\"}}\n\n\
             event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n\
             event: exception\ndata: {\"exception\":\"throttlingException\",\"message\":\"slow down\"}\n\n"
        );
    }

    #[tokio::test]
    async fn a_corrupt_or_cut_frame_ends_with_a_frame_exception() {
        let mut bad = frame(&[(":event-type", "messageStop")], b"{}");
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let text = read(vec![bad]).await;
        assert!(
            text.starts_with("event: exception\n") && text.contains("\"frame\""),
            "{text}"
        );
        let whole = frame(&[(":event-type", "messageStop")], b"{}");
        let text = read(vec![whole[..whole.len() - 3].to_vec()]).await;
        assert!(text.contains("ended inside a frame"), "{text}");
    }
}
