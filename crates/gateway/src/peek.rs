//! The part of a request body the gateway reads: `model`, `stream`,
//! `stream_options` and its `include_usage`, `max_tokens` and
//! `max_completion_tokens`, read with
//! borrowed deserialisation; everything else is skipped unread and forwarded
//! as sent. A body that is not a JSON object, lacks a model or has one of
//! these fields of the wrong type is refused with a message safe to show the
//! client.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// What the gateway needs to know about a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek<'a> {
    /// The requested model: present and not empty.
    pub model: Cow<'a, str>,
    /// `stream` (absent or `null`: false).
    pub stream: bool,
    /// Whether the body sets `stream_options` (to an object).
    pub stream_options: bool,
    /// `stream_options.include_usage`, when set.
    pub include_usage: Option<bool>,
    /// `max_tokens`, when set.
    pub max_tokens: Option<u64>,
    /// `max_completion_tokens` (OpenAI's newer name for `max_tokens`), when set.
    pub max_completion_tokens: Option<u64>,
}

impl Peek<'_> {
    /// The most tokens the request lets the model generate:
    /// `max_completion_tokens`, else `max_tokens` (saturated to `u32`), for
    /// the reservation it is admitted against
    /// ([`estimate::reservation`](crate::estimate::reservation)).
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens
            .or(self.max_tokens)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// Why a body was refused. Messages name only the gateway's own field names,
/// never the body's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeekError {
    #[error("request body is not valid JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("request body is not valid UTF-8, which JSON requires")]
    NotUtf8,
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("missing required field `model`")]
    MissingModel,
    #[error("invalid request body: `{field}` has the wrong type or value")]
    WrongType { field: String },
    #[error("invalid request body: a field is given twice or has the wrong type")]
    Invalid,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    model: Option<CowStr<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

/// A string borrowed from the body when it has no escapes: serde borrows a
/// `Cow<str>` only as a field of its own, not inside an `Option`.
#[derive(Deserialize)]
struct CowStr<'a>(#[serde(borrow)] Cow<'a, str>);

/// `stream_options`: an object; only `include_usage` is read.
struct StreamOptions {
    include_usage: Option<bool>,
}

impl<'de> Deserialize<'de> for StreamOptions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = StreamOptions;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StreamOptions, A::Error> {
                let mut include_usage: Option<Option<bool>> = None;
                while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                    if name == "include_usage" {
                        if include_usage.is_some() {
                            return Err(de::Error::duplicate_field("include_usage"));
                        }
                        include_usage = Some(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(StreamOptions {
                    include_usage: include_usage.flatten(),
                })
            }
        }
        deserializer.deserialize_map(ObjectOnly)
    }
}

