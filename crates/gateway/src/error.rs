//! The gateway's client-facing errors, in OpenAI's body shape:
//! `{"error":{"message","type","param","code"}}`.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every way a proxied request can fail, each with its status and code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`")]
    MissingKey,
    #[error("incorrect API key provided")]
    InvalidKey,
    #[error("this API key has been revoked")]
    KeyRevoked,
    #[error("this API key has expired")]
    KeyExpired,
    #[error("this API key may not use model `{0}`")]
    ModelNotAllowed(String),
    #[error("the model `{0}` does not exist or is not routed by this gateway")]
    UnknownModel(String),
    #[error(
        "rate limit reached for {what} of this {owner}: limit {limit} per minute; retry after {retry_after_secs} s"
    )]
    RateLimited {
        /// `requests` or `tokens`.
        what: &'static str,
        /// `API key` or `team`.
        owner: &'static str,
        limit: i64,
        retry_after_secs: u64,
        headers: Box<HeaderMap>,
    },
    #[error("the {what} budget of this {owner} is spent ({period})")]
    BudgetExhausted {
        /// `token` or `spend`.
        what: &'static str,
        /// `API key` or `team`.
        owner: &'static str,
        /// The period it resets on, as `day`... or `total`.
        period: &'static str,
        /// Seconds until the period resets; `None` for `total`.
        retry_after_secs: Option<u64>,
    },
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body took too long to arrive")]
    BodyTimeout,
    #[error("{0}")]
    BadRequest(String),
    #[error("content-type must be application/json")]
    UnsupportedMediaType,
    /// Connection errors, 5xx answers and broken answers alike: the body
    /// names no provider and no network detail (the log has them), so it is
    /// no oracle for what the gateway can reach.
    #[error("the upstream provider could not be reached or failed to answer")]
    UpstreamFailed,
    #[error("the upstream provider did not answer in time")]
    UpstreamTimeout,
    /// The gateway could not get an access token for the provider (a
    /// Vertex AI service account or workload identity); like
    /// `UpstreamFailed`, no endpoint and no detail.
    #[error("the gateway could not obtain an access token for the upstream provider")]
    UpstreamAuthFailed,
    #[error("the upstream provider's answer is larger than this gateway accepts")]
    UpstreamResponseTooLarge,
    #[error("the gateway is shutting down; retry on another instance")]
    Draining,
    #[error("{message}")]
    Maintenance {
        message: String,
        retry_after_secs: u64,
    },
    #[error("the key store is unavailable; retry shortly")]
    KeyStoreUnavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            MissingKey | InvalidKey => StatusCode::UNAUTHORIZED,
            KeyRevoked | KeyExpired | ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            UnknownModel(_) => StatusCode::NOT_FOUND,
            RateLimited { .. } | BudgetExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            BadRequest(_) => StatusCode::BAD_REQUEST,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UpstreamFailed | UpstreamResponseTooLarge | UpstreamAuthFailed => {
                StatusCode::BAD_GATEWAY
            }
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Draining | Maintenance { .. } | KeyStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `type` field.
    pub fn kind(&self) -> &'static str {
        use ApiError::*;
        match self {
            MissingKey | InvalidKey | KeyRevoked | KeyExpired => "authentication_error",
            ModelNotAllowed(_) => "permission_error",
            UnknownModel(_)
            | BodyTooLarge { .. }
            | BodyTimeout
            | BadRequest(_)
            | UnsupportedMediaType => "invalid_request_error",
            RateLimited { .. } => "rate_limit_error",
            BudgetExhausted { .. } => "insufficient_quota",
            UpstreamFailed | UpstreamTimeout | UpstreamResponseTooLarge | UpstreamAuthFailed => {
                "upstream_error"
            }
            Draining | Maintenance { .. } | KeyStoreUnavailable => "service_unavailable",
            Internal => "server_error",
        }
    }

    /// OpenAI's `code` field: stable, for clients to branch on.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            MissingKey => "missing_api_key",
            InvalidKey => "invalid_api_key",
            KeyRevoked => "key_revoked",
            KeyExpired => "key_expired",
            ModelNotAllowed(_) => "model_not_allowed",
            UnknownModel(_) => "model_not_found",
            RateLimited { .. } => "rate_limit_exceeded",
            BudgetExhausted { .. } => "budget_exceeded",
            BodyTooLarge { .. } => "request_too_large",
            BodyTimeout => "request_timeout",
            BadRequest(_) => "invalid_request",
            UnsupportedMediaType => "unsupported_media_type",
            UpstreamFailed => "upstream_failed",
            UpstreamResponseTooLarge => "upstream_response_too_large",
            UpstreamTimeout => "upstream_timeout",
            UpstreamAuthFailed => "upstream_auth_failed",
            Draining => "draining",
            Maintenance { .. } => "maintenance",
            KeyStoreUnavailable => "key_store_unavailable",
            Internal => "internal_error",
        }
    }

    /// The OpenAI error body for `message`, `kind` and `code`.
    pub fn body(message: &str, kind: &str, code: &str) -> serde_json::Value {
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ApiError::body(&self.to_string(), self.kind(), self.code());
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::RateLimited {
                retry_after_secs,
                headers: extra,
                ..
            } => {
                headers.extend(*extra);
                headers.insert(
                    HeaderName::from_static("retry-after"),
                    retry_after_secs.into(),
                );
            }
            ApiError::BudgetExhausted {
                retry_after_secs: Some(secs),
                ..
            } => {
                headers.insert(HeaderName::from_static("retry-after"), secs.into());
            }
            ApiError::Maintenance {
                retry_after_secs, ..
            } => {
                headers.insert(
                    HeaderName::from_static("retry-after"),
                    retry_after_secs.into(),
                );
            }
            ApiError::Draining | ApiError::KeyStoreUnavailable => {
                headers.insert(
                    HeaderName::from_static("retry-after"),
                    HeaderValue::from_static("1"),
                );
            }
            _ => {}
        }
        response
    }
}
