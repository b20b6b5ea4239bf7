//! The shared quota counters: `obleth_quota_lease` grants up to the limit and
//! no further under concurrent callers, charges debts first, weighs the
//! previous minute, starts a budget counter from the period's usage totals
//! (so a day's budget is whole again on the next UTC day, shown with dated
//! rows), and the live-gateway count and clean-up.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use obleth_config::db::quota::{self, Dimension, LeaseGrant, LeaseRequest};
use obleth_config::db::usage;
use obleth_config::model::{BudgetPeriod, UsageEvent};
use sqlx::PgPool;
use uuid::Uuid;

use super::{migrated, usage_event};

fn minute(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp().div_euclid(60) * 60, 0).unwrap()
}

fn requests(
    subject: Uuid,
    window: DateTime<Utc>,
    charge: i64,
    want: i64,
    limit: i64,
) -> LeaseRequest {
    LeaseRequest {
        subject_id: subject,
        dimension: Dimension::Requests,
        window_start: window,
        period: None,
        charge,
        want,
        limit,
    }
}

async fn one(pool: &PgPool, request: LeaseRequest) -> LeaseGrant {
    quota::lease(pool, &[request]).await.unwrap()[0]
}

#[tokio::test]
async fn leases_never_pass_the_limit_and_debts_are_charged_first() {
    let (_db, pool) = migrated().await;
    let key = Uuid::new_v4();
    let w = minute(Utc::now());
    let g = one(&pool, requests(key, w, 0, 40, 60)).await;
    assert_eq!((g.granted, g.used), (40, 40));
    let g = one(&pool, requests(key, w, 0, 40, 60)).await;
    assert_eq!(
        (g.granted, g.used),
        (20, 60),
        "a partial grant up to the limit"
    );
    // A debt is charged even past the limit; nothing more is granted.
    let g = one(&pool, requests(key, w, 2, 5, 60)).await;
    assert_eq!((g.granted, g.used), (0, 62));
    // A hand-back lowers the counter and makes room again.
    let g = one(&pool, requests(key, w, -10, 3, 60)).await;
    assert_eq!((g.granted, g.used), (3, 55));
    assert_eq!(quota::lease(&pool, &[]).await.unwrap(), vec![]);
}

#[tokio::test]
async fn concurrent_gateways_together_are_granted_at_most_the_limit() {
    let (_db, pool) = migrated().await;
    let keys: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let w = minute(Utc::now());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pool, keys) = (pool.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut granted = 0;
            for _ in 0..20 {
                // Every key in every batch, in a different order per task:
                // the function locks in key order, so none deadlocks.
                let mut batch: Vec<LeaseRequest> =
                    keys.iter().map(|k| requests(*k, w, 0, 3, 100)).collect();
                batch.rotate_left(granted as usize % 3);
                granted += quota::lease(&pool, &batch)
                    .await
                    .unwrap()
                    .iter()
                    .map(|g| g.granted)
                    .sum::<i64>();
            }
            granted
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    // 8 tasks x 20 rounds x 3 keys x 3 wanted = 1440 asked; 3 x 100 exist.
    assert_eq!(total, 300);
    let used: Vec<i64> = sqlx::query_scalar("SELECT used FROM quota_counters ORDER BY used")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(used, vec![100, 100, 100]);
}

#[tokio::test]
async fn the_previous_minute_weighs_on_the_current_one() {
    let (_db, pool) = migrated().await;
    let key = Uuid::new_v4();
    // The current minute began just now on the database's clock, so the
    // whole previous minute still overlaps: 50 of 60 are spoken for.
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let w = minute(now);
    one(
        &pool,
        requests(key, w - chrono::Duration::seconds(60), 0, 50, 60),
    )
    .await;
    let g = one(&pool, requests(key, w, 0, 60, 60)).await;
    let overlap = 1.0 - (now - w).num_milliseconds() as f64 / 60_000.0;
    let carried = (50.0 * overlap).ceil() as i64;
    // The database's clock moved on a little between the two reads.
    assert!(
        (60 - carried..=60 - carried + 1).contains(&g.ceiling),
        "ceiling {} for a carry of about {carried}",
        g.ceiling
    );
    assert_eq!(g.granted, g.ceiling);
    // A minute two back does not weigh at all.
    let other = Uuid::new_v4();
    one(
        &pool,
        requests(other, w - chrono::Duration::seconds(120), 0, 60, 60),
    )
    .await;
    assert_eq!(one(&pool, requests(other, w, 0, 60, 60)).await.granted, 60);
}

