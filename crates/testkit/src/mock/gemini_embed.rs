//! Strict embeddings endpoints of the Gemini mock: Google AI Studio's
//! `models/{model}:batchEmbedContents` and Vertex AI's
//! `publishers/google/models/{model}:predict`, for the models in
//! [`super::GeminiMock::embedding_models`].
//!
//! AI Studio's body is `{"requests": [...]}`, 1 to 100 requests of known
//! fields only (`model`, `content`, `taskType`, `title`,
//! `outputDimensionality`), each naming `models/{model}` of the path and a
//! `content` of text parts; the answer is `{"embeddings": [{"values"}]}`
//! without token counts, as Google's. Vertex's is `{"instances": [...],
//! "parameters": {...}}`, 1 to 250 instances of a non-empty `content`
//! string (and optional `task_type`, `title`), parameters
//! `outputDimensionality` and `autoTruncate`; the answer is
//! `{"predictions": [{"embeddings": {"values", "statistics": {"token_count",
//! "truncated"}}}]}`, a text's tokens being its words. Vectors are the
//! OpenAI endpoint's deterministic ones (768 dimensions unless
//! `outputDimensionality`, at most 3072). Anything else is 400
//! `INVALID_ARGUMENT` naming the field.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::gemini::error;

const DEFAULT_DIMENSIONS: u64 = 768;
const MAX_DIMENSIONS: u64 = 3072;

/// A refusal's message; the handlers answer it as a 400.
fn invalid(message: impl Into<String>) -> String {
    message.into()
}

fn object(bytes: &Bytes) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(body)) => Ok(body),
        _ => Err(invalid("Invalid JSON payload received.")),
    }
}

fn only_known(object: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), String> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(invalid(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\" at '{at}': Cannot find field."
        ))),
        None => Ok(()),
    }
}

fn dimensions(value: Option<&Value>, at: &str) -> Result<u64, String> {
    match value {
        None => Ok(DEFAULT_DIMENSIONS),
        Some(v) => match v.as_u64() {
            Some(n @ 1..=MAX_DIMENSIONS) => Ok(n),
            _ => Err(invalid(format!(
                "{at}: outputDimensionality must be between 1 and {MAX_DIMENSIONS}"
            ))),
        },
    }
}

fn values(text: &str, dimensions: u64) -> Vec<f32> {
    super::embed::vector(&Value::String(text.to_owned()), dimensions as usize)
}

/// `POST /v1beta/models/{model}:batchEmbedContents`.
pub(crate) fn batch(model: &str, bytes: &Bytes) -> Response {
    match batch_answer(model, bytes) {
        Ok(answer) => Json(answer).into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

fn batch_answer(model: &str, bytes: &Bytes) -> Result<Value, String> {
    let body = object(bytes)?;
    only_known(&body, &["requests"], "")?;
    let requests = match body.get("requests").and_then(Value::as_array) {
        Some(r) if (1..=100).contains(&r.len()) => r,
        _ => return Err(invalid("requests: must be 1 to 100 requests")),
    };
    let mut embeddings = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        let at = format!("requests[{i}]");
        let Some(request) = request.as_object() else {
            return Err(invalid(format!("{at}: must be an object")));
        };
        only_known(
            request,
            &[
                "model",
                "content",
                "taskType",
                "title",
                "outputDimensionality",
            ],
            &at,
        )?;
        if request.get("model").and_then(Value::as_str) != Some(&format!("models/{model}")) {
            return Err(invalid(format!(
                "{at}.model: Model names in the batch request must match the model in the URL (models/{model})."
            )));
        }
        let parts = request
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| invalid(format!("{at}.content.parts: must not be empty")))?;
        let mut text = String::new();
        for (j, part) in parts.iter().enumerate() {
            match part.as_object().map(|p| (p.len(), p.get("text"))) {
                Some((1, Some(Value::String(t)))) => text.push_str(t),
                _ => {
                    return Err(invalid(format!(
                        "{at}.content.parts[{j}]: only text parts are embedded"
                    )))
                }
            }
        }
        let dimensions = dimensions(
            request.get("outputDimensionality"),
            &format!("{at}.outputDimensionality"),
        )?;
        embeddings.push(json!({"values": values(&text, dimensions)}));
    }
    Ok(json!({"embeddings": embeddings}))
}

