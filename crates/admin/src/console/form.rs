//! The extractor every console form handler takes: a valid session, then a
//! URL-encoded body whose `csrf` field is that session's token, then the
//! form's own fields. A handler cannot take a form without the check.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use maud::html;
use serde::de::DeserializeOwned;
use tracing::warn;

use super::layout::{notice, page, Nav};
use super::session::Session;
use super::signin::SignedIn;
use crate::state::AppState;

/// A form posted by a signed-in operator from a console page.
#[derive(Debug)]
pub struct CsrfForm<T>(pub Session, pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let SignedIn(session) = SignedIn::from_request_parts(&mut parts, state).await?;
        let request = Request::from_parts(parts, body);
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "the form could not be read"))?;
        let csrf = pairs
            .iter()
            .find(|(name, _)| name == "csrf")
            .map(|(_, v)| v.as_str());
        if !csrf.is_some_and(|token| session.check_csrf(token)) {
            warn!(
                csrf_sent = csrf.is_some(),
                "Console form refused: missing or wrong CSRF token."
            );
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "this form is out of date or did not come from the console; reload the page and try again",
            ));
        }
        let fields = serde_urlencoded::from_bytes(&body)
            .map_err(|e| refuse(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()))?;
        Ok(CsrfForm(session, fields))
    }
}

/// A refused form as a page.
pub fn refuse(status: StatusCode, message: &str) -> Response {
    let body = page(
        "Refused",
        Nav::None,
        None,
        html! {
            h1 { "Refused" }
            (notice("error", message))
            p { a href="/console" { "Back to the console" } }
        },
    );
    (status, body).into_response()
}
