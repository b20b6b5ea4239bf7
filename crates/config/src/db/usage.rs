//! Usage events: the gateway's idempotent batch insert into the partitioned
//! ledger and the admin's reports (totals from the hourly rollups, records,
//! the current period's running totals, models without a price).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::encode::IsNull;
use sqlx::postgres::PgArgumentBuffer;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::model::{BudgetPeriod, UsageEvent};
use crate::pricing::PriceTable;

/// Rows per INSERT statement. The rows travel as 15 array parameters, so no
/// bind limit applies; this only bounds one statement's message (about
/// 150 bytes a row) and the arrays built for it. The gateway's batches
/// (`usage.batch_size`, 500 by default) fit in one.
pub const CHUNK_ROWS: usize = 5000;

/// The ledger's columns a batch writes, in the order of [`INSERT_USAGE`]'s
/// arrays and of the tuples [`copy_data`] encodes: one list for both
/// statements.
macro_rules! usage_columns {
    () => {
        "request_id, key_id, model, provider, prompt_tokens, completion_tokens, total_tokens, \
         status, latency_ms, streamed, node_id, created_at, cost_micros, estimated, team_id"
    };
}

/// The statement of a batch `COPY` refused (a retry): each column is one
/// array parameter and `UNNEST` turns them back into rows, in order.
/// Its text never changes, so each connection prepares it once; the
/// ledger's statement trigger (which queues the rollups) sees the new
/// rows of the whole chunk at once. The conflict target is the ledger's
/// idempotency key, `(request_id, created_at)`: a retried record carries the
/// `created_at` it was made with.
const INSERT_USAGE: &str = concat!(
    "INSERT INTO usage_ledger (",
    usage_columns!(),
    ") SELECT * FROM UNNEST(\
     $1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int4[], \
     $6::int4[], $7::int4[], $8::int2[], $9::int4[], $10::bool[], $11::text[], \
     $12::timestamptz[], $13::int8[], $14::bool[], $15::uuid[]) \
     ON CONFLICT ON CONSTRAINT usage_ledger_request_once DO NOTHING"
);

/// SQLSTATE of a row no partition accepts ("no partition of relation found
/// for row"): its day's partition was not created ahead.
const NO_PARTITION: &str = "23514";

/// A batch's statement: the columns of `usage_columns!` from a binary stream.
const COPY_USAGE: &str = concat!(
    "COPY usage_ledger (",
    usage_columns!(),
    ") FROM STDIN (FORMAT binary)"
);

/// Inserts `events` and returns how many rows were new.
///
/// Events whose `request_id` is already stored are skipped, so a batch retried
/// after a lost reply (or a timeout that did commit) never counts twice; the
/// same holds for duplicates within one batch. The batch is stored whole or
/// not at all.
///
/// A batch goes in by binary `COPY`, one statement whatever its size, which
/// costs PostgreSQL less a row than the `INSERT ... ON CONFLICT` over
/// arrays (no speculative insertion, no array decoding; bench/LEDGER.md).
/// `COPY` has no `ON CONFLICT`: a batch with a row already stored fails
/// whole on the idempotency key and is written again by [`INSERT_USAGE`],
/// which skips the stored rows. Only a retry (or a record twice in one
/// batch) takes that second path, so exactly-once costs nothing otherwise.
///
/// A batch with a row for a day whose partition does not exist yet (clock
/// skew, or partitions not kept ahead) creates the partitions of the
/// batch's days and is tried once more.
pub async fn insert_usage(pool: &PgPool, events: &[UsageEvent]) -> Result<u64, sqlx::Error> {
    match insert_batch(pool, events).await {
        Err(err) if is_no_partition(&err) => {
            let days = events.iter().map(|e| e.created_at.date_naive());
            super::ledger::ensure_days(pool, days).await?;
            insert_batch(pool, events).await
        }
        outcome => outcome,
    }
}

fn is_no_partition(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == NO_PARTITION)
        && err.to_string().contains("no partition")
}