/// Reads the fields the gateway needs from `body`, borrowing the model name
/// from it when it has no escapes. Never panics, whatever the input.
pub fn peek(body: &[u8]) -> Result<Peek<'_>, PeekError> {
    // JSON is UTF-8 (RFC 8259). serde_json skips the fields it ignores without
    // checking their bytes, so a body with invalid UTF-8 in a field the
    // gateway does not read would pass and be forwarded: check it whole.
    let body = std::str::from_utf8(body).map_err(|_| PeekError::NotUtf8)?;
    // serde's derived structs also accept a JSON array (fields by position),
    // so the object is checked for here: `["m"]` must not pass as a model.
    let first = body
        .as_bytes()
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match first {
        Some(b'{') => {}
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            // Valid JSON of another kind, or not JSON at all: say which.
            return Err(match serde_json::from_str::<IgnoredAny>(body) {
                Ok(_) => PeekError::NotAnObject,
                Err(e) => PeekError::NotJson {
                    line: e.line(),
                    column: e.column(),
                },
            });
        }
        Some(_) => return Err(PeekError::NotJson { line: 1, column: 1 }),
        None => return Err(PeekError::NotJson { line: 1, column: 0 }),
    }
    let mut deserializer = serde_json::Deserializer::from_str(body);
    let raw: Raw<'_> = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            if path == "." || path.is_empty() {
                PeekError::Invalid
            } else {
                PeekError::WrongType { field: path }
            }
        } else {
            PeekError::NotJson {
                line: inner.line(),
                column: inner.column(),
            }
        }
    })?;
    deserializer.end().map_err(|e| PeekError::NotJson {
        line: e.line(),
        column: e.column(),
    })?;
    let model = raw
        .model
        .map(|m| m.0)
        .filter(|m| !m.is_empty())
        .ok_or(PeekError::MissingModel)?;
    Ok(Peek {
        model,
        stream: raw.stream.unwrap_or(false),
        stream_options: raw.stream_options.is_some(),
        include_usage: raw.stream_options.and_then(|o| o.include_usage),
        max_tokens: raw.max_tokens,
        max_completion_tokens: raw.max_completion_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Model, stream, stream_options present, include_usage, max_tokens.
    type Fields<'a> = (&'a str, bool, bool, Option<bool>, Option<u64>);

    fn check(body: &str, expected: Result<Fields<'_>, PeekError>) {
        let got = peek(body.as_bytes()).map(|p| {
            (
                p.model.into_owned(),
                p.stream,
                p.stream_options,
                p.include_usage,
                p.max_tokens,
            )
        });
        let expected = expected.map(|(m, s, o, i, t)| (m.to_owned(), s, o, i, t));
        assert_eq!(got, expected, "{body}");
    }

    #[test]
    fn invalid_utf8_anywhere_is_refused_even_in_a_field_not_read() {
        let body = b"{\"model\":\"m\",\"messages\":[{\"con\xffent\":\"hi\"}]}";
        assert_eq!(peek(body), Err(PeekError::NotUtf8));
        assert_eq!(peek(b"{\"model\":\"\xc3\"}"), Err(PeekError::NotUtf8));
    }

    #[test]
    fn reads_the_fields_it_needs_and_skips_the_rest() {
        check(r#"{"model":"m"}"#, Ok(("m", false, false, None, None)));
        check(
            r#" {"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o","stream":true,"max_tokens":7,"extra":{"a":[1,2,{"b":null}]}} "#,
            Ok(("gpt-4o", true, false, None, Some(7))),
        );
        check(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
            Ok(("m", true, true, Some(false), None)),
        );
        check(
            r#"{"model":"m","stream":null,"stream_options":null,"max_tokens":null}"#,
            Ok(("m", false, false, None, None)),
        );
        check(
            r#"{"model":"a\"b"}"#,
            Ok(("a\"b", false, false, None, None)),
        );
    }

    #[test]
    fn the_output_limit_is_max_completion_tokens_else_max_tokens() {
        let limit = |body: &str| peek(body.as_bytes()).unwrap().max_output_tokens();
        assert_eq!(limit(r#"{"model":"m"}"#), None);
        assert_eq!(limit(r#"{"model":"m","max_tokens":7}"#), Some(7));
        assert_eq!(limit(r#"{"model":"m","max_completion_tokens":9}"#), Some(9));
        assert_eq!(
            limit(r#"{"model":"m","max_tokens":7,"max_completion_tokens":9}"#),
            Some(9)
        );
        assert_eq!(
            limit(r#"{"model":"m","max_completion_tokens":99999999999}"#),
            Some(u32::MAX)
        );
        assert_eq!(
            peek(br#"{"model":"m","max_completion_tokens":"many"}"#),
            Err(PeekError::WrongType {
                field: "max_completion_tokens".to_owned()
            })
        );
    }

    #[test]
    fn borrows_the_model_when_it_can() {
        let body = br#"{"model":"plain"}"#;
        assert!(matches!(peek(body).unwrap().model, Cow::Borrowed("plain")));
    }

    #[test]
    fn refuses_what_is_not_an_object_with_a_model_of_the_right_types() {
        check(r#"["model"]"#, Err(PeekError::NotAnObject));
        check(r#""model""#, Err(PeekError::NotAnObject));
        check("7", Err(PeekError::NotAnObject));
        check("null", Err(PeekError::NotAnObject));
        check("", Err(PeekError::NotJson { line: 1, column: 0 }));
        check("model=m", Err(PeekError::NotJson { line: 1, column: 1 }));
        check(
            r#"{"model":"m"} x"#,
            Err(PeekError::NotJson {
                line: 1,
                column: 15,
            }),
        );
        check(r#"{"messages":[]}"#, Err(PeekError::MissingModel));
        check(r#"{"model":""}"#, Err(PeekError::MissingModel));
        check(r#"{"model":null}"#, Err(PeekError::MissingModel));
        check(
            r#"{"model":7}"#,
            Err(PeekError::WrongType {
                field: "model".to_owned(),
            }),
        );
        check(
            r#"{"model":"m","stream":"yes"}"#,
            Err(PeekError::WrongType {
                field: "stream".to_owned(),
            }),
        );
        check(
            r#"{"model":"m","max_tokens":-1}"#,
            Err(PeekError::WrongType {
                field: "max_tokens".to_owned(),
            }),
        );
        check(
            r#"{"model":"m","stream_options":[true]}"#,
            Err(PeekError::WrongType {
                field: "stream_options".to_owned(),
            }),
        );
        check(
            r#"{"model":"m","stream_options":{"include_usage":1}}"#,
            Err(PeekError::WrongType {
                field: "stream_options.include_usage".to_owned(),
            }),
        );
        check(r#"{"model":"a","model":"b"}"#, Err(PeekError::Invalid));
    }

    #[test]
    fn never_panics_on_truncated_or_mangled_input() {
        let body = br#"{"model":"m\u00e9","stream":true,"stream_options":{"include_usage":true},"max_tokens":10,"messages":[{"content":"\ud83d\ude00"}]}"#;
        for end in 0..=body.len() {
            let _ = peek(&body[..end]);
            let mut mangled = body.to_vec();
            if end < mangled.len() {
                mangled[end] = 0xff;
                let _ = peek(&mangled);
            }
        }
        let deep = "[".repeat(10_000);
        let _ = peek(format!("{{\"model\":\"m\",\"x\":{deep}").as_bytes());
    }
}
