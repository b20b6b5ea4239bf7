//! Properties of the SSE usage scanner (`relay::SseUsage`): the usage it finds
//! does not depend on how the byte stream is cut into chunks, no input makes it
//! panic, and it holds no more than the current unfinished line (lines end
//! with LF, CR or CRLF). And of the usage stripping (`sse::UsageStrip`): the
//! client gets every byte but the usage-only events, however the stream is
//! chunked.

use obleth_gateway::relay::{SseUsage, Tokens};
use proptest::prelude::*;
use serde_json::json;

/// The most the scanner keeps of a line that never ends (relay.rs guards
/// against an upstream that never sends a newline).
const LINE_CAP: usize = 1 << 20;

/// One line of an OpenAI-style chat completion stream.
#[derive(Debug, Clone)]
enum Line {
    /// A content delta.
    Content(String),
    /// A chunk with `"usage": null`, as sent before the last chunk.
    NullUsage,
    /// The usage chunk, with or without `total_tokens`.
    Usage {
        prompt: i32,
        completion: i32,
        total: Option<i32>,
    },
    /// A comment, an `event:` field or a blank line: not data.
    Other(&'static str),
    Done,
}

impl Line {
    fn render(&self, crlf: bool) -> Vec<u8> {
        let text = match self {
            Line::Content(s) => format!(
                "data: {}",
                json!({"choices": [{"delta": {"content": s}, "index": 0}]})
            ),
            Line::NullUsage => format!("data: {}", json!({"choices": [], "usage": null})),
            Line::Usage {
                prompt,
                completion,
                total,
            } => {
                let mut usage = json!({"prompt_tokens": prompt, "completion_tokens": completion});
                if let Some(total) = total {
                    usage["total_tokens"] = json!(total);
                }
                format!("data:{}", json!({"choices": [], "usage": usage}))
            }
            Line::Other(s) => (*s).to_owned(),
            Line::Done => "data: [DONE]".to_owned(),
        };
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        bytes
    }

    /// The tokens this line reports, read as `Tokens::from_json` reads them.
    fn tokens(&self) -> Option<Tokens> {
        match *self {
            Line::Usage {
                prompt,
                completion,
                total,
            } => Some(Tokens {
                prompt: Some(prompt),
                completion: Some(completion),
                total: total.or(Some(prompt.saturating_add(completion))),
                estimated: false,
            }),
            _ => None,
        }
    }
}

fn line() -> impl Strategy<Value = Line> {
    // Every count an i32 holds, so a missing total summed by the scanner
    // can reach and pass i32::MAX (it saturates).
    let count = 0..=i32::MAX;
    prop_oneof![
        4 => any::<String>().prop_map(Line::Content),
        1 => Just(Line::NullUsage),
        1 => (count.clone(), count, prop::option::of(0..i32::MAX)).prop_map(
            |(prompt, completion, total)| Line::Usage { prompt, completion, total }
        ),
        1 => prop_oneof![Just(""), Just(": keep-alive"), Just("event: message"), Just("id: 7")]
            .prop_map(Line::Other),
        1 => Just(Line::Done),
    ]
}

/// A stream, possibly ending in an unfinished line, and the usage it reports
/// (the last usage chunk wins).
fn stream() -> impl Strategy<Value = (Vec<u8>, Option<Tokens>)> {
    (
        prop::collection::vec((line(), any::<bool>()), 0..24),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(lines, tail)| {
            let mut bytes = Vec::new();
            let mut expected = None;
            for (line, crlf) in &lines {
                bytes.extend(line.render(*crlf));
                expected = line.tokens().or(expected);
            }
            // Bytes after the last line end are an unfinished line, never read.
            bytes.extend(tail.into_iter().filter(|b| !matches!(b, b'\n' | b'\r')));
            (bytes, expected)
        })
}

/// Cut points, as fractions of the stream's length, to cut it into chunks.
fn cuts() -> impl Strategy<Value = Vec<prop::sample::Index>> {
    prop::collection::vec(any::<prop::sample::Index>(), 0..12)
}

/// Cuts `bytes` at the given points into chunks, empty ones included.
fn chunks<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for at in points.into_iter().chain([bytes.len()]) {
        out.push(&bytes[from..at]);
        from = at;
    }
    out
}

