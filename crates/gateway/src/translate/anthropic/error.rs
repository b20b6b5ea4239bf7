//! Error bodies between OpenAI's shape (`{"error":{"message","type","param","code"}}`)
//! and Anthropic's (`{"type":"error","error":{"type","message"}}`), chosen by
//! HTTP status.

use serde_json::{json, Value};

/// Anthropic's error `type` for an HTTP status: 400 (and other 4xx)
/// `invalid_request_error`, 401 `authentication_error`, 403
/// `permission_error`, 404 `not_found_error`, 413 `request_too_large`, 429
/// `rate_limit_error`, 529 `overloaded_error`, other 5xx `api_error`.
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An Anthropic error body with `message`, typed by `status`.
pub fn anthropic_error(status: u16, message: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": anthropic_error_type(status), "message": message},
    })
}

/// An OpenAI error body (`body`, as answered with `status`) as an Anthropic
/// error body: the message carries over, the type follows the status. A body
/// without a message gets one that names the status.
pub fn openai_error_to_anthropic(status: u16, body: &[u8]) -> Value {
    let message = message_at(body, &["error", "message"])
        .unwrap_or_else(|| format!("the upstream provider answered with status {status}"));
    anthropic_error(status, &message)
}

/// An Anthropic error body (`body`, as answered with `status`) as the status
/// and body an OpenAI client gets: 529 becomes 503, which OpenAI clients
/// retry; the `type` follows the status in OpenAI's words and `code` is
/// Anthropic's error type, so nothing is lost.
pub fn anthropic_error_to_openai(status: u16, body: &[u8]) -> (u16, Value) {
    let message = message_at(body, &["error", "message"])
        .unwrap_or_else(|| format!("the upstream provider answered with status {status}"));
    let code = message_at(body, &["error", "type"])
        .unwrap_or_else(|| anthropic_error_type(status).to_owned());
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    let status = if status == 529 { 503 } else { status };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, body)
}

/// The string at `path` in a JSON body, if the body is JSON and it is there.
fn message_at(body: &[u8], path: &[&str]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    path.iter()
        .try_fold(&value, |value, key| value.get(key))?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_anthropic_error_types() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (422, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (529, "overloaded_error"),
        ] {
            assert_eq!(anthropic_error_type(status), kind, "{status}");
            assert_eq!(anthropic_error(status, "m")["error"]["type"], kind);
        }
    }

    #[test]
    fn an_openai_error_becomes_an_anthropic_error_with_its_message() {
        let body = br#"{"error":{"message":"incorrect API key provided","type":"authentication_error","param":null,"code":"invalid_api_key"}}"#;
        assert_eq!(
            openai_error_to_anthropic(401, body),
            json!({"type": "error", "error": {"type": "authentication_error", "message": "incorrect API key provided"}})
        );
        let fallback = openai_error_to_anthropic(502, b"<html>bad gateway</html>");
        assert_eq!(fallback["error"]["type"], "api_error");
        assert_eq!(
            fallback["error"]["message"],
            "the upstream provider answered with status 502"
        );
    }

    #[test]
    fn an_anthropic_error_becomes_an_openai_error_with_its_type_as_code() {
        let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#;
        let (status, out) = anthropic_error_to_openai(529, body);
        assert_eq!(status, 503);
        assert_eq!(
            out,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}})
        );
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "server_error"),
        ] {
            let (same, out) = anthropic_error_to_openai(status, b"");
            assert_eq!(same, status);
            assert_eq!(out["error"]["type"], kind, "{status}");
            assert_eq!(out["error"]["code"], anthropic_error_type(status));
        }
    }
}
