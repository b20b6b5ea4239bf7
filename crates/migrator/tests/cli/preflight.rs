//! `obleth-migrator preflight` against a real PostgreSQL: the exit code a
//! pipeline trusts, and the findings behind it.

use serde_json::Value;
use sqlx::{Connection, PgConnection};

use super::{code, execute, migrator, source_with, stderr, stdout};

/// A fresh database with every shipped migration applied, so only a test's
/// own migrations are pending.
async fn migrated() -> obleth_testkit::TestDb {
    let db = obleth_testkit::fresh_database().await.unwrap();
    assert_eq!(code(&migrator(Some(&db.url), &["up"]).await), 0);
    assert_eq!(code(&migrator(Some(&db.url), &["finish"]).await), 0);
    db
}

/// A table `big` of `rows` rows of 100 bytes each, analysed.
async fn big_table(url: &str, rows: u32) {
    execute(
        url,
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL); \
             INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, {rows}) g; \
             ANALYZE big;"
        ),
    )
    .await;
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(out), stderr(out)))
}

fn messages(report: &Value, severity: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| f["message"].as_str().unwrap().to_owned())
        .collect()
}

const ALTER_BIG: &[(&str, &str, &str)] = &[(
    "29991231000001_widen_payload.sql",
    "ALTER TABLE big ALTER COLUMN payload TYPE varchar(500);",
    "\n[[migration]]\nversion = 29991231000001\nphase = \"expand\"\n",
)];

#[tokio::test]
async fn preflight_flags_a_pending_rewrite_of_a_large_table_with_its_size_rows_and_lock() {
    let db = migrated().await;
    big_table(&db.url, 20_000).await;
    let source = source_with(ALTER_BIG);
    let source = source.path().to_str().unwrap();
    let url = Some(db.url.as_str());

    // Under the default 10 GB threshold the same table needs no window.
    let out = migrator(url, &["preflight", "--source", source]).await;
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));

    let args = [
        "preflight",
        "--source",
        source,
        "--window-threshold-bytes",
        "65536",
    ];
    let out = migrator(url, &[&args[..], &["--json"]].concat()).await;
    assert_eq!(code(&out), 20, "{}", stdout(&out));
    let report = json(&out);
    assert_eq!(report["verdict"], "go_with_warnings");
    assert_eq!(report["up"], serde_json::json!([29991231000001i64]));
    let lock = &report["migrations"][0]["statements"][0]["locks"][0];
    assert_eq!(lock["lock"], "ACCESS EXCLUSIVE", "{lock}");
    assert_eq!(lock["work"], "rewrite");
    assert_eq!(lock["rewrites"], true);
    assert_eq!(lock["needs_window"], true);
    assert_eq!(lock["table"]["name"], "big");
    assert_eq!(lock["table"]["rows_estimate"], 20_000);
    assert_eq!(lock["table"]["rows_note"], Value::Null);
    let size = lock["table"]["size_bytes"].as_i64().unwrap();
    assert!(size > 65_536, "{size}");
    let warnings = messages(&report, "warning");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    for needle in [
        "migration 29991231000001 (29991231000001_widen_payload.sql) line 1",
        ": ACCESS EXCLUSIVE on big (",
        "~20000 rows), over 64 kB: alter column payload type",
        "as long as it goes through every row",
        "needs a maintenance window",
    ] {
        assert!(w.contains(needle), "{needle} not in {w}");
    }

    let out = migrator(url, &args).await;
    assert_eq!(code(&out), 20);
    let text = stdout(&out);
    assert!(
        text.starts_with("preflight: GO WITH WARNINGS (exit 20)"),
        "{text}"
    );
    assert!(text.contains("ACCESS EXCLUSIVE on big ("), "{text}");
    assert!(
        text.contains("~20000 rows): alter column payload type"),
        "{text}"
    );
    assert!(text.contains("[needs a window]"), "{text}");
}

