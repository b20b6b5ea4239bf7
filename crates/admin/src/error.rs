//! The admin API's one error type: the variant picks the status, and every
//! error answers `{"error":{"code","message","field"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Every way an admin request can fail.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The same answer for a missing, malformed and wrong token, so a caller
    /// learns nothing about which tokens exist.
    #[error("a valid admin token is required: send `Authorization: Bearer <token>`")]
    Unauthorized,
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error("no route for this path")]
    NoSuchPath,
    #[error("method not allowed for this path")]
    MethodNotAllowed,
    /// A value that is well-formed JSON but not acceptable: 422, naming the field.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    /// The request conflicts with stored data: 409.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("content-type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body did not arrive within `server.body_timeout_secs`: 408.
    #[error("request body was not received within {secs} s")]
    BodyTimeout { secs: u64 },
    #[error("not ready: {0}")]
    NotReady(String),
    /// Too many missing or wrong admin tokens from this client lately: 429.
    #[error(
        "too many failed admin token attempts from this client; retry in {retry_after_secs} s"
    )]
    TooManyAuthFailures { retry_after_secs: u64 },
    /// Logged whole where it happens; the client sees an opaque 500.
    #[error("internal error")]
    Internal,
}

impl AdminError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> AdminError {
        AdminError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str, id: impl ToString) -> AdminError {
        AdminError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        use AdminError::*;
        match self {
            Unauthorized => StatusCode::UNAUTHORIZED,
            NotFound { .. } | NoSuchPath => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Conflict { .. } => StatusCode::CONFLICT,
            InvalidJson(_) => StatusCode::BAD_REQUEST,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            TooManyAuthFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable code for clients to branch on.
    pub fn code(&self) -> &'static str {
        use AdminError::*;
        match self {
            Unauthorized => "unauthorized",
            NotFound { .. } | NoSuchPath => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Validation { .. } => "validation_failed",
            Conflict { code, .. } => code,
            InvalidJson(_) => "invalid_json",
            UnsupportedMediaType => "unsupported_media_type",
            PayloadTooLarge { .. } => "payload_too_large",
            BodyTimeout { .. } => "body_timeout",
            NotReady(_) => "not_ready",
            TooManyAuthFailures { .. } => "too_many_auth_failures",
            Internal => "internal_error",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            AdminError::Validation { field, .. } => Some(field),
            AdminError::Conflict { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// The message without the field prefix, which the body carries apart.
    fn message(&self) -> String {
        match self {
            AdminError::Validation { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// Database errors are unexpected: log them whole, answer an opaque 500.
impl From<sqlx::Error> for AdminError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "Database error while serving a request.");
        AdminError::Internal
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `unauthorized`, `not_found`, `validation_failed`, `already_exists`,
    /// `provider_in_use`, `team_in_use`, `key_revoked`, `invalid_json`,
    /// `payload_too_large`, ...
    pub code: String,
    pub message: String,
    /// The request field at fault (`targets[0].provider`), when there is one.
    pub field: Option<String>,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.message(),
                field: self.field().map(str::to_owned),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            AdminError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AdminError::NotReady(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            AdminError::TooManyAuthFailures { retry_after_secs } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_a_trailing_period() {
        let errors = [
            AdminError::Unauthorized,
            AdminError::not_found("key", "k1"),
            AdminError::NoSuchPath,
            AdminError::MethodNotAllowed,
            AdminError::validation("limit", "must be between 1 and 1000"),
            AdminError::InvalidJson("expected value at line 1 column 1".to_owned()),
            AdminError::UnsupportedMediaType,
            AdminError::PayloadTooLarge { limit: 10 },
            AdminError::NotReady("migrating".to_owned()),
            AdminError::TooManyAuthFailures {
                retry_after_secs: 30,
            },
            AdminError::Internal,
        ];
        for e in errors {
            let m = e.message();
            assert!(m.starts_with(|c: char| c.is_lowercase()), "{m}");
            assert!(!m.ends_with('.'), "{m}");
        }
    }
}
