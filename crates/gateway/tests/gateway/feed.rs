//! The change feed when the log does not continue what it read: a gateway
//! that fell behind a prune, a log that went back (a restore) and another
//! server (a restart or failover) each make a full reload, after which the
//! gateway is correct and follows changes again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

#[tokio::test]
async fn a_change_log_that_went_back_makes_a_reload_and_later_changes_reach_the_gateway() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let settings = database_settings(&db.url, &pool).await;
    let (kept, kept_secret) = db_key(&pool, |_| {}).await;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    // A key created while the gateway follows: its change is the last the
    // gateway applies.
    let (lost, lost_secret) = db_key(&pool, |_| {}).await;
    wait_until(Duration::from_secs(10), "the new key applied", || async {
        chat(&gw, &lost_secret, "m").await.status == 200
    })
    .await;

    // A restore from just before that key: its row, its change row and the
    // sequence go back, silently. Then a revocation takes the seq the
    // gateway has already seen, so a catch-up from there would skip it.
    let lost_seq: i64 =
        sqlx::query_scalar("SELECT seq FROM changes WHERE entity = 'api_key' AND entity_id = $1")
            .bind(lost.id.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
    let mut tx = pool.begin().await.unwrap();
    for statement in [
        "DELETE FROM api_keys WHERE id = $1",
        "DELETE FROM changes WHERE entity_id = $1::text",
    ] {
        sqlx::query(statement)
            .bind(lost.id)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query(&format!(
        "ALTER TABLE changes ALTER COLUMN seq RESTART WITH {lost_seq}"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let revoked = keys::revoke_key(&pool, kept.id).await.unwrap().unwrap();
    let revoked_seq = changes::latest_seq(&pool).await.unwrap();
    assert_eq!(
        revoked_seq, lost_seq,
        "the revocation reused the seq: {revoked:?}"
    );

    wait_until(
        Duration::from_secs(30),
        "the restored-away key refused",
        || async { chat(&gw, &lost_secret, "m").await.status == 401 },
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "the revocation applied",
        || async { matches!(chat(&gw, &kept_secret, "m").await.status, 401 | 403) },
    )
    .await;
    // The key was swept during the reload; the count comes at its end.
    wait_until(Duration::from_secs(30), "the reload counted", || async {
        reloads(&gw, "rewound").await >= 1.0
    })
    .await;

    // A change after the reload reaches the gateway through the feed.
    let (_, later_secret) = db_key(&pool, |_| {}).await;
    wait_until(
        Duration::from_secs(10),
        "a key created after the reload",
        || async { chat(&gw, &later_secret, "m").await.status == 200 },
    )
    .await;
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn another_server_incarnation_makes_a_reload_even_when_its_log_runs_ahead() {
    let cluster = PgCluster::start().unwrap();
    let db = cluster.fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let role = GatewayRole::create(&pool, &db).await;
    let mut settings = database_settings(&role.url(&db.url), &pool).await;
    settings.database.acquire_timeout_ms = 500;
    let (kept, kept_secret) = db_key(&pool, |_| {}).await;
    let (lost, lost_secret) = db_key(&pool, |_| {}).await;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    assert_eq!(chat(&gw, &lost_secret, "m").await.status, 200);

    // A failover to a standby that missed the last commit: the key created
    // last, and its change row, are not there; the standby's sequence runs
    // ahead (sequences are logged 32 values ahead), and a revocation made
    // on it lands after the gateway's last seq, as if nothing were wrong.
    role.cut_off(&pool).await;
    wait_feed_down(&gw).await;
    let mut tx = pool.begin().await.unwrap();
    for statement in [
        "DELETE FROM api_keys WHERE id = $1",
        "DELETE FROM changes WHERE entity_id = $1::text",
    ] {
        sqlx::query(statement)
            .bind(lost.id)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let ahead = changes::latest_seq(&mut *tx).await.unwrap() + 33;
    sqlx::query(&format!(
        "ALTER TABLE changes ALTER COLUMN seq RESTART WITH {ahead}"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    keys::revoke_key(&pool, kept.id).await.unwrap().unwrap();
    pool.close().await;
    cluster.stop().unwrap();
    cluster.start_again().unwrap();
    let pool = PgPool::connect(&db.url).await.unwrap();
    role.let_back(&pool).await;

    wait_feed_caught_up(&gw).await;
    let answer = chat(&gw, &lost_secret, "m").await;
    assert_eq!(
        answer.status,
        401,
        "a key the new server lacks: {}",
        answer.text()
    );
    let answer = chat(&gw, &kept_secret, "m").await;
    assert!(
        matches!(answer.status, 401 | 403),
        "the revocation made after the failover: {}",
        answer.text()
    );
    assert_eq!(reloads(&gw, "server_changed").await, 1.0);

    // A change after the reload reaches the gateway through the feed.
    let (_, later_secret) = db_key(&pool, |_| {}).await;
    wait_until(
        Duration::from_secs(10),
        "a key created after the reload",
        || async { chat(&gw, &later_secret, "m").await.status == 200 },
    )
    .await;
    gw.stop().await.unwrap();
    role.drop(&pool).await;
}

/// A TCP forwarder on loopback to a PostgreSQL server. Once stalled, a
/// session it opens logs in, then everything the client sends after the
/// server's first ReadyForQuery is swallowed: a LISTEN (or any query) never
/// gets an answer, as when a partition strikes just after the login. Such a
/// session stays stalled until [`Stall::reset`] closes it, as the partition's
/// end would reset it.
struct Stall {
    port: u16,
    stalled: Arc<AtomicBool>,
    reset: Arc<tokio::sync::watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stall {
    async fn start(target: String) -> Stall {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let reset = Arc::new(tokio::sync::watch::channel(0).0);
        let (stalling, resets) = (Arc::clone(&stalled), Arc::clone(&reset));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let stalls = stalling.load(Ordering::SeqCst);
                let mut reset = resets.subscribe();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = forward(client, server, stalls) => {}
                        _ = reset.changed(), if stalls => {}
                    }
                });
            }
        });
        Stall {
            port,
            stalled,
            reset,
            task,
        }
    }

    /// `url` through this forwarder.
    fn url(&self, url: &str) -> String {
        let (head, rest) = url.rsplit_once('@').unwrap();
        let (_, path) = rest.split_once('/').unwrap();
        format!("{head}@127.0.0.1:{}/{path}", self.port)
    }

    fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
    }

    /// Closes every stalled session.
    fn reset(&self) {
        self.reset.send_modify(|n| *n += 1);
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The server's target `host:port` in `url`.
fn target(url: &str) -> String {
    let (_, rest) = url.rsplit_once('@').unwrap();
    rest.split_once('/').unwrap().0.to_owned()
}

/// Copies both ways; when `stalls`, drops what the client sends once it has
/// logged in, keeping the connection open. The start-up packets (an SSL
/// request, the startup message) begin with their length, a zero byte;
/// every message after them with its type, a letter; and the client sends
/// its first one only once the server has answered the login, so it starts
/// a read.
async fn forward(client: tokio::net::TcpStream, server: tokio::net::TcpStream, stalls: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let down = async move {
        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
    };
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut logged_in = false;
        while let Ok(n) = client_rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            logged_in |= buf[0] != 0;
            if stalls && logged_in {
                continue;
            }
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(down, up);
}

#[tokio::test]
async fn a_listen_connection_that_never_answers_does_not_hold_back_a_revoke() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    // The LISTEN connection goes through the forwarder, as a role of its
    // own, so the test can end just its sessions; the query pool does not.
    let role = GatewayRole::create(&pool, &db).await;
    let stall = Stall::start(target(&db.url)).await;
    let mut settings = database_settings(&db.url, &pool).await;
    settings.database.direct_url = Some(obleth_config::DatabaseUrl::new(
        stall.url(&role.url(&db.url)),
    ));
    settings.database.acquire_timeout_ms = 500;
    let (key, secret) = db_key(&pool, |_| {}).await;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    assert_eq!(chat(&gw, &secret, "m").await.status, 200);

    // Every new session on the direct URL now logs in and then hangs: the
    // feed's LISTEN connection, ended here, cannot be opened again. Each
    // hung session keeps its slot in the session pool (sqlx tests a
    // connection it gets back, and that test hangs too), so the feed soon
    // cannot even try, and stops listening: the revocation made then
    // reaches it only by a catch-up from the query pool. (At times its
    // listener instead waits on a session for good, while its poll goes on
    // catching up: the revocation then comes by the poll.)
    stall.stall(true);
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(&role.name)
        .execute(&pool)
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), wait_feed_down(&gw)).await;
    keys::revoke_key(&pool, key.id).await.unwrap().unwrap();
    let took = wait_until(
        Duration::from_secs(30),
        "the revoke to apply without a LISTEN connection",
        || async { chat(&gw, &secret, "m").await.status == 403 },
    )
    .await;
    println!("revoke applied without LISTEN after {took:?}");

    // Once the partition ends (the hung sessions reset), the feed listens again.
    stall.stall(false);
    stall.reset();
    wait_feed_caught_up(&gw).await;
    gw.stop().await.unwrap();
    role.drop(&pool).await;
}