async fn insert_batch(pool: &PgPool, events: &[UsageEvent]) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    match copy_batch(pool, events).await {
        // A row already stored (a retry) or twice in the batch.
        Err(err)
            if err
                .as_database_error()
                .is_some_and(|e| e.is_unique_violation()) =>
        {
            insert_skipping_stored(pool, events).await
        }
        outcome => outcome,
    }
}

/// Writes `events` with one binary `COPY`; fails whole on a row already
/// stored.
async fn copy_batch(pool: &PgPool, events: &[UsageEvent]) -> Result<u64, sqlx::Error> {
    let data = copy_data(events)?;
    let mut conn = pool.acquire().await?;
    let mut copy = conn.copy_in_raw(COPY_USAGE).await?;
    // On a failed send the copy is dropped, which aborts it.
    copy.send(data.as_slice()).await?;
    copy.finish().await
}

/// The binary `COPY` stream of `events`: the signature, then one tuple a
/// row, each field its length and sqlx's binary encoding of the value (the
/// same bytes sqlx sends as a bind parameter), then the trailer.
fn copy_data(events: &[UsageEvent]) -> Result<Vec<u8>, sqlx::Error> {
    let mut buf = PgArgumentBuffer::default();
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension
    for e in events {
        buf.extend_from_slice(&15i16.to_be_bytes());
        field(&mut buf, &e.request_id)?;
        field(&mut buf, &e.key_id)?;
        field(&mut buf, &e.model)?;
        field(&mut buf, &e.provider)?;
        field(&mut buf, &e.prompt_tokens)?;
        field(&mut buf, &e.completion_tokens)?;
        field(&mut buf, &e.total_tokens)?;
        field(&mut buf, &e.status)?;
        field(&mut buf, &e.latency_ms)?;
        field(&mut buf, &e.streamed)?;
        field(&mut buf, &e.node_id)?;
        field(&mut buf, &e.created_at)?;
        field(&mut buf, &e.cost_micros)?;
        field(&mut buf, &e.estimated)?;
        field(&mut buf, &e.team_id)?;
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(std::mem::take(&mut *buf))
}

/// One field of a binary `COPY` tuple: its length (-1 for NULL), then the
/// value as sqlx encodes it.
fn field<'q, T>(buf: &mut PgArgumentBuffer, value: &'q T) -> Result<(), sqlx::Error>
where
    T: sqlx::Encode<'q, Postgres>,
{
    let at = buf.len();
    buf.extend_from_slice(&0i32.to_be_bytes());
    let len = match value.encode_by_ref(buf).map_err(sqlx::Error::Encode)? {
        IsNull::Yes => -1,
        IsNull::No => i32::try_from(buf.len() - at - 4)
            .map_err(|_| sqlx::Error::Encode("a usage field over 2 GiB".into()))?,
    };
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Writes `events` skipping the rows already stored: [`INSERT_USAGE`], one
/// statement when it fits in [`CHUNK_ROWS`], else one transaction of one
/// statement per chunk.
async fn insert_skipping_stored(pool: &PgPool, events: &[UsageEvent]) -> Result<u64, sqlx::Error> {
    if events.len() <= CHUNK_ROWS {
        // A single statement is atomic on its own: no BEGIN and COMMIT to pay.
        return insert_chunk(pool, events).await;
    }
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    for chunk in events.chunks(CHUNK_ROWS) {
        inserted += insert_chunk(&mut *tx, chunk).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// Runs [`INSERT_USAGE`] for `chunk`, one array per column.
async fn insert_chunk<'e, E>(executor: E, chunk: &[UsageEvent]) -> Result<u64, sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    let request_ids: Vec<Uuid> = chunk.iter().map(|e| e.request_id).collect();
    let key_ids: Vec<Option<Uuid>> = chunk.iter().map(|e| e.key_id).collect();
    let models: Vec<&str> = chunk.iter().map(|e| e.model.as_str()).collect();
    let providers: Vec<Option<&str>> = chunk.iter().map(|e| e.provider.as_deref()).collect();
    let prompt: Vec<Option<i32>> = chunk.iter().map(|e| e.prompt_tokens).collect();
    let completion: Vec<Option<i32>> = chunk.iter().map(|e| e.completion_tokens).collect();
    let total: Vec<Option<i32>> = chunk.iter().map(|e| e.total_tokens).collect();
    let statuses: Vec<i16> = chunk.iter().map(|e| e.status).collect();
    let latencies: Vec<i32> = chunk.iter().map(|e| e.latency_ms).collect();
    let streamed: Vec<bool> = chunk.iter().map(|e| e.streamed).collect();
    let node_ids: Vec<Option<&str>> = chunk.iter().map(|e| e.node_id.as_deref()).collect();
    let created: Vec<DateTime<Utc>> = chunk.iter().map(|e| e.created_at).collect();
    let costs: Vec<Option<i64>> = chunk.iter().map(|e| e.cost_micros).collect();
    let estimated: Vec<bool> = chunk.iter().map(|e| e.estimated).collect();
    let team_ids: Vec<Option<Uuid>> = chunk.iter().map(|e| e.team_id).collect();
    let done = sqlx::query(INSERT_USAGE)
        .bind(request_ids)
        .bind(key_ids)
        .bind(models)
        .bind(providers)
        .bind(prompt)
        .bind(completion)
        .bind(total)
        .bind(statuses)
        .bind(latencies)
        .bind(streamed)
        .bind(node_ids)
        .bind(created)
        .bind(costs)
        .bind(estimated)
        .bind(team_ids)
        .execute(executor)
        .await?;
    Ok(done.rows_affected())
}

/// What usage totals are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    Key,
    Model,
    Provider,
    /// The team recorded with each event (`usage_events.team_id`); events
    /// without one (a key in no team, or a release before teams) group as `None`.
    Team,
}

impl UsageGroup {
    /// The grouping column; a constant per variant, never user input. Ids
    /// are grouped as uuids (16 bytes, compared as bytes, in the same order
    /// as their text) and made text only in the answer.
    fn column(self) -> &'static str {
        match self {
            UsageGroup::Key => "key_id",
            UsageGroup::Model => "model",
            UsageGroup::Provider => "provider",
            UsageGroup::Team => "team_id",
        }
    }
}

