//! Rows the governance scenarios need, written as the admin writes them: the
//! row change and its change-log entry in one transaction, so that running
//! gateways see it through the feed as they would an admin's write.
//!
//! Teams and prices travel as entity `setting` with the ids of
//! `obleth_config::db::teams::change_id` and `obleth_config::db::prices::CHANGE_ID`.

use obleth_config::db::changes::record_change;
use obleth_config::model::{Entity, Op};
use sqlx::types::Uuid;
use sqlx::PgPool;

/// Creates team `name` with the requests-per-minute limit `rpm_limit`;
/// answers its id.
pub async fn create_team(
    pool: &PgPool,
    name: &str,
    rpm_limit: Option<i32>,
) -> anyhow::Result<Uuid> {
    let id = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO teams (id, name, rpm_limit) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(rpm_limit)
        .execute(&mut *tx)
        .await?;
    record_change(
        &mut tx,
        Entity::Setting,
        &obleth_config::db::teams::change_id(id),
        Op::Insert,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Puts key `key_id` in team `team_id`.
pub async fn join_team(pool: &PgPool, key_id: Uuid, team_id: Uuid) -> anyhow::Result<()> {
    update_key(
        pool,
        key_id,
        sqlx::query("UPDATE api_keys SET team_id = $2, updated_at = now() WHERE id = $1")
            .bind(key_id)
            .bind(team_id),
    )
    .await
}

/// Gives key `key_id` a spend budget of `micros` micro-dollars per `period`
/// (`day`, `week`, `month` or `total`).
pub async fn set_key_budget(
    pool: &PgPool,
    key_id: Uuid,
    micros: i64,
    period: &str,
) -> anyhow::Result<()> {
    update_key(
        pool,
        key_id,
        sqlx::query(
            "UPDATE api_keys SET budget_usd_micros = $2, budget_period = $3, updated_at = now() \
             WHERE id = $1",
        )
        .bind(key_id)
        .bind(micros)
        .bind(period),
    )
    .await
}

async fn update_key(
    pool: &PgPool,
    key_id: Uuid,
    update: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let done = update.execute(&mut *tx).await?;
    anyhow::ensure!(done.rows_affected() == 1, "no key {key_id}");
    record_change(&mut tx, Entity::ApiKey, &key_id.to_string(), Op::Update).await?;
    tx.commit().await?;
    Ok(())
}

/// Sets the price of `model` (an exact name or a glob), in micro-dollars per
/// million input and output tokens.
pub async fn set_price(
    pool: &PgPool,
    model: &str,
    input_micros_per_mtok: i64,
    output_micros_per_mtok: i64,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO prices (id, model, input_micros_per_mtok, output_micros_per_mtok) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (model) DO UPDATE SET \
         input_micros_per_mtok = EXCLUDED.input_micros_per_mtok, \
         output_micros_per_mtok = EXCLUDED.output_micros_per_mtok, updated_at = now()",
    )
    .bind(Uuid::new_v4())
    .bind(model)
    .bind(input_micros_per_mtok)
    .bind(output_micros_per_mtok)
    .execute(&mut *tx)
    .await?;
    record_change(
        &mut tx,
        Entity::Setting,
        obleth_config::db::prices::CHANGE_ID,
        Op::Insert,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Usage rows with status 200 of `keys`, by gateway node, for evidence of
/// where a burst was admitted.
pub async fn admitted_by_node(pool: &PgPool, keys: &[Uuid]) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT COALESCE(node_id, '?'), count(*) FROM usage_ledger \
         WHERE key_id = ANY($1) AND status = 200 GROUP BY 1 ORDER BY 1",
    )
    .bind(keys)
    .fetch_all(pool)
    .await?)
}
