//! The `obleth-migrator` binary as operators run it, against a real PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod down;

use std::path::Path;
use std::process::Output;

use obleth_testkit::fresh_database;
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

mod preflight;

const BIN: &str = env!("CARGO_BIN_EXE_obleth-migrator");

async fn migrator(url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    if let Some(url) = url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().await.unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The shipped migrations plus extra ones, as a `--source` directory.
fn source_with(extra: &[(&str, &str, &str)]) -> TempDir {
    obleth_testkit::db::migrations_with(extra).unwrap()
}

async fn execute(url: &str, sql: &str) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
}

async fn scalar_bool(url: &str, sql: &str) -> bool {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
}

#[tokio::test]
async fn status_exit_code_follows_the_database_state() {
    let db = fresh_database().await.unwrap();
    let url = Some(db.url.as_str());

    let out = migrator(url, &["status"]).await;
    assert_eq!(code(&out), 3, "never migrated: {}", stdout(&out));
    assert!(stdout(&out).contains("not initialised"));

    assert_eq!(code(&migrator(url, &["up"]).await), 0);
    // `up` leaves the shipped contract migration for `finish`: still pending.
    let out = migrator(url, &["status"]).await;
    assert_eq!(code(&out), 4, "contract pending: {}", stdout(&out));
    assert!(stdout(&out).contains("20261128000005"), "{}", stdout(&out));
    assert_eq!(code(&migrator(url, &["finish"]).await), 0);
    let out = migrator(url, &["status"]).await;
    assert_eq!(code(&out), 0, "up to date: {}", stdout(&out));
    assert!(stdout(&out).contains("applied"));

    let newer = source_with(&[(
        "29991231000001_add_note.sql",
        "ALTER TABLE api_keys ADD COLUMN note text;",
        "\n[[migration]]\nversion = 29991231000001\nphase = \"expand\"\n",
    )]);
    let source = newer.path().to_str().unwrap();
    let out = migrator(url, &["status", "--source", source]).await;
    assert_eq!(code(&out), 4, "pending: {}", stdout(&out));
    assert!(stdout(&out).contains("29991231000001"));

    // A newer release applied a contract migration this binary does not know.
    execute(
        &db.url,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000009, 'drop owner', true, '\\x00', 1); \
         INSERT INTO obleth_migration_phases (version, phase, requires_release) \
         VALUES (29991231000009, 'contract', '9.0.0');",
    )
    .await;
    let out = migrator(url, &["status"]).await;
    assert_eq!(code(&out), 5, "incompatible: {}", stdout(&out));
    assert!(stdout(&out).contains("29991231000009"), "{}", stdout(&out));

    // Recorded as expand instead, the same unknown migration is harmless.
    execute(&db.url, "UPDATE obleth_migration_phases SET phase = 'expand', requires_release = NULL WHERE version = 29991231000009").await;
    let out = migrator(url, &["status"]).await;
    assert_eq!(code(&out), 0, "unknown expand: {}", stdout(&out));
    assert!(stdout(&out).contains("unknown"));

    // A shipped migration edited after it was applied.
    execute(
        &db.url,
        "UPDATE _sqlx_migrations SET checksum = '\\xdeadbeef' WHERE version = 20261122000001",
    )
    .await;
    let out = migrator(url, &["status"]).await;
    assert_eq!(code(&out), 5, "modified: {}", stdout(&out));
    assert!(stdout(&out).contains("deadbeef"), "{}", stdout(&out));
}

#[tokio::test]
async fn status_json_is_machine_readable() {
    let db = fresh_database().await.unwrap();
    assert_eq!(code(&migrator(Some(&db.url), &["up"]).await), 0);
    assert_eq!(code(&migrator(Some(&db.url), &["finish"]).await), 0);
    let out = migrator(Some(&db.url), &["status", "--json"]).await;
    assert_eq!(code(&out), 0);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["initialised"], true);
    assert_eq!(json["verdict"]["state"], "compatible");
    assert_eq!(json["migrations"][0]["state"], "applied");
    assert_eq!(json["migrations"][0]["checksum"], "ok");
    assert_eq!(json["exit_code"], 0);
}