/// Which usage events a report covers: `from <= created_at < to`, narrowed
/// by the optional fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFilter {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub key_id: Option<Uuid>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// Events recorded with this team.
    pub team_id: Option<Uuid>,
}

impl UsageFilter {
    /// Appends ` WHERE` with the time range `[from, to)` on `time_column`
    /// and the filter's other fields, whose columns both the ledger and the
    /// rollups have.
    fn push_where<'a>(
        &'a self,
        query: &mut QueryBuilder<'a, Postgres>,
        time_column: &'static str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) {
        query
            .push(" WHERE ")
            .push(time_column)
            .push(" >= ")
            .push_bind(from)
            .push(" AND ")
            .push(time_column)
            .push(" < ")
            .push_bind(to);
        if let Some(key_id) = self.key_id {
            query.push(" AND key_id = ").push_bind(key_id);
        }
        if let Some(model) = &self.model {
            query.push(" AND model = ").push_bind(model);
        }
        if let Some(provider) = &self.provider {
            query.push(" AND provider = ").push_bind(provider);
        }
        if let Some(team_id) = self.team_id {
            query.push(" AND team_id = ").push_bind(team_id);
        }
    }

    /// Splits `[from, to)` into the whole UTC hours the rollups answer and
    /// the partial hours at either end that only the ledger can:
    /// `[from, lo)`, `[lo, hi)` whole hours, `[hi, to)`. A range within one
    /// hour has no whole hour, and all of it is read from the ledger.
    fn hours(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let to = self.to.max(self.from);
        let lo = ceil_to(self.from, HOUR).min(to);
        let hi = floor_to(to, HOUR).max(lo);
        (lo, hi)
    }
}

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// `at` rounded down to a multiple of `step` seconds since the epoch (a UTC
/// hour or day).
fn floor_to(at: DateTime<Utc>, step: i64) -> DateTime<Utc> {
    let secs = at.timestamp().div_euclid(step) * step;
    DateTime::from_timestamp(secs, 0).unwrap_or(at)
}

/// `at` rounded up to a multiple of `step` seconds since the epoch.
fn ceil_to(at: DateTime<Utc>, step: i64) -> DateTime<Utc> {
    let floor = floor_to(at, step);
    if floor == at {
        at
    } else {
        floor + chrono::Duration::seconds(step)
    }
}

