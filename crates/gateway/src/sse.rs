//! Reading an SSE stream as it passes: the token usage it reports, the bytes
//! of text it generates (for an estimate when it reports none), and, for a
//! client that did not ask for usage, the removal of the usage-only event.
//!
//! Lines end with LF, CRLF or CR (the SSE rule); an empty line ends an event.
//! The scanner holds only the current unfinished line (at most [`LINE_CAP`]
//! bytes); [`UsageStrip`] also holds the current unfinished event (at most
//! [`EVENT_CAP`] bytes), and never anything else.

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use crate::estimate;
use crate::relay::Tokens;

/// The most the scanner holds of a line that never ends; past it the line is
/// not read (its bytes count as generated text).
pub const LINE_CAP: usize = 1 << 20;
/// The most [`UsageStrip`] holds of an event that never ends; past it the
/// event is passed on as it is.
pub const EVENT_CAP: usize = 1 << 20;

/// What the data lines of the current event were.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// No data line yet.
    #[default]
    Empty,
    /// Only data lines that carry a usage object and no choices.
    UsageOnly,
    /// Anything else: content, `[DONE]`, a line that is not JSON.
    Other,
}

/// Finds `data:` lines with a `usage` object in an SSE byte stream and counts
/// generated text, keeping only the current unfinished line between chunks.
#[derive(Debug, Default)]
pub struct SseUsage {
    line: Vec<u8>,
    /// The unfinished line's length, also past the cap.
    line_len: usize,
    /// The last byte was a CR that ended a line: an LF right after it is the
    /// same line end.
    after_cr: bool,
    /// That CR ended an event, whose end waits for the next byte (an LF
    /// belongs to it).
    end_pending: bool,
    event: Event,
    /// The usage of the last data line that reported one.
    pub tokens: Option<Tokens>,
    generated: u64,
}

impl SseUsage {
    /// How many bytes of an unfinished line are held between chunks.
    pub fn buffered(&self) -> usize {
        self.line.len()
    }

    /// Bytes of generated text seen so far (see [`estimate::text_bytes`]).
    pub fn generated_bytes(&self) -> u64 {
        self.generated
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.scan(chunk, &mut |_, _| {});
    }

    /// Reads `chunk`, calling `ended(offset, usage_only)` for every event
    /// that ends in it: `offset` is where the event's bytes end in `chunk`
    /// (after its empty line's line end), `usage_only` whether its data lines
    /// were only a usage report.
    pub fn scan(&mut self, chunk: &[u8], ended: &mut dyn FnMut(usize, bool)) {
        if chunk.is_empty() {
            return;
        }
        let mut i = 0;
        if self.after_cr {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                i = 1;
            }
            if self.end_pending {
                self.end_pending = false;
                ended(i, self.take_event());
            }
        }
        let mut line_start = i;
        while let Some(offset) = chunk[i..].iter().position(|b| matches!(b, b'\n' | b'\r')) {
            let end = i + offset;
            let empty = self.line_len == 0 && end == line_start;
            if !empty {
                self.finish_line(&chunk[line_start..end]);
            }
            let mut next = end + 1;
            if chunk[end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if empty {
                if self.after_cr {
                    self.end_pending = true;
                } else {
                    ended(next, self.take_event());
                }
            }
            i = next;
            line_start = next;
        }
        let rest = &chunk[line_start..];
        self.line_len += rest.len();
        if self.line_len <= LINE_CAP {
            self.line.extend_from_slice(rest);
        } else {
            // Guard against an upstream that never ends a line.
            self.line = Vec::new();
        }
    }

    /// The stream ended: whether the event it left unfinished (if any) had
    /// only a usage report. Its unfinished line, never ended, is not read.
    pub fn finish(&mut self) -> bool {
        self.after_cr = false;
        self.end_pending = false;
        self.take_event()
    }

    fn take_event(&mut self) -> bool {
        std::mem::take(&mut self.event) == Event::UsageOnly
    }

    fn finish_line(&mut self, tail: &[u8]) {
        let total = self.line_len + tail.len();
        self.line_len = 0;
        if total > LINE_CAP {
            self.line = Vec::new();
            self.generated += total as u64;
            self.event = Event::Other;
            return;
        }
        if self.line.is_empty() {
            self.read_line(tail);
        } else {
            let mut whole = std::mem::take(&mut self.line);
            whole.extend_from_slice(tail);
            self.read_line(&whole);
            whole.clear();
            // Keep the allocation for the next long line.
            self.line = whole;
        }
    }

