//! The usage ledger's conversion, for the tests that prove it: the schema
//! applied only up to a given migration (as a database of an older release
//! is), old `usage_events` rows generated in SQL, and the checks that every
//! running total and hourly rollup agrees with the ledger's rows.

use std::str::FromStr as _;

use obleth_config::migrate::{MigrationSet, Mode, RunReport, Runner, RunnerOptions};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use uuid::Uuid;

/// The last migration before the ledger: a database of release 0.1.0 with
/// fleet governance, whose gateways write `usage_events`.
pub const BEFORE_LEDGER: i64 = 20261128000001;
/// Creates `usage_ledger`, `usage_hourly` and the rollup queue (expand).
pub const CREATE: i64 = 20261128000002;
/// Forwards `usage_events` inserts to the ledger (expand).
pub const FORWARD: i64 = 20261128000003;
/// Copies the old rows in batches (expand, no transaction, batched).
pub const COPY: i64 = 20261128000004;
/// Drops `usage_events` (contract).
pub const DROP: i64 = 20261128000005;
/// Creates the daily rollups `usage_daily_keys` and `usage_daily_models`
/// (expand).
pub const DAILY: i64 = 20261128000006;

/// The embedded migrations whose version `keep` accepts.
pub fn embedded_where(keep: impl Fn(i64) -> bool) -> anyhow::Result<MigrationSet> {
    Ok(MigrationSet::from_defs(
        MigrationSet::embedded()?
            .iter()
            .filter(|m| keep(m.version))
            .cloned()
            .collect(),
    ))
}

/// Runs the embedded migrations up to and including `version` in `mode`
/// through the one runner, as `obleth-migrator` does.
pub async fn run_through(
    url: &str,
    version: i64,
    mode: Mode,
    opts: RunnerOptions,
) -> anyhow::Result<RunReport> {
    let options = PgConnectOptions::from_str(url)?;
    let set = embedded_where(|v| v <= version)?;
    Ok(Runner::new(set, opts).run(&options, mode).await?)
}

/// Inserts `rows` rows into `usage_events` in one statement, as the previous
/// release's gateways wrote them over the 30 days before now: keys taken in
/// turn from `keys`, every third row in `team` (when given), two models, a
/// provider on all but every 11th, every 13th answered 500, costs on two
/// rows of three. The table's totals trigger counts them, as it counted the
/// real rows.
pub async fn seed_old_usage(
    pool: &PgPool,
    keys: &[Uuid],
    team: Option<Uuid>,
    rows: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO usage_events (request_id, key_id, model, provider, prompt_tokens, \
         completion_tokens, total_tokens, status, latency_ms, streamed, node_id, created_at, \
         cost_micros, estimated, team_id) \
         SELECT gen_random_uuid(), ($1::uuid[])[1 + i % cardinality($1::uuid[])], \
                CASE WHEN i % 7 = 0 THEN 'old-b' ELSE 'old-a' END, \
                CASE WHEN i % 11 = 0 THEN NULL ELSE 'mock' END, \
                10 + i % 5, 20 + i % 3, 30 + i % 5 + i % 3, \
                CASE WHEN i % 13 = 0 THEN 500 ELSE 200 END, 12, i % 5 = 0, 'old-gw', \
                now() - interval '30 days' + (interval '30 days' - interval '1 minute') * i / $2, \
                CASE WHEN i % 3 = 0 THEN NULL ELSE i % 1000 END, FALSE, \
                CASE WHEN i % 3 = 1 THEN $3::uuid END \
         FROM generate_series(1, $2::bigint) AS i",
    )
    .bind(keys)
    .bind(rows)
    .bind(team)
    .execute(pool)
    .await?;
    Ok(())
}

/// What disagrees with the ledger's rows: running-totals rows (per key and
/// team, per period), hourly rollup groups and daily rollup groups (both
/// grains, once migration [`DAILY`] made them) that a recount from
/// `usage_ledger` does not reproduce, either way. All 0 when every row was
/// counted exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatches {
    pub totals: i64,
    pub hourly: i64,
    pub daily: i64,
}