/// The totals of one group. `group` is the key id, model, provider or team;
/// `None` for events without one (a request refused before its key or
/// provider was known, a key in no team).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageTotal {
    pub group: Option<String>,
    pub requests: i64,
    /// Requests answered with a status of 400 or more.
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// What the group's priced events cost, in micro-dollars; unpriced
    /// events (`cost_micros` NULL) add nothing.
    pub cost_micros: i64,
}

/// Totals per key, model, provider or team of the events `filter` selects, ordered
/// by group (`None` last).
///
/// Whole UTC days are read from a daily rollup when one holds the group
/// and every column the filter narrows by ([`daily_rollup`]), the other
/// whole UTC hours from the hourly rollups, plus the rows of the rollup
/// queue not folded into them yet (so a report is exact the moment a batch
/// commits); only the partial hours at the ends of the range are summed
/// from the ledger. So the cost of a report grows with its number of days,
/// hours and groups, not with its number of requests, and an hour-aligned
/// range reads rollups only.
pub async fn usage_totals(
    pool: &PgPool,
    group: UsageGroup,
    filter: &UsageFilter,
) -> Result<Vec<UsageTotal>, sqlx::Error> {
    let rows = grouped(pool, group, filter).await?;
    Ok(rows.into_iter().map(|(total, _)| total).collect())
}

/// The daily rollup (migration 20261128000006) that has the column of
/// `group` and of every field `filter` narrows by, the smaller one when
/// both do; `None` when only `usage_hourly` has them all (a key together
/// with a model or provider).
fn daily_rollup(group: UsageGroup, filter: &UsageFilter) -> Option<&'static str> {
    let no_key = filter.key_id.is_none() && group != UsageGroup::Key;
    let no_model = filter.model.is_none()
        && filter.provider.is_none()
        && !matches!(group, UsageGroup::Model | UsageGroup::Provider);
    if no_key {
        // (day, team, model, provider): a few rows a day however many keys.
        Some("usage_daily_models")
    } else if no_model {
        Some("usage_daily_keys")
    } else {
        None
    }
}

/// One source of a report: a rollup table read over `[from, to)` of its
/// time column.
struct Part {
    table: &'static str,
    time_column: &'static str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// The rollup reads that cover the whole hours `[lo, hi)`: whole days from
/// `daily` (when given), the hours around them from `usage_hourly`, and
/// the unfolded queue over all of it.
fn rollup_parts(daily: Option<&'static str>, lo: DateTime<Utc>, hi: DateTime<Utc>) -> Vec<Part> {
    let part = |table, time_column, from, to| Part {
        table,
        time_column,
        from,
        to,
    };
    let queue = part("usage_rollup_queue", "hour", lo, hi);
    let (day_lo, day_hi) = (ceil_to(lo, DAY), floor_to(hi, DAY));
    let mut parts = match daily {
        Some(table) if day_lo < day_hi => vec![
            part(table, "day", day_lo, day_hi),
            part("usage_hourly", "hour", lo, day_lo),
            part("usage_hourly", "hour", day_hi, hi),
        ],
        _ => vec![part("usage_hourly", "hour", lo, hi)],
    };
    // An empty span reads nothing, but planning it costs as much as any.
    parts.retain(|p| p.from < p.to);
    parts.push(queue);
    parts
}

/// The grouped totals behind [`usage_totals`], each with the time of its
/// group's last event.
///
/// Run with JIT off: a report over many partitions and rollup rows costs
/// enough for the planner to compile it, and compiling takes tens of
/// milliseconds, more than the report itself. And with 32 MB of `work_mem`:
/// the planner cannot estimate the groups of a union (it guesses 200), so
/// the aggregate of 10,000 keys spilled to disk at the default 4 MB. The
/// sums are `obleth_sum` (bigint all through, see migration
/// 20261128000006), not `sum`, which adds bigints in numeric.
async fn grouped(
    pool: &PgPool,
    group: UsageGroup,
    filter: &UsageFilter,
) -> Result<Vec<(UsageTotal, Option<DateTime<Utc>>)>, sqlx::Error> {
    let (lo, hi) = filter.hours();
    let column = group.column();
    let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT g::text AS \"group\", obleth_sum(requests) AS requests, \
         obleth_sum(errors) AS errors, obleth_sum(prompt_tokens) AS prompt_tokens, \
         obleth_sum(completion_tokens) AS completion_tokens, \
         obleth_sum(total_tokens) AS total_tokens, obleth_sum(cost_micros) AS cost_micros, \
         max(last_seen) AS last_seen FROM (SELECT ",
    );
    for (i, part) in rollup_parts(daily_rollup(group, filter), lo, hi)
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            query.push(" UNION ALL SELECT ");
        }
        query.push(column).push(
            " AS g, requests, errors, prompt_tokens, completion_tokens, total_tokens, \
             cost_micros, last_seen FROM ",
        );
        query.push(part.table);
        filter.push_where(&mut query, part.time_column, part.from, part.to);
    }
    for (from, to) in [(filter.from, lo), (hi, filter.to)] {
        if from >= to {
            continue;
        }
        query.push(" UNION ALL SELECT ").push(column).push(
            " AS g, count(*), count(*) FILTER (WHERE status >= 400), \
             COALESCE(sum(prompt_tokens), 0), COALESCE(sum(completion_tokens), 0), \
             COALESCE(sum(total_tokens), 0), COALESCE(obleth_sum(cost_micros), 0), \
             max(created_at) FROM usage_ledger",
        );
        filter.push_where(&mut query, "created_at", from, to);
        query.push(" GROUP BY 1");
    }
    query.push(") AS parts GROUP BY g ORDER BY g NULLS LAST");
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    sqlx::query("SET LOCAL work_mem = '32MB'")
        .execute(&mut *tx)
        .await?;
    let rows: Vec<GroupedRow> = query.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.total, row.last_seen))
        .collect())
}

