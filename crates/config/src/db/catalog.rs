//! Providers and routes: loading the routing catalog and the write path behind it.

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::changes::record_change;
use crate::model::{Entity, Op, Provider, ProviderKind, ProviderOptions, Route, RouteTarget};

/// Every provider and route, each list ordered by name (routes by model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub providers: Vec<Provider>,
    pub routes: Vec<Route>,
}

/// A catalog write that the data does not allow.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown provider `{0}`")]
    UnknownProvider(String),
    #[error("route `{0}` needs at least one target")]
    NoTargets(String),
    #[error("provider `{provider}` is still used by routes: {}", routes.join(", "))]
    ProviderInUse {
        provider: String,
        routes: Vec<String>,
    },
    /// A provider as it would be stored that the caller's check refused.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A provider's columns, in [`Provider`]'s order.
const PROVIDER_COLUMNS: &str = "id, name, kind, base_url, credential_ref, timeout_ms, options";

/// The routes-with-targets join, without its filter and order.
const ROUTE_ROWS: &str = "SELECT r.id, r.model, p.name AS provider, t.upstream_model, \
     t.weight, t.priority \
     FROM routes r \
     LEFT JOIN route_targets t ON t.route_id = r.id \
     LEFT JOIN providers p ON p.id = t.provider_id";

/// One row of the routes-with-targets join.
#[derive(sqlx::FromRow)]
struct RouteRow {
    id: Uuid,
    model: String,
    provider: Option<String>,
    upstream_model: Option<String>,
    weight: Option<i32>,
    priority: Option<i32>,
}

impl RouteRow {
    /// The row's target; `None` for a route without targets (the left
    /// join's NULLs).
    fn target(self) -> Option<RouteTarget> {
        Some(RouteTarget {
            provider: self.provider?,
            upstream_model: self.upstream_model,
            weight: self.weight.unwrap_or(1),
            priority: self.priority,
        })
    }
}

/// Loads providers and routes, each route's targets in position order.
///
/// Both reads run in one repeatable-read snapshot, so a route never names a
/// provider the same catalog lacks.
pub async fn load_catalog(pool: &PgPool) -> Result<Catalog, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let providers: Vec<Provider> = sqlx::query_as(&format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers ORDER BY name"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let rows: Vec<RouteRow> = sqlx::query_as(&format!("{ROUTE_ROWS} ORDER BY r.model, t.position"))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;

    let mut routes: Vec<Route> = Vec::new();
    for row in rows {
        let route = match routes.last_mut() {
            Some(route) if route.id == row.id => route,
            _ => {
                routes.push(Route {
                    id: row.id,
                    model: row.model.clone(),
                    targets: Vec::new(),
                });
                let last = routes.len() - 1;
                &mut routes[last]
            }
        };
        route.targets.extend(row.target());
    }
    Ok(Catalog { providers, routes })
}

/// The attributes of a provider to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub credential_ref: Option<String>,
    /// The schema's default is 60 000.
    pub timeout_ms: i32,
    #[serde(default)]
    pub options: ProviderOptions,
}

