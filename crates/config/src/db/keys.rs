//! API key queries: the gateway's lookups of one key and the admin's writes
//! (the warm-up's reads are in [`super::key_store`]).
//!
//! Every write is one transaction holding the row change and its change-log
//! entry, so the NOTIFY goes out exactly when the change becomes visible.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::changes::record_change;
use crate::apikey::{self, GeneratedKey};
use crate::model::{ApiKey, BudgetPeriod, Entity, Op};

/// The foreign key from a key to its team.
pub(crate) const TEAM_FKEY: &str = "api_keys_team_id_fkey";

/// A key write that the stored data does not allow.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key names a team that does not exist (or was deleted meanwhile).
    #[error("no team `{0}`")]
    UnknownTeam(Uuid),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// `e` as a [`KeyError`]: a foreign key violation on the team is
/// [`KeyError::UnknownTeam`]. The database checks it inside the writing
/// transaction, so a team deleted concurrently cannot slip through.
fn key_error(e: sqlx::Error, team: Option<Uuid>) -> KeyError {
    let fk = super::teams::violates(&e, "23503", TEAM_FKEY);
    match team {
        Some(team) if fk => KeyError::UnknownTeam(team),
        _ => KeyError::Database(e),
    }
}

/// The `api_keys` columns in [`ApiKey`]'s order, as a literal for `concat!`.
macro_rules! key_columns {
    () => {
        "id, public_id, secret_hash, name, owner, allowed_models, rpm_limit, tpm_limit, \
         token_budget, expires_at, revoked_at, created_at, updated_at, \
         previous_secret_hash, previous_expires_at, team_id, budget_usd_micros, budget_period"
    };
}

/// The key whose current or previous secret hashes to `secret_hash`, revoked
/// or not. Callers should also check that its `public_id` is the one presented,
/// and for a previous secret, that its overlap has not ended.
pub async fn key_by_hash(pool: &PgPool, secret_hash: &[u8]) -> Result<Option<ApiKey>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys WHERE secret_hash = $1 \
          UNION ALL SELECT ",
        key_columns!(),
        " FROM api_keys WHERE previous_secret_hash = $1 AND previous_secret_hash IS NOT NULL \
          LIMIT 1"
    ))
    .bind(secret_hash)
    .fetch_optional(pool)
    .await
}

/// The key with id `id`, revoked or not.
pub async fn key_by_id(pool: &PgPool, id: Uuid) -> Result<Option<ApiKey>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The attributes of a key to create; the secret is generated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub owner: Option<String>,
    pub allowed_models: Vec<String>,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i32>,
    pub token_budget: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The team whose limits and budgets the key shares; it must exist.
    pub team_id: Option<Uuid>,
    /// Spend budget in micro-dollars per `budget_period`.
    pub budget_usd_micros: Option<i64>,
    /// The period both budgets reset on; `total` never resets.
    pub budget_period: BudgetPeriod,
}

/// Creates a key with a fresh secret. The returned [`GeneratedKey`] holds the
/// only copy of the secret; the database keeps its hash. A `team_id` naming
/// no team is [`KeyError::UnknownTeam`].
pub async fn create_key(pool: &PgPool, new: &NewKey) -> Result<(ApiKey, GeneratedKey), KeyError> {
    let generated = apikey::generate();
    let mut tx = pool.begin().await?;
    let key: ApiKey = sqlx::query_as(concat!(
        "INSERT INTO api_keys (id, public_id, secret_hash, name, owner, allowed_models, \
             rpm_limit, tpm_limit, token_budget, expires_at, team_id, budget_usd_micros, \
             budget_period) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING ",
        key_columns!()
    ))
    .bind(Uuid::new_v4())
    .bind(&generated.public_id)
    .bind(&generated.secret_hash[..])
    .bind(&new.name)
    .bind(&new.owner)
    .bind(&new.allowed_models)
    .bind(new.rpm_limit)
    .bind(new.tpm_limit)
    .bind(new.token_budget)
    .bind(new.expires_at)
    .bind(new.team_id)
    .bind(new.budget_usd_micros)
    .bind(new.budget_period.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| key_error(e, new.team_id))?;
    record_change(&mut tx, Entity::ApiKey, &key.id.to_string(), Op::Insert).await?;
    tx.commit().await?;
    Ok((key, generated))
}

/// A partial update: `None` leaves a field alone; for nullable fields
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUpdate {
    pub name: Option<String>,
    pub owner: Option<Option<String>>,
    pub allowed_models: Option<Vec<String>>,
    pub rpm_limit: Option<Option<i32>>,
    pub tpm_limit: Option<Option<i32>>,
    pub token_budget: Option<Option<i64>>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// `Some(None)` takes the key out of its team.
    pub team_id: Option<Option<Uuid>>,
    pub budget_usd_micros: Option<Option<i64>>,
    pub budget_period: Option<BudgetPeriod>,
}

impl KeyUpdate {
    /// True when the update would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == KeyUpdate::default()
    }
}