#[tokio::test]
async fn up_dry_run_prints_the_sql_and_leaves_the_database_unchanged() {
    let db = fresh_database().await.unwrap();
    let out = migrator(Some(&db.url), &["up", "--dry-run"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("CREATE TABLE api_keys"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("would apply 20261122000001"));
    assert!(
        !scalar_bool(
            &db.url,
            "SELECT to_regclass('_sqlx_migrations') IS NOT NULL"
        )
        .await,
        "dry run created the bookkeeping table"
    );
    assert!(!scalar_bool(&db.url, "SELECT to_regclass('api_keys') IS NOT NULL").await);
}

#[tokio::test]
async fn up_verbose_prints_each_migration_with_its_timing() {
    let db = fresh_database().await.unwrap();
    let out = migrator(Some(&db.url), &["up", "--verbose"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    // `up` applies the expand migrations; contract ones wait for `finish`.
    let count = obleth_config::migrate::MigrationSet::embedded()
        .unwrap()
        .iter()
        .filter(|m| m.phase == obleth_config::migrate::Phase::Expand)
        .count();
    assert!(
        text.contains(&format!("applied {count} migration(s)")),
        "{text}"
    );
    assert!(
        text.contains("20261122000001 expand") && text.contains(" ms"),
        "{text}"
    );
    let again = migrator(Some(&db.url), &["up"]).await;
    assert!(stdout(&again).contains("up to date"));
}

#[tokio::test]
async fn finish_refuses_while_an_older_node_is_alive_and_force_overrides() {
    let db = fresh_database().await.unwrap();
    let url = Some(db.url.as_str());
    let source = source_with(&[(
        "29991231000002_drop_owner.sql",
        "ALTER TABLE api_keys DROP COLUMN owner;",
        "\n[[migration]]\nversion = 29991231000002\nphase = \"contract\"\nrequires_release = \"9.0.0\"\n",
    )]);
    let source = source.path().to_str().unwrap();
    let out = migrator(url, &["up", "--source", source]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("waiting for `obleth-migrator finish`: 20261128000005, 29991231000002"),
        "{}",
        stdout(&out)
    );
    execute(
        &db.url,
        "INSERT INTO nodes (node_id, service, version, ready) VALUES ('gw-1', 'gateway', '0.1.0', true)",
    )
    .await;

    let plan = migrator(url, &["plan", "--source", source]).await;
    assert!(
        stdout(&plan).contains("`obleth-migrator up` would apply: nothing"),
        "{}",
        stdout(&plan)
    );
    assert!(
        stdout(&plan).contains(
            "29991231000002_drop_owner.sql (contract, needs every node at 9.0.0 or later)"
        ),
        "{}",
        stdout(&plan)
    );

    let out = migrator(url, &["finish", "--source", source]).await;
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("gateway gw-1 runs 0.1.0 but migration 29991231000002 requires 9.0.0"),
        "{}",
        stderr(&out)
    );
    assert!(scalar_bool(&db.url, "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'api_keys' AND column_name = 'owner')").await);

    let out = migrator(url, &["finish", "--force", "--source", source]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: forced past gateway gw-1"),
        "{}",
        stderr(&out)
    );
    assert!(!scalar_bool(&db.url, "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'api_keys' AND column_name = 'owner')").await);
    assert_eq!(
        code(&migrator(url, &["status", "--source", source]).await),
        0
    );
}

#[tokio::test]
async fn verify_compares_checksums_and_names_an_edited_file() {
    let db = fresh_database().await.unwrap();
    let url = Some(db.url.as_str());
    assert_eq!(code(&migrator(url, &["verify"]).await), 3);
    assert_eq!(code(&migrator(url, &["up"]).await), 0);
    let out = migrator(url, &["verify"]).await;
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains("ok        20261122000001 20261122000001_initial_schema.sql"));

    execute(
        &db.url,
        "UPDATE _sqlx_migrations SET checksum = '\\xabcd' WHERE version = 20261122000001",
    )
    .await;
    let out = migrator(url, &["verify"]).await;
    assert_eq!(code(&out), 5);
    assert!(stdout(&out).contains("MODIFIED  20261122000001 20261122000001_initial_schema.sql: applied checksum abcd, file checksum "), "{}", stdout(&out));
    // The runner refuses to build on an edited history too.
    let out = migrator(url, &["up"]).await;
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("must never be edited"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn lint_fires_each_rule_on_its_fixture_and_passes_the_shipped_migrations() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/fixtures/lint");
    let codes = [
        "drop-table",
        "drop-column",
        "rename",
        "alter-column-type",
        "not-null-without-default",
        "index-without-concurrently",
        "foreign-key-without-not-valid",
        "check-without-not-valid",
        "concurrently-in-transaction",
        "no-tx-not-idempotent",
    ];
    for rule in codes {
        let dir = tempfile::tempdir().unwrap();
        let sql = std::fs::read_to_string(fixtures.join(format!("{rule}.sql"))).unwrap();
        std::fs::write(dir.path().join("1_fixture.sql"), sql).unwrap();
        std::fs::write(
            dir.path().join("manifest.toml"),
            "[[migration]]\nversion = 1\nphase = \"expand\"\n",
        )
        .unwrap();
        let out = migrator(None, &["lint", "--dir", dir.path().to_str().unwrap()]).await;
        assert_eq!(code(&out), 1, "{rule}: {}", stdout(&out));
        assert!(
            stdout(&out).contains("1_fixture.sql:"),
            "{rule}: {}",
            stdout(&out)
        );
        assert!(
            stdout(&out).contains(&format!("[{rule}]")),
            "{rule}: {}",
            stdout(&out)
        );
    }
    let out = migrator(None, &["lint"]).await;
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains("no findings"));
}

#[tokio::test]
async fn errors_say_what_is_wrong_and_never_print_the_password() {
    let out = migrator(None, &["status"]).await;
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("pass --database-url or set DATABASE_URL"),
        "{}",
        stderr(&out)
    );

    // Nothing listens on port 1.
    let out = migrator(
        Some("postgres://obleth:hunter2@127.0.0.1:1/obleth"),
        &["status"],
    )
    .await;
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("cannot connect to the database"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("hunter2") && !stdout(&out).contains("hunter2"));

    let out = migrator(Some("mysql://nope"), &["status"]).await;
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("invalid database URL"),
        "{}",
        stderr(&out)
    );

    let out = migrator(None, &["launch"]).await;
    assert_eq!(code(&out), 2, "usage errors exit 2");
}

