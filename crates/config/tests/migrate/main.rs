//! Runner and compatibility tests against a real, throwaway PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod down;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use obleth_config::migrate::runner::MigrateError;
use obleth_config::migrate::{
    check, read_applied, Compatibility, MigrationSet, Mode, Phase, Runner, RunnerOptions,
};
use obleth_testkit::fresh_database;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

/// A migration directory made for one test: `files` are (name, sql), and the
/// manifest gives each its phase (contract ones require 0.2.0).
fn migration_dir(files: &[(&str, &str, Phase)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = String::new();
    for (name, sql, phase) in files {
        std::fs::write(dir.path().join(name), sql).unwrap();
        let version = name.split('_').next().unwrap();
        manifest.push_str(&format!(
            "[[migration]]\nversion = {version}\nphase = \"{phase}\"\n"
        ));
        if *phase == Phase::Contract {
            manifest.push_str("requires_release = \"0.2.0\"\n");
        }
    }
    std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
    dir
}

fn set_of(dir: &Path) -> MigrationSet {
    MigrationSet::from_dir(dir).unwrap()
}

fn fast_options(app: &str) -> RunnerOptions {
    RunnerOptions {
        lock_wait: Duration::from_secs(30),
        lock_timeout: Duration::from_millis(200),
        statement_timeout: Duration::from_secs(30),
        max_retries: 50,
        retry_backoff: Duration::from_millis(50),
        application_name: app.to_owned(),
        ..RunnerOptions::default()
    }
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap()
}

/// Advisory locks held in the current database, by anyone.
async fn advisory_locks(url: &str) -> i64 {
    let mut conn = connect(url).await;
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

async fn applied_versions(url: &str) -> Vec<i64> {
    let mut conn = connect(url).await;
    read_applied(&mut conn)
        .await
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.version)
        .collect()
}

async fn table_exists(url: &str, table: &str) -> bool {
    let mut conn = connect(url).await;
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn eight_runners_at_once_apply_the_schema_exactly_once_and_leave_no_lock() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let set = MigrationSet::embedded().unwrap();
    // A counting migration proves each migration body ran once: a second run
    // would insert a second row.
    let extra = migration_dir(&[(
        "29991231000001_count_runs.sql",
        "CREATE TABLE runs (n int); INSERT INTO runs VALUES (1);",
        Phase::Expand,
    )]);
    let mut defs: Vec<_> = set.iter().cloned().collect();
    defs.extend(set_of(extra.path()).iter().cloned());
    let set = MigrationSet::from_defs(defs);

    let mut handles = Vec::new();
    for i in 0..8 {
        let runner = Runner::new(set.clone(), fast_options(&format!("runner-{i}")));
        let options = options.clone();
        handles.push(tokio::spawn(
            async move { runner.run(&options, Mode::Up).await },
        ));
    }
    let mut applied_total = 0;
    for handle in handles {
        let report = handle.await.unwrap().expect("every runner succeeds");
        applied_total += report.applied.len();
    }

    // `up` applies the expand migrations; the shipped contract ones wait for `finish`.
    let expand: Vec<i64> = set
        .iter()
        .filter(|m| m.phase == Phase::Expand)
        .map(|m| m.version)
        .collect();
    assert_eq!(
        applied_total,
        expand.len(),
        "each migration applied by exactly one runner"
    );
    let versions = applied_versions(&db.url).await;
    assert_eq!(versions, expand);
    let mut conn = connect(&db.url).await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(runs, 1);
    assert_eq!(
        advisory_locks(&db.url).await,
        0,
        "no advisory lock left behind"
    );
}

#[tokio::test]
async fn a_migration_failing_part_way_is_named_not_recorded_and_the_lock_is_released() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let broken = migration_dir(&[
        ("1_first.sql", "CREATE TABLE first (id int);", Phase::Expand),
        (
            "2_second.sql",
            "CREATE TABLE second (id int);\nINSERT INTO second VALUES (1);\nSELECT 1 / 0;",
            Phase::Expand,
        ),
    ]);
    let runner = Runner::new(set_of(broken.path()), fast_options("failing"));

    let err = runner.run(&options, Mode::Up).await.unwrap_err();

    let message = err.to_string();
    assert!(
        matches!(err, MigrateError::Failed { version: 2, .. }),
        "{err:?}"
    );
    assert!(message.contains("2_second.sql"), "{message}");
    assert!(message.contains("division by zero"), "{message}");
    assert_eq!(advisory_locks(&db.url).await, 0);
    assert_eq!(applied_versions(&db.url).await, vec![1]);
    assert!(
        !table_exists(&db.url, "second").await,
        "nothing half-applied"
    );

    let fixed = migration_dir(&[
        ("1_first.sql", "CREATE TABLE first (id int);", Phase::Expand),
        (
            "2_second.sql",
            "CREATE TABLE second (id int);",
            Phase::Expand,
        ),
    ]);
    let report = Runner::new(set_of(fixed.path()), fast_options("fixed"))
        .run(&options, Mode::Up)
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 1);
    assert_eq!(applied_versions(&db.url).await, vec![1, 2]);
    assert!(table_exists(&db.url, "second").await);
}

