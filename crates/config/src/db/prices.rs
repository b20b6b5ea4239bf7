//! The price table: the gateway's read and the admin's writes.
//!
//! A change to any price is recorded in the change log as entity `setting`
//! with the id [`CHANGE_ID`]; a gateway then re-reads the whole table (see
//! [`super::teams`] for why `setting`).

use sqlx::PgPool;

use crate::model::Price;

/// The change-log id of the price table.
pub const CHANGE_ID: &str = "prices";

/// Every price, by model pattern.
pub async fn list_prices(pool: &PgPool) -> Result<Vec<Price>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, model, input_micros_per_mtok, output_micros_per_mtok \
         FROM prices ORDER BY model",
    )
    .fetch_all(pool)
    .await
}