#[derive(sqlx::FromRow)]
struct GroupedRow {
    #[sqlx(flatten)]
    total: UsageTotal,
    last_seen: Option<DateTime<Utc>>,
}

/// One stored usage event with its row id, the cursor of [`list_usage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageRecord {
    pub id: i64,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub event: UsageEvent,
}

/// Up to `limit` events that `filter` selects, oldest row first, after row
/// `after` (the last id of the previous page).
pub async fn list_usage(
    pool: &PgPool,
    filter: &UsageFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<UsageRecord>, sqlx::Error> {
    let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT id, request_id, key_id, model, provider, prompt_tokens, completion_tokens, \
         total_tokens, status, latency_ms, streamed, node_id, created_at, cost_micros, estimated, \
         team_id FROM usage_ledger",
    );
    filter.push_where(&mut query, "created_at", filter.from, filter.to);
    if let Some(after) = after {
        query.push(" AND id > ").push_bind(after);
    }
    query.push(" ORDER BY id LIMIT ").push_bind(limit.max(0));
    query.build_query_as().fetch_all(pool).await
}

/// A subject's running totals for one period, from `usage_totals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodTotals {
    /// The UTC start of the period these totals cover (the epoch for `total`).
    pub period_start: DateTime<Utc>,
    pub requests: i64,
    pub tokens: i64,
    pub cost_micros: i64,
}

/// The running totals of key or team `subject_id` for the `period` that
/// contains `at`; zeros when nothing was recorded in it. Read from the
/// running totals plus the rows of the rollup queue not folded into them yet
/// (exact the moment a batch commits), never by summing usage events.
pub async fn period_totals(
    pool: &PgPool,
    subject_id: Uuid,
    period: BudgetPeriod,
    at: DateTime<Utc>,
) -> Result<PeriodTotals, sqlx::Error> {
    let all = periods_totals(pool, &[(subject_id, period)], at).await?;
    Ok(all.into_iter().next().unwrap_or(PeriodTotals {
        period_start: period.start(at),
        requests: 0,
        tokens: 0,
        cost_micros: 0,
    }))
}