#[tokio::test]
async fn a_runner_that_cannot_get_the_lock_gives_up_after_its_wait_naming_the_holder() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let hog = PgConnectOptions::from_str(&db.url)
        .unwrap()
        .application_name("lock-hog");
    let mut hog = sqlx::ConnectOptions::connect(&hog).await.unwrap();
    let opts = RunnerOptions {
        lock_wait: Duration::from_millis(400),
        ..fast_options("waiter")
    };
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(opts.lock_key)
        .execute(&mut hog)
        .await
        .unwrap();

    let started = Instant::now();
    let err = Runner::new(MigrationSet::embedded().unwrap(), opts)
        .run(&options, Mode::Up)
        .await
        .unwrap_err();

    assert!(started.elapsed() >= Duration::from_millis(400));
    let message = err.to_string();
    assert!(matches!(err, MigrateError::LockHeld { .. }), "{err:?}");
    assert!(message.contains("lock-hog"), "{message}");
    assert!(message.contains("pid"), "{message}");
    assert!(applied_versions(&db.url).await.is_empty());
}

#[tokio::test]
async fn ddl_blocked_by_a_table_lock_hits_lock_timeout_retries_and_succeeds_once_released() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let first = migration_dir(&[("1_t.sql", "CREATE TABLE t (id int);", Phase::Expand)]);
    Runner::new(set_of(first.path()), fast_options("setup"))
        .run(&options, Mode::Up)
        .await
        .unwrap();
    let second = migration_dir(&[
        ("1_t.sql", "CREATE TABLE t (id int);", Phase::Expand),
        (
            "2_add.sql",
            "ALTER TABLE t ADD COLUMN note text;",
            Phase::Expand,
        ),
    ]);
    let mut blocker = connect(&db.url).await;
    sqlx::raw_sql("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;")
        .execute(&mut blocker)
        .await
        .unwrap();

    let runner = Runner::new(set_of(second.path()), fast_options("blocked-runner"));
    let task = tokio::spawn(async move { runner.run(&options, Mode::Up).await });

    // Hold the table lock until the runner has been seen waiting in two distinct
    // transactions: it timed out at least once and came back.
    let mut observer = connect(&db.url).await;
    let mut attempts_seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while attempts_seen.len() < 2 {
        assert!(Instant::now() < deadline, "runner never retried");
        let waiting: Option<String> = sqlx::query_scalar(
            "SELECT xact_start::text FROM pg_stat_activity \
             WHERE application_name = 'blocked-runner' AND wait_event_type = 'Lock'",
        )
        .fetch_optional(&mut observer)
        .await
        .unwrap();
        attempts_seen.extend(waiting);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();

    let report = task.await.unwrap().expect("succeeds once the lock is gone");
    assert_eq!(report.applied.len(), 1);
    assert!(report.applied[0].attempts >= 2, "{:?}", report.applied[0]);
    assert_eq!(applied_versions(&db.url).await, vec![1, 2]);
    assert_eq!(advisory_locks(&db.url).await, 0);
}

