//! A strict Azure OpenAI data plane: `POST
//! /openai/deployments/{deployment}/chat/completions` (and `/completions`,
//! `/embeddings`) with an `api-version` query parameter, and the `v1`
//! Responses API, `POST /openai/v1/responses`.
//!
//! Refused as Azure refuses, with its error body (`{"error":{"code",
//! "message"}}`): no or a wrong `api-key` header (or, when
//! [`AzureMock::entra_token`] is set, `Authorization: Bearer` with another
//! token) is 401; a missing or unknown `api-version` is 404 `Resource not
//! found`; a deployment not in [`AzureMock::deployments`] is 404
//! `DeploymentNotFound`. Accepted requests are answered by the OpenAI
//! endpoints (the body's `model` is ignored, as Azure ignores it), with the
//! latency, injected failures and `x-mock-*` headers of the gate.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::config::Plan;
use super::state::Shared;

/// The `api-key` a default [`AzureMock`] accepts.
pub const AZURE_API_KEY: &str = "azure-mock-key";

/// The `api-version`s the mock serves, as the real service lists them.
pub const AZURE_API_VERSIONS: &[&str] = &[
    "2024-06-01",
    "2024-10-21",
    "2024-12-01-preview",
    "2025-01-01-preview",
    "2025-04-01-preview",
];

/// How the Azure endpoints behave.
#[derive(Clone, PartialEq, Eq)]
pub struct AzureMock {
    /// The resource key every request must carry as `api-key`.
    pub api_key: String,
    /// When set, `Authorization: Bearer <token>` is accepted too (an
    /// Entra ID access token).
    pub entra_token: Option<String>,
    /// The deployments that exist.
    pub deployments: Vec<String>,
}

impl Default for AzureMock {
    fn default() -> Self {
        AzureMock {
            api_key: AZURE_API_KEY.to_owned(),
            entra_token: None,
            deployments: ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

/// The secrets stay out of test output, as real credentials would.
impl fmt::Debug for AzureMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureMock")
            .field("api_key", &"***")
            .field("entra_token", &self.entra_token.as_ref().map(|_| "***"))
            .field("deployments", &self.deployments)
            .finish()
    }
}

/// Azure's error body.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "404", "Resource not found")
}

/// The key or token check, as Azure makes it before anything else: `None`
/// when the request may go on, else the refusal.
fn refused(config: &AzureMock, headers: &HeaderMap) -> Option<Response> {
    let key = headers.get("api-key").and_then(|v| v.to_str().ok());
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = match (key, bearer, &config.entra_token) {
        (Some(key), _, _) => key == config.api_key,
        (None, Some(token), Some(expected)) => token == expected,
        _ => false,
    };
    (!ok).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        )
    })
}

/// `POST /openai/deployments/{deployment}/{operation}?api-version=`.
async fn deployment(
    shared: Arc<Shared>,
    deployment: String,
    query: HashMap<String, String>,
    plan: Plan,
    headers: HeaderMap,
    body: Bytes,
    operation: Operation,
) -> Response {
    let config = shared.config().azure;
    if let Some(refusal) = refused(&config, &headers) {
        return refusal;
    }
    match query.get("api-version") {
        Some(v) if AZURE_API_VERSIONS.contains(&v.as_str()) => {}
        _ => return not_found(),
    }
    if !config.deployments.contains(&deployment) {
        return error(
            StatusCode::NOT_FOUND,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
        );
    }
    // Azure takes the model from the path; the OpenAI endpoints that answer
    // want it in the body, where a client may leave it out.
    let body = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut object)) if !object.contains_key("model") => {
            object.insert("model".to_owned(), serde_json::Value::String(deployment));
            Bytes::from(serde_json::Value::Object(object).to_string())
        }
        _ => body,
    };
    let plan = Extension(plan);
    match operation {
        Operation::Chat => super::handlers::chat_completions(plan, body)
            .await
            .into_response(),
        Operation::Completions => super::handlers::completions(plan, body)
            .await
            .into_response(),
        Operation::Embeddings => super::handlers::embeddings(body).await.into_response(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Operation {
    Chat,
    Completions,
    Embeddings,
}

type Deployment = (
    State<Arc<Shared>>,
    Path<String>,
    Query<HashMap<String, String>>,
    Extension<Plan>,
    HeaderMap,
);

pub(crate) async fn chat(
    (State(shared), Path(d), Query(q), Extension(plan), headers): Deployment,
    body: Bytes,
) -> Response {
    deployment(shared, d, q, plan, headers, body, Operation::Chat).await
}

pub(crate) async fn completions(
    (State(shared), Path(d), Query(q), Extension(plan), headers): Deployment,
    body: Bytes,
) -> Response {
    deployment(shared, d, q, plan, headers, body, Operation::Completions).await
}

pub(crate) async fn embeddings(
    (State(shared), Path(d), Query(q), Extension(plan), headers): Deployment,
    body: Bytes,
) -> Response {
    deployment(shared, d, q, plan, headers, body, Operation::Embeddings).await
}

/// `POST /openai/v1/responses`: the `v1` API takes the deployment as the
/// body's `model` and needs no `api-version`.
pub(crate) async fn responses(
    State(shared): State<Arc<Shared>>,
    Extension(plan): Extension<Plan>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = shared.config().azure;
    if let Some(refusal) = refused(&config, &headers) {
        return refusal;
    }
    let model = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_owned));
    if let Some(model) = model {
        if !config.deployments.contains(&model) {
            return error(
                StatusCode::NOT_FOUND,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist.",
            );
        }
    }
    super::responses::responses(Extension(plan), body)
        .await
        .into_response()
}
