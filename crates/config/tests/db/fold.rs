//! The rollup queue and its fold: reads (admin totals, budget periods, a new
//! budget counter) are exact before any fold, and folding is exactly once
//! under concurrent folders and writers; a queue whose heap a backlog left
//! large is read through its hour index, not scanned whole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use obleth_config::db::fold;
use obleth_config::db::quota::{self, Dimension, LeaseRequest};
use obleth_config::db::usage::{self, UsageFilter, UsageGroup};
use obleth_config::model::{BudgetPeriod, UsageEvent};
use obleth_testkit::ledger::{mismatches, Mismatches};
use sqlx::PgPool;
use uuid::Uuid;

use super::{migrated, usage_event};

const PERIODS: [BudgetPeriod; 4] = [
    BudgetPeriod::Day,
    BudgetPeriod::Week,
    BudgetPeriod::Month,
    BudgetPeriod::Total,
];

const NONE_OFF: Mismatches = Mismatches {
    totals: 0,
    hourly: 0,
    daily: 0,
};

fn floor_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp().div_euclid(3600) * 3600, 0).unwrap()
}

/// Event `i` of a mixed batch: `key`, every other one in `team`, spread over
/// the last three hours, every fifth an error, costs on two of three.
fn event(i: usize, key: Uuid, team: Uuid, now: DateTime<Utc>) -> UsageEvent {
    let tokens = 10 + (i % 7) as i32;
    UsageEvent {
        team_id: i.is_multiple_of(2).then_some(team),
        cost_micros: (!i.is_multiple_of(3)).then_some(100 + i as i64 % 11),
        status: if i.is_multiple_of(5) { 500 } else { 200 },
        created_at: now - Duration::minutes((i % 180) as i64),
        ..usage_event(Some(key), Some(tokens))
    }
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// (requests, tokens, cost) of `subject`'s `period` containing `at`,
/// recounted from the ledger.
async fn recount(
    pool: &PgPool,
    subject: Uuid,
    period: BudgetPeriod,
    at: DateTime<Utc>,
) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*), COALESCE(sum(total_tokens), 0)::bigint, \
                COALESCE(sum(cost_micros), 0)::bigint FROM usage_ledger \
         WHERE (key_id = $1 OR team_id = $1) \
           AND obleth_period_start($2, created_at) = obleth_period_start($2, $3)",
    )
    .bind(subject)
    .bind(period.as_str())
    .bind(at)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// What every read answers now: admin totals by key over whole hours, and
/// each subject's periods.
async fn reads(
    pool: &PgPool,
    subjects: &[Uuid],
    now: DateTime<Utc>,
) -> (Vec<usage::UsageTotal>, Vec<usage::PeriodTotals>) {
    let filter = UsageFilter {
        from: floor_hour(now) - Duration::hours(4),
        to: floor_hour(now) + Duration::hours(1),
        key_id: None,
        model: None,
        provider: None,
        team_id: None,
    };
    let totals = usage::usage_totals(pool, UsageGroup::Key, &filter)
        .await
        .unwrap();
    let wanted: Vec<(Uuid, BudgetPeriod)> = subjects
        .iter()
        .flat_map(|s| PERIODS.map(|p| (*s, p)))
        .collect();
    let periods = usage::periods_totals(pool, &wanted, now).await.unwrap();
    (totals, periods)
}

#[tokio::test]
async fn reads_are_exact_before_a_fold_and_unchanged_by_it() {
    let (_db, pool) = migrated().await;
    let now = Utc::now();
    let (keys, team) = ([Uuid::new_v4(), Uuid::new_v4()], Uuid::new_v4());
    let events: Vec<UsageEvent> = (0..300).map(|i| event(i, keys[i % 2], team, now)).collect();
    usage::insert_usage(&pool, &events[..120]).await.unwrap();
    usage::insert_usage(&pool, &events[120..]).await.unwrap();
    // A retried batch is skipped by the ledger and queues nothing.
    usage::insert_usage(&pool, &events[..120]).await.unwrap();

    assert!(scalar(&pool, "SELECT count(*) FROM usage_rollup_queue").await > 0);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM usage_totals").await, 0);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM usage_hourly").await, 0);

    let subjects = [keys[0], keys[1], team];
    let before = reads(&pool, &subjects, now).await;
    // Admin totals by key: every event, per key, as the ledger has them.
    let by_key: Vec<(Option<String>, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT key_id::text, count(*), count(*) FILTER (WHERE status >= 400), \
                sum(total_tokens)::bigint, COALESCE(sum(cost_micros), 0)::bigint \
         FROM usage_ledger GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let got: Vec<(Option<String>, i64, i64, i64, i64)> = before
        .0
        .iter()
        .map(|t| {
            let g = t.group.clone();
            (g, t.requests, t.errors, t.total_tokens, t.cost_micros)
        })
        .collect();
    assert_eq!(got, by_key);
    assert_eq!(got.iter().map(|g| g.1).sum::<i64>(), 300);
    // Budget periods: the running totals plus the queue.
    let mut i = 0;
    for subject in subjects {
        for period in PERIODS {
            let p = before.1[i];
            assert_eq!(
                (p.requests, p.tokens, p.cost_micros),
                recount(&pool, subject, period, now).await,
                "{subject} {period:?}"
            );
            i += 1;
        }
    }
    // A budget counter made before any fold starts from the queued spend.
    let grant = quota::lease(
        &pool,
        &[LeaseRequest {
            subject_id: team,
            dimension: Dimension::BudgetMicros,
            window_start: BudgetPeriod::Total.start(now),
            period: Some(BudgetPeriod::Total),
            charge: 0,
            want: 0,
            limit: i64::MAX,
        }],
    )
    .await
    .unwrap();
    let team_spend = recount(&pool, team, BudgetPeriod::Total, now).await.2;
    assert!(team_spend > 0);
    assert_eq!(grant[0].used, team_spend);

    // Folding moves the queue into the tables and changes no read.
    assert!(fold::fold_all(&pool).await.unwrap() > 0);
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM usage_rollup_queue").await,
        0
    );
    assert_eq!(fold::fold_usage(&pool, 100).await.unwrap(), 0);
    assert_eq!(reads(&pool, &subjects, now).await, before);
    assert_eq!(mismatches(&pool).await.unwrap(), NONE_OFF);
}