#[tokio::test]
async fn ddl_still_blocked_after_every_retry_fails_with_a_clear_error_and_no_lock() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let dir = migration_dir(&[("1_t.sql", "CREATE TABLE t (id int);", Phase::Expand)]);
    Runner::new(set_of(dir.path()), fast_options("setup"))
        .run(&options, Mode::Up)
        .await
        .unwrap();
    let more = migration_dir(&[
        ("1_t.sql", "CREATE TABLE t (id int);", Phase::Expand),
        (
            "2_add.sql",
            "ALTER TABLE t ADD COLUMN note text;",
            Phase::Expand,
        ),
    ]);
    let mut blocker = connect(&db.url).await;
    sqlx::raw_sql("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;")
        .execute(&mut blocker)
        .await
        .unwrap();
    let opts = RunnerOptions {
        lock_timeout: Duration::from_millis(50),
        max_retries: 2,
        retry_backoff: Duration::from_millis(10),
        ..fast_options("gives-up")
    };

    let err = Runner::new(set_of(more.path()), opts)
        .run(&options, Mode::Up)
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            MigrateError::LockTimeoutExhausted {
                version: 2,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("2_add.sql"));
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();
    assert_eq!(advisory_locks(&db.url).await, 0);
    assert_eq!(applied_versions(&db.url).await, vec![1]);
}

#[tokio::test]
async fn a_no_transaction_migration_builds_an_index_concurrently_and_can_be_rerun() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let failing = migration_dir(&[
        ("1_t.sql", "CREATE TABLE t (id int);", Phase::Expand),
        (
            "2_index.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\nSELECT 1 / 0;\n",
            Phase::Expand,
        ),
    ]);
    let err = Runner::new(set_of(failing.path()), fast_options("no-tx"))
        .run(&options, Mode::Up)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrateError::Failed { version: 2, .. }),
        "{err:?}"
    );
    assert_eq!(
        applied_versions(&db.url).await,
        vec![1],
        "a failed no-tx migration is not recorded"
    );
    assert!(
        table_exists(&db.url, "t_id").await,
        "its first statement did run"
    );

    let fixed = migration_dir(&[
        ("1_t.sql", "CREATE TABLE t (id int);", Phase::Expand),
        (
            "2_index.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n",
            Phase::Expand,
        ),
    ]);
    let report = Runner::new(set_of(fixed.path()), fast_options("no-tx"))
        .run(&options, Mode::Up)
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 1);
    assert_eq!(applied_versions(&db.url).await, vec![1, 2]);
    assert_eq!(advisory_locks(&db.url).await, 0);
}

#[tokio::test]
async fn up_leaves_contract_migrations_for_finish_and_records_phases() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let dir = migration_dir(&[
        (
            "1_t.sql",
            "CREATE TABLE t (id int, old text);",
            Phase::Expand,
        ),
        (
            "2_drop.sql",
            "ALTER TABLE t DROP COLUMN old;",
            Phase::Contract,
        ),
        ("3_u.sql", "CREATE TABLE u (id int);", Phase::Expand),
    ]);
    let runner = Runner::new(set_of(dir.path()), fast_options("phases"));

    let report = runner.run(&options, Mode::Up).await.unwrap();
    assert_eq!(
        report.applied.iter().map(|s| s.version).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(report.awaiting_finish, vec![2]);

    let report = runner
        .run(&options, Mode::Finish { force: false })
        .await
        .unwrap();
    assert_eq!(
        report.applied.iter().map(|s| s.version).collect::<Vec<_>>(),
        vec![2]
    );

    let mut conn = connect(&db.url).await;
    let applied = read_applied(&mut conn).await.unwrap().unwrap();
    let phases: Vec<(i64, Phase, bool)> = applied
        .iter()
        .map(|m| (m.version, m.phase, m.phase_recorded))
        .collect();
    assert_eq!(
        phases,
        vec![
            (1, Phase::Expand, true),
            (2, Phase::Contract, true),
            (3, Phase::Expand, true)
        ]
    );
    // Standard tooling keeps working on the table sqlx owns.
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(rows[0], (1, "t".to_owned()));
}