    fn read_line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            // Comments and other fields neither make nor break a usage event.
            return;
        };
        self.generated += estimate::text_bytes(data);
        let usage_only = has_usage_object(data) && self.read_usage(data);
        self.event = match (self.event, usage_only) {
            (Event::Empty | Event::UsageOnly, true) => Event::UsageOnly,
            _ => Event::Other,
        };
    }

    /// Reads a data line that has a non-null `usage`; answers whether it
    /// carries no choices (a usage-only chunk).
    fn read_usage(&mut self, data: &[u8]) -> bool {
        let Ok(value) = serde_json::from_slice::<Value>(data) else {
            return false;
        };
        let Some(tokens) = Tokens::from_event(&value) else {
            return false;
        };
        self.tokens = Some(tokens);
        match value.get("choices") {
            None | Some(Value::Null) => true,
            Some(Value::Array(choices)) => choices.is_empty(),
            Some(_) => false,
        }
    }
}

/// Whether `data` has `"usage"` followed by a colon and a value that is not
/// `null`: OpenAI sends `"usage":null` in every chunk but the last, and only
/// the last is worth parsing.
fn has_usage_object(data: &[u8]) -> bool {
    const KEY: &[u8] = b"\"usage\"";
    let skip = |mut i: usize| {
        while data
            .get(i)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            i += 1;
        }
        i
    };
    let mut from = 0;
    while let Some(at) = data
        .get(from..)
        .and_then(|rest| rest.windows(KEY.len()).position(|w| w == KEY))
    {
        let colon = skip(from + at + KEY.len());
        from += at + KEY.len();
        if data.get(colon) == Some(&b':') {
            let value = skip(colon + 1);
            if data.get(value).is_some_and(|b| *b != b'n') {
                return true;
            }
        }
    }
    false
}

/// Removes usage-only events from a stream for a client that did not ask for
/// them, event by event: it holds the current unfinished event and passes
/// every other event's bytes on unchanged. An event with both choices and
/// usage is passed on whole, so no content is ever lost.
#[derive(Debug, Default)]
pub struct UsageStrip {
    held: BytesMut,
    /// The current event grew past [`EVENT_CAP`] and was passed on; the rest
    /// of it is passed on too.
    passing: bool,
    ends: Vec<(usize, bool)>,
}

impl UsageStrip {
    /// How many bytes of an unfinished event are held.
    pub fn buffered(&self) -> usize {
        self.held.len()
    }

    /// Reads `chunk` through `scanner` and answers the bytes to pass on now
    /// (possibly none).
    pub fn filter(&mut self, scanner: &mut SseUsage, chunk: Bytes) -> Bytes {
        let mut ends = std::mem::take(&mut self.ends);
        ends.clear();
        scanner.scan(&chunk, &mut |at, usage_only| ends.push((at, usage_only)));
        let out = self.split(&chunk, &ends);
        self.ends = ends;
        out
    }

    fn split(&mut self, chunk: &Bytes, ends: &[(usize, bool)]) -> Bytes {
        let mut from = 0;
        let dropped = ends.iter().any(|(_, usage_only)| *usage_only);
        let out = if self.held.is_empty() && !self.passing && !dropped {
            // The common case: whole events, none removed, nothing held.
            from = ends.last().map_or(0, |(at, _)| *at);
            chunk.slice(..from)
        } else {
            let mut out = BytesMut::new();
            for &(at, usage_only) in ends {
                let keep = self.passing || !usage_only;
                let held = self.held.split();
                if keep {
                    out.extend_from_slice(&held);
                    out.extend_from_slice(&chunk[from..at]);
                }
                self.passing = false;
                from = at;
            }
            out.freeze()
        };
        let rest = &chunk[from..];
        if self.passing {
            return join(out, rest);
        }
        if self.held.len() + rest.len() > EVENT_CAP {
            // An event this long is no usage report worth holding back.
            self.passing = true;
            let held = self.held.split();
            let mut joined = BytesMut::from(&out[..]);
            joined.extend_from_slice(&held);
            joined.extend_from_slice(rest);
            return joined.freeze();
        }
        self.held.extend_from_slice(rest);
        out
    }

    /// The stream ended: the held event, unless it was a usage report.
    pub fn finish(&mut self, scanner: &mut SseUsage) -> Bytes {
        let usage_only = scanner.finish();
        let held = self.held.split().freeze();
        if usage_only && !self.passing {
            Bytes::new()
        } else {
            held
        }
    }
}

