//! A gateway cut off from the database keeps serving from its key store and
//! stops heartbeating. `finish` must not take that silence for a stop: it
//! refuses a contract migration the gateway's release is too old for, and
//! names the gateway as silent, until the gateway records its stop or the
//! operator's horizon passes.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use obleth_e2e::cutoff::Cutoff;
use obleth_e2e::fleet::{FleetSpec, Prepared};
use obleth_e2e::procs::GatewayProc;
use obleth_e2e::{evidence, ONE_AT_A_TIME};
use obleth_testkit::proc::{bin, command};
use obleth_testkit::{fresh_database, http};
use sqlx::postgres::PgConnectOptions;

/// Longer than the 30 seconds after which `finish` used to count a silent
/// node as gone.
const SILENCE: Duration = Duration::from_secs(35);

/// The shipped migrations and one contract migration that needs a release
/// no gateway runs.
fn migrations_with_a_contract(dir: &Path) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/config/migrations");
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        dir.join("29991231000001_cutoff_contract.sql"),
        "CREATE TABLE cutoff_contract_applied (id INT);\n",
    )
    .unwrap();
    let manifest = dir.join("manifest.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(
        "\n[[migration]]\nversion = 29991231000001\nphase = \"contract\"\nrequires_release = \"99.0.0\"\n",
    );
    std::fs::write(manifest, text).unwrap();
}

async fn chat(gateway: &GatewayProc, key: &str) -> u16 {
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    http::request(
        ::http::Method::POST,
        &gateway.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
    .status
}

#[tokio::test]
async fn finish_refuses_while_a_gateway_cut_off_from_the_database_still_serves() {
    let _one = ONE_AT_A_TIME.lock().await;
    let db = fresh_database().await.unwrap();
    let spec = FleetSpec::default();
    let prepared = Prepared::new(&db.url, &spec).await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let cutoff = Cutoff::start(options.get_port()).await.unwrap();
    let through_cutoff = db.url.replacen(
        &format!(":{}/", options.get_port()),
        &format!(":{}/", cutoff.port),
        1,
    );
    assert_ne!(through_cutoff, db.url, "the URL names its port");
    let mut gateway = GatewayProc::new(
        prepared.dir.path(),
        "gw-cut",
        bin("obleth-gateway"),
        &through_cutoff,
        0,
    )
    .unwrap();
    gateway.start().unwrap();
    gateway.wait_ready(Duration::from_secs(60)).await.unwrap();
    assert_eq!(chat(&gateway, &prepared.key).await, 200);

    // The partition: the gateway loses the database and goes on serving.
    cutoff.cut();
    let started = Instant::now();
    let (mut served, mut failed) = (0, 0);
    while started.elapsed() < SILENCE {
        match chat(&gateway, &prepared.key).await {
            200 => served += 1,
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (stopped, silent_secs): (bool, f64) = sqlx::query_as(
        "SELECT stopped_at IS NOT NULL, extract(epoch FROM now() - last_seen)::float8 \
         FROM nodes WHERE node_id = 'gw-cut'",
    )
    .fetch_one(&prepared.pool)
    .await
    .unwrap();
    assert!(!stopped && silent_secs > 30.0, "{stopped} {silent_secs}");
    assert_eq!(failed, 0, "the cut-off gateway serves from its key store");

    let source = prepared.dir.path().join("migrations");
    migrations_with_a_contract(&source);
    let finish = |extra: &[&str]| {
        let mut cmd = command(bin("obleth-migrator"));
        cmd.arg("finish")
            .arg("--source")
            .arg(&source)
            .args(extra)
            .env("DATABASE_URL", &db.url)
            .env_remove("OBLETH_MIGRATIONS__NODE_HORIZON_SECS");
        cmd
    };
    let refused = finish(&[]).output().await.unwrap();
    let refusal = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(refused.status.code(), Some(7), "{refusal}");
    assert!(
        refusal.contains("gw-cut") && refusal.contains("silent"),
        "{refusal}"
    );
    let applied: bool =
        sqlx::query_scalar("SELECT to_regclass('cutoff_contract_applied') IS NOT NULL")
            .fetch_one(&prepared.pool)
            .await
            .unwrap();
    assert!(!applied, "finish refused before changing anything");
    evidence(&format!(
        "cutoff: gateway silent {silent_secs:.0} s with no recorded stop, served {served} \
         requests, 0 failed; finish refused (exit 7)"
    ));

    // The horizon is the operator's: one shorter than the silence lets it by.
    let past = finish(&["--node-horizon-secs", "20"])
        .output()
        .await
        .unwrap();
    assert!(
        past.status.success(),
        "{}",
        String::from_utf8_lossy(&past.stderr)
    );

    cutoff.restore();
    gateway.stop().await.unwrap();
}
