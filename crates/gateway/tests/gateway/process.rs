//! The binary as a process: the quickstart, SIGTERM during a stream, and an
//! incompatible schema refused at start.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use obleth_config::model::ProviderKind;
use obleth_testkit::proc::{command, free_port, signal, Signal};
use obleth_testkit::{db, fresh_database, MockConfig, MockUpstream};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_obleth-gateway");

fn spawn(config: &Path, envs: &[(&str, String)]) -> tokio::process::Child {
    let mut cmd = command(BIN);
    cmd.arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits for the process's ops listener to report ready.
async fn wait_ready(ops: u16) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], ops));
    obleth_testkit::poll::wait_ready(addr, Duration::from_secs(60))
        .await
        .expect("process ready");
}

#[tokio::test]
async fn the_quickstart_file_serves_the_readme_request() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.toml");
    let (port, ops) = (free_port(), free_port());
    let mut child = spawn(
        &config,
        &[
            ("OBLETH_SERVER__LISTEN", format!("127.0.0.1:{port}")),
            ("OBLETH_SERVER__OPS_LISTEN", format!("127.0.0.1:{ops}")),
        ],
    );
    wait_ready(ops).await;
    // The request the README prints, with its demo key.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap_or_default();
    let key = "obk_3rel61ft4g40_lQesUp0XR5djATDhL7L7I1qjxing5VZXU3jfJUc3";
    assert!(
        readme.contains(key),
        "README must show the demo key of examples/quickstart.toml"
    );
    let answer = request(
        Method::POST,
        &format!("http://127.0.0.1:{port}/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]}"#,
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["object"], "chat.completion");
    signal(&child, Signal::Term).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sigterm_during_a_slow_stream_goes_unready_finishes_the_stream_records_usage_and_exits_0() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(MockConfig {
        token_delay: Duration::from_millis(100),
        completion_tokens: 20,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let slow = db::provider("slow", ProviderKind::OpenAi, &upstream.base_url());
    db::provider_and_route(&pool, &slow, "slow-model")
        .await
        .unwrap();
    let (key, secret) = db_key(&pool, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let (port, ops) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops}\"\ndrain_delay_secs = 3\ndrain_timeout_secs = 30\n\n[usage]\nflush_interval_ms = 50\n"
        ),
    )
    .unwrap();
    let mut child = spawn(&config, &[("OBLETH_DATABASE__URL", db.url.clone())]);
    wait_ready(ops).await;

    let response = send(
        Method::POST,
        &format!("http://127.0.0.1:{port}/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "application/json"),
        ],
        r#"{"model":"slow-model","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut text = String::new();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    text.push_str(&String::from_utf8_lossy(&first));

    signal(&child, Signal::Term).unwrap();
    wait_until(Duration::from_secs(5), "/readyz to answer 503", || async {
        let url = format!("http://127.0.0.1:{ops}/readyz");
        matches!(client().get(url.parse().unwrap()).await, Ok(r) if r.status() == 503)
    })
    .await;
    // Not ready, but still serving during the drain delay: a load balancer that
    // has not noticed yet loses nothing.
    let late = request(
        Method::POST,
        &format!("http://127.0.0.1:{port}/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "application/json"),
        ],
        r#"{"model":"slow-model","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(
        late.status, 200,
        "a request during the drain delay is served"
    );
    assert_eq!(
        late.header("connection"),
        Some("close"),
        "and tells keep-alive clients to reconnect elsewhere"
    );

    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame
            .expect("the stream completes despite SIGTERM")
            .into_data()
        {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");

    let rows: Vec<(i16, bool, Option<i32>)> = sqlx::query_as(
        "SELECT status, streamed, completion_tokens FROM usage_ledger WHERE key_id = $1",
    )
    .bind(key.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.contains(&(200, true, Some(20))),
        "the stream's record: {rows:?}"
    );
    assert!(
        rows.contains(&(200, false, Some(20))),
        "the late request's record: {rows:?}"
    );
    let stopped: bool = sqlx::query_scalar(
        "SELECT bool_and(stopped_at IS NOT NULL) FROM nodes WHERE service = 'gateway'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(stopped, "the node record is marked stopped");
}

#[tokio::test]
async fn an_unknown_contract_migration_makes_the_gateway_refuse_to_start_naming_it() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    sqlx::raw_sql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000009, 'drop something', true, '\\x00', 1); \
         INSERT INTO obleth_migration_phases (version, phase, requires_release) VALUES (29991231000009, 'contract', '9.0.0');",
    )
    .execute(&pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nops_listen = \"127.0.0.1:{}\"\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let child = spawn(&config, &[("OBLETH_DATABASE__URL", db.url.clone())]);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("29991231000009 (drop something, contract)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_invalid_setting_exits_non_zero_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, "[server]\nlisten = \"not an address\"\n").unwrap();
    let output = command(BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.listen"), "{stderr}");
    let cases = [
        ("[[routes]]\nmodel = \"m\"\ntargets = [{ provider = \"nope\" }]\n", "routes[0].targets[0].provider"),
        ("[cache]\npoll_interval_secs = 0\n", "cache.poll_interval_secs"),
        ("[usage]\nflush_interval_ms = 0\n", "usage.flush_interval_ms"),
        ("[usage]\npartitions_ahead_days = 0\n", "usage.partitions_ahead_days"),
        ("[server]\nheartbeat_secs = 0\n", "server.heartbeat_secs"),
        ("[server]\nmax_stream_secs = 0\n", "server.max_stream_secs"),
        ("[[providers]]\nname = \"p\"\nkind = \"mock\"\ntimeout_ms = 600001\n", "providers[0].timeout_ms"),
        ("[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"ftp://x\"\n", "providers[0].base_url"),
        ("[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"https://x\"\ncredential = \"sk-live-123\"\n", "providers[0].credential"),
        ("[[keys]]\npublic_id = \"x\"\nsecret_sha256 = \"zz\"\n", "keys[0].secret_sha256"),
    ];
    for (text, field) in cases {
        std::fs::write(&config, text).unwrap();
        let run = command(BIN).arg("--config").arg(&config).output();
        let output = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .unwrap_or_else(|_| panic!("{field}: the gateway started instead of refusing"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{field}");
        assert!(stderr.contains(field), "{field}: {stderr}");
        assert!(
            !stderr.contains("sk-live-123"),
            "a misplaced credential is never echoed: {stderr}"
        );
    }
}

#[tokio::test]
async fn sighup_reloads_the_embedded_file_and_a_bad_file_keeps_the_old_one() {
    let (old_key, old_secret) = file_key(|_| {});
    let (new_key, new_secret) = file_key(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let (port, ops) = (free_port(), free_port());
    let file = |key: &obleth_gateway::settings::KeyConfig| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops}\"\ndrain_delay_secs = 0\n\n[[providers]]\nname = \"mock\"\nkind = \"mock\"\n\n[[routes]]\nmodel = \"m\"\ntargets = [{{ provider = \"mock\" }}]\n\n[[keys]]\npublic_id = {:?}\nsecret_sha256 = {:?}\n",
            key.public_id, key.secret_sha256
        )
    };
    std::fs::write(&config, file(&old_key)).unwrap();
    let mut child = spawn(&config, &[]);
    wait_ready(ops).await;
    let call = |secret: String| async move {
        request(
            Method::POST,
            &format!("http://127.0.0.1:{port}/v1/chat/completions"),
            &[
                ("authorization", &format!("Bearer {secret}")),
                ("content-type", "application/json"),
            ],
            r#"{"model":"m","messages":[]}"#,
        )
        .await
        .status
    };
    assert_eq!(call(old_secret.clone()).await, 200);
    assert_eq!(call(new_secret.clone()).await, 401);

    std::fs::write(&config, file(&new_key)).unwrap();
    signal(&child, Signal::Hup).unwrap();
    wait_until(Duration::from_secs(10), "the new key after SIGHUP", || {
        let status = call(new_secret.clone());
        async move { status.await == 200 }
    })
    .await;
    assert_eq!(
        call(old_secret.clone()).await,
        401,
        "the removed key is gone"
    );

    std::fs::write(&config, "[[routes]]\nmodel = 1\n").unwrap();
    signal(&child, Signal::Hup).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        call(new_secret.clone()).await,
        200,
        "a bad file keeps the previous configuration"
    );
    signal(&child, Signal::Term).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// A record lost at shutdown is counted after the pod has left its
/// endpoints, where no scrape sees it: the gateway writes its drop counts
/// into its node record as it signs off.
#[tokio::test]
async fn records_lost_at_shutdown_are_written_with_the_nodes_stop() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    let provider = db::provider("up", ProviderKind::OpenAi, &upstream.base_url());
    db::provider_and_route(&pool, &provider, "m").await.unwrap();
    let (key, secret) = db_key(&pool, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let (port, ops) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops}\"\nnode_id = \"gw-lossy\"\ndrain_delay_secs = 0\n\n[usage]\nflush_interval_ms = 50\n"
        ),
    )
    .unwrap();
    let child = spawn(&config, &[("OBLETH_DATABASE__URL", db.url.clone())]);
    wait_ready(ops).await;

    // The ledger stays locked past the writer's final flush: every record
    // of these requests is lost at shutdown.
    let mut locker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE usage_ledger IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    const REQUESTS: u64 = 4;
    for _ in 0..REQUESTS {
        let answer = request(
            Method::POST,
            &format!("http://127.0.0.1:{port}/v1/chat/completions"),
            &[
                ("authorization", &format!("Bearer {secret}")),
                ("content-type", "application/json"),
            ],
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        assert_eq!(answer.status, 200);
    }
    signal(&child, Signal::Term).unwrap();
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the gateway exits within its final flush and fold")
        .unwrap();
    locker.rollback().await.unwrap();
    assert!(output.status.success(), "exit status {:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Usage records could not be written before exit."),
        "{stderr}"
    );

    let (stopped, dropped): (bool, serde_json::Value) = sqlx::query_as(
        "SELECT stopped_at IS NOT NULL AND usage_dropped_life = started_at, usage_dropped \
         FROM nodes WHERE node_id = 'gw-lossy'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        stopped,
        "the stop is recorded, with the counts of this life"
    );
    assert_eq!(
        dropped,
        serde_json::json!({"buffer_full": 0, "queue_full": 0, "shutdown": REQUESTS}),
        "the counts go with the stop"
    );
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_ledger WHERE key_id = $1")
        .bind(key.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        written, 0,
        "the records counted as dropped were not written"
    );
}