/// Feeds the chunks one by one, checking after each that the scanner holds
/// exactly the unfinished line so far (the stream's bytes after its last
/// newline), and returns what it found.
fn scan(chunks: &[&[u8]]) -> Result<Option<Tokens>, TestCaseError> {
    let mut scanner = SseUsage::default();
    let mut unfinished = 0usize;
    for chunk in chunks {
        scanner.feed(chunk);
        unfinished = match chunk.iter().rposition(|b| matches!(b, b'\n' | b'\r')) {
            Some(newline) => chunk.len() - newline - 1,
            None => unfinished + chunk.len(),
        };
        if unfinished <= LINE_CAP {
            prop_assert_eq!(scanner.buffered(), unfinished);
        }
        prop_assert!(scanner.buffered() <= LINE_CAP);
    }
    Ok(scanner.tokens)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn usage_is_the_same_however_the_stream_is_chunked(
        (bytes, expected) in stream(),
        cuts in cuts(),
    ) {
        let whole = scan(&[&bytes])?;
        prop_assert_eq!(whole, expected);
        let chunked = scan(&chunks(&bytes, &cuts))?;
        prop_assert_eq!(chunked, expected);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(scan(&bytewise)?, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_chunking_changes_nothing(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            // Bytes that mean something to the scanner, so lines and
            // `data:` prefixes with JSON in them occur often.
            prop::collection::vec(
                prop::sample::select(b"data: {}[]\"usage\":,0123456789\n\r_tokens".to_vec()),
                0..600,
            ),
        ],
        cuts in cuts(),
    ) {
        let whole = scan(&[&bytes])?;
        prop_assert_eq!(scan(&chunks(&bytes, &cuts))?, whole);
    }
}

#[test]
fn a_line_that_never_ends_is_held_only_up_to_the_cap() {
    let mut scanner = SseUsage::default();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..48 {
        scanner.feed(&chunk);
        assert!(scanner.buffered() <= LINE_CAP, "{}", scanner.buffered());
    }
    // The next newline ends the line and frees what was held.
    scanner.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n");
    assert_eq!(scanner.buffered(), 0);
    assert_eq!(
        scanner.tokens,
        Some(Tokens {
            prompt: Some(1),
            completion: Some(2),
            total: Some(3),
            estimated: false,
        })
    );
}

/// One event of a stream for the stripping properties, and whether the
/// client that did not ask for usage must not get it.
fn event() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        4 => any::<String>().prop_map(|s| (
            format!("data: {}", json!({"choices": [{"delta": {"content": s}}], "usage": null})),
            false
        )),
        1 => (0..1000i32, 0..1000i32).prop_map(|(p, c)| (
            format!(
                "data: {}",
                json!({"choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c}})
            ),
            true
        )),
        // Usage riding on a content chunk: kept whole, content is never lost.
        1 => (0..1000i32).prop_map(|p| (
            format!(
                "data:{}",
                json!({"choices": [{"delta": {"content": "x"}}], "usage": {"prompt_tokens": p}})
            ),
            false
        )),
        1 => Just((": keep-alive".to_owned(), false)),
        1 => Just(("event: message\nid: 7\ndata: {}".to_owned(), false)),
        1 => Just(("data: [DONE]".to_owned(), false)),
    ]
}

/// A stream of events with mixed line ends, and what a client that did not
/// ask for usage must receive.
fn events() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop::collection::vec((event(), 0..3usize), 0..16).prop_map(|events| {
        let (mut whole, mut expected) = (Vec::new(), Vec::new());
        for ((text, usage_only), end) in events {
            let end = ["\n", "\r\n", "\r"][end];
            let bytes = format!("{}{end}{end}", text.replace('\n', end)).into_bytes();
            whole.extend_from_slice(&bytes);
            if !usage_only {
                expected.extend_from_slice(&bytes);
            }
        }
        (whole, expected)
    })
}

/// What a client gets of `chunks` through the stripping relay, checking that
/// only the current unfinished event is ever held.
fn stripped(chunks: &[&[u8]]) -> Result<Vec<u8>, TestCaseError> {
    use obleth_gateway::sse::UsageStrip;
    let mut scanner = SseUsage::default();
    let mut strip = UsageStrip::default();
    let mut out = Vec::new();
    let mut seen = 0usize;
    for chunk in chunks {
        out.extend_from_slice(&strip.filter(&mut scanner, bytes::Bytes::copy_from_slice(chunk)));
        seen += chunk.len();
        // Passed on or removed, everything but the event under way.
        prop_assert!(strip.buffered() <= seen);
    }
    out.extend_from_slice(&strip.finish(&mut scanner));
    prop_assert_eq!(strip.buffered(), 0);
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn only_usage_events_are_removed_however_the_stream_is_chunked(
        (bytes, expected) in events(),
        cuts in cuts(),
    ) {
        prop_assert_eq!(stripped(&[&bytes])?, expected.clone());
        prop_assert_eq!(stripped(&chunks(&bytes, &cuts))?, expected.clone());
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(stripped(&bytewise)?, expected);
    }

    #[test]
    fn stripping_arbitrary_bytes_never_panics_or_depends_on_chunking(
        bytes in prop::collection::vec(
            prop::sample::select(b"data: {}[]\"usage\"choices:,0123\n\r".to_vec()),
            0..400,
        ),
        cuts in cuts(),
    ) {
        let whole = stripped(&[&bytes])?;
        prop_assert_eq!(stripped(&chunks(&bytes, &cuts))?, whole);
    }
}
