//! The key store at start: the parallel warm-up loads every active key of
//! every block range, and a store that would not fit the cgroup memory limit
//! stops the process before its warm-up.

use std::process::Stdio;
use std::time::Duration;

use obleth_gateway::memcheck;
use obleth_testkit::fresh_database;
use obleth_testkit::proc::{command, free_port, signal, Signal};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_obleth-gateway");

/// Inserts a key with id `id` (no change row: a warm-up reads it); answers
/// the whole key.
async fn key_with_id(pool: &PgPool, id: Uuid, models: &[&str]) -> String {
    let generated = obleth_config::apikey::generate();
    sqlx::query(
        "INSERT INTO api_keys (id, public_id, secret_hash, allowed_models) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(&generated.public_id)
    .bind(&generated.secret_hash[..])
    .bind(models)
    .execute(pool)
    .await
    .unwrap();
    generated.secret.expose_secret().to_owned()
}

#[tokio::test]
async fn a_parallel_warm_up_loads_every_active_key_of_every_block_range() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    // Keys the test can present, between runs of others, so that they sit
    // in every part of the table the warm-up's scans split it into; ids at
    // both ends of the id space; one list of models for all.
    let mut secrets = Vec::new();
    let ids = [Uuid::nil(), Uuid::from_u128(u128::MAX)];
    for i in 0..10 {
        let id = ids.get(i).copied().unwrap_or_else(Uuid::new_v4);
        secrets.push(key_with_id(&pool, id, &["m"]).await);
        sqlx::query(
            "INSERT INTO api_keys (id, public_id, secret_hash, allowed_models) \
             SELECT gen_random_uuid(), 'bulk' || $1 || lpad(i::text, 6, '0'), \
                    sha256(convert_to($1 || '-' || i, 'UTF8')), ARRAY['m'] \
             FROM generate_series(1, 300) AS i",
        )
        .bind(i.to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    let revoked = key_with_id(&pool, Uuid::new_v4(), &[]).await;
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE allowed_models = '{}'")
        .execute(&pool)
        .await
        .unwrap();
    let blocks = obleth_config::db::key_store::key_table_blocks(&pool)
        .await
        .unwrap();
    assert!(
        blocks >= 8,
        "the table spans several ranges ({blocks} blocks)"
    );

    let gw = TestGateway::start(database_settings(&db.url, &pool).await).await;
    gw.wait_ready().await;

    assert_eq!(
        metric(&gw, "obleth_key_cache_warmup_keys", &[]).await,
        (10 + 10 * 300) as f64
    );
    for secret in &secrets {
        let answer = chat(&gw, secret, "m").await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    assert_eq!(chat(&gw, &revoked, "m").await.status, 401);
    assert_eq!(
        metric(&gw, "obleth_key_db_lookups_total", &[]).await,
        0.0,
        "every answer came from the warmed store"
    );
    gw.stop().await.unwrap();
}

/// Runs the binary against `url` with the memory limit read from a file
/// holding `limit`, and `max_keys` if given. Answers the process, its ops
/// port and the file's directory (kept alive).
fn spawn_with_limit(
    url: &str,
    limit: u64,
    max_keys: Option<u64>,
) -> (tokio::process::Child, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let limit_file = dir.path().join("memory.max");
    std::fs::write(&limit_file, format!("{limit}\n")).unwrap();
    let config = dir.path().join("gateway.toml");
    let (port, ops) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops}\"\ndrain_delay_secs = 0\n"
        ),
    )
    .unwrap();
    let mut cmd = command(BIN);
    cmd.arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("OBLETH_DATABASE__URL", url)
        .env(memcheck::LIMIT_FILE_ENV, &limit_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(max_keys) = max_keys {
        cmd.env("OBLETH_CACHE__MAX_KEYS", max_keys.to_string());
    }
    (cmd.spawn().unwrap(), ops, dir)
}

/// Waits for the process to exit; answers its success and its log.
async fn finish(child: tokio::process::Child) -> (bool, String) {
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the gateway exits")
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn ready(ops: u16) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], ops));
    obleth_testkit::poll::wait_ready(addr, Duration::from_secs(60))
        .await
        .expect("process ready");
}

#[tokio::test]
async fn keys_over_the_cgroup_memory_limit_stop_the_gateway_at_start_naming_the_figures() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    for _ in 0..3 {
        db_key(&pool, |_| {}).await;
    }
    let limit = memcheck::needed(3);

    // One byte short: the gateway refuses to warm and exits non-zero.
    let (child, _, _dir) = spawn_with_limit(&db.url, limit - 1, None);
    let (success, log) = finish(child).await;
    assert!(!success, "{log}");
    assert!(log.contains("would not fit the memory limit"), "{log}");
    assert!(
        log.contains("3 keys to load (3 active in the database, cache.max_keys = 2000000)"),
        "{log}"
    );
    assert!(log.contains(&format!("{} MiB", (limit - 1) >> 20)), "{log}");
    assert!(!log.contains("Key cache warmed"), "{log}");

    // Enough for the three keys: it starts, and warns that cache.max_keys
    // keys would not fit.
    let (child, ops, _dir) = spawn_with_limit(&db.url, limit, None);
    ready(ops).await;
    signal(&child, Signal::Term).unwrap();
    let (success, log) = finish(child).await;
    assert!(success, "{log}");
    assert!(
        log.contains("cache.max_keys keys would not fit the cgroup memory limit"),
        "{log}"
    );

    // cache.max_keys caps what is loaded, so what counts.
    let (child, ops, _dir) = spawn_with_limit(&db.url, limit - 1, Some(2));
    ready(ops).await;
    signal(&child, Signal::Term).unwrap();
    let (success, log) = finish(child).await;
    assert!(success, "{log}");
    assert!(!log.contains("would not fit the memory limit"), "{log}");
}
