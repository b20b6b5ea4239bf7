//! The usage ledger: the online conversion from `usage_events` (ids kept,
//! nothing counted twice, rollups right, the contract refused until the copy
//! is done), admin totals read from rollups equal to a raw sum, partitions
//! created on demand, and retention dropping whole days.

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, Days, TimeZone, Utc};
use obleth_config::db::{ledger, usage};
use obleth_config::migrate::runner::MigrateError;
use obleth_config::migrate::{Mode, Runner, RunnerOptions};
use obleth_config::model::UsageEvent;
use obleth_testkit::fresh_database;
use obleth_testkit::ledger::{
    embedded_where, mismatches, run_through, seed_old_usage, Mismatches, BEFORE_LEDGER, COPY,
    CREATE, DAILY, DROP, FORWARD,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use uuid::Uuid;

use super::{migrated, usage_event};

fn opts() -> RunnerOptions {
    RunnerOptions {
        lock_timeout: Duration::from_millis(500),
        retry_backoff: Duration::from_millis(50),
        application_name: "ledger-test".to_owned(),
        ..RunnerOptions::default()
    }
}

/// Inserts one row into `usage_events` as release 0.1.0 writes it (its
/// columns, its conflict target); answers whether it was new.
async fn previous_release_insert(
    pool: &PgPool,
    request_id: Uuid,
    key: Uuid,
    at: DateTime<Utc>,
) -> bool {
    sqlx::query(
        "INSERT INTO usage_events (request_id, key_id, model, provider, prompt_tokens, \
         completion_tokens, total_tokens, status, latency_ms, streamed, node_id, created_at) \
         VALUES ($1, $2, 'prev', 'mock', 3, 4, 7, 200, 9, FALSE, 'gw-prev', $3) \
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(request_id)
    .bind(key)
    .bind(at)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected()
        == 1
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

const NO_MISMATCH: Mismatches = Mismatches {
    totals: 0,
    hourly: 0,
    daily: 0,
};

#[tokio::test]
async fn the_conversion_keeps_ids_counts_every_row_once_and_the_contract_waits_for_the_copy() {
    let db = fresh_database().await.unwrap();
    run_through(&db.url, BEFORE_LEDGER, Mode::Up, opts())
        .await
        .unwrap();
    let pool = PgPool::connect(&db.url).await.unwrap();
    let keys = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let team = Uuid::new_v4();
    seed_old_usage(&pool, &keys, Some(team), 25_000)
        .await
        .unwrap();
    let (seeded, seeded_ids): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(id)::bigint FROM usage_events")
            .fetch_one(&pool)
            .await
            .unwrap();
    let old_request =
        sqlx::query_scalar::<_, Uuid>("SELECT request_id FROM usage_events ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();

    // Expand: the ledger, then forwarding.
    run_through(&db.url, CREATE, Mode::Up, opts())
        .await
        .unwrap();
    // Between the two, the previous release's rows are still counted by
    // usage_events' own trigger, and copied later.
    assert!(previous_release_insert(&pool, Uuid::new_v4(), keys[0], Utc::now()).await);
    run_through(&db.url, FORWARD, Mode::Up, opts())
        .await
        .unwrap();
    let until = scalar(&pool, "SELECT until FROM usage_ledger_copy").await;
    assert_eq!(
        until,
        scalar(&pool, "SELECT max(id) FROM usage_events").await
    );

    // The previous release writes on, forwarded: today, 40 days ahead (a day
    // no partition was made for), and a retry of an old row, which neither
    // table takes again.
    assert!(previous_release_insert(&pool, Uuid::new_v4(), keys[1], Utc::now()).await);
    let ahead = Utc::now() + chrono::Duration::days(40);
    assert!(previous_release_insert(&pool, Uuid::new_v4(), keys[2], ahead).await);
    let old_at: DateTime<Utc> =
        sqlx::query_scalar("SELECT created_at FROM usage_events WHERE request_id = $1")
            .bind(old_request)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!previous_release_insert(&pool, old_request, keys[0], old_at).await);
    // The new release writes the ledger directly.
    let mut new_rows: Vec<UsageEvent> = (0..5)
        .map(|_| UsageEvent {
            team_id: Some(team),
            cost_micros: Some(70),
            ..usage_event(Some(keys[0]), Some(11))
        })
        .collect();
    assert_eq!(usage::insert_usage(&pool, &new_rows).await.unwrap(), 5);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM usage_ledger").await, 7);

    // The contract refuses while old rows are left to copy, and changes nothing.
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let skip_copy = embedded_where(|v| v != COPY).unwrap();
    let err = Runner::new(skip_copy, opts())
        .run(&options, Mode::Finish { force: false })
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrateError::Failed { version: DROP, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("copy of usage_events"), "{err}");
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM usage_events").await,
        seeded + 3
    );

    // A copy stopped part-way resumes where it stopped.
    let first: i64 = scalar(&pool, "SELECT obleth_usage_copy_step(1000)").await;
    assert_eq!(first, 1000);
    let report = run_through(&db.url, COPY, Mode::Up, opts()).await.unwrap();
    assert_eq!(report.applied.len(), 1);
    assert_eq!(
        scalar(&pool, "SELECT until - through FROM usage_ledger_copy").await,
        0
    );
    assert_eq!(
        scalar(&pool, "SELECT obleth_usage_copy_step(1000)").await,
        0
    );

    // Every old row is in the ledger with its id; nothing else has one of them.
    let (copied, copied_ids): (i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(l.id)::bigint FROM usage_ledger l \
         JOIN usage_events e ON e.id = l.id AND e.request_id = l.request_id \
              AND e.created_at = l.created_at \
         WHERE l.id <= $1",
    )
    .bind(until)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        copied,
        seeded + 1,
        "the seeded rows and the one before forwarding"
    );
    assert_eq!(
        copied_ids,
        seeded_ids + until,
        "the seeded ids, and the last old row's"
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) - count(DISTINCT id) FROM usage_ledger"
        )
        .await,
        0,
        "no id is used twice"
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM usage_events e WHERE NOT EXISTS (SELECT 1 FROM usage_ledger l \
             WHERE l.request_id = e.request_id AND l.created_at = e.created_at)"
        )
        .await,
        0,
        "every row of usage_events is in the ledger"
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM usage_ledger").await,
        seeded + 3 + 5
    );
    // Counted once: the running totals and the rollups agree with the rows.
    assert_eq!(mismatches(&pool).await.unwrap(), NO_MISMATCH);
    let total: i64 = sqlx::query_scalar(
        "SELECT requests FROM usage_totals WHERE subject_id = $1 AND period = 'total'",
    )
    .bind(keys[0])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        total,
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM usage_ledger WHERE key_id = $1")
            .bind(keys[0])
            .fetch_one(&pool)
            .await
            .unwrap()
    );

    // The contract now runs, and the new release writes on.
    Runner::new(embedded_where(|_| true).unwrap(), opts())
        .run(&options, Mode::Finish { force: false })
        .await
        .unwrap();
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM pg_class WHERE relname IN ('usage_events', 'usage_ledger_copy')"
        )
        .await,
        0
    );
    for e in &mut new_rows {
        e.request_id = Uuid::new_v4();
    }
    assert_eq!(usage::insert_usage(&pool, &new_rows).await.unwrap(), 5);
    assert_eq!(mismatches(&pool).await.unwrap(), NO_MISMATCH);
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) - count(DISTINCT id) FROM usage_ledger"
        )
        .await,
        0
    );
}