/// Folds the rollup queue into `usage_hourly` and `usage_totals` until it is
/// empty (`obleth_fold_usage`, as the gateways do every second), for tests
/// that read those tables themselves; answers the queue rows folded.
pub async fn fold(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n: i64 = sqlx::query_scalar("SELECT obleth_fold_usage(10000)")
            .fetch_one(pool)
            .await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// Folds the queue ([`fold`]), then recounts the running totals and the
/// hourly rollups from `usage_ledger` and compares them with the stored ones.
pub async fn mismatches(pool: &PgPool) -> Result<Mismatches, sqlx::Error> {
    fold(pool).await?;
    let totals: i64 = sqlx::query_scalar(
        "WITH recount AS ( \
             SELECT s.subject_id, p.period, obleth_period_start(p.period, l.created_at) AS start, \
                    count(*) AS requests, COALESCE(sum(l.total_tokens), 0) AS tokens, \
                    COALESCE(sum(l.cost_micros), 0) AS cost \
             FROM usage_ledger l \
             CROSS JOIN LATERAL (VALUES (l.key_id), (l.team_id)) AS s (subject_id) \
             CROSS JOIN (VALUES ('day'), ('week'), ('month'), ('total')) AS p (period) \
             WHERE s.subject_id IS NOT NULL GROUP BY 1, 2, 3), \
         stored AS (SELECT subject_id, period, period_start, requests, tokens, cost_micros \
                    FROM usage_totals) \
         SELECT (SELECT count(*) FROM (SELECT * FROM recount EXCEPT SELECT * FROM stored) a) \
              + (SELECT count(*) FROM (SELECT * FROM stored EXCEPT SELECT * FROM recount) b)",
    )
    .fetch_one(pool)
    .await?;
    let hourly: i64 = sqlx::query_scalar(
        "WITH recount AS ( \
             SELECT date_trunc('hour', created_at, 'UTC') AS hour, key_id, team_id, model, \
                    provider, count(*) AS requests, count(*) FILTER (WHERE status >= 400) AS errors, \
                    COALESCE(sum(prompt_tokens), 0) AS p, COALESCE(sum(completion_tokens), 0) AS c, \
                    COALESCE(sum(total_tokens), 0) AS t, COALESCE(sum(cost_micros), 0) AS cost \
             FROM usage_ledger GROUP BY 1, 2, 3, 4, 5), \
         stored AS (SELECT hour, key_id, team_id, model, provider, requests, errors, \
                    prompt_tokens, completion_tokens, total_tokens, cost_micros FROM usage_hourly) \
         SELECT (SELECT count(*) FROM (SELECT * FROM recount EXCEPT SELECT * FROM stored) a) \
              + (SELECT count(*) FROM (SELECT * FROM stored EXCEPT SELECT * FROM recount) b)",
    )
    .fetch_one(pool)
    .await?;
    let daily = daily_mismatches(pool).await?;
    Ok(Mismatches {
        totals,
        hourly,
        daily,
    })
}

/// The daily rollups' groups a recount from `usage_ledger` does not
/// reproduce, either way; 0 before migration [`DAILY`].
async fn daily_mismatches(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let made: bool = sqlx::query_scalar("SELECT to_regclass('usage_daily_keys') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !made {
        return Ok(0);
    }
    let sums = "count(*) AS requests, count(*) FILTER (WHERE status >= 400) AS errors, \
                COALESCE(sum(prompt_tokens), 0) AS p, COALESCE(sum(completion_tokens), 0) AS c, \
                COALESCE(sum(total_tokens), 0) AS t, COALESCE(sum(cost_micros), 0) AS cost";
    let stored = "requests, errors, prompt_tokens, completion_tokens, total_tokens, cost_micros";
    let mut off = 0;
    for (table, columns) in [
        ("usage_daily_keys", "key_id, team_id"),
        ("usage_daily_models", "team_id, model, provider"),
    ] {
        let n: i64 = sqlx::query_scalar(&format!(
            "WITH recount AS ( \
                 SELECT date_trunc('day', created_at, 'UTC') AS day, {columns}, {sums} \
                 FROM usage_ledger GROUP BY day, {columns}), \
             stored AS (SELECT day, {columns}, {stored} FROM {table}) \
             SELECT (SELECT count(*) FROM (SELECT * FROM recount EXCEPT SELECT * FROM stored) a) \
                  + (SELECT count(*) FROM (SELECT * FROM stored EXCEPT SELECT * FROM recount) b)"
        ))
        .fetch_one(pool)
        .await?;
        off += n;
    }
    Ok(off)
}
