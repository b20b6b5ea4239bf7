//! Request extractors whose refusals are [`AdminError`]s naming the field at
//! fault: a JSON body and query parameters.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use obleth_service::server::BodyTimeout;
use serde::de::DeserializeOwned;

use crate::error::AdminError;

/// A JSON request body. Malformed JSON is a 400; JSON of the wrong shape
/// (missing, unknown or mistyped fields) is a 422 naming the field; a body over
/// `server.max_body_bytes` is a 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| v == "application/json" || v.ends_with("+json"));
        if !is_json {
            return Err(AdminError::UnsupportedMediaType);
        }
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(0, |limit| limit.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AdminError::PayloadTooLarge { limit }
            } else if let Some(BodyTimeout(after)) = body_timeout(&rejection) {
                AdminError::BodyTimeout {
                    secs: after.as_secs(),
                }
            } else {
                AdminError::InvalidJson(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The listener's body timeout, when it is what ended the body: it travels
/// as the source of the read error.
fn body_timeout(rejection: &BytesRejection) -> Option<&BodyTimeout> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = source {
        if let Some(timeout) = e.downcast_ref::<BodyTimeout>() {
            return Some(timeout);
        }
        source = e.source();
    }
    None
}

/// The body limit in force, put in the request's extensions by the router so
/// a 413 can say what the limit is.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Parses `bytes` as a `T`, classifying the failure. Every body of this API is
/// a JSON object; serde would also read a struct from an array, in field
/// order, which no client means, so anything else is refused.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => AdminError::validation("body", "must be a JSON object"),
                Err(e) => AdminError::InvalidJson(e.to_string()),
            },
        );
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            data_error("body", &path, &inner.to_string())
        } else if inner.to_string().starts_with("number out of range") {
            // Valid JSON whose number no double holds (`1e400`): the value is
            // at fault, not the syntax, so name its field.
            let field = if path == "." { "body" } else { &path };
            AdminError::validation(field, "must be a finite number")
        } else {
            AdminError::InvalidJson(inner.to_string())
        }
    })?;
    de.end()
        .map_err(|e| AdminError::InvalidJson(e.to_string()))?;
    Ok(value)
}

/// A 422 for a serde data error at `path` of the `root` (`body` or `query`).
/// serde reports missing, unknown and repeated fields at the enclosing object,
/// so the field is read from the message.
fn data_error(root: &str, path: &str, message: &str) -> AdminError {
    // serde_json appends " at line 1 column 9"; the field says where.
    let message = message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head);
    let named = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    let field = match named {
        Some(name) if base.is_empty() => name.to_owned(),
        Some(name) if !base.ends_with(name) => format!("{base}.{name}"),
        _ if base.is_empty() => root.to_owned(),
        _ => base.to_owned(),
    };
    AdminError::validation(field, message)
}

/// Query parameters. Unknown, repeated or mistyped parameters are a 422
/// naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        // No filter or cursor holds control characters, and PostgreSQL refuses
        // a NUL in text: refuse them here, naming the parameter.
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if value.chars().any(char::is_control) {
                return Err(AdminError::validation(
                    name.into_owned(),
                    "must not contain control characters",
                ));
            }
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Params)
            .map_err(|e| {
                let path = e.path().to_string();
                data_error("query", &path, &e.into_inner().to_string())
            })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Target {
        provider: String,
        #[serde(default)]
        upstream_model: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        model: String,
        targets: Vec<Target>,
        #[serde(default)]
        limit: Option<i32>,
    }

    fn field_of(json: &str) -> (u16, Option<String>) {
        match parse_json::<Body>(json.as_bytes()) {
            Ok(_) => (200, None),
            Err(e) => (e.status().as_u16(), e.field().map(str::to_owned)),
        }
    }

    #[test]
    fn json_failures_name_the_field() {
        let cases: &[(&str, u16, Option<&str>)] = &[
            (r#"{"model":"m","targets":[]}"#, 200, None),
            (r#"{"targets":[]}"#, 422, Some("model")),
            (
                r#"{"model":"m","targets":[],"extra":1}"#,
                422,
                Some("extra"),
            ),
            (r#"{"model":5,"targets":[]}"#, 422, Some("model")),
            (
                r#"{"model":"m","targets":[{"provider":1}]}"#,
                422,
                Some("targets[0].provider"),
            ),
            (
                r#"{"model":"m","targets":[{}]}"#,
                422,
                Some("targets[0].provider"),
            ),
            (
                r#"{"model":"m","targets":[{"provider":"p","x":1}]}"#,
                422,
                Some("targets[0].x"),
            ),
            (
                r#"{"model":"m","targets":[],"limit":1e99}"#,
                422,
                Some("limit"),
            ),
            (
                r#"{"model":"m","targets":[],"limit":1e400}"#,
                422,
                Some("limit"),
            ),
            (
                r#"{"model":"m","targets":[],"limit":-1e400}"#,
                422,
                Some("limit"),
            ),
            (r#"[1]"#, 422, Some("body")),
            (r#"[null, null]"#, 422, Some("body")),
            (r#" "text""#, 422, Some("body")),
            (r#"{"model":"m""#, 400, None),
            (r#"{"model":"m","targets":[]} trailing"#, 400, None),
            ("", 400, None),
        ];
        for (json, status, field) in cases {
            let got = field_of(json);
            assert_eq!(got, (*status, field.map(str::to_owned)), "{json}");
        }
    }

    #[test]
    fn query_failures_name_the_parameter() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Q {
            limit: Option<i64>,
            revoked: Option<bool>,
        }
        let cases: &[(&str, Option<&str>)] = &[
            ("limit=5&revoked=true", None),
            ("limit=five", Some("limit")),
            ("revoked=maybe", Some("revoked")),
            ("limt=5", Some("limt")),
            ("limit=5&limit=6", Some("limit")),
        ];
        for (query, field) in cases {
            let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
            let got = serde_path_to_error::deserialize::<_, Q>(de).map_err(|e| {
                let path = e.path().to_string();
                data_error("query", &path, &e.into_inner().to_string())
            });
            let field_got = got.err().and_then(|e| e.field().map(str::to_owned));
            assert_eq!(field_got.as_deref(), *field, "{query}");
        }
    }
}
