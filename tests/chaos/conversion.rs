//! g. The online conversion of `usage_events` into the partitioned
//! `usage_ledger` (docs/migrations.md, the large-table worked example), run by
//! `obleth-migrator` while the previous release and this one serve load.

use std::process::Output;
use std::time::{Duration, Instant};

use obleth_config::settings::MigrationSettings;
use obleth_e2e::fleet::{FleetSpec, Prepared};
use obleth_e2e::load::{Load, LoadSpec};
use obleth_e2e::locks::LockWaits;
use obleth_e2e::procs::GatewayProc;
use obleth_testkit::fresh_database;
use obleth_testkit::ledger::{
    embedded_where, mismatches, seed_old_usage, Mismatches, BEFORE_LEDGER, COPY, CREATE, FORWARD,
};
use obleth_testkit::poll::wait_until;
use obleth_testkit::proc::{bin, command};
use sqlx::PgPool;
use uuid::Uuid;

use crate::ONE_AT_A_TIME;

/// Rows of `usage_events` the previous release left: enough that the copy
/// (10,000 ids a batch) outlasts the new gateway's start.
const OLD_ROWS: i64 = 300_000;

async fn migrator(url: &str, command_name: &str) -> Output {
    command(bin("obleth-migrator"))
        .arg(command_name)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap()
}

async fn applied(pool: &PgPool, version: i64) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = $1)")
        .bind(version)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn load_on(g: &GatewayProc, key: &str, stream_every: u32) -> Load {
    Load::start(LoadSpec {
        base_url: g.url(""),
        key: key.to_owned(),
        model: "m".to_owned(),
        rate: 25,
        stream_every,
    })
}