fn at(d: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, d, h, m, s).unwrap()
}

/// The raw answer: the same totals summed from every ledger row `filter`
/// selects.
async fn raw_totals(pool: &PgPool, column: &str, f: &usage::UsageFilter) -> Vec<usage::UsageTotal> {
    let sql = format!(
        "SELECT {column} AS \"group\", count(*) AS requests, \
         count(*) FILTER (WHERE status >= 400) AS errors, \
         COALESCE(sum(prompt_tokens), 0)::bigint AS prompt_tokens, \
         COALESCE(sum(completion_tokens), 0)::bigint AS completion_tokens, \
         COALESCE(sum(total_tokens), 0)::bigint AS total_tokens, \
         COALESCE(sum(cost_micros), 0)::bigint AS cost_micros \
         FROM usage_ledger WHERE created_at >= $1 AND created_at < $2 \
         AND ($3::uuid IS NULL OR key_id = $3) AND ($4::text IS NULL OR model = $4) \
         AND ($5::text IS NULL OR provider = $5) AND ($6::uuid IS NULL OR team_id = $6) \
         GROUP BY 1"
    );
    let mut rows: Vec<usage::UsageTotal> = sqlx::query_as(&sql)
        .bind(f.from)
        .bind(f.to)
        .bind(f.key_id)
        .bind(&f.model)
        .bind(&f.provider)
        .bind(f.team_id)
        .fetch_all(pool)
        .await
        .unwrap();
    rows.sort_by_key(|a| order(&a.group));
    rows
}

