//! The page shell every console page shares (head, navigation, sign-out),
//! and the error page. Markup is maud: every interpolated value is escaped,
//! and no page holds inline script or style, which the CSP forbids.

use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::session::Session;
use crate::error::AdminError;

/// The console's pages, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Rollout,
    Keys,
    Catalog,
    Usage,
    None,
}

/// A whole page: `body` inside the shell, with the navigation and a
/// sign-out form when `session` is given.
pub fn page(title: &str, nav: Nav, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx would add an inline <style> for its indicators, which
                // the CSP refuses; the console has no indicators.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false}"#;
                title { (title) " · obleth console" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/htmx.min.js" defer {}
                script src="/console/static/console.js" defer {}
            }
            body {
                header {
                    span.brand { "obleth" }
                    @if let Some(session) = session {
                        nav {
                            a href="/console/rollout" class=[(nav == Nav::Rollout).then_some("active")] { "Rollout" }
                            a href="/console/keys" class=[(nav == Nav::Keys).then_some("active")] { "Keys" }
                            a href="/console/catalog" class=[(nav == Nav::Catalog).then_some("active")] { "Providers and routes" }
                            a href="/console/usage" class=[(nav == Nav::Usage).then_some("active")] { "Usage" }
                        }
                        form.signout method="post" action="/console/sign-out" {
                            (csrf_field(session))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The hidden CSRF field every form of a session carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf_token()); }
}

/// A notice above a page's content: an error or a confirmation.
pub fn notice(kind: &str, text: &str) -> Markup {
    html! { p class={"notice " (kind)} role="status" { (text) } }
}

/// A console failure as a page with its status. The message is the API's
/// (validation messages name the field the same way); an internal error is
/// logged where it happened and shown as opaque.
#[derive(Debug)]
pub struct ConsoleError(pub AdminError);

impl From<AdminError> for ConsoleError {
    fn from(e: AdminError) -> Self {
        ConsoleError(e)
    }
}

impl From<sqlx::Error> for ConsoleError {
    fn from(e: sqlx::Error) -> Self {
        ConsoleError(e.into())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = page(
            "Error",
            Nav::None,
            None,
            html! {
                h1 { "Something went wrong" }
                (notice("error", &self.0.to_string()))
                p { a href="/console" { "Back to the console" } }
            },
        );
        (status, body).into_response()
    }
}
