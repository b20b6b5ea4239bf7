//! Token estimates for what an upstream does not count: the usage of an
//! answer that reported none, and the reservation a request is admitted
//! against before it runs. One rule, about four bytes a token, cheap to apply.
//!
//! - prompt ≈ ceil(request body bytes / 4), the body as the client sent it;
//! - completion ≈ ceil(generated text bytes / 4), where the generated text is
//!   the JSON string values of the keys in [`TEXT_KEYS`] (`content`, `text`,
//!   tool-call `arguments`, `refusal`, `reasoning_content`), counted as sent,
//!   escapes included, without parsing the JSON.

use crate::relay::Tokens;

/// Bytes counted as one token.
pub const BYTES_PER_TOKEN: u64 = 4;

/// The keys whose string values are generated text.
pub const TEXT_KEYS: [&[u8]; 5] = [
    b"content",
    b"text",
    b"arguments",
    b"refusal",
    b"reasoning_content",
];

/// Tokens in `bytes` bytes of text or JSON: `ceil(bytes / 4)`.
pub fn tokens_for_bytes(bytes: u64) -> i64 {
    i64::try_from(bytes.div_ceil(BYTES_PER_TOKEN)).unwrap_or(i64::MAX)
}

/// The estimated usage of a request whose body had `request_bytes` bytes and
/// whose answer generated `generated_bytes` bytes of text (see
/// [`text_bytes`]), marked `estimated`.
pub fn usage(request_bytes: usize, generated_bytes: u64) -> Tokens {
    let clamp = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    let prompt = clamp(tokens_for_bytes(request_bytes as u64));
    let completion = clamp(tokens_for_bytes(generated_bytes));
    Tokens {
        prompt: Some(prompt),
        completion: Some(completion),
        total: Some(prompt.saturating_add(completion)),
        estimated: true,
    }
}

/// The tokens a request is admitted against before it runs: its prompt
/// estimate (`ceil(body_len / 4)`) plus the completion it may generate, its
/// `max_completion_tokens` or `max_tokens` (see
/// [`Peek::max_output_tokens`](crate::peek::Peek::max_output_tokens)), or
/// `default_completion` when it sets neither.
pub fn reservation(body_len: usize, max_output: Option<u32>, default_completion: u32) -> i64 {
    tokens_for_bytes(body_len as u64)
        .saturating_add(i64::from(max_output.unwrap_or(default_completion)))
}

/// The bytes of generated text in `json`: the string values of the
/// [`TEXT_KEYS`], found by a scan for `"key":"` (whitespace allowed around
/// the colon), counted from the opening to the closing quote, escapes
/// included. A value that is not a string (`"content":null`, an array of
/// parts) counts nothing; an unterminated string counts to the end. Never
/// parses the JSON, so it costs one pass over the bytes.
pub fn text_bytes(json: &[u8]) -> u64 {
    let mut total = 0u64;
    let mut i = 0;
    while let Some(offset) = json[i..].iter().position(|b| *b == b'"') {
        let quote = i + offset;
        i = quote + 1;
        let Some(after_key) = TEXT_KEYS.iter().find_map(|key| {
            let end = i + key.len();
            (json.get(i..end) == Some(key) && json.get(end) == Some(&b'"')).then_some(end + 1)
        }) else {
            continue;
        };
        let mut j = skip_space(json, after_key);
        if json.get(j) != Some(&b':') {
            continue;
        }
        j = skip_space(json, j + 1);
        if json.get(j) != Some(&b'"') {
            continue;
        }
        let (len, next) = string_len(json, j + 1);
        total += len as u64;
        i = next;
    }
    total
}

fn skip_space(json: &[u8], mut i: usize) -> usize {
    while json
        .get(i)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        i += 1;
    }
    i
}

/// The length of the JSON string starting at `start` (after its opening
/// quote) and the index after its closing quote.
fn string_len(json: &[u8], start: usize) -> (usize, usize) {
    let mut i = start;
    while i < json.len() {
        match json[i] {
            b'\\' => i += 2,
            b'"' => return (i - start, i + 1),
            _ => i += 1,
        }
    }
    (json.len().saturating_sub(start), json.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bytes_over_four_rounded_up() {
        assert_eq!(tokens_for_bytes(0), 0);
        assert_eq!(tokens_for_bytes(1), 1);
        assert_eq!(tokens_for_bytes(4), 1);
        assert_eq!(tokens_for_bytes(5), 2);
        assert_eq!(
            tokens_for_bytes(u64::MAX),
            i64::try_from(u64::MAX / 4 + 1).unwrap()
        );
    }

    #[test]
    fn usage_is_marked_estimated_and_sums_its_parts() {
        let t = usage(41, 8);
        assert_eq!(
            t,
            Tokens {
                prompt: Some(11),
                completion: Some(2),
                total: Some(13),
                estimated: true,
            }
        );
        assert_eq!(usage(0, 0).total, Some(0));
        let huge = usage(usize::MAX, u64::MAX);
        assert_eq!(huge.total, Some(i32::MAX));
    }

    #[test]
    fn reservation_adds_the_prompt_estimate_to_the_output_limit_or_the_default() {
        assert_eq!(reservation(400, Some(50), 1000), 150);
        assert_eq!(reservation(400, None, 1000), 1100);
        assert_eq!(reservation(1, Some(0), 7), 1);
        assert_eq!(reservation(0, Some(u32::MAX), 0), i64::from(u32::MAX));
    }

    #[test]
    fn text_bytes_counts_the_generated_strings_only() {
        let chunk =
            br#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"}}]}"#;
        assert_eq!(text_bytes(chunk), 5);
        let spaced = br#"{"choices":[{"text" : "abc" ,"logprobs":null}]}"#;
        assert_eq!(text_bytes(spaced), 3);
        let tool =
            br#"{"delta":{"tool_calls":[{"function":{"name":"f","arguments":"{\"a\":1}"}}]}}"#;
        assert_eq!(text_bytes(tool), br#"{\"a\":1}"#.len() as u64);
        let escaped = br#"{"content":"say \"content\":\"x\" now"}"#;
        assert_eq!(
            text_bytes(escaped),
            br#"say \"content\":\"x\" now"#.len() as u64
        );
        let nothing = br#"{"content":null,"type":"text","role":"content","choices":[]}"#;
        assert_eq!(text_bytes(nothing), 0);
        let whole = br#"{"choices":[{"message":{"role":"assistant","content":"tok1 tok2","refusal":null}}],"usage":null}"#;
        assert_eq!(text_bytes(whole), 9);
        let unicode = "{\"content\":\"h\u{e9}\"}";
        assert_eq!(text_bytes(unicode.as_bytes()), 3);
    }

    #[test]
    fn text_bytes_never_panics_on_truncated_input() {
        let body = br#"{"choices":[{"delta":{"content":"ab\"c\\","reasoning_content":"z"}}]}"#;
        for end in 0..=body.len() {
            let _ = text_bytes(&body[..end]);
        }
        assert_eq!(text_bytes(br#"{"content":"unterminated"#), 12);
        assert_eq!(text_bytes(br#"{"content":"#), 0);
        assert_eq!(text_bytes(b"\"content\"  :  \"a\\"), 2);
    }
}
