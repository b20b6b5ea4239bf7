//! OpenAI embeddings (`POST /v1/embeddings`) to and from Google's: Google
//! AI Studio's `models/{model}:batchEmbedContents` and Vertex AI's
//! `publishers/google/models/{model}:predict`.
//!
//! The request's `input` (a string or an array of strings; token arrays
//! are refused) becomes one embedding request each (AI Studio: `{model:
//! "models/{m}", content: {parts: [{text}]}}`, Vertex: `{content}`),
//! `dimensions` becomes `outputDimensionality`, `user` is dropped and
//! `encoding_format` (`float` or `base64`) is applied to the answer:
//! `base64` is the vector's little-endian 32-bit floats, as OpenAI sends
//! them. The answer is OpenAI's list of `embedding` objects in input order
//! with `usage`: Vertex's `statistics.token_count` summed, AI Studio's
//! `usageMetadata.promptTokenCount` when it sends one, else the gateway's
//! estimate of the input (⌈bytes ÷ 4⌉), marked estimated.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::TranslateError;

/// What the answer's translation needs from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingsAsked {
    /// `encoding_format: "base64"`.
    pub base64: bool,
    /// The bytes of the input texts, for an estimate.
    pub input_bytes: u64,
}

/// The texts of an OpenAI embeddings request and what its answer needs.
fn inputs(body: &Map<String, Value>) -> Result<(Vec<&str>, EmbeddingsAsked), TranslateError> {
    let texts: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.as_str()),
                Value::Number(_) | Value::Array(_) => Err(TranslateError::unsupported(
                    format!("input[{i}]"),
                    "token arrays (only text)",
                )),
                _ => Err(TranslateError::invalid(
                    format!("input[{i}]"),
                    "expected a string",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => {
            return Err(TranslateError::invalid(
                "input",
                "expected at least one string",
            ))
        }
        _ => {
            return Err(TranslateError::invalid(
                "input",
                "expected a string or an array of strings",
            ))
        }
    };
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(TranslateError::invalid(
            if body.get("input").is_some_and(Value::is_string) {
                "input".to_owned()
            } else {
                format!("input[{i}]")
            },
            "expected a non-empty string",
        ));
    }
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(TranslateError::invalid(
                "encoding_format",
                "expected `float` or `base64`",
            ))
        }
    };
    let input_bytes = texts.iter().map(|t| t.len() as u64).sum();
    Ok((
        texts,
        EmbeddingsAsked {
            base64,
            input_bytes,
        },
    ))
}

/// `dimensions`, when set: a positive integer.
fn dimensions(body: &Map<String, Value>) -> Result<Option<u64>, TranslateError> {
    match body.get("dimensions") {
        None | Some(Value::Null) => Ok(None),
        Some(d) => match d.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(TranslateError::invalid(
                "dimensions",
                "expected a positive integer",
            )),
        },
    }
}

/// An OpenAI embeddings request as Google's body for `model`: AI Studio's
/// `batchEmbedContents` or, with `vertex`, Vertex AI's `predict`.
pub fn embeddings_request(
    body: &Value,
    model: &str,
    vertex: bool,
) -> Result<(Value, EmbeddingsAsked), TranslateError> {
    let Some(body) = body.as_object() else {
        return Err(TranslateError::invalid("", "expected a JSON object"));
    };
    let (texts, asked) = inputs(body)?;
    let dimensions = dimensions(body)?;
    let translated = if vertex {
        let instances: Vec<Value> = texts.iter().map(|t| json!({"content": t})).collect();
        let mut request = json!({"instances": instances});
        if let Some(d) = dimensions {
            request["parameters"] = json!({"outputDimensionality": d});
        }
        request
    } else {
        let requests: Vec<Value> = texts
            .iter()
            .map(|t| {
                let mut one = json!({"model": format!("models/{model}"),
                                     "content": {"parts": [{"text": t}]}});
                if let Some(d) = dimensions {
                    one["outputDimensionality"] = json!(d);
                }
                one
            })
            .collect();
        json!({"requests": requests})
    };
    Ok((translated, asked))
}

/// What [`embeddings_request`] asked, read again from the client's body
/// for the answer (the request was checked then).
pub fn embeddings_asked(body: &Value) -> EmbeddingsAsked {
    body.as_object().and_then(|b| inputs(b).ok()).map_or(
        EmbeddingsAsked {
            base64: false,
            input_bytes: 0,
        },
        |(_, asked)| asked,
    )
}

/// The prompt tokens of an answer: Google's count, or `None` when it gave
/// none (AI Studio).
pub type PromptTokens = Option<u64>;