#[tokio::test]
async fn a_long_transaction_holding_a_touched_table_is_a_no_go_naming_its_pid_and_age() {
    let db = migrated().await;
    big_table(&db.url, 100).await;
    let source = source_with(ALTER_BIG);
    let source = source.path().to_str().unwrap();
    let url = Some(db.url.as_str());

    let mut hog = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("SET application_name = 'preflight-hog'; BEGIN; SELECT count(*) FROM big")
        .execute(&mut hog)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut hog)
        .await
        .unwrap();
    // The transaction must be older than --long-xact-secs 1.
    sqlx::query("SELECT pg_sleep(1.2)")
        .execute(&mut hog)
        .await
        .unwrap();

    let args = ["preflight", "--source", source, "--long-xact-secs", "1"];
    let out = migrator(url, &[&args[..], &["--json"]].concat()).await;
    assert_eq!(code(&out), 21, "{}", stdout(&out));
    let report = json(&out);
    assert_eq!(report["verdict"], "no_go");
    let long = report["long_transactions"].as_array().unwrap();
    let session = long
        .iter()
        .find(|s| s["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in {long:?}"));
    assert_eq!(session["application"], "preflight-hog");
    assert_eq!(session["state"], "idle in transaction");
    assert!(
        session["xact_age_secs"].as_f64().unwrap() >= 1.0,
        "{session}"
    );
    assert!(session.get("query").is_none(), "never the query text");
    let holder = report["lock_holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["pid"] == pid)
        .unwrap();
    assert_eq!(holder["table"], "big");
    assert_eq!(holder["mode"], "AccessShareLock");
    assert_eq!(holder["conflicts_with"], "ACCESS EXCLUSIVE");
    let no_go = messages(&report, "no_go");
    assert_eq!(no_go.len(), 1, "{no_go:?}");
    assert!(
        no_go[0].starts_with(&format!(
            "pid {pid} (preflight-hog, idle in transaction) has held AccessShareLock on big in a transaction open for "
        )),
        "{}",
        no_go[0]
    );
    assert!(no_go[0].contains(&format!("pg_terminate_backend({pid})")));

    let text = stdout(&migrator(url, &args).await);
    assert!(
        text.contains(&format!(
            "  pid {pid} (preflight-hog, client backend, idle in transaction) open "
        )),
        "{text}"
    );
    assert!(text.contains("NO-GO"), "{text}");

    // Once the transaction ends, the same preflight is a go.
    sqlx::query("COMMIT").execute(&mut hog).await.unwrap();
    let out = migrator(url, &args).await;
    assert_eq!(code(&out), 0, "{}", stdout(&out));
}