/// [`period_totals`] for many subjects in one query, answered in the order
/// of `subjects`. The queue is read from the earliest period's start on,
/// a span of `usage_rollup_queue_hour`: its live rows, never its whole heap,
/// which the fold's deletes leave large after a backlog.
pub async fn periods_totals(
    pool: &PgPool,
    subjects: &[(Uuid, BudgetPeriod)],
    at: DateTime<Utc>,
) -> Result<Vec<PeriodTotals>, sqlx::Error> {
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = subjects.iter().map(|(id, _)| *id).collect();
    let periods: Vec<&str> = subjects.iter().map(|(_, p)| p.as_str()).collect();
    let starts: Vec<DateTime<Utc>> = subjects.iter().map(|(_, p)| p.start(at)).collect();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT COALESCE(t.requests, 0) + COALESCE(q.requests, 0), \
                COALESCE(t.tokens, 0) + COALESCE(q.tokens, 0), \
                COALESCE(t.cost_micros, 0) + COALESCE(q.cost_micros, 0) \
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) WITH ORDINALITY \
              AS w (subject_id, period, period_start, i) \
         LEFT JOIN usage_totals t ON t.subject_id = w.subject_id AND t.period = w.period \
              AND t.period_start = w.period_start \
         LEFT JOIN (SELECT b.subject_id, p.period, \
                           CASE p.period WHEN 'total' THEN 'epoch'::timestamptz \
                                ELSE date_trunc(p.period, b.hour AT TIME ZONE 'UTC') \
                                     AT TIME ZONE 'UTC' END AS start, \
                           sum(b.requests)::bigint AS requests, \
                           sum(b.tokens)::bigint AS tokens, \
                           sum(b.cost_micros)::bigint AS cost_micros \
                    FROM (SELECT s.subject_id, u.hour, sum(u.requests) AS requests, \
                                 sum(u.total_tokens) AS tokens, sum(u.cost_micros) AS cost_micros \
                          FROM usage_rollup_queue u \
                          CROSS JOIN LATERAL (VALUES (u.key_id), (u.team_id)) AS s (subject_id) \
                          WHERE u.totals AND s.subject_id = ANY ($1) \
                                AND u.hour >= (SELECT min(CASE x.period WHEN 'total' \
                                                   THEN '-infinity'::timestamptz \
                                                   ELSE x.start END) \
                                               FROM unnest($2::text[], $3::timestamptz[]) \
                                                    AS x (period, start)) \
                          GROUP BY 1, 2) AS b \
                    CROSS JOIN (VALUES ('day'), ('week'), ('month'), ('total')) AS p (period) \
                    GROUP BY 1, 2, 3) AS q \
              ON q.subject_id = w.subject_id AND q.period = w.period \
              AND q.start = w.period_start \
         ORDER BY w.i",
    )
    .bind(&ids)
    .bind(&periods)
    .bind(&starts)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .zip(starts)
        .map(
            |((requests, tokens, cost_micros), period_start)| PeriodTotals {
                period_start,
                requests,
                tokens,
                cost_micros,
            },
        )
        .collect())
}

/// A model seen in usage that no price applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UnpricedModel {
    pub model: String,
    pub requests: i64,
    pub total_tokens: i64,
    pub last_seen: DateTime<Utc>,
}