/// `None` last, as the report orders groups.
fn order(group: &Option<String>) -> (bool, Option<String>) {
    (group.is_none(), group.clone())
}

/// Over four days, some rows folded into the hourly and daily rollups and
/// some still queued: every report (each grouping, each narrowing, so each
/// daily rollup and the hourly one) over aligned, unaligned, multi-day and
/// degenerate ranges equals a raw sum of the ledger.
#[tokio::test]
async fn admin_totals_over_unaligned_ranges_equal_a_raw_sum_of_the_ledger() {
    let (_db, pool) = migrated().await;
    let seed: u64 = rand::rng().random();
    let mut rng = StdRng::seed_from_u64(seed);
    let keys = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let teams = [Some(Uuid::new_v4()), Some(Uuid::new_v4()), None];
    let models = ["a", "b", "c"];
    let providers = [Some("p1"), Some("p2"), None];
    let start = at(20, 9, 0, 0);
    let span = 4 * 86_400;
    let mut events = Vec::new();
    for _ in 0..4000 {
        let offset = rng.random_range(0..span);
        let tokens = rng.random_range(0..200);
        events.push(UsageEvent {
            key_id: (rng.random_range(0..10) != 0).then(|| keys[rng.random_range(0..3)]),
            team_id: teams[rng.random_range(0..3)],
            model: models[rng.random_range(0..3)].to_owned(),
            provider: providers[rng.random_range(0..3)].map(str::to_owned),
            status: [200, 200, 200, 429, 502][rng.random_range(0..5)],
            cost_micros: rng.random_bool(0.7).then(|| rng.random_range(0..5000)),
            created_at: start + chrono::Duration::seconds(offset),
            ..usage_event(None, Some(tokens))
        });
    }
    // Several batches, as gateways write them; the first ones folded.
    for (i, batch) in events.chunks(700).enumerate() {
        usage::insert_usage(&pool, batch).await.unwrap();
        if i == 3 {
            obleth_testkit::ledger::fold(&pool).await.unwrap();
        }
    }
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_rollup_queue")
        .fetch_one(&pool)
        .await
        .unwrap();
    let daily: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_daily_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        queued > 0 && daily > 0,
        "queued {queued}, daily rows {daily}"
    );
    let groups = [
        (usage::UsageGroup::Key, "key_id::text"),
        (usage::UsageGroup::Model, "model"),
        (usage::UsageGroup::Provider, "provider"),
        (usage::UsageGroup::Team, "team_id::text"),
    ];
    let mut ranges = vec![
        // Aligned, unaligned at both ends, within one hour, empty, reversed.
        (at(20, 9, 0, 0), at(20, 17, 0, 0)),
        (at(20, 9, 17, 3), at(20, 15, 41, 59)),
        (at(20, 11, 5, 0), at(20, 11, 55, 0)),
        (at(20, 12, 30, 0), at(20, 12, 30, 0)),
        (at(20, 14, 0, 0), at(20, 10, 0, 0)),
        (at(20, 8, 59, 59), at(20, 10, 0, 1)),
        // Whole days; days with hours around them; 24 hours across midnight.
        (at(21, 0, 0, 0), at(22, 0, 0, 0)),
        (at(21, 0, 0, 0), at(24, 0, 0, 0)),
        (at(20, 13, 0, 0), at(23, 2, 0, 0)),
        (at(20, 13, 12, 0), at(23, 2, 30, 7)),
        (at(21, 12, 0, 0), at(22, 12, 0, 0)),
        (at(19, 0, 0, 0), at(30, 0, 0, 0)),
    ];
    for _ in 0..8 {
        let a = start + chrono::Duration::seconds(rng.random_range(-600..span));
        let b = a + chrono::Duration::seconds(rng.random_range(1..3 * 86_400));
        ranges.push((a, b));
    }
    let narrowings = [
        (None, None, None, None),
        (Some(keys[1]), None, None, None),
        (None, Some("b"), None, None),
        (None, None, Some("p1"), teams[0]),
        (Some(keys[0]), None, None, teams[1]),
        (Some(keys[2]), Some("a"), None, None),
    ];
    let mut checked = 0;
    for (from, to) in ranges {
        for (key_id, model, provider, team_id) in narrowings {
            for (group, column) in groups {
                let filter = usage::UsageFilter {
                    from,
                    to,
                    key_id,
                    model: model.map(str::to_owned),
                    provider: provider.map(str::to_owned),
                    team_id,
                };
                let mut got = usage::usage_totals(&pool, group, &filter).await.unwrap();
                got.sort_by_key(|a| order(&a.group));
                let want = raw_totals(&pool, column, &filter).await;
                assert_eq!(got, want, "seed {seed}: {group:?} by {filter:?}");
                checked += got.len();
            }
        }
    }
    assert!(checked > 1000, "the ranges covered groups: {checked}");
}