#[tokio::test]
async fn a_migrated_database_with_nothing_pending_is_a_go_with_the_documented_json() {
    let db = migrated().await;
    let out = migrator(Some(&db.url), &["preflight", "--json"]).await;
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let report = json(&out);
    assert_eq!(report["verdict"], "go");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["reachable"], true);
    assert_eq!(report["step"], "up");
    assert_eq!(report["release"], obleth_config::version::VERSION);
    assert_eq!(report["window_threshold_bytes"], 10u64 * 1024 * 1024 * 1024);
    assert_eq!(report["long_xact_secs"], 60);
    assert_eq!(report["server"]["in_recovery"], false);
    assert_eq!(report["schema"]["state"], "compatible");
    for empty in [
        "up",
        "finish",
        "migrations",
        "long_transactions",
        "lock_holders",
        "standbys",
        "nodes",
        "skew",
    ] {
        assert_eq!(report[empty], serde_json::json!([]), "{empty}");
    }
    assert_eq!(
        report["findings"],
        serde_json::json!([{
            "severity": "info",
            "check": "schema",
            "message": "nothing to apply: `up` and `finish` have no work"
        }])
    );

    // A database never migrated: the batched backfill's function call is
    // code preflight cannot see into, a warning that says it is batched.
    let fresh = obleth_testkit::fresh_database().await.unwrap();
    let out = migrator(Some(&fresh.url), &["preflight", "--json"]).await;
    assert_eq!(code(&out), 20, "{}", stdout(&out));
    let report = json(&out);
    let backfill = report["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["batched"] == true)
        .unwrap();
    assert_eq!(backfill["statements"][0]["locks"][0]["lock"], "unknown");
    let warnings = messages(&report, "warning");
    assert!(
        warnings.iter().any(
            |w| w.contains("runs code; its locks are not visible in the text")
                && w.contains("batched: it repeats in many short transactions")
        ),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_a_no_go_that_never_prints_the_password() {
    // Nothing listens on port 1.
    let url = "postgres://obleth:hunter2@127.0.0.1:1/obleth";
    let out = migrator(Some(url), &["preflight"]).await;
    assert_eq!(code(&out), 21);
    let text = stdout(&out);
    assert!(text.starts_with("preflight: NO-GO (exit 21)"), "{text}");
    assert!(
        text.contains("database: postgres://obleth:***@127.0.0.1:1/obleth (not reached)"),
        "{text}"
    );
    assert!(
        text.contains("cannot connect to the database at 127.0.0.1:1/obleth: "),
        "{text}"
    );
    assert!(text.contains("transactions: not checked"), "{text}");
    let out_json = migrator(Some(url), &["preflight", "--json"]).await;
    assert_eq!(code(&out_json), 21);
    let report = json(&out_json);
    assert_eq!(report["reachable"], false);
    assert_eq!(report["verdict"], "no_go");
    for unchecked in [
        "server",
        "schema",
        "long_transactions",
        "lock_holders",
        "nodes",
    ] {
        assert_eq!(report[unchecked], Value::Null, "{unchecked}");
    }
    assert_eq!(report["findings"][0]["check"], "database");
    for o in [&out, &out_json] {
        assert!(!stdout(o).contains("hunter2") && !stderr(o).contains("hunter2"));
    }

    let out = migrator(None, &["preflight"]).await;
    assert_eq!(code(&out), 21);
    assert!(
        stdout(&out).contains("pass --database-url or set DATABASE_URL"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn a_live_node_too_old_for_a_pending_contract_is_a_no_go_for_finish_and_skew_always() {
    let db = migrated().await;
    let url = Some(db.url.as_str());
    let source = source_with(&[(
        "29991231000002_drop_owner.sql",
        "ALTER TABLE api_keys DROP COLUMN owner;",
        "\n[[migration]]\nversion = 29991231000002\nphase = \"contract\"\nrequires_release = \"9.0.0\"\n",
    )]);
    let source = source.path().to_str().unwrap();
    execute(
        &db.url,
        &format!(
            "INSERT INTO nodes (node_id, service, version, ready) VALUES ('gw-1', 'gateway', '{}', true)",
            obleth_config::version::VERSION
        ),
    )
    .await;
    let blocked = format!(
        "gateway gw-1 runs {} but contract migration 29991231000002 requires 9.0.0; finish refuses until it is upgraded",
        obleth_config::version::VERSION
    );

    // Judging `up`: the contract waits for `finish`, which is only reported.
    let out = migrator(url, &["preflight", "--source", source, "--json"]).await;
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let report = json(&out);
    assert_eq!(report["up"], serde_json::json!([]));
    assert_eq!(report["finish"], serde_json::json!([29991231000002i64]));
    assert_eq!(messages(&report, "info"), std::slice::from_ref(&blocked));
    assert_eq!(report["nodes"][0]["node_id"], "gw-1");
    assert_eq!(report["skew"][0]["issue"], "blocks_contract");

    let out = migrator(
        url,
        &["preflight", "--source", source, "--finish", "--json"],
    )
    .await;
    assert_eq!(code(&out), 21, "{}", stdout(&out));
    let report = json(&out);
    assert_eq!(report["step"], "finish");
    assert_eq!(messages(&report, "no_go"), [blocked]);

    // A node of another major release breaks the skew rule whatever the step.
    let release = obleth_config::version::release();
    execute(
        &db.url,
        &format!(
            "UPDATE nodes SET version = '{}.0.0' WHERE node_id = 'gw-1'",
            release.major + 1
        ),
    )
    .await;
    let out = migrator(url, &["preflight"]).await;
    assert_eq!(code(&out), 21, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("another major release than"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn a_default_calling_a_volatile_function_of_the_database_is_a_rewrite() {
    let db = migrated().await;
    big_table(&db.url, 10).await;
    execute(
        &db.url,
        "CREATE FUNCTION app_token() RETURNS text LANGUAGE sql VOLATILE AS 'SELECT md5(random()::text)'; \
         CREATE FUNCTION app_tier() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';",
    )
    .await;
    let source = source_with(&[(
        "29991231000003_defaults.sql",
        "ALTER TABLE big ADD COLUMN token text DEFAULT app_token();\n\
         ALTER TABLE big ADD COLUMN tier int DEFAULT app_tier();\n\
         CREATE TABLE notes (id int);\n\
         CREATE INDEX notes_id ON notes (id);\n",
        "\n[[migration]]\nversion = 29991231000003\nphase = \"expand\"\n",
    )]);
    let source = source.path().to_str().unwrap();
    let out = migrator(Some(&db.url), &["preflight", "--source", source, "--json"]).await;
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let report = json(&out);
    let statements = &report["migrations"][0]["statements"];
    let token = &statements[0]["locks"][0];
    assert_eq!(
        token["rewrite_if_volatile"],
        serde_json::json!(["app_token"])
    );
    assert_eq!(token["work"], "rewrite", "{token}");
    assert_eq!(token["rewrites"], true);
    let tier = &statements[1]["locks"][0];
    assert_eq!(tier["work"], "metadata", "{tier}");
    assert_eq!(tier["rewrites"], false);
    let index = &statements[3]["locks"][0];
    assert_eq!(index["lock"], "SHARE");
    assert_eq!(index["table"], Value::Null);
    assert_eq!(index["new_in_upgrade"], true);
}

#[tokio::test]
async fn a_primary_lists_its_standbys_with_their_replay_lag() {
    let pair = obleth_testkit::PgReplicated::start().await.unwrap();
    let db = pair.fresh_database().await.unwrap();
    let out = migrator(Some(&db.url), &["preflight", "--json"]).await;
    let report = json(&out);
    assert_eq!(report["server"]["in_recovery"], false);
    let standbys = report["standbys"].as_array().unwrap();
    assert_eq!(standbys.len(), 1, "{standbys:?}");
    assert_eq!(standbys[0]["state"], "streaming");
    assert!(standbys[0].get("replay_lag_secs").is_some());
    let text = stdout(&migrator(Some(&db.url), &["preflight"]).await);
    assert!(text.contains("standby:  "), "{text}");
    assert!(text.contains(" streaming, replay lag "), "{text}");
}

#[tokio::test]
async fn a_standby_is_a_no_go_that_says_to_use_the_primary() {
    let pair = obleth_testkit::PgReplicated::start().await.unwrap();
    // Created while the standby is synchronous, so it reaches the standby.
    let db = pair.fresh_database().await.unwrap();
    // The pair's standby refuses clients (hot_standby = off); the last
    // setting in postgresql.conf wins.
    let standby = pair.standby();
    standby.stop().unwrap();
    let conf = standby.dir().join("data/postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nhot_standby = on\n");
    std::fs::write(&conf, text).unwrap();
    standby.start_again().unwrap();
    let url = standby.url(&db.name);
    obleth_testkit::poll::wait_until(
        std::time::Duration::from_secs(30),
        "the standby to accept read-only connections to the new database",
        || async { PgConnection::connect(&url).await.is_ok() },
    )
    .await;

    let out = migrator(Some(&url), &["preflight", "--json"]).await;
    assert_eq!(code(&out), 21, "{}", stdout(&out));
    let report = json(&out);
    assert_eq!(report["server"]["in_recovery"], true);
    assert!(
        messages(&report, "no_go").iter().any(|m| m.contains(
            "the database is a standby (in recovery): migrations must run on the primary"
        )),
        "{report}"
    );
}

#[tokio::test]
async fn a_check_the_role_may_not_run_makes_preflight_incomplete() {
    let db = migrated().await;
    let role = format!("{}_ro", db.name);
    execute(
        &db.url,
        &format!("CREATE ROLE {role} LOGIN PASSWORD 'ro-secret'"),
    )
    .await;
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let url = format!(
        "postgres://{role}:ro-secret@{}:{}/{}",
        options.get_host(),
        options.get_port(),
        db.name
    );
    let out = migrator(Some(&url), &["preflight", "--json"]).await;
    assert_eq!(code(&out), 22, "{}", stdout(&out));
    let report = json(&out);
    assert_eq!(report["verdict"], "incomplete");
    assert_eq!(
        report["database"],
        format!(
            "postgres://{role}:***@{}:{}/{}",
            options.get_host(),
            options.get_port(),
            db.name
        )
    );
    let incomplete = messages(&report, "incomplete");
    assert!(
        incomplete[0].starts_with("cannot read the applied migrations: ")
            && incomplete[0].contains("permission denied"),
        "{incomplete:?}"
    );
    assert!(!stdout(&out).contains("ro-secret"));
    execute(&db.url, &format!("DROP ROLE {role}")).await;
}

#[tokio::test]
async fn a_migration_run_in_progress_is_a_no_go() {
    let db = migrated().await;
    let mut runner = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("SET application_name = 'obleth-migrator'")
        .execute(&mut runner)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(obleth_config::migrate::runner::LOCK_KEY)
        .execute(&mut runner)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut runner)
        .await
        .unwrap();
    let out = migrator(Some(&db.url), &["preflight", "--json"]).await;
    assert_eq!(code(&out), 21, "{}", stdout(&out));
    assert_eq!(
        messages(&json(&out), "no_go"),
        [format!(
            "the migration lock is held by pid {pid} (obleth-migrator, no transaction open): a migration run is in progress; let it finish first"
        )]
    );
    runner.close().await.unwrap();
    assert_eq!(code(&migrator(Some(&db.url), &["preflight"]).await), 0);
}

#[tokio::test]
async fn a_url_through_a_transaction_pooler_is_a_no_go() {
    use obleth_testkit::pgbouncer::{PgBouncer, PoolMode};
    let pg = obleth_testkit::PgCluster::start().unwrap();
    let db = pg.fresh_database().await.unwrap();
    let bouncer = PgBouncer::start(pg.port(), PoolMode::Transaction, 2, 0)
        .await
        .unwrap();
    let out = migrator(Some(&bouncer.url(&db.name)), &["preflight", "--json"]).await;
    assert_eq!(code(&out), 21, "{}", stdout(&out));
    let no_go = messages(&json(&out), "no_go");
    assert!(
        no_go.len() == 1 && no_go[0].contains("transaction pooler"),
        "{no_go:?}"
    );
    // PostgreSQL itself, same database: a go.
    assert_eq!(code(&migrator(Some(&db.url), &["preflight"]).await), 20);
}

#[tokio::test]
async fn row_estimates_say_when_the_statistics_cannot_be_trusted() {
    let db = migrated().await;
    // Autovacuum stays away, so the statistics stay as the test left them.
    execute(
        &db.url,
        "CREATE TABLE never_rows (n int) WITH (autovacuum_enabled = false); \
         INSERT INTO never_rows SELECT generate_series(1, 100); \
         CREATE TABLE stale_rows (n int) WITH (autovacuum_enabled = false); \
         ANALYZE stale_rows; \
         INSERT INTO stale_rows SELECT generate_series(1, 100);",
    )
    .await;
    let source = source_with(&[(
        "29991231000004_stats.sql",
        "ALTER TABLE never_rows ADD COLUMN c int;\nALTER TABLE stale_rows ADD COLUMN c int;\n",
        "\n[[migration]]\nversion = 29991231000004\nphase = \"expand\"\n",
    )]);
    let source = source.path().to_str().unwrap();
    let out = migrator(Some(&db.url), &["preflight", "--source", source, "--json"]).await;
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let report = json(&out);
    let statements = &report["migrations"][0]["statements"];
    let never = &statements[0]["locks"][0]["table"];
    assert_eq!(never["rows_estimate"], Value::Null, "{never}");
    assert_eq!(never["rows_note"], "never analysed");
    let stale = &statements[1]["locks"][0]["table"];
    assert_eq!(stale["rows_estimate"], 0, "{stale}");
    assert_eq!(stale["rows_note"], "not analysed since it filled");

    let text = stdout(&migrator(Some(&db.url), &["preflight", "--source", source]).await);
    assert!(text.contains("rows unknown (never analysed)"), "{text}");
    assert!(
        text.contains("0 rows per statistics, not analysed since it filled"),
        "{text}"
    );
}