#[tokio::test]
async fn a_held_lock_gives_up_with_its_own_exit_code() {
    let db = fresh_database().await.unwrap();
    let mut hog = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(obleth_config::migrate::runner::LOCK_KEY)
        .execute(&mut hog)
        .await
        .unwrap();
    let out = migrator(Some(&db.url), &["up", "--lock-wait-secs", "1"]).await;
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the migration lock is held by backend pid"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn probe_exits_0_on_2xx_and_1_otherwise_without_a_database() {
    let upstream = obleth_testkit::MockUpstream::start(obleth_testkit::MockConfig::default())
        .await
        .unwrap();
    let ok = migrator(
        None,
        &["probe", &format!("http://{}/health", upstream.addr())],
    )
    .await;
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    let missing = migrator(
        None,
        &["probe", &format!("http://{}/v1/nothing", upstream.addr())],
    )
    .await;
    assert_eq!(code(&missing), 1);
    assert!(
        stderr(&missing).contains("answered 404"),
        "{}",
        stderr(&missing)
    );
    let closed = migrator(
        None,
        &["probe", "--timeout-ms", "500", "http://127.0.0.1:1/readyz"],
    )
    .await;
    assert_eq!(code(&closed), 1);
    assert!(
        stderr(&closed).contains("cannot connect"),
        "{}",
        stderr(&closed)
    );
    let wrong = migrator(None, &["probe", "https://example.invalid/"]).await;
    assert_eq!(code(&wrong), 1);
    assert!(
        stderr(&wrong).contains("plain http://"),
        "{}",
        stderr(&wrong)
    );
}

#[tokio::test]
async fn check_says_whether_this_release_can_run_on_the_database() {
    let db = fresh_database().await.unwrap();
    let url = Some(db.url.as_str());
    let out = migrator(url, &["check"]).await;
    assert_eq!(code(&out), 3, "{}", stdout(&out));

    // Expand migrations applied, the contract one waiting for finish: runs.
    assert_eq!(code(&migrator(url, &["up"]).await), 0);
    let out = migrator(url, &["check"]).await;
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("can run on this database"),
        "{}",
        stdout(&out)
    );

    // A newer expand migration this database lacks: `up` first.
    let source = source_with(&[(
        "29991231000001_extra.sql",
        "CREATE TABLE check_extra (id INT);",
        "\n[[migration]]\nversion = 29991231000001\nphase = \"expand\"\n",
    )]);
    let out = migrator(url, &["check", "--source", source.path().to_str().unwrap()]).await;
    assert_eq!(code(&out), 4, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("needs `obleth-migrator up` first"),
        "{}",
        stdout(&out)
    );

    // A contract migration this release does not know (a rollback past a
    // newer release's finish): it cannot run, and nothing changed.
    execute(
        &db.url,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000002, 'drop legacy columns', true, '\\x00', 1); \
         INSERT INTO obleth_migration_phases (version, phase, requires_release) \
         VALUES (29991231000002, 'contract', '9.0.0');",
    )
    .await;
    let out = migrator(url, &["check"]).await;
    assert_eq!(code(&out), 5, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("29991231000002") && stdout(&out).contains("cannot run"),
        "{}",
        stdout(&out)
    );
    assert!(!scalar_bool(&db.url, "SELECT to_regclass('check_extra') IS NOT NULL").await);
}
