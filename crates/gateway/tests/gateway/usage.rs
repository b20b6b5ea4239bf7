//! The usage writer under a database outage, driven directly through
//! `usage::start`: intake never waits on the database, and every record is
//! either written or counted as dropped; the ledger's upkeep; and the fold of
//! the rollup queue, every second and at shutdown.

use std::time::Duration;

use chrono::Utc;
use obleth_config::model::UsageEvent;
use obleth_config::{DatabaseSettings, DatabaseUrl};
use obleth_gateway::metrics::Metrics;
use obleth_gateway::settings::UsageSettings;
use obleth_gateway::usage;
use obleth_testkit::PgCluster;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn event() -> UsageEvent {
    UsageEvent {
        request_id: uuid::Uuid::new_v4(),
        key_id: None,
        model: "m".to_owned(),
        provider: Some("mock".to_owned()),
        prompt_tokens: Some(1),
        completion_tokens: Some(2),
        total_tokens: Some(3),
        status: 200,
        latency_ms: 1,
        streamed: false,
        node_id: Some("usage-test".to_owned()),
        created_at: Utc::now(),
        cost_micros: None,
        estimated: false,
        team_id: None,
    }
}

fn dropped(metrics: &Metrics) -> u64 {
    ["queue_full", "buffer_full", "shutdown", "no_database"]
        .iter()
        .map(|r| metrics.usage_dropped.with_label_values(&[r]).get())
        .sum()
}

async fn rows(url: &str) -> i64 {
    let Ok(pool) = PgPool::connect(url).await else {
        return -1;
    };
    let n = sqlx::query_scalar("SELECT count(*) FROM usage_ledger")
        .fetch_one(&pool)
        .await
        .unwrap_or(-1);
    pool.close().await;
    n
}

/// The writer's pool, built the way the gateway builds it (lazy, default
/// acquire timeout).
async fn writer_pool(url: &str) -> PgPool {
    let settings = DatabaseSettings {
        url: Some(DatabaseUrl::new(url)),
        ..DatabaseSettings::default()
    };
    obleth_config::db::connect_pool(&settings, "usage-test")
        .await
        .unwrap()
}

#[tokio::test]
async fn a_60_second_outage_at_1000_records_a_second_with_default_settings_drops_nothing() {
    let cluster = PgCluster::start().unwrap();
    let db = cluster.fresh_database().await.unwrap();
    migrated_database(&db.url).await.close().await;
    let settings = UsageSettings::default();
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    let (sink, writer) = usage::start(
        Some(writer_pool(&db.url).await),
        &settings,
        metrics.clone(),
        stop.clone(),
        Duration::from_secs(10),
    );
    // The writer works before the outage.
    for _ in 0..10 {
        sink.record(event());
    }
    wait_until(Duration::from_secs(30), "first records written", || async {
        rows(&db.url).await == 10
    })
    .await;

    cluster.stop().unwrap();
    let total: u64 = 60_000;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        for _ in 0..10 {
            sink.record(event());
        }
        sent += 10;
    }
    let held_at_end = metrics.usage_buffered.get() + metrics.usage_queue_depth.get();
    let dropped_during = dropped(&metrics);
    cluster.start_again().unwrap();

    let expected = 10 + total as i64;
    wait_until(
        Duration::from_secs(120),
        "every record written after recovery",
        || async { rows(&db.url).await == expected },
    )
    .await;
    let written = rows(&db.url).await;
    stop.cancel();
    writer.await.unwrap();
    eprintln!(
        "usage outage: sent {total} during 60 s without the database; held at the end of the outage {held_at_end}; \
         dropped during the outage {dropped_during}; rows after recovery {written} (10 before the outage); \
         dropped in total {}",
        dropped(&metrics)
    );
    assert_eq!(written, expected);
    assert_eq!(dropped(&metrics), 0, "nothing dropped");
}

#[tokio::test]
async fn records_past_buffer_max_are_dropped_and_counted_not_lost_silently() {
    let cluster = PgCluster::start().unwrap();
    let db = cluster.fresh_database().await.unwrap();
    migrated_database(&db.url).await.close().await;
    cluster.stop().unwrap();
    let settings = UsageSettings {
        queue_capacity: 1_000,
        batch_size: 5,
        flush_interval_ms: 10,
        buffer_max: 20,
        ..UsageSettings::default()
    };
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    let (sink, writer) = usage::start(
        Some(writer_pool(&db.url).await),
        &settings,
        metrics.clone(),
        stop.clone(),
        Duration::from_secs(10),
    );
    let sent: u64 = 500;
    for _ in 0..sent {
        sink.record(event());
    }
    // Intake goes on while writes fail: the queue empties into the buffer,
    // which holds `buffer_max` and counts what it cannot hold.
    wait_until(Duration::from_secs(30), "the queue taken in", || async {
        metrics.usage_queue_depth.get() == 0
    })
    .await;
    let buffer_full = metrics
        .usage_dropped
        .with_label_values(&["buffer_full"])
        .get();
    assert_eq!(metrics.usage_buffered.get(), 20, "the buffer is full");
    assert_eq!(
        buffer_full,
        sent - 20,
        "every record past buffer_max counted"
    );
    assert_eq!(
        metrics
            .usage_dropped
            .with_label_values(&["queue_full"])
            .get(),
        0
    );

    cluster.start_again().unwrap();
    wait_until(Duration::from_secs(60), "the buffer written", || async {
        rows(&db.url).await == 20
    })
    .await;
    stop.cancel();
    writer.await.unwrap();
    let written = rows(&db.url).await as u64;
    eprintln!(
        "tiny buffer: sent {sent}, written {written}, dropped {}",
        dropped(&metrics)
    );
    assert_eq!(written + dropped(&metrics), sent, "written or counted");
}