/// `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:predict`.
pub(crate) fn predict(bytes: &Bytes) -> Response {
    match predict_answer(bytes) {
        Ok(answer) => Json(answer).into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

fn predict_answer(bytes: &Bytes) -> Result<Value, String> {
    let body = object(bytes)?;
    only_known(&body, &["instances", "parameters"], "")?;
    let parameters = match body.get("parameters") {
        None => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Err(invalid("parameters: must be an object")),
    };
    only_known(
        &parameters,
        &["outputDimensionality", "autoTruncate"],
        "parameters",
    )?;
    let dimensions = dimensions(
        parameters.get("outputDimensionality"),
        "parameters.outputDimensionality",
    )?;
    let instances = match body.get("instances").and_then(Value::as_array) {
        Some(i) if (1..=250).contains(&i.len()) => i,
        _ => return Err(invalid("instances: must be 1 to 250 instances")),
    };
    let mut predictions = Vec::with_capacity(instances.len());
    let mut characters = 0;
    for (i, instance) in instances.iter().enumerate() {
        let at = format!("instances[{i}]");
        let Some(instance) = instance.as_object() else {
            return Err(invalid(format!("{at}: must be an object")));
        };
        only_known(instance, &["content", "task_type", "title"], &at)?;
        let text = match instance.get("content") {
            Some(Value::String(t)) if !t.is_empty() => t,
            _ => return Err(invalid(format!("{at}.content: must be a non-empty string"))),
        };
        characters += text.chars().count();
        predictions.push(json!({"embeddings": {
            "values": values(text, dimensions),
            "statistics": {"token_count": text.split_whitespace().count(), "truncated": false},
        }}));
    }
    Ok(json!({"predictions": predictions, "metadata": {"billableCharacterCount": characters}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(body: Value) -> Result<Value, String> {
        batch_answer("gemini-embedding-001", &Bytes::from(body.to_string()))
    }

    fn predict_of(body: Value) -> Result<Value, String> {
        predict_answer(&Bytes::from(body.to_string()))
    }

    #[test]
    fn well_formed_bodies_are_embedded() {
        let answer = batch_of(json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a b"}]},
             "outputDimensionality": 4},
        ]}))
        .unwrap();
        assert_eq!(
            answer["embeddings"][0]["values"].as_array().unwrap().len(),
            4
        );
        let answer = predict_of(
            json!({"instances": [{"content": "one two three"}, {"content": "x"}],
                                       "parameters": {"outputDimensionality": 8}}),
        )
        .unwrap();
        assert_eq!(
            answer["predictions"][0]["embeddings"]["statistics"]["token_count"],
            3
        );
        assert_eq!(
            answer["predictions"][1]["embeddings"]["values"]
                .as_array()
                .unwrap()
                .len(),
            8
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let part = json!({"parts": [{"text": "a"}]});
        for body in [
            json!({"requests": []}),
            json!({"requests": [{"model": "models/other", "content": part}]}),
            json!({"requests": [{"model": "models/gemini-embedding-001"}]}),
            json!({"requests": [{"model": "models/gemini-embedding-001", "content": part, "x": 1}]}),
            json!({"requests": [{"model": "models/gemini-embedding-001", "content": part,
                                 "outputDimensionality": 0}]}),
            json!({"instances": [{"content": "a"}]}),
        ] {
            assert!(batch_of(body.clone()).is_err(), "{body}");
        }
        for body in [
            json!({"instances": []}),
            json!({"instances": [{"content": ""}]}),
            json!({"instances": [{"content": {"parts": []}}]}),
            json!({"instances": [{"content": "a"}], "parameters": {"dimensions": 3}}),
            json!({"requests": []}),
        ] {
            assert!(predict_of(body.clone()).is_err(), "{body}");
        }
    }
}
