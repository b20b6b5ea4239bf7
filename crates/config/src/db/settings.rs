//! Settings shared through the change feed, such as maintenance mode.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::changes::record_change;
use crate::model::{Entity, Op};

/// The name of the maintenance setting, also the change log's entity id.
pub const MAINTENANCE: &str = "maintenance";

/// Maintenance mode: while enabled, gateways answer new proxy requests with 503
/// and `Retry-After`, and let in-flight ones finish.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Maintenance {
    pub enabled: bool,
    pub message: String,
    pub retry_after_secs: u64,
}

/// The current maintenance setting; disabled when never set.
pub async fn get_maintenance(pool: &PgPool) -> Result<Maintenance, sqlx::Error> {
    let value: Option<sqlx::types::Json<Maintenance>> =
        sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(MAINTENANCE)
            .fetch_optional(pool)
            .await?;
    Ok(value.map(|v| v.0).unwrap_or_default())
}

/// Stores the maintenance setting with its change-log entry and NOTIFY, in one
/// transaction.
pub async fn set_maintenance(pool: &PgPool, m: &Maintenance) -> Result<Maintenance, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, now()) \
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
    )
    .bind(MAINTENANCE)
    .bind(sqlx::types::Json(m))
    .execute(&mut *tx)
    .await?;
    record_change(&mut tx, Entity::Setting, MAINTENANCE, Op::Update).await?;
    tx.commit().await?;
    Ok(m.clone())
}