/// Creates a provider.
pub async fn create_provider(pool: &PgPool, new: &NewProvider) -> Result<Provider, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let provider: Provider = sqlx::query_as(&format!(
        "INSERT INTO providers (id, name, kind, base_url, credential_ref, timeout_ms, options) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {PROVIDER_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(&new.name)
    .bind(new.kind.as_str())
    .bind(&new.base_url)
    .bind(&new.credential_ref)
    .bind(new.timeout_ms)
    .bind(sqlx::types::Json(&new.options))
    .fetch_one(&mut *tx)
    .await?;
    record_change(
        &mut tx,
        Entity::Provider,
        &provider.id.to_string(),
        Op::Insert,
    )
    .await?;
    tx.commit().await?;
    Ok(provider)
}

/// Deletes the provider named `name`; false when there was none. Refused while
/// a route still targets it.
pub async fn delete_provider(pool: &PgPool, name: &str) -> Result<bool, CatalogError> {
    let mut tx = pool.begin().await?;
    let id: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM providers WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(id) = id else {
        return Ok(false);
    };
    // The row lock above makes a concurrent create_route wait on its foreign
    // key check, so this list cannot go stale before the delete.
    let routes: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT r.model FROM routes r JOIN route_targets t ON t.route_id = r.id \
         WHERE t.provider_id = $1 ORDER BY r.model",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    if !routes.is_empty() {
        return Err(CatalogError::ProviderInUse {
            provider: name.to_owned(),
            routes,
        });
    }
    sqlx::query("DELETE FROM providers WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    record_change(&mut tx, Entity::Provider, &id.to_string(), Op::Delete).await?;
    tx.commit().await?;
    Ok(true)
}

/// Creates the route for `model`, served by `targets` in order. Each target
/// names a provider, which must exist.
pub async fn create_route(
    pool: &PgPool,
    model: &str,
    targets: &[RouteTarget],
) -> Result<Route, CatalogError> {
    if targets.is_empty() {
        return Err(CatalogError::NoTargets(model.to_owned()));
    }
    let mut tx = pool.begin().await?;
    let provider_ids = resolve_providers(&mut tx, targets).await?;
    let id: Uuid =
        sqlx::query_scalar("INSERT INTO routes (id, model) VALUES ($1, $2) RETURNING id")
            .bind(Uuid::new_v4())
            .bind(model)
            .fetch_one(&mut *tx)
            .await?;
    insert_targets(&mut tx, id, targets, &provider_ids).await?;
    record_change(&mut tx, Entity::Route, &id.to_string(), Op::Insert).await?;
    tx.commit().await?;
    Ok(Route {
        id,
        model: model.to_owned(),
        targets: targets.to_vec(),
    })
}

/// Inserts the targets of route `id` in order; `provider_ids` matches `targets`.
async fn insert_targets(
    conn: &mut PgConnection,
    id: Uuid,
    targets: &[RouteTarget],
    provider_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    let mut insert: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "INSERT INTO route_targets (route_id, position, provider_id, upstream_model, weight, priority) ",
    );
    insert.push_values(
        targets.iter().zip(provider_ids).enumerate(),
        |mut row, (position, (target, provider_id))| {
            // Routes have a handful of targets; the position always fits.
            let position = i32::try_from(position).unwrap_or(i32::MAX);
            row.push_bind(id)
                .push_bind(position)
                .push_bind(*provider_id)
                .push_bind(&target.upstream_model)
                .push_bind(target.weight)
                .push_bind(target.priority);
        },
    );
    insert.build().execute(&mut *conn).await?;
    Ok(())
}

/// The provider id of each target, in order; the first unknown name is an error.
///
/// The providers are locked `FOR KEY SHARE`, as the foreign key check would,
/// so none can be deleted before the route commits.
async fn resolve_providers(
    conn: &mut PgConnection,
    targets: &[RouteTarget],
) -> Result<Vec<Uuid>, CatalogError> {
    let names: Vec<&str> = targets.iter().map(|t| t.provider.as_str()).collect();
    let found: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM providers WHERE name = ANY($1) FOR KEY SHARE")
            .bind(&names)
            .fetch_all(&mut *conn)
            .await?;
    names
        .iter()
        .map(|name| {
            found
                .iter()
                .find(|(_, n)| n == name)
                .map(|(id, _)| *id)
                .ok_or_else(|| CatalogError::UnknownProvider((*name).to_owned()))
        })
        .collect()
}

/// Deletes route `id` and its targets; false when there was none.
pub async fn delete_route(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    super::changes::delete_recorded(pool, "DELETE FROM routes WHERE id = $1", id, Entity::Route)
        .await
}

/// The provider named `name`.
pub async fn get_provider(pool: &PgPool, name: &str) -> Result<Option<Provider>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await
}

/// A partial provider update: `None` leaves a field alone; `credential_ref`
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderUpdate {
    pub name: Option<String>,
    pub kind: Option<ProviderKind>,
    pub base_url: Option<String>,
    pub credential_ref: Option<Option<String>>,
    pub timeout_ms: Option<i32>,
    /// A merge patch of the options ([`ProviderOptions::merged`]).
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ProviderUpdate {
    /// True when the update would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == ProviderUpdate::default()
    }
}