#[tokio::test]
async fn an_older_binary_judges_newer_migrations_from_what_the_database_recorded() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let old_files = [("1_t.sql", "CREATE TABLE t (id int);", Phase::Expand)];
    let old = migration_dir(&old_files);
    let newer = migration_dir(&[
        old_files[0],
        (
            "2_add.sql",
            "ALTER TABLE t ADD COLUMN note text;",
            Phase::Expand,
        ),
    ]);
    let newest = migration_dir(&[
        old_files[0],
        (
            "2_add.sql",
            "ALTER TABLE t ADD COLUMN note text;",
            Phase::Expand,
        ),
        (
            "3_drop.sql",
            "ALTER TABLE t DROP COLUMN note;",
            Phase::Contract,
        ),
    ]);
    let old_set = set_of(old.path());

    // Pending: the old binary on an empty database needs migration.
    let mut conn = connect(&db.url).await;
    let applied = read_applied(&mut conn).await.unwrap().unwrap_or_default();
    assert!(matches!(
        check(&old_set, &applied),
        Compatibility::NeedsMigration { .. }
    ));

    // A newer release ran `up`: its expand migration is unknown to the old binary, and fine.
    Runner::new(set_of(newer.path()), fast_options("newer"))
        .run(&options, Mode::Up)
        .await
        .unwrap();
    let applied = read_applied(&mut conn).await.unwrap().unwrap();
    let verdict = check(&old_set, &applied);
    assert!(verdict.is_compatible(), "{verdict:?}");

    // The newest release finished a contract migration: the old binary is refused, by name.
    Runner::new(set_of(newest.path()), fast_options("newest"))
        .run(&options, Mode::Finish { force: true })
        .await
        .unwrap();
    let applied = read_applied(&mut conn).await.unwrap().unwrap();
    let verdict = check(&old_set, &applied);
    assert!(
        matches!(verdict, Compatibility::Incompatible { .. }),
        "{verdict:?}"
    );
    assert!(
        verdict.describe().contains("3 (drop, contract)"),
        "{}",
        verdict.describe()
    );
    // And its runner refuses to touch that schema.
    let err = Runner::new(old_set, fast_options("old"))
        .run(&options, Mode::Up)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::Incompatible(_)), "{err:?}");
    assert_eq!(advisory_locks(&db.url).await, 0);
}

#[tokio::test]
async fn an_edited_migration_is_reported_with_its_file_and_both_checksums() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let original = migration_dir(&[("1_t.sql", "CREATE TABLE t (id int);", Phase::Expand)]);
    Runner::new(set_of(original.path()), fast_options("original"))
        .run(&options, Mode::Up)
        .await
        .unwrap();
    let edited = migration_dir(&[("1_t.sql", "CREATE TABLE t (id bigint);", Phase::Expand)]);
    let edited_set = set_of(edited.path());
    let mut conn = connect(&db.url).await;
    let applied = read_applied(&mut conn).await.unwrap().unwrap();

    let verdict = check(&edited_set, &applied);

    let Compatibility::Modified { modified } = &verdict else {
        panic!("expected modified, got {verdict:?}");
    };
    assert_eq!(modified[0].file, "1_t.sql");
    let original_sum =
        obleth_config::migrate::compat::hex(&set_of(original.path()).get(1).unwrap().checksum);
    let edited_sum = obleth_config::migrate::compat::hex(&edited_set.get(1).unwrap().checksum);
    assert_eq!(modified[0].applied_checksum, original_sum);
    assert_eq!(modified[0].embedded_checksum, edited_sum);
}