/// Applies `update` to key `id`; `None` when no such key exists. An empty
/// update changes nothing and records no change. A `team_id` naming no team
/// is [`KeyError::UnknownTeam`].
pub async fn update_key(
    pool: &PgPool,
    id: Uuid,
    update: &KeyUpdate,
) -> Result<Option<ApiKey>, KeyError> {
    if update.is_empty() {
        return Ok(key_by_id(pool, id).await?);
    }
    let mut query: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("UPDATE api_keys SET updated_at = now()");
    if let Some(name) = &update.name {
        query.push(", name = ").push_bind(name);
    }
    if let Some(owner) = &update.owner {
        query.push(", owner = ").push_bind(owner);
    }
    if let Some(models) = &update.allowed_models {
        query.push(", allowed_models = ").push_bind(models);
    }
    if let Some(rpm) = update.rpm_limit {
        query.push(", rpm_limit = ").push_bind(rpm);
    }
    if let Some(tpm) = update.tpm_limit {
        query.push(", tpm_limit = ").push_bind(tpm);
    }
    if let Some(budget) = update.token_budget {
        query.push(", token_budget = ").push_bind(budget);
    }
    if let Some(expires_at) = update.expires_at {
        query.push(", expires_at = ").push_bind(expires_at);
    }
    if let Some(team_id) = update.team_id {
        query.push(", team_id = ").push_bind(team_id);
    }
    if let Some(budget) = update.budget_usd_micros {
        query.push(", budget_usd_micros = ").push_bind(budget);
    }
    if let Some(period) = update.budget_period {
        query.push(", budget_period = ").push_bind(period.as_str());
    }
    query
        .push(" WHERE id = ")
        .push_bind(id)
        .push(" RETURNING ")
        .push(key_columns!());

    let mut tx = pool.begin().await?;
    let key: Option<ApiKey> = query
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| key_error(e, update.team_id.flatten()))?;
    if let Some(key) = &key {
        record_change(&mut tx, Entity::ApiKey, &key.id.to_string(), Op::Update).await?;
    }
    tx.commit().await?;
    Ok(key)
}

/// Revokes key `id`; `None` when no such key exists. Idempotent: revoking a
/// revoked key keeps its first `revoked_at` and records no change.
pub async fn revoke_key(pool: &PgPool, id: Uuid) -> Result<Option<ApiKey>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let revoked: Option<ApiKey> = sqlx::query_as(concat!(
        "UPDATE api_keys SET revoked_at = now(), updated_at = now() \
             WHERE id = $1 AND revoked_at IS NULL RETURNING ",
        key_columns!()
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let key = match revoked {
        Some(key) => {
            record_change(&mut tx, Entity::ApiKey, &key.id.to_string(), Op::Update).await?;
            Some(key)
        }
        None => {
            sqlx::query_as(concat!(
                "SELECT ",
                key_columns!(),
                " FROM api_keys WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    Ok(key)
}

/// Deletes key `id`; false when no such key existed. Its usage rows stay.
pub async fn delete_key(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    super::changes::delete_recorded(
        pool,
        "DELETE FROM api_keys WHERE id = $1",
        id,
        Entity::ApiKey,
    )
    .await
}

/// Which keys [`list_keys`] returns: filters and a keyset page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilter {
    pub owner: Option<String>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
    /// `Some(true)`: only revoked keys; `Some(false)`: only unrevoked ones.
    pub revoked: Option<bool>,
    /// Only the keys of this team.
    pub team_id: Option<Uuid>,
    /// The last id of the previous page.
    pub after: Option<Uuid>,
    pub limit: i64,
}

impl Default for KeyFilter {
    fn default() -> Self {
        KeyFilter {
            owner: None,
            name_contains: None,
            revoked: None,
            team_id: None,
            after: None,
            limit: 100,
        }
    }
}

/// Keys matching `filter`, ordered by id.
pub async fn list_keys(pool: &PgPool, filter: &KeyFilter) -> Result<Vec<ApiKey>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys WHERE TRUE"
    ));
    if let Some(owner) = &filter.owner {
        q.push(" AND owner = ").push_bind(owner.clone());
    }
    if let Some(name) = &filter.name_contains {
        let pattern = format!(
            "%{}%",
            name.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        q.push(" AND name ILIKE ").push_bind(pattern);
    }
    match filter.revoked {
        Some(true) => {
            q.push(" AND revoked_at IS NOT NULL");
        }
        Some(false) => {
            q.push(" AND revoked_at IS NULL");
        }
        None => {}
    }
    if let Some(team_id) = filter.team_id {
        q.push(" AND team_id = ").push_bind(team_id);
    }
    if let Some(after) = filter.after {
        q.push(" AND id > ").push_bind(after);
    }
    q.push(" ORDER BY id LIMIT ").push_bind(filter.limit.max(0));
    q.build_query_as().fetch_all(pool).await
}

/// What [`rotate_key`] did.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Built once per rotation; boxing buys nothing.
pub enum RotateOutcome {
    /// The key with its new secret; the previous one stays valid for the overlap.
    Rotated(ApiKey, GeneratedKey),
    NotFound,
    /// A revoked key is not rotated.
    Revoked,
}

/// Gives key `id` a new secret. The current secret becomes the previous one,
/// valid until now + `overlap` (a zero overlap ends it at once); a secret
/// from an earlier rotation is dropped.
pub async fn rotate_key(
    pool: &PgPool,
    id: Uuid,
    overlap: std::time::Duration,
) -> Result<RotateOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let current: Option<(String, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT public_id, revoked_at FROM api_keys WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let generated = match current {
        None => return Ok(RotateOutcome::NotFound),
        Some((_, Some(_))) => return Ok(RotateOutcome::Revoked),
        Some((public_id, None)) => apikey::generate_for(&public_id),
    };
    let key: ApiKey = sqlx::query_as(concat!(
        "UPDATE api_keys SET previous_secret_hash = secret_hash, \
             previous_expires_at = now() + make_interval(secs => $3), \
             secret_hash = $2, updated_at = now() \
         WHERE id = $1 RETURNING ",
        key_columns!()
    ))
    .bind(id)
    .bind(generated.secret_hash.to_vec())
    .bind(overlap.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    record_change(&mut tx, Entity::ApiKey, &id.to_string(), Op::Update).await?;
    tx.commit().await?;
    Ok(RotateOutcome::Rotated(key, generated))
}
