//! The `/api/v1` resources, one module each: keys, teams, prices, providers,
//! routes, usage, fleet and maintenance. Request and response types live
//! beside their handlers (or in `*_types`); shared checks in [`validate`],
//! dollar amounts, budget periods and spend in [`budget`].

pub mod budget;
pub mod fleet;
pub mod key_types;
pub mod keys;
pub mod maintenance;
pub mod prices;
pub mod providers;
pub mod routes;
pub mod team_types;
pub mod teams;
pub mod usage;
pub mod validate;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// Marks an answer that carries a key's secret as never to be cached.
pub(crate) fn no_store(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// For PATCH bodies: a field left out is `None` (leave it alone), a `null` is
/// `Some(None)` (clear it). Use with `#[serde(default, deserialize_with = ..)]`.
pub(crate) fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}