/// Embedded mode (no database): a request's record is counted dropped
/// (`no_database`) without being built, and a database-backed sink builds
/// and queues it.
#[tokio::test]
async fn without_a_database_a_record_is_counted_dropped_and_never_built() {
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    let (sink, writer) = usage::start(
        None,
        &UsageSettings::default(),
        metrics.clone(),
        stop.clone(),
        Duration::from_secs(1),
    );
    let built = std::sync::atomic::AtomicUsize::new(0);
    for _ in 0..3 {
        sink.record_with(|| {
            built.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            event()
        });
    }
    assert_eq!(built.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(
        metrics
            .usage_dropped
            .with_label_values(&["no_database"])
            .get(),
        3
    );
    stop.cancel();
    writer.await.unwrap();

    // With a database the record is built and queued.
    let cluster = PgCluster::start().unwrap();
    let db = cluster.fresh_database().await.unwrap();
    migrated_database(&db.url).await.close().await;
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    let (sink, writer) = usage::start(
        Some(writer_pool(&db.url).await),
        &UsageSettings::default(),
        metrics.clone(),
        stop.clone(),
        Duration::from_secs(5),
    );
    sink.record_with(|| {
        built.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        event()
    });
    assert_eq!(built.load(std::sync::atomic::Ordering::Relaxed), 1);
    stop.cancel();
    writer.await.unwrap();
    assert_eq!(rows(&db.url).await, 1);
    assert_eq!(dropped(&metrics), 0);
}

/// The ledger's partitions, by name, oldest first.
async fn partitions(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'usage_ledger'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn partition_of(day: chrono::NaiveDate) -> String {
    format!("usage_ledger_{}", day.format("%Y%m%d"))
}

#[tokio::test]
async fn ledger_upkeep_keeps_days_ahead_and_drops_raw_records_past_the_retention_not_their_totals()
{
    let db = obleth_testkit::fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let today = Utc::now().date_naive();
    // A record from 20 days ago: the writer's batch finds no partition for
    // its day, creates it and writes the batch again.
    let old = UsageEvent {
        created_at: Utc::now() - chrono::Duration::days(20),
        ..event()
    };
    let written = obleth_config::db::usage::insert_usage(&pool, &[old.clone(), event()])
        .await
        .unwrap();
    assert_eq!(written, 2);
    let old_day = partition_of(old.created_at.date_naive());
    assert!(partitions(&pool).await.contains(&old_day));

    let settings = UsageSettings {
        retention_days: 3,
        partitions_ahead_days: 12,
        ..UsageSettings::default()
    };
    let metrics = Metrics::new();
    obleth_gateway::ledger::round(&pool, &settings, &metrics)
        .await
        .unwrap();

    let now = partitions(&pool).await;
    assert!(!now.contains(&old_day), "{now:?}");
    let ahead = today + chrono::Days::new(12);
    assert!(now.contains(&partition_of(ahead)), "{now:?}");
    assert!(now.contains(&partition_of(today)), "{now:?}");
    assert!(
        metrics
            .ledger_partitions
            .with_label_values(&["created"])
            .get()
            >= 1
    );
    assert!(
        metrics
            .ledger_partitions
            .with_label_values(&["dropped"])
            .get()
            >= 1
    );
    // Today's record stays; the old one's raw row went with its day, and its
    // hourly rollup stays.
    assert_eq!(rows(&db.url).await, 1);
    obleth_testkit::ledger::fold(&pool).await.unwrap();
    let hourly: i64 =
        sqlx::query_scalar("SELECT COALESCE(sum(requests), 0)::bigint FROM usage_hourly")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(hourly, 2);

    // A second round changes nothing.
    obleth_gateway::ledger::round(&pool, &settings, &metrics)
        .await
        .unwrap();
    assert_eq!(partitions(&pool).await, now);
}

/// The sum of `usage_hourly`'s requests: what has been folded.
async fn folded_requests(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(sum(requests), 0)::bigint FROM usage_hourly")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_fold_loop_moves_queued_usage_into_the_rollups_and_the_final_fold_empties_the_queue() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let batch: Vec<UsageEvent> = (0..5).map(|_| event()).collect();
    obleth_config::db::usage::insert_usage(&pool, &batch)
        .await
        .unwrap();
    assert_eq!(folded_requests(&pool).await, 0, "queued, not folded yet");

    let stop = CancellationToken::new();
    let task = tokio::spawn(obleth_gateway::fold::run(pool.clone(), stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while folded_requests(&pool).await < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fold loop never folded the queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.unwrap();

    // After the loop stopped: what the writer's last flush queued is folded
    // by the shutdown's fold.
    obleth_config::db::usage::insert_usage(&pool, &[event(), event()])
        .await
        .unwrap();
    obleth_gateway::fold::final_fold(&pool).await;
    assert_eq!(folded_requests(&pool).await, 7);
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_rollup_queue")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(queued, 0);
}
