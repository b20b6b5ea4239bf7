//! `obleth-admin rollout-status`, the post-upgrade check, as a process: it
//! fails while one gateway runs another release (or is silent without a
//! recorded stop), passes when every node runs the expected one and a canary
//! through a real gateway answers, and says when the canary fails.

use std::process::Stdio;
use std::time::Duration;

use http::Method;
use obleth_config::migrate::MigrationSet;
use obleth_config::version::VERSION;
use obleth_testkit::proc;
use serde_json::{json, Value};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_obleth-admin");

fn rollout(url: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = proc::command(BIN);
    cmd.arg("rollout-status")
        .args(["--expect-version", VERSION, "--database-url", url])
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("OBLETH_CANARY_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

async fn run(cmd: &mut tokio::process::Command) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("rollout-status ended")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn rollout_status_fails_while_one_gateway_runs_the_old_release_and_passes_when_all_run_the_new(
) {
    let (admin, db, pool) = TestAdmin::on_fresh_database().await;
    mock_route(&admin).await;
    let created = admin
        .call(Method::POST, "/api/v1/keys", json!({"name": "canary"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let secret = created.json()["secret"].as_str().unwrap().to_owned();
    let gw = TestGateway::start(&db.url).await;
    wait_node_ready(&pool, &gw.node_id).await;
    wait_node_ready(&pool, &admin.node_id).await;
    let schema = MigrationSet::embedded().unwrap().newest_expand().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{secret}\n")).unwrap();
    let gateway_url = format!("http://{}", gw.proxy);
    let canary = [
        "--gateway-url",
        gateway_url.as_str(),
        "--canary-key-file",
        key_file.to_str().unwrap(),
        "--canary-model",
        "m",
    ];

    // The previous release's gateway is still up: beating, ready, on the
    // same schema, but another version.
    sqlx::query(
        "INSERT INTO nodes (node_id, service, version, schema_version, ready) \
         VALUES ('gw-old', 'gateway', '0.0.1', $1, true)",
    )
    .bind(schema)
    .execute(&pool)
    .await
    .unwrap();
    let (code, stdout, stderr) = run(rollout(&db.url, &canary).arg("--json")).await;
    assert_eq!(code, 3, "{stdout}{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["complete"], false, "{status}");
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("gw-old") && problems.contains("0.0.1"),
        "{problems}"
    );
    assert_eq!(status["canary"]["ok"], true, "{status}");
    assert!(!stdout.contains(&secret) && !stderr.contains(&secret));

    // --wait polls: it passes once the old gateway records its stop.
    let mut waiting = rollout(&db.url, &canary)
        .args(["--wait", "--timeout-secs", "60", "--interval-secs", "1"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "--wait must not pass while gw-old runs"
    );
    sqlx::query("UPDATE nodes SET stopped_at = now() WHERE node_id = 'gw-old'")
        .execute(&pool)
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), waiting.wait_with_output())
        .await
        .expect("--wait ended once the fleet was uniform")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("rollout complete") && text.contains("canary: ok"),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gw-old"),
        "each round says what is missing"
    );

    // A gateway of the new release that went silent without a recorded stop
    // (cut off from the database, serving from its key store) holds it back.
    sqlx::query(
        "INSERT INTO nodes (node_id, service, version, schema_version, ready, last_seen) \
         VALUES ('gw-cut-off', 'gateway', $1, $2, true, now() - interval '5 minutes')",
    )
    .bind(VERSION)
    .bind(schema)
    .execute(&pool)
    .await
    .unwrap();
    let (code, stdout, _) = run(&mut rollout(&db.url, &[])).await;
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stdout.contains("gw-cut-off") && stdout.contains("silent"),
        "{stdout}"
    );
    sqlx::query("DELETE FROM nodes WHERE node_id = 'gw-cut-off'")
        .execute(&pool)
        .await
        .unwrap();

    // The nodes are right but the canary key is wrong: exit 4.
    std::fs::write(&key_file, "obk_not_a_real_key").unwrap();
    let (code, stdout, _) = run(&mut rollout(&db.url, &canary)).await;
    assert_eq!(code, 4, "{stdout}");
    assert!(stdout.contains("canary: FAILED"), "{stdout}");

    // A schema this database never applied: exit 3, naming the migration.
    let (code, stdout, _) = run(&mut rollout(
        &db.url,
        &["--expect-schema", "29991231000001"],
    ))
    .await;
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("29991231000001"), "{stdout}");

    gw.stop().await.unwrap();
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn rollout_status_refuses_bad_input_by_name_and_never_prints_the_password() {
    let (code, _, stderr) = run(&mut rollout(
        "postgres://obleth:hunter2-secret@127.0.0.1:1/obleth",
        &[],
    ))
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot read the database"), "{stderr}");
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");

    let (code, _, stderr) = run(&mut rollout(
        "postgres://127.0.0.1:1/obleth",
        &["--gateway-url", "http://127.0.0.1:1"],
    ))
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("canary key"), "{stderr}");

    let (code, _, stderr) = run(&mut rollout(
        "postgres://127.0.0.1:1/obleth",
        &[
            "--canary-key-file",
            "/nonexistent/key",
            "--gateway-url",
            "http://x",
        ],
    ))
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--canary-key-file"), "{stderr}");
}
