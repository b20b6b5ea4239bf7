//! Fuzzes the SSE usage scanner with arbitrary bytes cut into arbitrary chunks.
//!
//! Input layout: the first byte `n` asks for `n % 16` cuts, the next `2 * n`
//! bytes give the cut points (little-endian u16s, taken modulo the stream's
//! length), and the rest is the stream. A seed that is `\0` followed by a
//! stream feeds that stream in one chunk.
//!
//! Checks: no panic; the usage found is the same one-shot and chunked; the
//! scanner holds exactly the bytes after the last line end (LF or CR), and
//! never more than its 1 MiB cap.

#![no_main]

use libfuzzer_sys::fuzz_target;
use obleth_gateway::relay::SseUsage;

/// The most the scanner keeps of a line that never ends.
const LINE_CAP: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let cut_bytes = (usize::from(head % 16) * 2).min(rest.len());
    let (cut_spec, stream) = rest.split_at(cut_bytes);
    let mut cuts: Vec<usize> = cut_spec
        .chunks_exact(2)
        .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(stream.len());

    let mut whole = SseUsage::default();
    whole.feed(stream);
    check_held(&whole, stream);

    let mut chunked = SseUsage::default();
    let mut from = 0;
    for at in cuts {
        chunked.feed(&stream[from..at]);
        check_held(&chunked, &stream[..at]);
        from = at;
    }
    assert_eq!(
        whole.tokens, chunked.tokens,
        "chunking changed the usage found"
    );
});

/// The scanner, having been fed `seen`, holds its unfinished last line
/// (lines end with LF, CR or CRLF).
fn check_held(scanner: &SseUsage, seen: &[u8]) {
    let unfinished = match seen.iter().rposition(|b| matches!(b, b'\n' | b'\r')) {
        Some(newline) => seen.len() - newline - 1,
        None => seen.len(),
    };
    assert!(scanner.buffered() <= LINE_CAP);
    if unfinished <= LINE_CAP {
        assert_eq!(
            scanner.buffered(),
            unfinished,
            "held bytes differ from the unfinished line"
        );
    }
}