fn join(out: Bytes, rest: &[u8]) -> Bytes {
    if out.is_empty() {
        return Bytes::copy_from_slice(rest);
    }
    let mut joined = BytesMut::from(&out[..]);
    joined.extend_from_slice(rest);
    joined.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &str =
        r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#;

    fn stream(end: &str) -> String {
        [
            r#"data: {"choices":[{"delta":{"content":"ab"}}],"usage":null}"#,
            r#": keep-alive"#,
            r#"data: {"choices":[{"delta":{"content":"cd"}}],"usage":null}"#,
            &format!("data: {USAGE}"),
            "data: [DONE]",
        ]
        .iter()
        .flat_map(|l| [*l, end, end])
        .fold(String::new(), |mut s, part| {
            // Each line followed by two line ends: the line's and the event's.
            s.push_str(part);
            s
        })
    }

    fn strip_in(chunks: &[&[u8]]) -> (Vec<u8>, SseUsage) {
        let mut scanner = SseUsage::default();
        let mut strip = UsageStrip::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&strip.filter(&mut scanner, Bytes::copy_from_slice(chunk)));
        }
        out.extend_from_slice(&strip.finish(&mut scanner));
        (out, scanner)
    }

    #[test]
    fn the_usage_event_is_removed_at_every_split_and_line_end() {
        for end in ["\n", "\r\n", "\r"] {
            let input = stream(end);
            let usage_event = format!("data: {USAGE}{end}{end}");
            let expected = input.replace(&usage_event, "");
            assert_ne!(expected, input);
            for split in 0..=input.len() {
                let (a, b) = input.as_bytes().split_at(split);
                let (out, scanner) = strip_in(&[a, b]);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    expected,
                    "line end {end:?}, split at {split}"
                );
                assert_eq!(scanner.tokens.and_then(|t| t.total), Some(8));
                assert_eq!(scanner.generated_bytes(), 4);
            }
            let bytewise: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
            assert_eq!(strip_in(&bytewise).0, expected.as_bytes(), "{end:?}");
        }
    }

    #[test]
    fn whole_events_pass_without_copy_or_hold() {
        let mut scanner = SseUsage::default();
        let mut strip = UsageStrip::default();
        let chunk =
            Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n");
        let out = strip.filter(&mut scanner, chunk.clone());
        assert_eq!(out, chunk);
        assert_eq!(out.as_ptr(), chunk.as_ptr(), "sliced, not copied");
        assert_eq!(strip.buffered(), 0);
        // Half an event is held until it ends.
        let out = strip.filter(&mut scanner, Bytes::from_static(b"data: [DO"));
        assert!(out.is_empty());
        assert_eq!(strip.buffered(), 9);
        let out = strip.filter(&mut scanner, Bytes::from_static(b"NE]\n\n"));
        assert_eq!(&out[..], b"data: [DONE]\n\n");
    }

    #[test]
    fn a_chunk_with_usage_and_choices_is_kept_whole() {
        let input = format!(
            "data: {}\n\ndata: [DONE]\n\n",
            r#"{"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#
        );
        let (out, scanner) = strip_in(&[input.as_bytes()]);
        assert_eq!(out, input.as_bytes());
        assert_eq!(scanner.tokens.and_then(|t| t.total), Some(2));
    }

    #[test]
    fn an_unfinished_last_event_is_passed_on_unless_it_is_the_usage() {
        let (out, _) = strip_in(&[b"data: [DONE]\n"]);
        assert_eq!(out, b"data: [DONE]\n");
        let usage_then_eof = format!("data: {USAGE}\n");
        let (out, scanner) = strip_in(&[usage_then_eof.as_bytes()]);
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        assert_eq!(scanner.tokens.and_then(|t| t.total), Some(8));
    }

    #[test]
    fn an_event_past_the_cap_is_passed_on_and_nothing_is_lost() {
        let mut scanner = SseUsage::default();
        let mut strip = UsageStrip::default();
        let mut out = Vec::new();
        let mut input = Vec::new();
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..20 {
            input.extend_from_slice(&piece);
            out.extend_from_slice(&strip.filter(&mut scanner, Bytes::from(piece.clone())));
            assert!(strip.buffered() <= EVENT_CAP);
            assert!(scanner.buffered() <= LINE_CAP);
        }
        let tail = format!("\n\ndata: {USAGE}\n\ndata: [DONE]\n\n");
        input.extend_from_slice(tail.as_bytes());
        out.extend_from_slice(&strip.filter(&mut scanner, Bytes::from(tail.into_bytes())));
        out.extend_from_slice(&strip.finish(&mut scanner));
        let expected = String::from_utf8_lossy(&input).replace(&format!("data: {USAGE}\n\n"), "");
        assert_eq!(String::from_utf8_lossy(&out), expected);
        assert_eq!(scanner.tokens.and_then(|t| t.total), Some(8));
    }

    #[test]
    fn usage_is_found_across_chunk_boundaries_and_null_usage_is_not_parsed() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\" : {\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\n\ndata: [DONE]\n\n";
        for split in 1..stream.len() {
            let mut scanner = SseUsage::default();
            scanner.feed(&stream[..split]);
            scanner.feed(&stream[split..]);
            assert_eq!(
                scanner.tokens,
                Some(Tokens {
                    prompt: Some(3),
                    completion: Some(5),
                    total: Some(8),
                    estimated: false,
                }),
                "split at {split}"
            );
        }
        assert!(!has_usage_object(br#"{"usage":null}"#));
        assert!(!has_usage_object(br#"{"usage" : null,"x":"usage"}"#));
        assert!(has_usage_object(br#"{"usage":null,"y":{"usage": {}}}"#));
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
                total: Some(3),
                estimated: false,
            })
        );
    }
}