/// Google's embeddings answer (`vertex`: `predict`'s, else
/// `batchEmbedContents`') as OpenAI's list, for `public_model`. Without a
/// count from Google, `usage` is the estimate of the input and the second
/// value is `None`.
pub fn embeddings_answer(
    answer: &Value,
    vertex: bool,
    public_model: &str,
    asked: EmbeddingsAsked,
) -> Result<(Value, PromptTokens), TranslateError> {
    let (items, at) = if vertex {
        ("predictions", "predictions")
    } else {
        ("embeddings", "embeddings")
    };
    let Some(items) = answer.get(items).and_then(Value::as_array) else {
        return Err(TranslateError::invalid(at, "expected an array"));
    };
    let mut data = Vec::with_capacity(items.len());
    let mut counted: u64 = 0;
    for (i, item) in items.iter().enumerate() {
        let embedding = if vertex {
            let e = item.get("embeddings");
            counted = counted.saturating_add(
                e.and_then(|e| e.get("statistics"))
                    .and_then(|s| s.get("token_count"))
                    .and_then(Value::as_f64)
                    .map_or(0, |n| n.max(0.0) as u64),
            );
            e
        } else {
            Some(item)
        };
        let Some(values) = embedding
            .and_then(|e| e.get("values"))
            .and_then(Value::as_array)
        else {
            return Err(TranslateError::invalid(
                format!("{at}[{i}].values"),
                "expected an array",
            ));
        };
        let floats: Vec<f64> = values
            .iter()
            .map(Value::as_f64)
            .collect::<Option<_>>()
            .ok_or_else(|| {
                TranslateError::invalid(format!("{at}[{i}].values"), "expected numbers")
            })?;
        let embedding = if asked.base64 {
            let bytes: Vec<u8> = floats
                .iter()
                .flat_map(|v| (*v as f32).to_le_bytes())
                .collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            json!(floats)
        };
        data.push(json!({"object": "embedding", "index": i, "embedding": embedding}));
    }
    let reported = if vertex {
        Some(counted)
    } else {
        answer
            .get("usageMetadata")
            .and_then(|u| u.get("promptTokenCount"))
            .and_then(Value::as_u64)
    };
    let prompt = reported.unwrap_or_else(|| asked.input_bytes.div_ceil(4));
    let body = json!({
        "object": "list",
        "data": data,
        "model": public_model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    });
    Ok((body, reported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_batch_embed_contents_or_predict() {
        let body = json!({"model": "m", "input": ["one", "two"], "dimensions": 8, "user": "u"});
        let (studio, asked) = embeddings_request(&body, "gemini-embedding-001", false).unwrap();
        assert_eq!(
            studio,
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "one"}]},
                 "outputDimensionality": 8},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "two"}]},
                 "outputDimensionality": 8},
            ]})
        );
        assert_eq!(
            asked,
            EmbeddingsAsked {
                base64: false,
                input_bytes: 6
            }
        );
        let (vertex, _) =
            embeddings_request(&json!({"input": "one"}), "text-embedding-005", true).unwrap();
        assert_eq!(vertex, json!({"instances": [{"content": "one"}]}));
        let (vertex, _) =
            embeddings_request(&json!({"input": "one", "dimensions": 4}), "e", true).unwrap();
        assert_eq!(vertex["parameters"], json!({"outputDimensionality": 4}));
    }

    #[test]
    fn requests_google_cannot_take_are_refused_naming_the_field() {
        for (body, field) in [
            (json!({"input": [[1, 2, 3]]}), "input[0]"),
            (json!({"input": [1, 2]}), "input[0]"),
            (json!({"input": []}), "input"),
            (json!({"input": ""}), "input"),
            (json!({"input": ["a", ""]}), "input[1]"),
            (json!({"input": {"text": "a"}}), "input"),
            (json!({"input": "a", "dimensions": 0}), "dimensions"),
            (json!({"input": "a", "dimensions": "8"}), "dimensions"),
            (
                json!({"input": "a", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (json!("a"), ""),
        ] {
            let e = embeddings_request(&body, "m", false).unwrap_err();
            assert!(e.to_string().contains(&format!("`{field}`")), "{body}: {e}");
        }
    }

    #[test]
    fn answers_become_openai_lists_with_usage() {
        let asked = EmbeddingsAsked {
            base64: false,
            input_bytes: 9,
        };
        let studio = json!({"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 0.0]}]});
        let (body, reported) = embeddings_answer(&studio, false, "pub", asked).unwrap();
        assert_eq!(reported, None);
        assert_eq!(body["object"], "list");
        assert_eq!(body["model"], "pub");
        assert_eq!(body["data"][1]["index"], 1);
        assert_eq!(body["data"][1]["embedding"], json!([0.25, 0.0]));
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 3, "total_tokens": 3}),
            "the estimate: 9 bytes"
        );
        let vertex = json!({"predictions": [
            {"embeddings": {"values": [1.0], "statistics": {"token_count": 4, "truncated": false}}},
            {"embeddings": {"values": [2.0], "statistics": {"token_count": 3.0, "truncated": false}}},
        ], "metadata": {"billableCharacterCount": 12}});
        let (body, reported) = embeddings_answer(
            &vertex,
            true,
            "pub",
            EmbeddingsAsked {
                base64: true,
                input_bytes: 9,
            },
        )
        .unwrap();
        assert_eq!(reported, Some(7));
        assert_eq!(body["usage"]["prompt_tokens"], 7);
        // 1.0f32 little-endian is 00 00 80 3f.
        assert_eq!(body["data"][0]["embedding"], "AACAPw==");
        for broken in [
            json!({}),
            json!({"embeddings": [{"values": ["x"]}]}),
            json!({"embeddings": [{}]}),
        ] {
            assert!(embeddings_answer(&broken, false, "pub", asked).is_err());
        }
        assert!(embeddings_answer(&json!({"predictions": [{}]}), true, "pub", asked).is_err());
    }
}