#[tokio::test]
async fn folding_is_exactly_once_under_concurrent_folders_and_writers() {
    let (_db, pool) = migrated().await;
    let now = Utc::now();
    let team = Uuid::new_v4();
    let writing = Arc::new(AtomicBool::new(true));
    let folders: Vec<_> = (0..3)
        .map(|_| {
            let (pool, writing) = (pool.clone(), writing.clone());
            tokio::spawn(async move {
                let mut folded = 0;
                while writing.load(Ordering::SeqCst) {
                    // Small takes, so folders overlap on the same groups.
                    folded += fold::fold_usage(&pool, 7).await.unwrap();
                    tokio::task::yield_now().await;
                }
                folded
            })
        })
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let key = Uuid::new_v4();
                let mut written = 0;
                for b in 0..20 {
                    let batch: Vec<UsageEvent> = (0..40)
                        .map(|i| event(w * 1000 + b * 40 + i, key, team, now))
                        .collect();
                    written += usage::insert_usage(&pool, &batch).await.unwrap() as i64;
                    // Exact while folders run: this key's total is every row
                    // written so far, neither missed nor counted twice.
                    let total = usage::period_totals(&pool, key, BudgetPeriod::Total, now)
                        .await
                        .unwrap();
                    assert_eq!(total.requests, written, "writer {w} after batch {b}");
                }
                written
            })
        })
        .collect();
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    let mut folded = 0;
    for f in folders {
        folded += f.await.unwrap();
    }
    assert_eq!(written, 4 * 20 * 40);
    assert!(folded > 0, "the folders ran alongside the writers");
    fold::fold_all(&pool).await.unwrap();
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM usage_rollup_queue").await,
        0
    );
    assert_eq!(mismatches(&pool).await.unwrap(), NONE_OFF);
    assert_eq!(
        scalar(&pool, "SELECT sum(requests)::bigint FROM usage_hourly").await,
        written
    );
    assert_eq!(
        usage::period_totals(&pool, team, BudgetPeriod::Total, now)
            .await
            .unwrap()
            .requests,
        written / 2
    );
}

/// Sequential scans of the rollup queue so far: this session's statistics,
/// flushed first (the pool has one connection).
async fn queue_seq_scans(pool: &PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    scalar(
        pool,
        "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'usage_rollup_queue'",
    )
    .await
}

#[tokio::test]
async fn reads_of_a_queue_left_large_by_a_backlog_read_its_live_rows_only() {
    let (db, _pool) = migrated().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    // A backlog folded away: 100,000 queued rows deleted, their pages kept
    // (as VACUUM keeps them while writers fill the pages it frees).
    sqlx::query(
        "INSERT INTO usage_rollup_queue (hour, key_id, team_id, model, provider, totals, \
             requests, errors, prompt_tokens, completion_tokens, total_tokens, cost_micros, \
             last_seen) \
         SELECT date_trunc('hour', now()) - interval '3 days', gen_random_uuid(), NULL, 'm', \
                NULL, true, 1, 0, 1, 1, 2, 1, now() \
         FROM generate_series(1, 100000)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM usage_rollup_queue")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("VACUUM (TRUNCATE false) usage_rollup_queue")
        .execute(&pool)
        .await
        .unwrap();
    let now = Utc::now();
    let (keys, team) = ([Uuid::new_v4(), Uuid::new_v4()], Uuid::new_v4());
    let events: Vec<UsageEvent> = (0..60).map(|i| event(i, keys[i % 2], team, now)).collect();
    usage::insert_usage(&pool, &events).await.unwrap();
    sqlx::query("ANALYZE usage_rollup_queue")
        .execute(&pool)
        .await
        .unwrap();
    assert!(
        scalar(
            &pool,
            "SELECT pg_relation_size('usage_rollup_queue') / 8192"
        )
        .await
            > 1000,
        "the queue's heap kept its pages"
    );

    let before = queue_seq_scans(&pool).await;
    let subjects = [keys[0], keys[1], team];
    let (totals, periods) = reads(&pool, &subjects, now).await;
    let mut leases = Vec::new();
    for subject in subjects {
        for period in PERIODS {
            let grant = quota::lease(
                &pool,
                &[LeaseRequest {
                    subject_id: subject,
                    dimension: Dimension::BudgetTokens,
                    window_start: period.start(now),
                    period: Some(period),
                    charge: 0,
                    want: 0,
                    limit: i64::MAX,
                }],
            )
            .await
            .unwrap();
            leases.push(grant[0].used);
        }
    }
    assert_eq!(
        queue_seq_scans(&pool).await,
        before,
        "admin totals, budget periods and budget counters read the queue by its hour index"
    );

    // And they are exact.
    assert_eq!(totals.iter().map(|t| t.requests).sum::<i64>(), 60);
    let mut i = 0;
    for subject in subjects {
        for period in PERIODS {
            let exact = recount(&pool, subject, period, now).await;
            assert_eq!(
                (
                    periods[i].requests,
                    periods[i].tokens,
                    periods[i].cost_micros
                ),
                exact,
                "{subject} {period:?}"
            );
            assert_eq!(leases[i], exact.1, "the counter of {subject} {period:?}");
            i += 1;
        }
    }
}
