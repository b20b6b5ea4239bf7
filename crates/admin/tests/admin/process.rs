//! The binary as a process: `wiring` for the deploy files, settings refused
//! by name, and a start, SIGTERM and clean exit that never logs a secret.

use std::process::Stdio;
use std::time::Duration;

use http::Method;
use obleth_testkit::proc;
use sqlx::PgPool;
use tokio::io::AsyncReadExt;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_obleth-admin");

fn command(args: &[&str], envs: &[(&str, String)]) -> tokio::process::Command {
    let mut cmd = proc::command(BIN);
    cmd.args(args)
        .env_remove("OBLETH_CONFIG")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

#[tokio::test]
async fn wiring_prints_the_port_paths_and_drain_timings_without_a_database() {
    let out = command(
        &["wiring"],
        &[
            ("OBLETH_SERVER__LISTEN", "0.0.0.0:9181".to_owned()),
            ("OBLETH_SERVER__DRAIN_DELAY_SECS", "7".to_owned()),
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut wiring: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every metric the admin exports, series or not (the dashboard check
    // reads them).
    let metrics = wiring["metrics"].take();
    for name in [
        "obleth_admin_ready",
        "obleth_fleet_uniform",
        "obleth_fleet_nodes",
        "obleth_open_connections",
    ] {
        assert!(
            metrics.as_array().unwrap().iter().any(|m| m == name),
            "{name}: {metrics}"
        );
    }
    assert_eq!(
        wiring,
        serde_json::json!({
            "metrics": null,
            "service": "admin",
            "port": 9181,
            "paths": {"healthz": "/healthz", "readyz": "/readyz", "health": "/api/v1/health",
                      "version": "/api/version", "metrics": "/metrics"},
            "drain_delay_secs": 7,
            "drain_timeout_secs": 30,
        })
    );
}

#[tokio::test]
async fn invalid_settings_exit_non_zero_naming_the_field() {
    let token = ("OBLETH_AUTH__TOKENS", TOKEN.to_owned());
    let url = (
        "OBLETH_DATABASE__URL",
        "postgres://u:pw-secret@127.0.0.1:1/db".to_owned(),
    );
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![token.clone()], "database.url"),
        (vec![url.clone()], "auth.tokens"),
        (
            vec![url.clone(), ("OBLETH_AUTH__TOKENS", "shorttok".to_owned())],
            "auth.tokens[0]",
        ),
        (
            vec![
                url.clone(),
                token.clone(),
                ("OBLETH_SERVER__LISTN", "x".to_owned()),
            ],
            "listn",
        ),
        (
            vec![
                url.clone(),
                token.clone(),
                ("OBLETH_MIGRATIONS__MIGRATE_ON_STARTUP", "maybe".to_owned()),
            ],
            "migrations.migrate_on_startup",
        ),
    ];
    for (envs, field) in cases {
        let out = command(&["check"], &envs).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{field}: {stderr}");
        assert!(stderr.contains(field), "{field}: {stderr}");
        assert!(
            !stderr.contains("pw-secret") && !stderr.contains("shorttok"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn the_binary_serves_until_sigterm_then_exits_cleanly_and_never_logs_a_secret() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let port = proc::free_port();
    let node_id = format!("admin-process-{port}");
    let mut child = command(
        &[],
        &[
            ("OBLETH_DATABASE__URL", db.url.clone()),
            ("OBLETH_AUTH__TOKENS", TOKEN.to_owned()),
            ("OBLETH_SERVER__LISTEN", format!("127.0.0.1:{port}")),
            ("OBLETH_SERVER__NODE_ID", node_id.clone()),
            ("OBLETH_SERVER__DRAIN_DELAY_SECS", "0".to_owned()),
            ("OBLETH_SERVER__HEARTBEAT_SECS", "1".to_owned()),
        ],
    )
    .spawn()
    .unwrap();
    // Read the log as it comes, so a full pipe never blocks the process.
    let mut pipe = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text).await;
        text
    });
    let base = format!("http://127.0.0.1:{port}");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    obleth_testkit::poll::wait_ready(addr, Duration::from_secs(60))
        .await
        .expect("the admin process ready");
    let auth = format!("Bearer {TOKEN}");
    let created = request(
        Method::POST,
        &format!("{base}/api/v1/keys"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        r#"{"name": "process"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let secret = created.json()["secret"].as_str().unwrap().to_owned();
    let refused = request(
        Method::GET,
        &format!("{base}/api/v1/keys"),
        &[("authorization", "Bearer not-the-admin-token-123")],
        "",
    )
    .await;
    assert_eq!(refused.status, 401);

    let pool = PgPool::connect(&db.url).await.unwrap();
    wait_node_ready(&pool, &node_id).await;

    proc::signal(&child, proc::Signal::Term).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the admin exits after SIGTERM")
        .unwrap();
    let stderr = log.await.unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("Admin stopped"), "{stderr}");
    for secret_text in [TOKEN, secret.as_str(), "not-the-admin-token-123"] {
        assert!(
            !stderr.contains(secret_text),
            "a secret reached the log: {stderr}"
        );
    }
    let stopped: bool =
        sqlx::query_scalar("SELECT stopped_at IS NOT NULL FROM nodes WHERE node_id = $1")
            .bind(&node_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(stopped);
}