impl ProviderUpdate {
    /// `current` with this update applied.
    pub fn apply(&self, current: &Provider) -> Provider {
        Provider {
            id: current.id,
            name: self.name.clone().unwrap_or_else(|| current.name.clone()),
            kind: self.kind.unwrap_or(current.kind),
            base_url: self
                .base_url
                .clone()
                .unwrap_or_else(|| current.base_url.clone()),
            credential_ref: self
                .credential_ref
                .clone()
                .unwrap_or_else(|| current.credential_ref.clone()),
            timeout_ms: self.timeout_ms.unwrap_or(current.timeout_ms),
            options: match &self.options {
                Some(patch) => current.options.merged(patch),
                None => current.options.clone(),
            },
        }
    }
}

/// Applies `update` to the provider named `name`; `None` when there is none.
/// An empty update changes nothing and records no change. Routes name their
/// providers by id, so a rename keeps them pointing at the same provider.
///
/// The stored row is read `FOR UPDATE`, merged with `update` and handed to
/// `check` before it is written, all in one transaction: two concurrent
/// updates, each acceptable alone, are judged one after the other, so the
/// second is judged against what the first stored and a combination `check`
/// refuses is never written. `check`'s error is returned as it is.
pub async fn update_provider(
    pool: &PgPool,
    name: &str,
    update: &ProviderUpdate,
    check: impl FnOnce(&Provider) -> Result<(), CatalogError>,
) -> Result<Option<Provider>, CatalogError> {
    let mut tx = pool.begin().await?;
    let current: Option<Provider> = sqlx::query_as(&format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers WHERE name = $1 FOR UPDATE"
    ))
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(current) = current else {
        return Ok(None);
    };
    if update.is_empty() {
        tx.commit().await?;
        return Ok(Some(current));
    }
    let merged = update.apply(&current);
    check(&merged)?;
    let provider: Provider = sqlx::query_as(&format!(
        "UPDATE providers SET updated_at = now(), name = $2, kind = $3, base_url = $4, \
         credential_ref = $5, timeout_ms = $6, options = $7 WHERE id = $1 \
         RETURNING {PROVIDER_COLUMNS}"
    ))
    .bind(current.id)
    .bind(&merged.name)
    .bind(merged.kind.as_str())
    .bind(&merged.base_url)
    .bind(&merged.credential_ref)
    .bind(merged.timeout_ms)
    .bind(sqlx::types::Json(&merged.options))
    .fetch_one(&mut *tx)
    .await?;
    record_change(
        &mut tx,
        Entity::Provider,
        &provider.id.to_string(),
        Op::Update,
    )
    .await?;
    tx.commit().await?;
    Ok(Some(provider))
}

/// Route `id` with its targets in position order.
pub async fn get_route(pool: &PgPool, id: Uuid) -> Result<Option<Route>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    route_by_id(&mut conn, id).await
}

async fn route_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<Route>, sqlx::Error> {
    let rows: Vec<RouteRow> =
        sqlx::query_as(&format!("{ROUTE_ROWS} WHERE r.id = $1 ORDER BY t.position"))
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let mut rows = rows.into_iter().peekable();
    let Some(first) = rows.peek() else {
        return Ok(None);
    };
    let mut route = Route {
        id: first.id,
        model: first.model.clone(),
        targets: Vec::new(),
    };
    route.targets.extend(rows.filter_map(RouteRow::target));
    Ok(Some(route))
}

/// Replaces the targets of route `id` with `targets`, in order; `None` when
/// there is no such route. Each target names a provider, which must exist.
pub async fn replace_route_targets(
    pool: &PgPool,
    id: Uuid,
    targets: &[RouteTarget],
) -> Result<Option<Route>, CatalogError> {
    let mut tx = pool.begin().await?;
    let model: Option<String> =
        sqlx::query_scalar("UPDATE routes SET updated_at = now() WHERE id = $1 RETURNING model")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(model) = model else {
        return Ok(None);
    };
    if targets.is_empty() {
        return Err(CatalogError::NoTargets(model));
    }
    let provider_ids = resolve_providers(&mut tx, targets).await?;
    sqlx::query("DELETE FROM route_targets WHERE route_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    insert_targets(&mut tx, id, targets, &provider_ids).await?;
    record_change(&mut tx, Entity::Route, &id.to_string(), Op::Update).await?;
    tx.commit().await?;
    Ok(Some(Route {
        id,
        model,
        targets: targets.to_vec(),
    }))
}