#[tokio::test]
async fn an_event_forty_days_ahead_is_stored_in_a_partition_made_for_it() {
    let (_db, pool) = migrated().await;
    let when = Utc::now() + chrono::Duration::days(40);
    let before = ledger::partitions(&pool).await.unwrap();
    assert!(!before.contains(&when.date_naive()));
    let event = UsageEvent {
        created_at: when,
        ..usage_event(Some(Uuid::new_v4()), Some(5))
    };
    assert_eq!(
        usage::insert_usage(&pool, std::slice::from_ref(&event))
            .await
            .unwrap(),
        1
    );
    assert!(ledger::partitions(&pool)
        .await
        .unwrap()
        .contains(&when.date_naive()));
    // A retry of the same record stays one row.
    assert_eq!(usage::insert_usage(&pool, &[event]).await.unwrap(), 0);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM usage_ledger").await, 1);
    assert_eq!(mismatches(&pool).await.unwrap(), NO_MISMATCH);
}

#[tokio::test]
async fn retention_drops_only_whole_days_past_it_keeps_rollups_and_repeats_as_a_no_op() {
    let (_db, pool) = migrated().await;
    let today = Utc::now().date_naive();
    let day = |back: u64| today.checked_sub_days(Days::new(back)).unwrap();
    ledger::ensure_days(&pool, (0..=12).map(day)).await.unwrap();
    let mut events = Vec::new();
    for back in [10, 8, 7, 6, 1] {
        let noon = day(back).and_hms_opt(12, 0, 0).unwrap().and_utc();
        events.push(UsageEvent {
            created_at: noon,
            ..usage_event(Some(Uuid::new_v4()), Some(3))
        });
    }
    usage::insert_usage(&pool, &events).await.unwrap();
    obleth_testkit::ledger::fold(&pool).await.unwrap();
    let hourly_before = scalar(&pool, "SELECT count(*) FROM usage_hourly").await;

    assert!(ledger::drop_expired(&pool, today, 0)
        .await
        .unwrap()
        .is_empty());
    let dropped = ledger::drop_expired(&pool, today, 7).await.unwrap();
    assert_eq!(dropped, (8..=12).rev().map(day).collect::<Vec<_>>());
    let left = ledger::partitions(&pool).await.unwrap();
    assert_eq!(left.first(), Some(&day(7)), "day 7 back is kept: {left:?}");
    let by_day: BTreeMap<chrono::NaiveDate, i64> = sqlx::query_as::<_, (chrono::NaiveDate, i64)>(
        "SELECT (created_at AT TIME ZONE 'UTC')::date, count(*) FROM usage_ledger GROUP BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(
        by_day.keys().copied().collect::<Vec<_>>(),
        vec![day(7), day(6), day(1)]
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM usage_hourly").await,
        hourly_before,
        "the rollups of dropped days stay"
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'usage\\_ledger\\_2%' \
             AND relkind = 'r' AND NOT relispartition"
        )
        .await,
        0,
        "no detached table is left behind"
    );
    assert!(ledger::drop_expired(&pool, today, 7)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(ledger::partitions(&pool).await.unwrap(), left);
}