/// The models recorded in usage with `from <= created_at < to` that the
/// current price table leaves unpriced, judged by [`PriceTable`] (the
/// gateway's rule: exact name, then the most specific glob), by model.
/// Read like [`usage_totals`]: rollups for whole hours, the ledger for the
/// partial ones.
pub async fn unpriced_models(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<UnpricedModel>, sqlx::Error> {
    let prices = PriceTable::new(super::prices::list_prices(pool).await?);
    let filter = UsageFilter {
        from,
        to,
        key_id: None,
        model: None,
        provider: None,
        team_id: None,
    };
    let models = grouped(pool, UsageGroup::Model, &filter).await?;
    Ok(models
        .into_iter()
        .filter_map(|(total, last_seen)| {
            let model = total.group?;
            if prices.price_for(&model).is_some() {
                return None;
            }
            Some(UnpricedModel {
                model,
                requests: total.requests,
                total_tokens: total.total_tokens,
                last_seen: last_seen?,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    fn filter(key: bool, model: bool, team: bool) -> UsageFilter {
        UsageFilter {
            from: at(1, 0, 0),
            to: at(2, 0, 0),
            key_id: key.then(Uuid::nil),
            model: model.then(|| "m".to_owned()),
            provider: None,
            team_id: team.then(Uuid::nil),
        }
    }

    #[test]
    fn a_report_reads_the_daily_rollup_that_has_its_columns() {
        use UsageGroup::*;
        let cases = [
            (Key, filter(false, false, false), Some("usage_daily_keys")),
            (Key, filter(false, false, true), Some("usage_daily_keys")),
            (Team, filter(true, false, false), Some("usage_daily_keys")),
            (
                Team,
                filter(false, false, false),
                Some("usage_daily_models"),
            ),
            (
                Model,
                filter(false, false, true),
                Some("usage_daily_models"),
            ),
            (
                Provider,
                filter(false, true, false),
                Some("usage_daily_models"),
            ),
            (Key, filter(false, true, false), None),
            (Model, filter(true, false, false), None),
            (Provider, filter(true, false, true), None),
        ];
        for (group, filter, table) in cases {
            assert_eq!(daily_rollup(group, &filter), table, "{group:?} {filter:?}");
        }
    }

    /// (table, from, to) of each part.
    fn spans(
        daily: Option<&'static str>,
        lo: DateTime<Utc>,
        hi: DateTime<Utc>,
    ) -> Vec<(&'static str, DateTime<Utc>, DateTime<Utc>)> {
        rollup_parts(daily, lo, hi)
            .into_iter()
            .map(|p| {
                let column = if p.table.starts_with("usage_daily") {
                    "day"
                } else {
                    "hour"
                };
                assert_eq!(p.time_column, column, "{}", p.table);
                (p.table, p.from, p.to)
            })
            .collect()
    }

    #[test]
    fn whole_days_come_from_the_daily_rollup_and_the_hours_around_them_from_hourly() {
        let daily = Some("usage_daily_keys");
        let queue = |lo, hi| ("usage_rollup_queue", lo, hi);
        // Two whole days with hours on both sides.
        assert_eq!(
            spans(daily, at(1, 5, 0), at(3, 7, 0)),
            vec![
                ("usage_daily_keys", at(2, 0, 0), at(3, 0, 0)),
                ("usage_hourly", at(1, 5, 0), at(2, 0, 0)),
                ("usage_hourly", at(3, 0, 0), at(3, 7, 0)),
                queue(at(1, 5, 0), at(3, 7, 0)),
            ]
        );
        // An aligned day: the daily rollup alone (empty spans left out),
        // and the queue, which is always read.
        assert_eq!(
            spans(daily, at(1, 0, 0), at(2, 0, 0)),
            vec![
                ("usage_daily_keys", at(1, 0, 0), at(2, 0, 0)),
                queue(at(1, 0, 0), at(2, 0, 0)),
            ]
        );
        assert_eq!(
            spans(daily, at(1, 3, 0), at(1, 3, 0)),
            vec![queue(at(1, 3, 0), at(1, 3, 0))]
        );
        // 24 hours across midnight hold no whole day; no daily rollup fits.
        for d in [daily, None] {
            assert_eq!(
                spans(d, at(1, 12, 0), at(2, 12, 0)),
                vec![
                    ("usage_hourly", at(1, 12, 0), at(2, 12, 0)),
                    queue(at(1, 12, 0), at(2, 12, 0)),
                ]
            );
        }
        assert_eq!(
            spans(None, at(1, 0, 0), at(3, 0, 0)),
            vec![
                ("usage_hourly", at(1, 0, 0), at(3, 0, 0)),
                queue(at(1, 0, 0), at(3, 0, 0)),
            ]
        );
    }

    #[test]
    fn days_round_on_utc_midnight() {
        assert_eq!(floor_to(at(5, 23, 59), DAY), at(5, 0, 0));
        assert_eq!(ceil_to(at(5, 0, 1), DAY), at(6, 0, 0));
        assert_eq!(ceil_to(at(5, 0, 0), DAY), at(5, 0, 0));
        assert_eq!(floor_to(at(5, 0, 0), DAY), at(5, 0, 0));
    }
}
