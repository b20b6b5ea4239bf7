//! The usage batch insert: new batches by binary `COPY`, retried ones by one
//! prepared statement for every batch size, rows stored field by field as
//! sent, a retried batch (or a record twice in one) counted once, totals
//! too, and a batch stored whole or not at all.

use chrono::{DateTime, TimeZone, Utc};
use obleth_config::db::usage::{self, UsageFilter, CHUNK_ROWS};
use obleth_config::model::UsageEvent;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use super::{migrated, usage_event, usage_rows};

/// A whole number of microseconds, as PostgreSQL stores it, so a stored event
/// compares equal to the one sent.
fn micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).unwrap()
}

/// Events with every nullable field both set and unset, and model names
/// outside ASCII.
fn mixed_batch() -> Vec<UsageEvent> {
    let key = Uuid::new_v4();
    let team = Uuid::new_v4();
    let base = 1_795_000_000_000_000 + 123_457;
    vec![
        UsageEvent {
            request_id: Uuid::new_v4(),
            key_id: Some(key),
            model: "gpt-4o-mini".to_owned(),
            provider: Some("openai".to_owned()),
            prompt_tokens: Some(11),
            completion_tokens: Some(22),
            total_tokens: Some(33),
            status: 200,
            latency_ms: 41,
            streamed: true,
            node_id: Some("gw-ü".to_owned()),
            created_at: micros(base),
            cost_micros: Some(1_234_567_890_123),
            estimated: false,
            team_id: Some(team),
        },
        UsageEvent {
            request_id: Uuid::new_v4(),
            key_id: None,
            model: "模型-😀-ünïcödé".to_owned(),
            provider: None,
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            status: 401,
            latency_ms: 0,
            streamed: false,
            node_id: None,
            created_at: micros(base + 1),
            cost_micros: None,
            estimated: false,
            team_id: None,
        },
        UsageEvent {
            request_id: Uuid::new_v4(),
            key_id: Some(key),
            model: "llama-3 «70b»".to_owned(),
            provider: Some("ollama".to_owned()),
            prompt_tokens: Some(i32::MAX),
            completion_tokens: None,
            total_tokens: Some(0),
            status: i16::MAX,
            latency_ms: i32::MAX,
            streamed: false,
            node_id: Some(String::new()),
            created_at: micros(base - 86_400_000_000),
            cost_micros: Some(0),
            estimated: true,
            team_id: None,
        },
        UsageEvent {
            request_id: Uuid::new_v4(),
            key_id: None,
            model: String::new(),
            provider: Some("Ωmega".to_owned()),
            prompt_tokens: None,
            completion_tokens: Some(-1),
            total_tokens: None,
            status: -1,
            latency_ms: -5,
            streamed: true,
            node_id: Some("gw-2".to_owned()),
            created_at: micros(0),
            cost_micros: Some(-7),
            estimated: true,
            team_id: Some(team),
        },
    ]
}

