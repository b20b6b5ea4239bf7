//! The change feed when the log does not continue what it read: a gateway
//! that fell behind a prune, a log that went back (a restore) and another
//! server (a restart or failover) each make a full reload, after which the
//! gateway is correct and follows changes again.

use std::time::Duration;

use obleth_config::db::{changes, keys};
use obleth_testkit::{fresh_database, PgCluster, TestDb};
use sqlx::PgPool;

use crate::support::*;

/// A login role of its own for the gateway, so the test can cut the
/// gateway off the database (no new session, its sessions ended) while the
/// test's own connections go on.
struct GatewayRole {
    name: String,
}

impl GatewayRole {
    async fn create(pool: &PgPool, db: &TestDb) -> GatewayRole {
        let suffix = db.name.trim_start_matches("obleth_test_");
        let name = format!("gw_{suffix}");
        // Test-made names of [a-z0-9_] only; a role cannot be a parameter.
        sqlx::query(&format!(
            "CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{name}'"
        ))
        .execute(pool)
        .await
        .unwrap();
        GatewayRole { name }
    }

    /// `url` with this role as its user.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{0}:{0}@{host}", self.name)
    }

    async fn cut_off(&self, pool: &PgPool) {
        sqlx::query(&format!("ALTER ROLE {} NOLOGIN", self.name))
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(&self.name)
            .execute(pool)
            .await
            .unwrap();
    }

    async fn let_back(&self, pool: &PgPool) {
        sqlx::query(&format!("ALTER ROLE {} LOGIN", self.name))
            .execute(pool)
            .await
            .unwrap();
    }

    async fn drop(self, pool: &PgPool) {
        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {}", self.name))
            .execute(pool)
            .await;
    }
}

async fn database_status(gw: &TestGateway) -> String {
    let health = get_json(&gw.ops_url("/api/v1/health")).await.1;
    health["checks"]["database"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the gateway's feed has lost the database.
async fn wait_feed_down(gw: &TestGateway) {
    wait_until(
        Duration::from_secs(30),
        "the feed to lose the database",
        || async { database_status(gw).await == "down" },
    )
    .await;
}

/// Waits until the gateway's feed has caught up again (after any reload).
async fn wait_feed_caught_up(gw: &TestGateway) {
    wait_until(
        Duration::from_secs(60),
        "the feed to catch up again",
        || async { database_status(gw).await == "ok" },
    )
    .await;
}

async fn reloads(gw: &TestGateway, reason: &str) -> f64 {
    metric(gw, "obleth_feed_full_reloads_total", &[("reason", reason)]).await
}

#[tokio::test]
async fn a_gateway_that_fell_behind_a_changes_prune_reloads_and_is_correct() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let role = GatewayRole::create(&pool, &db).await;
    let mut settings = database_settings(&role.url(&db.url), &pool).await;
    settings.database.acquire_timeout_ms = 500;
    let (revoked, revoked_secret) = db_key(&pool, |_| {}).await;
    let (deleted, deleted_secret) = db_key(&pool, |_| {}).await;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    assert_eq!(chat(&gw, &revoked_secret, "m").await.status, 200);
    assert_eq!(chat(&gw, &deleted_secret, "m").await.status, 200);

    // While the gateway cannot follow, a key is revoked, one deleted, one
    // created, and the change rows are pruned: only the newest (the
    // creation) is left, so a catch-up from the gateway's last seq would
    // find the creation and nothing of the revocation or the deletion.
    role.cut_off(&pool).await;
    wait_feed_down(&gw).await;
    keys::revoke_key(&pool, revoked.id).await.unwrap().unwrap();
    assert!(keys::delete_key(&pool, deleted.id).await.unwrap());
    let (fresh, fresh_secret) = db_key(&pool, |_| {}).await;
    sqlx::query("UPDATE changes SET changed_at = now() - interval '8 days'")
        .execute(&pool)
        .await
        .unwrap();
    let cutoff = chrono::Utc::now() - chrono::Duration::days(7);
    assert!(changes::prune_changes(&pool, cutoff, 5_000).await.unwrap() > 0);
    role.let_back(&pool).await;

    wait_feed_caught_up(&gw).await;
    let answer = chat(&gw, &revoked_secret, "m").await;
    assert_eq!(
        answer.status,
        401,
        "the key revoked while pruned away: {}",
        answer.text()
    );
    let answer = chat(&gw, &deleted_secret, "m").await;
    assert_eq!(
        answer.status,
        401,
        "the key deleted while pruned away: {}",
        answer.text()
    );
    let answer = chat(&gw, &fresh_secret, "m").await;
    assert_eq!(
        answer.status,
        200,
        "the key created meanwhile: {}",
        answer.text()
    );
    assert_eq!(reloads(&gw, "pruned").await, 1.0);
    assert_eq!(reloads(&gw, "server_changed").await, 0.0);
    assert_eq!(
        metric(&gw, "obleth_key_db_lookups_total", &[]).await,
        0.0,
        "all answered from the reloaded store"
    );

    // And the feed follows changes after the reload.
    keys::revoke_key(&pool, fresh.id).await.unwrap().unwrap();
    wait_until(
        Duration::from_secs(10),
        "a revocation after the reload",
        || async { chat(&gw, &fresh_secret, "m").await.status == 403 },
    )
    .await;
    gw.stop().await.unwrap();
    role.drop(&pool).await;
}
