//! The providers and routes page: what `GET /api/v1/providers` and
//! `GET /api/v1/routes` answer, and forms that create, change and delete
//! providers and routes through the functions the API's handlers call
//! (`providers::create`, `update`, `delete`; `routes::create`, `replace`,
//! `delete`), so their checks (syntax, the `[egress]` policy, known
//! providers, the fleet's release) and messages are the API's. A refusal is
//! shown next to the form that was sent, with what was typed in it. A
//! provider's credential is shown only as its reference (`env:NAME` or
//! `file:/path`), as the API shows it; the credential itself is never read
//! here.

mod draft;
mod view;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::Markup;

use self::draft::{ProviderDraft, RouteDraft};
use self::view::{Draft, Outcome, Place};
use super::form::CsrfForm;
use super::layout::{notice, ConsoleError};
use super::session::Session;
use super::signin::SignedIn;
use crate::api::{providers, routes};
use crate::error::AdminError;
use crate::state::AppState;

/// `GET /console/catalog`.
pub async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
) -> Result<Markup, ConsoleError> {
    let providers = providers::list(&state).await?;
    let routes = routes::list(&state).await?;
    Ok(view::render(&session, &providers, &routes, None))
}

/// `POST /console/catalog/providers`: a new provider, as
/// `POST /api/v1/providers`.
pub async fn create_provider(
    State(state): State<AppState>,
    CsrfForm(session, form): CsrfForm<ProviderDraft>,
) -> Result<Response, ConsoleError> {
    let written = match form.create_body() {
        Ok(body) => providers::create(&state, body).await.map(|p| {
            let message = format!("Provider “{}” created.", p.name);
            (Place::Provider(p.name), message)
        }),
        Err(e) => Err(e),
    };
    answer(
        &state,
        &session,
        written,
        Place::NewProvider,
        Draft::Provider(form),
    )
    .await
}

/// `POST /console/catalog/providers/{name}`: its base URL, credential
/// reference, timeout and options, as `PATCH /api/v1/providers/{name}`.
pub async fn update_provider(
    State(state): State<AppState>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<ProviderDraft>,
) -> Result<Response, ConsoleError> {
    // The form shows the options whole; the API takes what changed.
    let current = providers::list(&state)
        .await?
        .items
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.options)
        .unwrap_or_default();
    let written = match form.update_body(&current) {
        Ok(body) => providers::update(&state, &name, body).await.map(|p| {
            let message = format!("Provider “{}” saved.", p.name);
            (Place::Provider(p.name), message)
        }),
        Err(e) => Err(e),
    };
    let place = Place::Provider(name);
    answer(&state, &session, written, place, Draft::Provider(form)).await
}

/// `POST /console/catalog/providers/{name}/delete`, as
/// `DELETE /api/v1/providers/{name}`: refused while a route uses it.
pub async fn delete_provider(
    State(state): State<AppState>,
    Path(name): Path<String>,
    CsrfForm(session, _): CsrfForm<serde::de::IgnoredAny>,
) -> Result<Response, ConsoleError> {
    let written = providers::delete(&state, &name)
        .await
        .map(|()| (Place::Page, format!("Provider “{name}” deleted.")));
    answer(
        &state,
        &session,
        written,
        Place::Provider(name),
        Draft::None,
    )
    .await
}

/// `POST /console/catalog/routes`: a new route, as `POST /api/v1/routes`.
pub async fn create_route(
    State(state): State<AppState>,
    CsrfForm(session, pairs): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = RouteDraft::from_pairs(pairs);
    let written = match form.create_body() {
        Ok(body) => routes::create(&state, body).await.map(|r| {
            let message = format!("Route “{}” created.", r.model);
            (Place::Route(r.id), message)
        }),
        Err(e) => Err(e),
    };
    answer(
        &state,
        &session,
        written,
        Place::NewRoute,
        Draft::Route(form),
    )
    .await
}

/// `POST /console/catalog/routes/{id}/targets`: the route's targets
/// replaced by the form's rows, as `PUT /api/v1/routes/{id}/targets`.
pub async fn replace_targets(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(session, pairs): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = RouteDraft::from_pairs(pairs);
    let written = match form.replace_body() {
        Ok(body) => routes::replace(&state, &id, body).await.map(|r| {
            let message = format!("Targets of “{}” saved.", r.model);
            (Place::Route(r.id), message)
        }),
        Err(e) => Err(e),
    };
    let place = Place::route(&id);
    answer(&state, &session, written, place, Draft::Route(form)).await
}

/// `POST /console/catalog/routes/{id}/delete`, as
/// `DELETE /api/v1/routes/{id}`.
pub async fn delete_route(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(session, _): CsrfForm<serde::de::IgnoredAny>,
) -> Result<Response, ConsoleError> {
    // Named by its model in the notice, read before it is gone.
    let model = routes::list(&state)
        .await?
        .items
        .into_iter()
        .find(|r| r.id.to_string() == id)
        .map_or_else(|| id.clone(), |r| r.model);
    let written = routes::delete(&state, &id)
        .await
        .map(|()| (Place::Page, format!("Route “{model}” deleted.")));
    answer(&state, &session, written, Place::route(&id), Draft::None).await
}

/// The page after a write: on success its notice where `written` says
/// (the row written, or the top for a delete); on a refusal the API's
/// message next to the form at `refused`, which shows `draft` again, with
/// the refusal's status. Errors that are not the operator's are the usual
/// error page.
async fn answer(
    state: &AppState,
    session: &Session,
    written: Result<(Place, String), AdminError>,
    refused: Place,
    draft: Draft,
) -> Result<Response, ConsoleError> {
    let (status, outcome) = match written {
        Ok((place, message)) => (
            StatusCode::OK,
            Outcome {
                place,
                notice: notice("ok", &message),
                draft: Draft::None,
            },
        ),
        Err(e) if e.status().is_client_error() => (
            e.status(),
            Outcome {
                place: refused,
                notice: notice("error", &e.to_string()),
                draft,
            },
        ),
        Err(e) => return Err(e.into()),
    };
    let providers = providers::list(state).await?;
    let routes = routes::list(state).await?;
    let page = view::render(session, &providers, &routes, Some(&outcome));
    Ok((status, page).into_response())
}