fn dated(key: Uuid, tokens: i32, cost: i64, when: DateTime<Utc>) -> UsageEvent {
    UsageEvent {
        cost_micros: Some(cost),
        created_at: when,
        ..usage_event(Some(key), Some(tokens))
    }
}

fn budget(
    key: Uuid,
    dimension: Dimension,
    period: BudgetPeriod,
    at: DateTime<Utc>,
    want: i64,
    limit: i64,
) -> LeaseRequest {
    LeaseRequest {
        subject_id: key,
        dimension,
        window_start: period.start(at),
        period: Some(period),
        charge: 0,
        want,
        limit,
    }
}

#[tokio::test]
async fn a_budget_counter_starts_from_its_period_and_a_day_resets_at_utc_midnight() {
    let (_db, pool) = migrated().await;
    let key = Uuid::new_v4();
    let yesterday = Utc.with_ymd_and_hms(2026, 11, 27, 23, 59, 0).unwrap();
    let today = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 30).unwrap();
    usage::insert_usage(
        &pool,
        &[
            dated(key, 900, 9_000, yesterday),
            dated(key, 100, 1_000, today),
        ],
    )
    .await
    .unwrap();
    // Yesterday's counter starts from yesterday's spend: 9,000 of 10,000.
    let g = one(
        &pool,
        budget(
            key,
            Dimension::BudgetMicros,
            BudgetPeriod::Day,
            yesterday,
            5_000,
            10_000,
        ),
    )
    .await;
    assert_eq!((g.used, g.granted), (10_000, 1_000));
    // Today's starts from today's alone: the budget is whole again, less
    // the 1,000 spent after midnight.
    let g = one(
        &pool,
        budget(
            key,
            Dimension::BudgetMicros,
            BudgetPeriod::Day,
            today,
            5_000,
            10_000,
        ),
    )
    .await;
    assert_eq!((g.used, g.granted), (6_000, 5_000));
    // A total token budget counts both days.
    let g = one(
        &pool,
        budget(
            key,
            Dimension::BudgetTokens,
            BudgetPeriod::Total,
            today,
            10,
            1_000,
        ),
    )
    .await;
    assert_eq!((g.used, g.granted), (1_000, 0), "1,000 tokens already used");
}

#[tokio::test]
async fn live_gateways_and_clean_up() {
    let (_db, pool) = migrated().await;
    for (id, service, seen) in [
        ("gw-a", "gateway", "now()"),
        ("gw-b", "gateway", "now()"),
        ("gw-old", "gateway", "now() - interval '5 minutes'"),
        ("admin", "admin", "now()"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO nodes (node_id, service, version, last_seen) VALUES ($1, $2, '0', {seen})"
        ))
        .bind(id)
        .bind(service)
        .execute(&pool)
        .await
        .unwrap();
    }
    assert_eq!(
        quota::live_gateways(&pool, Duration::from_secs(30))
            .await
            .unwrap(),
        2
    );
    let key = Uuid::new_v4();
    let old = minute(Utc::now()) - chrono::Duration::minutes(10);
    one(&pool, requests(key, old, 0, 1, 10)).await;
    one(&pool, requests(key, minute(Utc::now()), 0, 1, 10)).await;
    assert_eq!(quota::delete_old_counters(&pool).await.unwrap(), 1);
}