#[tokio::test]
async fn forwarding_is_switched_on_while_a_reader_of_usage_events_holds_its_transaction_open() {
    let db = fresh_database().await.unwrap();
    run_through(&db.url, CREATE, Mode::Up, opts())
        .await
        .unwrap();
    let pool = PgPool::connect(&db.url).await.unwrap();
    // The previous release's budget and report reads take ACCESS SHARE.
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM usage_events")
        .execute(&mut *reader)
        .await
        .unwrap();
    let impatient = RunnerOptions {
        lock_timeout: Duration::from_millis(200),
        max_retries: 1,
        ..opts()
    };
    run_through(&db.url, FORWARD, Mode::Up, impatient)
        .await
        .expect("the trigger swap never needs more than SHARE ROW EXCLUSIVE");
    reader.commit().await.unwrap();
    assert!(previous_release_insert(&pool, Uuid::new_v4(), Uuid::new_v4(), Utc::now()).await);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM usage_ledger").await, 1);
    assert_eq!(mismatches(&pool).await.unwrap(), NO_MISMATCH);
}

/// The daily rollups' migration on a database that has hourly rollups and
/// queued rows, while writers insert and a folder folds: the rows it copies
/// and the rows its triggers add afterwards are every ledger row exactly
/// once, at both grains.
#[tokio::test]
async fn the_daily_rollups_arrive_complete_while_writers_and_a_folder_run() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let db = fresh_database().await.unwrap();
    run_through(&db.url, DROP, Mode::Finish { force: true }, opts())
        .await
        .unwrap();
    let pool = PgPool::connect(&db.url).await.unwrap();
    let now = Utc::now();
    let key_team = [
        (Uuid::new_v4(), Some(Uuid::new_v4())),
        (Uuid::new_v4(), None),
    ];
    let batch = move |b: usize| -> Vec<UsageEvent> {
        (0..50)
            .map(|i| {
                let (key, team) = key_team[i % 2];
                UsageEvent {
                    team_id: team,
                    model: ["x", "y"][(b + i) % 2].to_owned(),
                    created_at: now - chrono::Duration::minutes(((b * 50 + i) % 3000) as i64),
                    ..usage_event(Some(key), Some(5 + i as i32))
                }
            })
            .collect()
    };
    for b in 0..20 {
        usage::insert_usage(&pool, &batch(b)).await.unwrap();
    }
    obleth_testkit::ledger::fold(&pool).await.unwrap();
    usage::insert_usage(&pool, &batch(20)).await.unwrap();

    let running = Arc::new(AtomicBool::new(true));
    let writer = {
        let (pool, running) = (pool.clone(), running.clone());
        tokio::spawn(async move {
            let mut b = 21;
            while running.load(Ordering::SeqCst) {
                usage::insert_usage(&pool, &batch(b)).await.unwrap();
                b += 1;
            }
            b - 21
        })
    };
    let folder = {
        let (pool, running) = (pool.clone(), running.clone());
        tokio::spawn(async move {
            let mut folded = 0;
            while running.load(Ordering::SeqCst) {
                folded += obleth_config::db::fold::fold_usage(&pool, 60)
                    .await
                    .unwrap();
            }
            folded
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = run_through(&db.url, DAILY, Mode::Up, opts()).await.unwrap();
    assert!(
        report.applied.iter().any(|s| s.version == DAILY),
        "{report:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, Ordering::SeqCst);
    let (batches, folded) = (writer.await.unwrap(), folder.await.unwrap());
    assert!(
        batches > 0 && folded > 0,
        "batches {batches}, folded {folded}"
    );
    assert_eq!(mismatches(&pool).await.unwrap(), NO_MISMATCH);
    let rows = scalar(&pool, "SELECT count(*) FROM usage_ledger").await;
    for table in ["usage_daily_keys", "usage_daily_models"] {
        let sum = scalar(&pool, &format!("SELECT sum(requests)::bigint FROM {table}")).await;
        assert_eq!(sum, rows, "{table}");
    }
}