#[tokio::test]
async fn finish_refuses_while_an_older_node_is_alive_and_force_overrides() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    // The shipped migrations without their own contract ones, so the
    // blockers and the applied steps below are this test's contract alone.
    let mut defs: Vec<_> = MigrationSet::embedded()
        .unwrap()
        .iter()
        .filter(|m| m.phase == Phase::Expand)
        .cloned()
        .collect();
    let contract = migration_dir(&[(
        "29991231000002_drop_owner.sql",
        "ALTER TABLE api_keys DROP COLUMN owner;",
        Phase::Contract,
    )]);
    defs.extend(set_of(contract.path()).iter().cloned());
    let runner = Runner::new(MigrationSet::from_defs(defs), fast_options("finisher"));
    runner.run(&options, Mode::Up).await.unwrap();
    let mut conn = connect(&db.url).await;
    sqlx::query(
        "INSERT INTO nodes (node_id, service, version, ready) VALUES \
         ('gw-old', 'gateway', '0.1.9', true), ('gw-new', 'gateway', '0.2.0', true), \
         ('gw-gone', 'gateway', '0.0.1', false)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("UPDATE nodes SET stopped_at = now() WHERE node_id = 'gw-gone'")
        .execute(&mut conn)
        .await
        .unwrap();

    let err = runner
        .run(&options, Mode::Finish { force: false })
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, MigrateError::OldNodesAlive(ref b) if b.len() == 1),
        "{err:?}"
    );
    assert!(
        message.contains("gw-old") && message.contains("0.1.9"),
        "{message}"
    );
    assert!(!message.contains("gw-gone"), "{message}");

    let report = runner
        .run(&options, Mode::Finish { force: true })
        .await
        .unwrap();
    assert_eq!(report.forced_past.len(), 1);
    assert_eq!(report.applied.len(), 1);
}

#[tokio::test]
async fn a_concurrent_index_build_that_hits_lock_timeout_restarts_the_file_and_ends_valid() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let table = migration_dir(&[("1_t.sql", "CREATE TABLE t (id int);", Phase::Expand)]);
    Runner::new(set_of(table.path()), fast_options("setup"))
        .run(&options, Mode::Up)
        .await
        .unwrap();
    // An open transaction that wrote to the table makes the concurrent build
    // wait for it after creating the (still invalid) index, and that wait is
    // subject to lock_timeout: each timed-out attempt leaves an invalid index.
    let mut old_reader = connect(&db.url).await;
    sqlx::raw_sql("BEGIN; INSERT INTO t VALUES (1);")
        .execute(&mut old_reader)
        .await
        .unwrap();
    let index = migration_dir(&[
        ("1_t.sql", "CREATE TABLE t (id int);", Phase::Expand),
        (
            "2_index.sql",
            "-- no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS t_id;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n",
            Phase::Expand,
        ),
    ]);
    let runner = Runner::new(set_of(index.path()), fast_options("index-builder"));
    let task = tokio::spawn(async move { runner.run(&options, Mode::Up).await });

    let mut observer = connect(&db.url).await;
    let mut attempts_seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while attempts_seen.len() < 2 {
        assert!(Instant::now() < deadline, "the build never retried");
        let waiting: Option<String> = sqlx::query_scalar(
            "SELECT query_start::text FROM pg_stat_activity \
             WHERE application_name = 'index-builder' AND wait_event_type = 'Lock'",
        )
        .fetch_optional(&mut observer)
        .await
        .unwrap();
        attempts_seen.extend(waiting);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::raw_sql("COMMIT")
        .execute(&mut old_reader)
        .await
        .unwrap();

    let report = task
        .await
        .unwrap()
        .expect("the build succeeds once the reader is gone");
    assert!(report.applied[0].attempts >= 2, "{:?}", report.applied[0]);
    let valid: bool =
        sqlx::query_scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 't_id'::regclass")
            .fetch_one(&mut observer)
            .await
            .unwrap();
    assert!(valid, "the recorded migration left a valid index");
    assert_eq!(applied_versions(&db.url).await, vec![1, 2]);
}

#[tokio::test]
async fn a_no_transaction_migration_leaving_an_invalid_index_is_not_recorded() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let mut conn = connect(&db.url).await;
    // A unique index build over duplicate values fails and leaves the index invalid.
    sqlx::raw_sql("CREATE TABLE d (v int); INSERT INTO d VALUES (1), (1);")
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = sqlx::raw_sql("CREATE UNIQUE INDEX CONCURRENTLY d_v ON d (v)")
        .execute(&mut conn)
        .await;
    let dir = migration_dir(&[(
        "1_other.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS d_v ON d (v);\n",
        Phase::Expand,
    )]);
    let err = Runner::new(set_of(dir.path()), fast_options("invalid"))
        .run(&options, Mode::Up)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid indexes remain after it ran: d_v"),
        "{err}"
    );
    assert!(applied_versions(&db.url).await.is_empty());
}
