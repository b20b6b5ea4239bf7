//! Token usage read from a whole (non-streamed) upstream answer without
//! building a `serde_json::Value` of it: a visitor walks the top-level
//! object, skips every field but `usage` unread, and takes only the three
//! counts from `usage`. Same reading as [`Tokens::from_json`]: an answer that
//! is not an object or has no (or a null) `usage` has none; a count that is
//! not an integer from 0 to `i32::MAX` is absent; a missing total is the
//! saturating sum of the other two.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::relay::Tokens;

/// Reads `usage` from an answer's bytes; `None` when it has none (or is not
/// JSON), which the caller charges as an estimate.
pub fn tokens(answer: &[u8]) -> Option<Tokens> {
    let mut de = serde_json::Deserializer::from_slice(answer);
    let read = Answer::deserialize(&mut de).ok()?;
    // Trailing bytes make it invalid JSON, as `from_slice` would say.
    de.end().ok()?;
    let usage = read.0?;
    let total = usage.total.or_else(|| {
        Some(
            usage
                .prompt
                .unwrap_or(0)
                .saturating_add(usage.completion.unwrap_or(0)),
        )
    });
    Some(Tokens {
        prompt: usage.prompt,
        completion: usage.completion,
        total,
        estimated: false,
    })
}

/// The answer's `usage` (the last one, as a JSON object keeps the last of a
/// repeated key), if not null and the answer is an object.
struct Answer(Option<Counts>);

#[derive(Default)]
struct Counts {
    prompt: Option<i32>,
    completion: Option<i32>,
    total: Option<i32>,
}

impl<'de> Deserialize<'de> for Answer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnswerVisitor)
    }
}

struct AnswerVisitor;

impl<'de> Visitor<'de> for AnswerVisitor {
    type Value = Answer;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Answer, A::Error> {
        let mut usage = None;
        while let Some(name) = map.next_key::<Key<'de>>()? {
            if name.0 == "usage" {
                usage = map.next_value::<Usage>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Answer(usage))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Answer, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Answer(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Answer, E> {
        Ok(Answer(None))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Answer, E> {
        Ok(Answer(None))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Answer, E> {
        Ok(Answer(None))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Answer, E> {
        Ok(Answer(None))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Answer, E> {
        Ok(Answer(None))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Answer, E> {
        Ok(Answer(None))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <std::borrow::Cow<'de, str> as Deserialize>::deserialize(d).map(Key)
    }
}

/// `usage`: null is none; an object gives its counts; any other value has
/// no counts (as `Value::get` on a non-object finds none).
struct Usage(Option<Counts>);

impl<'de> Deserialize<'de> for Usage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UsageVisitor)
    }
}

struct UsageVisitor;

impl<'de> Visitor<'de> for UsageVisitor {
    type Value = Usage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Usage, A::Error> {
        let mut counts = Counts::default();
        while let Some(name) = map.next_key::<Key<'de>>()? {
            let slot = match &*name.0 {
                "prompt_tokens" => &mut counts.prompt,
                "completion_tokens" => &mut counts.completion,
                "total_tokens" => &mut counts.total,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value::<Count>()?.0;
        }
        Ok(Usage(Some(counts)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Usage, E> {
        Ok(Usage(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Usage, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Usage(Some(Counts::default())))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Usage, E> {
        Ok(Usage(Some(Counts::default())))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Usage, E> {
        Ok(Usage(Some(Counts::default())))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Usage, E> {
        Ok(Usage(Some(Counts::default())))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Usage, E> {
        Ok(Usage(Some(Counts::default())))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Usage, E> {
        Ok(Usage(Some(Counts::default())))
    }
}

/// A count: an integer from 0 to `i32::MAX`, else absent (never an error:
/// an upstream's odd count must not cost the answer its other counts).
struct Count(Option<i32>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
        Ok(Count(i32::try_from(n).ok()))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
        Ok(Count(
            u64::try_from(n).ok().and_then(|n| i32::try_from(n).ok()),
        ))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Count, E> {
        Ok(Count(None))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Count, E> {
        Ok(Count(None))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Count, E> {
        Ok(Count(None))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
        Ok(Count(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Count(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Count(None))
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
