//! Token usage read from a whole (non-streamed) upstream answer without
//! building a `serde_json::Value` of it: a visitor walks the top-level
//! object, skips every field but `usage` unread, and reads only `usage` (a
//! few numbers) into a `Value`, which [`Tokens::from_usage`] reads as it
//! reads a stream's usage chunk. So this is the same reading as
//! [`Tokens::from_json`] on the whole answer: an answer that is not an
//! object or has no (or a null) `usage` has none.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::relay::Tokens;

/// Reads `usage` from an answer's bytes; `None` when it has none (or is not
/// a JSON object), which the caller charges as an estimate.
pub fn tokens(answer: &[u8]) -> Option<Tokens> {
    let mut de = serde_json::Deserializer::from_slice(answer);
    let UsageField(usage) = UsageField::deserialize(&mut de).ok()?;
    // Trailing bytes make it invalid JSON, as `from_slice` would say.
    de.end().ok()?;
    Tokens::from_usage(&usage?)
}

/// The top-level object's `usage` (the last one, as a JSON object keeps the
/// last of a repeated key). Anything but an object is an error.
struct UsageField(Option<Value>);

impl<'de> Deserialize<'de> for UsageField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(UsageFieldVisitor)
    }
}

struct UsageFieldVisitor;

impl<'de> Visitor<'de> for UsageFieldVisitor {
    type Value = UsageField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UsageField, A::Error> {
        let mut usage = None;
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            if name == "usage" {
                usage = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(UsageField(usage))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The borrowed reader agrees with reading a whole `Value`, on every
    /// shape an upstream might send.
    #[test]
    fn reads_usage_as_the_value_reader_does() {
        let cases: &[&str] = &[
            r#"{"id":"x","usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
            r#"{"usage":{"prompt_tokens":9,"completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":-3,"completion_tokens":2.5,"total_tokens":"7"}}"#,
            r#"{"usage":{"prompt_tokens":4294967296,"completion_tokens":2147483647}}"#,
            r#"{"usage":{"prompt_tokens":2147483647,"completion_tokens":5}}"#,
            r#"{"usage":null}"#,
            r#"{"usage":5}"#,
            r#"{"usage":[1,2]}"#,
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens":3,"x":{"y":[1]}}}"#,
            r#"{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":3}}"#,
            r#"{"usage":{"prompt_tokens":{"a":1},"completion_tokens":[1],"total_tokens":null}}"#,
            r#"{"choices":[{"message":{"content":"h\u00e9\"llo"}}],"usage":{"total_tokens":3}}"#,
            r#"{"us\u0061ge":{"total_tokens":3}}"#,
            r#"{"choices":[]}"#,
            r#"[{"usage":{"total_tokens":1}}]"#,
            r#""usage""#,
            r#"17"#,
            r#"null"#,
            r#"{"usage":{"total_tokens":1}} trailing"#,
            r#"{"usage":{"total_tokens":1}"#,
            r#""#,
            "not json",
        ];
        for case in cases {
            let expected = serde_json::from_slice::<Value>(case.as_bytes())
                .ok()
                .and_then(|v| Tokens::from_json(&v));
            assert_eq!(tokens(case.as_bytes()), expected, "{case}");
        }
    }
}
