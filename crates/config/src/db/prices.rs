//! The price table: the gateway's read and the admin's writes.
//!
//! A change to any price is recorded in the change log as entity `setting`
//! with the id [`CHANGE_ID`]; a gateway then re-reads the whole table (see
//! [`super::teams`] for why `setting`).

use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::changes::record_change;
use super::teams::violates;
use crate::model::{Entity, Op, Price};

/// The change-log id of the price table.
pub const CHANGE_ID: &str = "prices";

/// The unique constraint on price models.
const MODEL_KEY: &str = "prices_model_key";

/// The `prices` columns in [`Price`]'s order, as a literal for `concat!`.
macro_rules! price_columns {
    () => {
        "id, model, input_micros_per_mtok, output_micros_per_mtok"
    };
}

/// A price write that the stored data does not allow.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("a price for `{0}` already exists")]
    ModelTaken(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

fn model_taken(e: sqlx::Error, model: &str) -> PriceError {
    if violates(&e, "23505", MODEL_KEY) {
        PriceError::ModelTaken(model.to_owned())
    } else {
        PriceError::Database(e)
    }
}

/// Every price, by model pattern.
pub async fn list_prices(pool: &PgPool) -> Result<Vec<Price>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        price_columns!(),
        " FROM prices ORDER BY model"
    ))
    .fetch_all(pool)
    .await
}

/// The price with id `id`.
pub async fn price_by_id(pool: &PgPool, id: Uuid) -> Result<Option<Price>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        price_columns!(),
        " FROM prices WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A price to create: a model (exact name or glob) and its prices in
/// micro-dollars per million tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewPrice {
    pub model: String,
    pub input_micros_per_mtok: i64,
    pub output_micros_per_mtok: i64,
}

/// Creates a price; a model that already has one is [`PriceError::ModelTaken`].
pub async fn create_price(pool: &PgPool, new: &NewPrice) -> Result<Price, PriceError> {
    let mut tx = pool.begin().await?;
    let price: Price = sqlx::query_as(concat!(
        "INSERT INTO prices (id, model, input_micros_per_mtok, output_micros_per_mtok) \
         VALUES ($1, $2, $3, $4) RETURNING ",
        price_columns!()
    ))
    .bind(Uuid::new_v4())
    .bind(&new.model)
    .bind(new.input_micros_per_mtok)
    .bind(new.output_micros_per_mtok)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| model_taken(e, &new.model))?;
    record_change(&mut tx, Entity::Setting, CHANGE_ID, Op::Insert).await?;
    tx.commit().await?;
    Ok(price)
}

/// A partial price update: `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceUpdate {
    pub model: Option<String>,
    pub input_micros_per_mtok: Option<i64>,
    pub output_micros_per_mtok: Option<i64>,
}

impl PriceUpdate {
    /// True when the update would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == PriceUpdate::default()
    }
}

/// Applies `update` to price `id`; `None` when there is none. An empty update
/// changes nothing and records no change.
pub async fn update_price(
    pool: &PgPool,
    id: Uuid,
    update: &PriceUpdate,
) -> Result<Option<Price>, PriceError> {
    if update.is_empty() {
        return Ok(price_by_id(pool, id).await?);
    }
    let mut query: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("UPDATE prices SET updated_at = now()");
    if let Some(model) = &update.model {
        query.push(", model = ").push_bind(model);
    }
    if let Some(input) = update.input_micros_per_mtok {
        query.push(", input_micros_per_mtok = ").push_bind(input);
    }
    if let Some(output) = update.output_micros_per_mtok {
        query.push(", output_micros_per_mtok = ").push_bind(output);
    }
    query
        .push(" WHERE id = ")
        .push_bind(id)
        .push(" RETURNING ")
        .push(price_columns!());
    let mut tx = pool.begin().await?;
    let price: Option<Price> = query
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| model_taken(e, update.model.as_deref().unwrap_or_default()))?;
    if price.is_some() {
        record_change(&mut tx, Entity::Setting, CHANGE_ID, Op::Update).await?;
    }
    tx.commit().await?;
    Ok(price)
}

/// Deletes price `id`; false when there was none.
pub async fn delete_price(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM prices WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    if deleted {
        record_change(&mut tx, Entity::Setting, CHANGE_ID, Op::Delete).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}