/// Every stored event, oldest row first.
async fn stored(pool: &PgPool) -> Vec<UsageEvent> {
    let all = UsageFilter {
        from: Utc.with_ymd_and_hms(1900, 1, 1, 0, 0, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).unwrap(),
        key_id: None,
        model: None,
        provider: None,
        team_id: None,
    };
    usage::list_usage(pool, &all, None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

/// Every `usage_totals` row, in key order, after folding the rollup queue.
async fn totals(pool: &PgPool) -> Vec<(Uuid, String, DateTime<Utc>, i64, i64, i64)> {
    obleth_testkit::ledger::fold(pool).await.unwrap();
    sqlx::query_as(
        "SELECT subject_id, period, period_start, requests, tokens, cost_micros \
         FROM usage_totals ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_mixed_batch_is_stored_field_by_field_as_sent() {
    let (_db, pool) = migrated().await;
    let batch = mixed_batch();

    assert_eq!(usage::insert_usage(&pool, &batch).await.unwrap(), 4);

    assert_eq!(
        stored(&pool).await,
        batch,
        "rows in batch order, every field"
    );
}

#[tokio::test]
async fn a_reinserted_batch_inserts_nothing_and_leaves_the_totals_alone() {
    let (_db, pool) = migrated().await;
    let batch = mixed_batch();
    assert_eq!(usage::insert_usage(&pool, &batch).await.unwrap(), 4);
    let before = totals(&pool).await;
    // The key's and the team's four periods each, for the two days seen
    // (the epoch event counts for the team only: its key is unset).
    let key = batch[0].key_id.unwrap();
    let key_total = before
        .iter()
        .find(|t| t.0 == key && t.1 == "total")
        .unwrap();
    assert_eq!(
        (key_total.3, key_total.4, key_total.5),
        (2, 33, 1_234_567_890_123)
    );

    assert_eq!(usage::insert_usage(&pool, &batch).await.unwrap(), 0);
    assert_eq!(usage::insert_usage(&pool, &batch[1..3]).await.unwrap(), 0);

    assert_eq!(totals(&pool).await, before);
    assert_eq!(stored(&pool).await, batch);
}

#[tokio::test]
async fn new_batches_prepare_nothing_and_retries_of_every_size_share_one_statement() {
    let (db, _pool) = migrated().await;
    // One connection, so every insert runs on the session whose prepared
    // statements are listed.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let inserts = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT statement FROM pg_prepared_statements \
             WHERE statement LIKE 'INSERT INTO usage_ledger %'",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let mut sent = Vec::new();
    for size in [1, 7, 500, 1] {
        let batch: Vec<UsageEvent> = (0..size).map(|_| usage_event(None, Some(3))).collect();
        assert_eq!(
            usage::insert_usage(&pool, &batch).await.unwrap(),
            size as u64
        );
        sent.extend(batch);
    }
    assert_eq!(
        inserts(pool.clone()).await,
        Vec::<String>::new(),
        "new batches go in by COPY"
    );

    // Retries: each batch holds a stored record and new ones.
    for (size, stored) in [(2, 0), (8, 1), (501, 8), (2, 508)] {
        let mut batch: Vec<UsageEvent> = (1..size).map(|_| usage_event(None, Some(3))).collect();
        batch.push(sent[stored].clone());
        assert_eq!(
            usage::insert_usage(&pool, &batch).await.unwrap(),
            size as u64 - 1,
            "only the new records of a batch of {size}"
        );
    }
    let prepared = inserts(pool.clone()).await;
    assert_eq!(
        prepared.len(),
        1,
        "one statement for retries of 2, 8 and 501 rows: {prepared:?}"
    );
    assert_eq!(usage_rows(&pool).await, 509 + 1 + 7 + 500 + 1);
}

#[tokio::test]
async fn a_record_twice_in_one_batch_is_stored_once_and_counted_once() {
    let (_db, pool) = migrated().await;
    let batch = mixed_batch();
    let twice = vec![
        batch[0].clone(),
        batch[1].clone(),
        batch[0].clone(),
        batch[2].clone(),
        batch[3].clone(),
        batch[2].clone(),
    ];

    assert_eq!(usage::insert_usage(&pool, &twice).await.unwrap(), 4);

    assert_eq!(stored(&pool).await, batch, "each record once, every field");
    let key = batch[0].key_id.unwrap();
    let key_total = totals(&pool)
        .await
        .into_iter()
        .find(|t| t.0 == key && t.1 == "total")
        .unwrap();
    assert_eq!(
        (key_total.3, key_total.4, key_total.5),
        (2, 33, 1_234_567_890_123),
        "the key's two records, once each"
    );
}

#[tokio::test]
async fn a_batch_that_fails_part_way_stores_nothing() {
    let (_db, pool) = migrated().await;
    // PostgreSQL text refuses a NUL byte; the bad event is the last one.
    let mut one: Vec<UsageEvent> = (0..3).map(|_| usage_event(None, Some(1))).collect();
    one[2].model = "bad\0model".to_owned();
    // A retry longer than a chunk (its first record is stored, so it takes
    // the chunked path): the bad event is in the last chunk, so the earlier
    // chunks must be rolled back.
    let mut chunks: Vec<UsageEvent> = (0..CHUNK_ROWS + 3)
        .map(|_| usage_event(None, Some(1)))
        .collect();
    chunks.last_mut().unwrap().model = "bad\0model".to_owned();
    usage::insert_usage(&pool, &chunks[..1]).await.unwrap();

    assert!(usage::insert_usage(&pool, &one).await.is_err());
    assert!(usage::insert_usage(&pool, &chunks).await.is_err());

    assert_eq!(usage_rows(&pool).await, 1);
}
