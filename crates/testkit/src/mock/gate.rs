//! The middleware in front of every `/v1` endpoint: counting, recording, latency and injected failures.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt as _;

use super::config::Plan;
use super::state::Shared;
use super::wire;

/// The largest request body the mock reads.
pub(crate) const MAX_BODY: usize = 16 * 1024 * 1024;

/// Counts and records each `/v1` request, applies the latency, answers the
/// injected failures and hands the rest to the endpoint with its [`Plan`].
/// Other paths, like `/health`, pass untouched and uncounted.
pub(crate) async fn gate(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    // The OpenAI and Anthropic endpoints, Azure's, and Gemini's (Vertex
    // AI's are under `/v1/projects/`).
    if path != "/v1"
        && !path.starts_with("/v1/")
        && !path.starts_with("/openai/")
        && !path.starts_with("/v1beta/")
        && !path.starts_with("/model/")
    {
        return next.run(request).await;
    }
    // Anthropic's endpoint answers every refusal in Anthropic's error shape.
    let anthropic = path == "/v1/messages";
    // Gemini's and Vertex AI's answer theirs in Google's.
    let google = path.starts_with("/v1beta/") || path.starts_with("/v1/projects/");
    // Bedrock's in its own (`{"message"}` and `x-amzn-errortype`).
    let bedrock = path.starts_with("/model/");
    let refuse = |status: StatusCode, message: &str| {
        if bedrock {
            super::aws::error(status, "ValidationException", message)
        } else if anthropic {
            super::anthropic::error(status, message)
        } else if google {
            super::gemini::error(status, message)
        } else {
            wire::error(status, message, None)
        }
    };
    let seq = shared.arrive();
    let in_flight = shared.enter();
    let (mut parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        let message = "The request body is too large or could not be read.";
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, message);
    };
    shared.record(&parts, body.clone());

    let config = shared.config();
    let plan = match Plan::new(&config, &parts.headers) {
        Ok(plan) => plan,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, &message),
    };
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    let failure = plan
        .fail_status
        .or_else(|| shared.injected_failure(&config, seq));
    if let Some(status) = failure {
        let mut response = if bedrock {
            super::aws::injected(status)
        } else if anthropic {
            super::anthropic::injected(status)
        } else if google {
            super::gemini::injected(status)
        } else {
            wire::injected(status)
        };
        if let Some(after) = config.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        return response;
    }

    parts.extensions.insert(plan);
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    // The request stays in flight until its body is written or dropped, which
    // for a stream is long after the handler returned. `map_err` keeps the
    // guard alive exactly as long as the body, without changing its frames
    // or its length.
    response.map(|body| {
        Body::new(body.map_err(move |err| {
            let _in_flight = &in_flight;
            err
        }))
    })
}
