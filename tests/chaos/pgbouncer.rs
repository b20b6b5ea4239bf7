//! PgBouncer in transaction mode between obleth and PostgreSQL: two gateways
//! and the admin with their query pools through it (a small server pool, so
//! connections are really shared) and `database.direct_url` to PostgreSQL,
//! under load, while the admin creates and revokes keys and PgBouncer is
//! killed and started again; and the refusal, within a bound, of every binary
//! pointed at it without a direct URL.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use obleth_e2e::fleet::{FleetSpec, Prepared};
use obleth_e2e::load::Load;
use obleth_testkit::http::request;
use obleth_testkit::pgbouncer::{PgBouncer, PoolMode};
use obleth_testkit::poll::{wait_ready, wait_until};
use obleth_testkit::proc::{bin, command, free_port};
use obleth_testkit::{db, PgCluster};
use serde_json::json;

use crate::ONE_AT_A_TIME;

const ADMIN_TOKEN: &str = "chaos-admin-token-0123456789";

/// How long a binary may take to refuse a pooled URL: the session check waits
/// 5 s; the rest is start-up on a loaded machine.
const REFUSAL_BOUND: Duration = Duration::from_secs(60);

/// An admin process on `url` (its query pool) and `direct_url`, if any.
fn spawn_admin(
    dir: &Path,
    name: &str,
    url: &str,
    direct_url: Option<&str>,
) -> (u16, tokio::process::Child) {
    let port = free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndrain_delay_secs = 0\nnode_id = \"{name}\"\n\n\
             [auth]\ntokens = [\"{ADMIN_TOKEN}\"]\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = command(bin("obleth-admin"));
    if let Some(direct) = direct_url {
        cmd.env("OBLETH_DATABASE__DIRECT_URL", direct);
    }
    let child = cmd
        .arg("--config")
        .arg(&config)
        .env("OBLETH_DATABASE__URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    (port, child)
}

async fn admin_call(
    port: u16,
    method: Method,
    path: &str,
    body: serde_json::Value,
) -> obleth_testkit::http::Answer {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    request(
        method,
        &format!("http://127.0.0.1:{port}{path}"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// Chat completions the scenario's own probes got answered (each is a usage row).
static PROBES_ANSWERED: AtomicI64 = AtomicI64::new(0);

/// The status a gateway answers a chat completion with `key`.
async fn chat_status(port: u16, key: &str) -> u16 {
    let auth = format!("Bearer {key}");
    let status = request(
        Method::POST,
        &format!("http://127.0.0.1:{port}/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        obleth_e2e::burst::chat_body("m", "hi", None),
    )
    .await
    .status;
    if status == 200 {
        PROBES_ANSWERED.fetch_add(1, Ordering::SeqCst);
    }
    status
}

/// Retries an admin write through a pooler that may be restarting, within 30 s.
async fn admin_write(
    port: u16,
    method: Method,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let answer = admin_call(port, method.clone(), path, body.clone()).await;
        if answer.status < 300 {
            return answer.json();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{method} {path}: {} {}",
            answer.status,
            answer.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// g. Two gateways and the admin behind PgBouncer in transaction mode (2
/// server connections), LISTEN and migrations on the direct URL, under load;
/// keys created and revoked through the admin reach both gateways, and
/// PgBouncer is killed and started again mid-load: no request fails, no usage
/// row is lost.
#[tokio::test]
async fn pgbouncer_in_transaction_mode_under_load_fails_no_request_and_loses_no_usage() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = PgCluster::start().unwrap();
    let database = cluster.fresh_database().await.unwrap();
    let mut bouncer = PgBouncer::start(cluster.port(), PoolMode::Transaction, 2, 100)
        .await
        .unwrap();
    let pooled = bouncer.url(&database.name);
    let spec = FleetSpec {
        gateways: 2,
        pooled_url: Some(pooled.clone()),
        ..FleetSpec::default()
    };
    let fleet = Prepared::new(&database.url, &spec)
        .await
        .unwrap()
        .launch(&spec)
        .await
        .unwrap();
    let (admin_port, mut admin) =
        spawn_admin(fleet.dir.path(), "admin", &pooled, Some(&database.url));
    wait_ready(
        std::net::SocketAddr::from(([127, 0, 0, 1], admin_port)),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let load = Load::start(fleet.load_spec(30, 10));
    let load_started = Instant::now();
    let gateways: Vec<u16> = fleet.gateways.iter().map(|g| g.port).collect();

    let mut revocations = 0;
    let mut restarted = false;
    for round in 0..4 {
        let created = admin_write(
            admin_port,
            Method::POST,
            "/api/v1/keys",
            json!({"name": format!("churn-{round}")}),
        )
        .await;
        let secret = created["secret"].as_str().unwrap().to_owned();
        let id = created["key"]["id"].as_str().unwrap().to_owned();
        for &port in &gateways {
            wait_until(
                Duration::from_secs(30),
                "a new key to work on every gateway",
                || async { chat_status(port, &secret).await == 200 },
            )
            .await;
        }
        if round == 1 {
            bouncer.restart().await.unwrap();
            restarted = true;
            obleth_e2e::evidence("[pgbouncer] PgBouncer killed and started again");
        }
        admin_write(
            admin_port,
            Method::POST,
            &format!("/api/v1/keys/{id}/revoke"),
            json!({}),
        )
        .await;
        for &port in &gateways {
            wait_until(
                Duration::from_secs(30),
                "a revoked key to be refused (403) on every gateway",
                || async { chat_status(port, &secret).await == 403 },
            )
            .await;
        }
        revocations += 1;
    }
    // At least 15 s of load, and 2 s after the last revocation.
    tokio::time::sleep(
        Duration::from_secs(15)
            .saturating_sub(load_started.elapsed())
            .max(Duration::from_secs(2)),
    )
    .await;
    let report = load.finish().await;
    let _ = admin.kill().await;
    let stopped = fleet.stop().await.unwrap();
    let rows = stopped.successful_usage_rows().await.unwrap();
    let expected = report.succeeded as i64 + PROBES_ANSWERED.load(Ordering::SeqCst);
    report.print("pgbouncer");
    obleth_e2e::evidence(&format!(
        "[pgbouncer] {} of {} requests ok, usage rows {rows} of {expected} (the load's and the key checks' answers); \
         keys revoked on both gateways {revocations} of 4; PgBouncer restarted mid-load: {restarted}",
        report.succeeded, report.sent
    ));
    assert_eq!(report.failed_total(), 0, "{:?}", report.failed);
    assert_eq!(report.sent, report.succeeded);
    assert_eq!(rows, expected, "no usage record lost or counted twice");
    assert_eq!(revocations, 4);
}

/// h. Pointed at PgBouncer in transaction mode without a direct URL, the
/// gateway, the admin and the migrator each stop within a bound, naming what
/// to set; and a gateway whose pooler cannot keep prepared statements (as
/// before PgBouncer 1.21) says so.
#[tokio::test]
async fn without_a_direct_url_behind_pgbouncer_every_binary_refuses_within_a_bound() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = PgCluster::start().unwrap();
    let database = cluster.fresh_database().await.unwrap();
    db::migrate(&database.url).await.unwrap().close().await;
    let bouncer = PgBouncer::start(cluster.port(), PoolMode::Transaction, 2, 100)
        .await
        .unwrap();
    let pooled = bouncer.url(&database.name);
    let dir = tempfile::tempdir().unwrap();

    let mut gateway =
        obleth_e2e::procs::GatewayProc::new(dir.path(), "gw", bin("obleth-gateway"), &pooled, 0)
            .unwrap();
    let started = Instant::now();
    gateway.start().unwrap();
    let code = gateway.wait_exit(REFUSAL_BOUND).await.unwrap();
    let gateway_took = started.elapsed();
    let log = gateway.log();
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("database.direct_url") && log.contains("transaction pooler"),
        "{log}"
    );

    let (_, mut admin) = spawn_admin(dir.path(), "admin", &pooled, None);
    let started = Instant::now();
    let status = tokio::time::timeout(REFUSAL_BOUND, admin.wait())
        .await
        .expect("the admin stops")
        .unwrap();
    let admin_took = started.elapsed();
    let log = std::fs::read_to_string(dir.path().join("admin.log")).unwrap();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("database.direct_url") && log.contains("transaction pooler"),
        "{log}"
    );

    let started = Instant::now();
    let migrator = tokio::time::timeout(
        REFUSAL_BOUND,
        command(bin("obleth-migrator"))
            .arg("up")
            .env("DATABASE_URL", &pooled)
            .output(),
    )
    .await
    .expect("the migrator stops")
    .unwrap();
    let migrator_took = started.elapsed();
    let stderr = String::from_utf8_lossy(&migrator.stderr);
    assert!(!migrator.status.success(), "{stderr}");
    assert!(
        stderr.contains("--database-url") && stderr.contains("transaction pooler"),
        "{stderr}"
    );

    // The direct URL set, but a pooler without prepared statements in front
    // of the query pool.
    let old_style = PgBouncer::start(cluster.port(), PoolMode::Transaction, 2, 0)
        .await
        .unwrap();
    let mut gateway = obleth_e2e::procs::GatewayProc::new(
        dir.path(),
        "gw-old",
        bin("obleth-gateway"),
        &old_style.url(&database.name),
        0,
    )
    .unwrap();
    gateway.direct_url = Some(database.url.clone());
    gateway.start().unwrap();
    let code = gateway.wait_exit(REFUSAL_BOUND).await.unwrap();
    let log = gateway.log();
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("max_prepared_statements"), "{log}");

    obleth_e2e::evidence(&format!(
        "[pgbouncer without direct_url] gateway refused in {gateway_took:?}, admin in {admin_took:?}, migrator in {migrator_took:?}; \
         a pooler without prepared statements refused too"
    ));
}
