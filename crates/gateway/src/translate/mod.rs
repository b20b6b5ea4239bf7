//! Translation between OpenAI's chat completions protocol and other providers'
//! protocols: pure functions over JSON values, no I/O.
//!
//! Each provider protocol is one submodule; [`anthropic`] is the first. A
//! translation either succeeds whole or answers a [`TranslateError`] naming
//! the field at fault, so the caller can turn a refused request into a 400 in
//! the client's error shape and a broken upstream answer into a 502. Nothing
//! here reads the clock or the network: times, ids the caller owns and model
//! names come in as arguments.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod google_embeddings;
mod messages;

use serde_json::Value;

/// Why a body could not be translated. The message names the field by its
/// JSON path (`messages[2].tool_calls[0].function.arguments`) and never
/// repeats a value from the body, so it is safe to show and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The field is valid in the source protocol but the target has no
    /// equivalent, such as `n` above 1 or an audio part for Anthropic.
    #[error("`{field}` is not supported by this provider: {reason}")]
    Unsupported { field: String, reason: &'static str },
    /// The field is missing or malformed.
    #[error("`{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
}

impl TranslateError {
    /// The JSON path of the field at fault.
    pub fn field(&self) -> &str {
        match self {
            TranslateError::Unsupported { field, .. } | TranslateError::Invalid { field, .. } => {
                field
            }
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, reason: &'static str) -> TranslateError {
        TranslateError::Unsupported {
            field: field.into(),
            reason,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
        TranslateError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The token counts of one answer, as a provider reports them. Input counts
/// only the uncached prompt tokens; the cache counts are kept apart because
/// providers price them differently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens read neither from nor into the cache.
    pub input: u64,
    pub output: u64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cache_read: u64,
    /// Prompt tokens written into the provider's prompt cache.
    pub cache_write: u64,
}

impl Usage {
    /// Every prompt token, cached or not: OpenAI's `prompt_tokens`.
    pub fn prompt_tokens(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write)
    }

    /// OpenAI's `usage` object: `prompt_tokens` with the cache counts in it,
    /// `completion_tokens`, `total_tokens` and
    /// `prompt_tokens_details.cached_tokens` (the cache reads).
    pub fn to_openai(&self) -> Value {
        let prompt = self.prompt_tokens();
        serde_json::json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
            "prompt_tokens_details": { "cached_tokens": self.cache_read },
        })
    }
}

/// A token count from an untrusted body: a non-negative integer, else 0.
pub(crate) fn count(value: Option<&Value>) -> u64 {
    value.and_then(Value::as_u64).unwrap_or(0)
}

/// Text content (a string or an array of text parts) as one string: what
/// the translators to Converse and Gemini accept where only text fits.
pub(crate) fn joined_text(content: Option<&Value>, field: &str) -> Result<String, TranslateError> {
    match content {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(TranslateError::unsupported(
                            format!("{field}[{i}]"),
                            "only text parts here",
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(TranslateError::invalid(
            field,
            "expected a string or an array of parts",
        )),
    }
}

/// One part of a user message's array content, as the translators to
/// Converse and Gemini take it.
pub(crate) enum UserPart<'a> {
    Text(&'a str),
    /// A base64 `data:` URL's media type and data.
    Image {
        mime: &'a str,
        data: &'a str,
    },
}

/// Maps each part of a user message's array `content` (at `field`) with
/// `block`: text parts, and images given as base64 `data:` URLs; any other
/// part is refused naming it. `block` gets the part's field to name in its
/// own refusals.
pub(crate) fn user_content(
    parts: &[Value],
    field: &str,
    mut block: impl FnMut(UserPart<'_>, &str) -> Result<Value, TranslateError>,
) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let here = format!("{field}[{i}]");
        let part = match part.get("type").and_then(Value::as_str) {
            Some("text") => match part.get("text").and_then(Value::as_str) {
                Some(t) => UserPart::Text(t),
                None => {
                    return Err(TranslateError::invalid(
                        format!("{here}.text"),
                        "expected a string",
                    ))
                }
            },
            Some("image_url") => {
                let url = part
                    .get("image_url")
                    .and_then(|u| u.get("url"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some((mime, data)) = url
                    .strip_prefix("data:")
                    .and_then(|rest| rest.split_once(";base64,"))
                else {
                    return Err(TranslateError::unsupported(
                        format!("{here}.image_url.url"),
                        "only base64 data: URLs",
                    ));
                };
                UserPart::Image { mime, data }
            }
            _ => {
                return Err(TranslateError::unsupported(
                    here,
                    "only text and image_url parts",
                ))
            }
        };
        out.push(block(part, &here)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_usage_counts_cached_tokens_as_prompt_tokens() {
        let usage = Usage {
            input: 10,
            output: 5,
            cache_read: 100,
            cache_write: 20,
        };
        assert_eq!(
            usage.to_openai(),
            serde_json::json!({
                "prompt_tokens": 130,
                "completion_tokens": 5,
                "total_tokens": 135,
                "prompt_tokens_details": { "cached_tokens": 100 },
            })
        );
    }

    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let usage = Usage {
            input: u64::MAX,
            output: 1,
            cache_read: 1,
            cache_write: 1,
        };
        assert_eq!(usage.prompt_tokens(), u64::MAX);
        assert_eq!(usage.to_openai()["total_tokens"], u64::MAX);
    }

    #[test]
    fn errors_name_the_field() {
        let err = TranslateError::unsupported("n", "only one choice");
        assert_eq!(err.field(), "n");
        assert_eq!(
            err.to_string(),
            "`n` is not supported by this provider: only one choice"
        );
        let err = TranslateError::invalid("messages[0].role", "unknown role");
        assert_eq!(err.field(), "messages[0].role");
    }
}