#[tokio::test]
async fn the_online_conversion_under_both_releases_fails_no_request_and_loses_no_usage_row() {
    // 0.1.0 wrote `usage_events`; 0.2.0 converted it.
    let previous = tokio::task::spawn_blocking(|| obleth_e2e::releases::V0_1_0.gateway())
        .await
        .unwrap()
        .unwrap();
    let _one = ONE_AT_A_TIME.lock().await;
    let db = fresh_database().await.unwrap();
    let spec = FleetSpec::default();
    let before = embedded_where(|v| v <= BEFORE_LEDGER).unwrap();
    let prepared = Prepared::with_migrations(&db.url, &spec, before)
        .await
        .unwrap();
    let pool = prepared.pool.clone();

    // The previous release's usage over the last 30 days.
    let load_key: Uuid = sqlx::query_scalar("SELECT id FROM api_keys WHERE name = 'load'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let keys = [load_key, Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let started = Instant::now();
    seed_old_usage(&pool, &keys, Some(Uuid::new_v4()), OLD_ROWS)
        .await
        .unwrap();
    let (seeded, seeded_ids): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(id)::bigint FROM usage_events")
            .fetch_one(&pool)
            .await
            .unwrap();
    obleth_e2e::evidence(&format!(
        "[conversion] seeded {seeded} old usage rows in {:?}",
        started.elapsed()
    ));

    // The previous release serves.
    let mut old = GatewayProc::new(prepared.dir.path(), "prev", previous, &db.url, 1).unwrap();
    old.start().unwrap();
    old.wait_ready(Duration::from_secs(60)).await.unwrap();
    let old_load = load_on(&old, &prepared.key, 10);
    let locks = LockWaits::start(&db.url).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // `up` converts under load; the new release starts as soon as its
    // tables exist, and serves once forwarding is on, during the copy.
    let url = db.url.clone();
    let up = tokio::spawn(async move { migrator(&url, "up").await });
    wait_until(
        Duration::from_secs(60),
        "usage_ledger to be created",
        || applied(&pool, CREATE),
    )
    .await;
    let mut new = GatewayProc::new(
        prepared.dir.path(),
        "new",
        bin("obleth-gateway"),
        &db.url,
        1,
    )
    .unwrap();
    new.start().unwrap();
    new.wait_ready(Duration::from_secs(60)).await.unwrap();
    let new_load = load_on(&new, &prepared.key, 0);
    // The new release has written while old rows were still to copy.
    wait_until(
        Duration::from_secs(30),
        "a usage row of the new release",
        || async {
            scalar(
                &pool,
                "SELECT count(*) FROM usage_ledger WHERE node_id = 'new'",
            )
            .await
                > 0
        },
    )
    .await;
    let left_when_new_wrote = if applied(&pool, COPY).await {
        0
    } else {
        scalar(&pool, "SELECT until - through FROM usage_ledger_copy").await
    };
    let out = tokio::time::timeout(Duration::from_secs(120), up)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(applied(&pool, FORWARD).await && applied(&pool, COPY).await);
    let copy_secs = scalar(
        &pool,
        &format!("SELECT execution_time FROM _sqlx_migrations WHERE version = {COPY}"),
    )
    .await as f64
        / 1e9;
    let until = scalar(&pool, "SELECT until FROM usage_ledger_copy").await;
    let copied = scalar(
        &pool,
        &format!("SELECT count(*) FROM usage_ledger WHERE id <= {until}"),
    )
    .await;
    let not_copied = scalar(
        &pool,
        &format!(
            "SELECT count(*) FROM usage_events e WHERE e.id <= {until} AND NOT EXISTS \
             (SELECT 1 FROM usage_ledger l WHERE l.id = e.id AND l.request_id = e.request_id)"
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The contract waits for the previous release to go.
    let refused = migrator(&db.url, "finish").await;
    let refusal = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(refused.status.code(), Some(7), "{refusal}");
    assert!(
        refusal.contains("prev") && refusal.contains("0.1.0"),
        "{refusal}"
    );

    // Roll the previous release away: its load ends, it drains and flushes.
    let old_report = old_load.finish().await;
    old.stop().await.unwrap();
    let finished = migrator(&db.url, "finish").await;
    assert!(
        finished.status.success(),
        "finish failed: {}",
        String::from_utf8_lossy(&finished.stderr)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let new_report = new_load.finish().await;
    new.stop().await.unwrap();
    let waits = locks.finish().await.unwrap();

    old_report.print("conversion, previous release");
    new_report.print("conversion, new release");
    let served: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM usage_ledger WHERE status = 200 AND node_id IN ('prev', 'new')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let by_node: Vec<(String, i64)> = sqlx::query_as(
        "SELECT node_id, count(*) FROM usage_ledger WHERE status = 200 AND node_id IN ('prev', 'new') \
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let (kept, kept_ids): (i64, i64) = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(id), 0)::bigint FROM usage_ledger WHERE node_id = 'old-gw'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    obleth_testkit::ledger::fold(&pool).await.unwrap();
    let totals_by_key: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT t.subject_id, t.requests, (SELECT count(*) FROM usage_ledger l WHERE l.key_id = t.subject_id) \
         FROM usage_totals t WHERE t.period = 'total' AND t.subject_id = ANY($1) ORDER BY 1",
    )
    .bind(&keys[..])
    .fetch_all(&pool)
    .await
    .unwrap();
    let off = mismatches(&pool).await.unwrap();
    let gone = scalar(
        &pool,
        "SELECT count(*) FROM pg_class WHERE relname IN ('usage_events', 'usage_ledger_copy')",
    )
    .await;

    let requests = old_report.sent + new_report.sent;
    let ok = old_report.succeeded + new_report.succeeded;
    let rows = served + kept;
    let expected_rows = ok as i64 + seeded;
    let (longest_ms, statement) = match &waits.longest {
        Some(w) => {
            let lock = if w.lock.is_empty() {
                String::new()
            } else {
                format!(", {} lock", w.lock)
            };
            let text: String = w.statement.chars().take(200).collect();
            (
                w.waited.as_millis(),
                format!("{text} [{}{lock}]", w.application),
            )
        }
        None => (0, "none".to_owned()),
    };
    obleth_e2e::evidence(&format!(
        "conversion: {ok} of {requests} requests ok (previous {}, new {}), usage rows {rows} of {expected_rows}, \
         copied {copied} old rows in {copy_secs:.1} s, longest lock wait {longest_ms} ms ({statement})",
        old_report.succeeded, new_report.succeeded
    ));
    obleth_e2e::evidence(&format!(
        "[conversion] ids left to copy when the new release first wrote: {left_when_new_wrote}; \
         lock waits seen {} in {} samples; 200s by node {by_node:?}; totals vs ledger by key {totals_by_key:?}",
        waits.waits, waits.samples
    ));

    assert_eq!(old_report.failed_total(), 0, "{:?}", old_report.failed);
    assert_eq!(new_report.failed_total(), 0, "{:?}", new_report.failed);
    assert_eq!(ok, requests, "every request accounted for");
    assert!(old_report.succeeded > 0 && new_report.succeeded > 0);
    assert!(
        left_when_new_wrote > 0,
        "the new release wrote while the copy ran"
    );
    assert_eq!(
        by_node,
        [
            ("new".to_owned(), new_report.succeeded as i64),
            ("prev".to_owned(), old_report.succeeded as i64)
        ],
        "one ledger row per 200, per release"
    );
    assert_eq!(
        not_copied, 0,
        "every row written before forwarding was copied"
    );
    assert_eq!(
        (kept, kept_ids),
        (seeded, seeded_ids),
        "every old row copied with its id"
    );
    for (key, total, rows) in &totals_by_key {
        assert_eq!(
            total, rows,
            "the running total of key {key} counts each row once"
        );
    }
    assert_eq!(totals_by_key.len(), keys.len());
    assert_eq!(
        off,
        Mismatches {
            totals: 0,
            hourly: 0,
            daily: 0
        },
        "totals and rollups agree with the ledger"
    );
    assert_eq!(gone, 0, "finish dropped usage_events");
    let lock_timeout = Duration::from_millis(MigrationSettings::default().lock_timeout_ms);
    assert!(
        waits.longest.as_ref().is_none_or(|w| w.waited < lock_timeout),
        "a lock wait of {longest_ms} ms reached the runner's lock_timeout ({lock_timeout:?}): {statement}"
    );
}
