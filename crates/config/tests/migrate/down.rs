//! `down` through the library runner: every shipped expand migration
//! reverted and applied again on a database with keys and usage, nothing
//! lost, every applied checksum still the file's.

use std::str::FromStr;

use obleth_config::migrate::down::{DownError, DownRequest};
use obleth_config::migrate::runner::MigrateError;
use obleth_config::migrate::{check, read_applied, MigrationSet, Mode, Phase, Runner};
use obleth_testkit::fresh_database;
use obleth_testkit::ledger::{embedded_where, mismatches};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use super::fast_options;

/// The database of one round-trip test and what it was given.
struct Db {
    url: String,
    pool: PgPool,
    options: PgConnectOptions,
    keys: i64,
    usage: i64,
}

impl Db {
    async fn exists(&self, relation: &str) -> bool {
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(relation)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn column_exists(&self, table: &str, column: &str) -> bool {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_name = $1 AND column_name = $2)",
        )
        .bind(table)
        .bind(column)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn applied(&self) -> Vec<i64> {
        let mut conn = self.pool.acquire().await.unwrap();
        read_applied(&mut conn)
            .await
            .unwrap()
            .unwrap_or_default()
            .iter()
            .map(|r| r.version)
            .collect()
    }

    /// Applies the embedded expand migrations up to `version`.
    async fn up_through(&self, version: i64) {
        Runner::new(
            embedded_where(|v| v <= version).unwrap(),
            fast_options("up"),
        )
        .run(&self.options, Mode::Up)
        .await
        .unwrap();
    }

    async fn down(&self, count: usize) -> Result<Vec<i64>, DownError> {
        let report = Runner::new(MigrationSet::embedded().unwrap(), fast_options("down"))
            .down(
                &self.options,
                DownRequest {
                    count,
                    force: false,
                },
            )
            .await?;
        Ok(report.reverted.iter().map(|s| s.version).collect())
    }

    /// A key, as the admin of any release writes one (the columns every
    /// schema has).
    async fn add_key(&mut self) {
        self.keys += 1;
        sqlx::query(
            "INSERT INTO api_keys (id, public_id, secret_hash) \
             VALUES (gen_random_uuid(), $1, sha256(convert_to($1, 'UTF8')))",
        )
        .bind(format!("rt{:010}", self.keys))
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Usage as the releases this schema serves write it: the previous
    /// release into usage_events and, while 20261128000003 forwards those
    /// rows to the ledger, the new release straight into usage_ledger. Rows
    /// carry the keys made so far.
    async fn add_usage(&mut self) {
        let keys = "(SELECT array_agg(id ORDER BY public_id) FROM api_keys)";
        let n = 5;
        sqlx::query(&format!(
            "INSERT INTO usage_events (request_id, key_id, model, total_tokens, status, \
             latency_ms, created_at) \
             SELECT gen_random_uuid(), ({keys})[1 + i % cardinality({keys})], 'old-model', \
                    10 + i, CASE WHEN i = 3 THEN 500 ELSE 200 END, 7, \
                    now() - make_interval(mins => i) \
             FROM generate_series(1, {n}) AS i"
        ))
        .execute(&self.pool)
        .await
        .unwrap();
        self.usage += n;
        if self.exists("usage_ledger_copy").await {
            self.add_ledger_usage().await;
        }
    }

    /// Usage a new gateway writes straight into the ledger: while
    /// forwarding runs, or, before it, past a `down --force`.
    async fn add_ledger_usage(&mut self) {
        let keys = "(SELECT array_agg(id ORDER BY public_id) FROM api_keys)";
        let n = 5;
        {
            sqlx::query(&format!(
                "INSERT INTO usage_ledger (request_id, key_id, model, provider, total_tokens, \
                 status, latency_ms, created_at) \
                 SELECT gen_random_uuid(), ({keys})[1 + i % cardinality({keys})], 'new-model', \
                        'mock', 20 + i, 200, 5, now() - make_interval(mins => i) \
                 FROM generate_series(1, {n}) AS i"
            ))
            .execute(&self.pool)
            .await
            .unwrap();
            self.usage += n;
        }
    }

    /// Every key and usage record given so far is there, each usage record
    /// once across usage_events and the ledger (forwarded and copied rows
    /// are twins), and the running totals and rollups agree with them.
    async fn assert_nothing_lost(&self, when: &str) {
        let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        assert_eq!(keys, self.keys, "{when}: keys");
        let ledger = self.exists("usage_ledger").await;
        let rows = if ledger {
            "SELECT request_id, created_at, key_id FROM usage_events \
             UNION SELECT request_id, created_at, key_id FROM usage_ledger"
        } else {
            "SELECT request_id, created_at, key_id FROM usage_events"
        };
        let usage: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ({rows}) r"))
            .fetch_one(&self.pool)
            .await
            .unwrap();
        assert_eq!(usage, self.usage, "{when}: usage records");
        if !self.exists("usage_ledger_copy").await {
            // Without forwarding the previous release reads usage_events
            // alone, so every record must be there.
            let events: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_events")
                .fetch_one(&self.pool)
                .await
                .unwrap();
            assert_eq!(events, self.usage, "{when}: usage records in usage_events");
        }
        if ledger {
            let m = mismatches(&self.pool).await.unwrap();
            assert_eq!((m.hourly, m.daily), (0, 0), "{when}: rollups");
            let twice: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT id FROM usage_ledger GROUP BY id HAVING count(*) > 1) d",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            assert_eq!(twice, 0, "{when}: a ledger id used twice");
        }
        if self.exists("usage_totals").await {
            let off: i64 = sqlx::query_scalar(&format!(
                "WITH recount AS (SELECT key_id AS subject_id, count(*) AS requests \
                                  FROM ({rows}) r WHERE key_id IS NOT NULL GROUP BY 1), \
                 stored AS (SELECT subject_id, requests FROM usage_totals WHERE period = 'total') \
                 SELECT (SELECT count(*) FROM (SELECT * FROM recount EXCEPT SELECT * FROM stored) a) \
                      + (SELECT count(*) FROM (SELECT * FROM stored EXCEPT SELECT * FROM recount) b)"
            ))
            .fetch_one(&self.pool)
            .await
            .unwrap();
            assert_eq!(off, 0, "{when}: running totals");
        }
    }

    /// No applied migration differs from its file, and the schema is one
    /// this release judges (pending work aside) sound.
    async fn assert_checksums_verify(&self, when: &str) {
        let mut conn = self.pool.acquire().await.unwrap();
        let applied = read_applied(&mut conn).await.unwrap().unwrap_or_default();
        let verdict = check(&MigrationSet::embedded().unwrap(), &applied);
        assert!(!verdict.is_fatal(), "{when}: {}", verdict.describe());
    }
}

/// The schema as lines: every table and view with its storage options,
/// column (by name, so a column added again at the end compares equal),
/// index, constraint, trigger with its enabled state, sequence, function
/// with its whole definition, and aggregate. The ledger's daily partitions
/// are left out: which days exist depends on the day and the data.
async fn schema(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "WITH rel AS (
             SELECT c.oid, c.relname, c.relkind, c.reloptions FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relname !~ '^usage_ledger_[0-9]{8}'
               AND c.relname NOT IN ('_sqlx_migrations', 'obleth_migration_phases'))
         SELECT 'relation ' || relname || ' ' || relkind::text || ' ' || coalesce(reloptions::text, '')
         FROM rel
         UNION ALL
         SELECT 'column ' || r.relname || '.' || a.attname || ' '
                || format_type(a.atttypid, a.atttypmod)
                || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
         FROM rel r
         JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
         LEFT JOIN pg_attrdef d ON d.adrelid = r.oid AND d.adnum = a.attnum
         WHERE r.relkind IN ('r', 'p', 'v')
         UNION ALL
         SELECT 'index ' || pg_get_indexdef(i.indexrelid)
         FROM pg_index i JOIN rel r ON r.oid = i.indrelid
         UNION ALL
         SELECT 'constraint ' || r.relname || '.' || c.conname || ' '
                || pg_get_constraintdef(c.oid)
                || CASE WHEN c.convalidated THEN '' ELSE ' (not validated)' END
         FROM pg_constraint c JOIN rel r ON r.oid = c.conrelid
         UNION ALL
         SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
         FROM pg_trigger t JOIN rel r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
         UNION ALL
         SELECT 'function ' || pg_get_functiondef(p.oid) FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.prokind = 'f'
         UNION ALL
         SELECT 'aggregate ' || p.oid::regprocedure::text FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.prokind = 'a'
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Fails naming the lines in which two schemas differ.
fn assert_same_schema(got: &[String], want: &[String], when: &str) {
    let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
    let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{when}: the schema differs from a database migrated straight there\nextra: {extra:#?}\nmissing: {missing:#?}"
    );
}

/// The schema of a fresh database with `versions` applied by `up`.
async fn schema_of(versions: &[i64]) -> Vec<String> {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    Runner::new(
        embedded_where(|v| versions.contains(&v)).unwrap(),
        fast_options("reference"),
    )
    .run(&options, Mode::Up)
    .await
    .unwrap();
    let pool = PgPool::connect(&db.url).await.unwrap();
    let lines = schema(&pool).await;
    pool.close().await;
    lines
}

/// What each expand migration leaves behind, to see it come and go.
fn marker(version: i64) -> (&'static str, Option<&'static str>) {
    match version {
        20261122000001 => ("api_keys", None),
        20261122000002 => ("settings", None),
        20261122000003 => ("api_keys_previous_secret_hash", None),
        20261128000001 => ("teams", None),
        20261128000002 => ("usage_ledger", None),
        20261128000003 => ("usage_ledger_copy", None),
        20261128000004 => ("usage_ledger_copy", Some("through")),
        20261128000006 => ("usage_daily_keys", None),
        20261128000007 => ("nodes", Some("release_schema")),
        20261129000001 => ("nodes", Some("usage_dropped")),
        20261129000002 => ("providers_kind_known", Some("anthropic")),
        20261129000003 => ("providers", Some("options")),
        20261129000004 => ("usage_rollup_queue_hour", None),
        other => panic!("no marker for {other}"),
    }
}

async fn present(db: &Db, version: i64) -> bool {
    match marker(version) {
        ("usage_ledger_copy", Some("through")) => {
            // The copy's mark: done when applied, reset when reverted.
            if !db.exists("usage_ledger_copy").await {
                return false;
            }
            sqlx::query_scalar("SELECT through >= until AND until > 0 FROM usage_ledger_copy")
                .fetch_one(&db.pool)
                .await
                .unwrap()
        }
        ("providers_kind_known", Some(kind)) => {
            // The kind constraint admits the kind.
            sqlx::query_scalar(
                "SELECT pg_get_constraintdef(oid) LIKE '%' || $1 || '%' FROM pg_constraint \
                 WHERE conname = 'providers_kind_known'",
            )
            .bind(kind)
            .fetch_one(&db.pool)
            .await
            .unwrap()
        }
        (table, Some(column)) => db.column_exists(table, column).await,
        (relation, None) => db.exists(relation).await,
    }
}

#[tokio::test]
async fn every_expand_migration_reverts_and_applies_again_with_nothing_lost() {
    let test_db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&test_db.url).unwrap();
    let set = MigrationSet::embedded().unwrap();
    let top = set.latest_version().unwrap();
    // A database of the release before the ledger, with keys and usage,
    // brought up to this release: the ledger's copy has rows to copy.
    let mut db = Db {
        url: test_db.url.clone(),
        pool: PgPool::connect(&test_db.url).await.unwrap(),
        options,
        keys: 0,
        usage: 0,
    };
    db.up_through(obleth_testkit::ledger::BEFORE_LEDGER).await;
    db.add_key().await;
    db.add_usage().await;
    db.up_through(top).await;
    // The contract stays pending, as on a fleet mid-upgrade.
    let mut expand: Vec<i64> = set
        .iter()
        .filter(|d| d.phase == Phase::Expand)
        .map(|d| d.version)
        .collect();
    expand.reverse();
    assert_eq!(expand[0], top);

    for (i, &version) in expand.iter().enumerate() {
        if version == 20261122000001 {
            break;
        }
        let when = format!("{version}");
        assert!(present(&db, version).await, "{when} applied");
        db.add_key().await;
        db.add_usage().await;
        db.assert_nothing_lost(&format!("{when} before down")).await;
        if version == obleth_testkit::ledger::CREATE {
            // A new gateway that a `down --force` went past kept writing.
            db.add_ledger_usage().await;
        }

        assert_eq!(db.down(1).await.unwrap(), [version], "{when}");
        assert!(!db.applied().await.contains(&version), "{when} forgotten");
        assert!(!present(&db, version).await, "{when} reverted");
        // The exact inverse: the schema is the one its predecessors make.
        assert_same_schema(
            &schema(&db.pool).await,
            &schema_of(&db.applied().await).await,
            &format!("{when} after down"),
        );
        db.assert_nothing_lost(&format!("{when} after down")).await;
        db.assert_checksums_verify(&format!("{when} after down"))
            .await;

        db.add_key().await;
        db.add_usage().await;
        db.up_through(version).await;
        assert!(present(&db, version).await, "{when} applied again");
        db.assert_nothing_lost(&format!("{when} after up")).await;
        db.assert_checksums_verify(&format!("{when} after up"))
            .await;
        assert_same_schema(
            &schema(&db.pool).await,
            &schema_of(&db.applied().await).await,
            &format!("{when} after up"),
        );

        // Down to the next one's state for the next round.
        db.add_usage().await;
        assert_eq!(db.down(1).await.unwrap(), [version], "{when} again");
        db.assert_nothing_lost(&format!("{when} after the second down"))
            .await;
        assert_eq!(db.applied().await.last(), expand.get(i + 1), "{when}");
    }

    // The initial schema refuses to drop usage records, changing nothing.
    assert_eq!(db.applied().await, [20261122000001]);
    let err = db.down(1).await.unwrap_err().to_string();
    assert!(
        err.contains("20261122000001_initial_schema.down.sql")
            && err.contains("usage_events still holds usage records"),
        "{err}"
    );
    assert_eq!(db.applied().await, [20261122000001]);
    db.assert_nothing_lost("initial schema after the refusal")
        .await;

    // Without usage it drops everything it made; `up` builds it all again.
    sqlx::query("DELETE FROM usage_events")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(db.down(1).await.unwrap(), [20261122000001]);
    for table in ["api_keys", "usage_events", "nodes", "changes", "routes"] {
        assert!(!db.exists(table).await, "{table} dropped");
    }
    assert!(db.applied().await.is_empty());
    assert!(matches!(
        db.down(1).await,
        Err(DownError::NothingToRevert {
            asked: 1,
            applied: 0
        })
    ));

    db.pool.close().await;
    let pool = obleth_testkit::db::migrate(&db.url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let applied = read_applied(&mut conn).await.unwrap().unwrap();
    let verdict = check(&set, &applied);
    assert!(verdict.is_compatible(), "{}", verdict.describe());
}

#[tokio::test]
async fn a_failing_down_script_changes_nothing_and_names_its_file() {
    let dir = super::migration_dir(&[
        ("1_first.sql", "CREATE TABLE a (id int);", Phase::Expand),
        ("2_second.sql", "CREATE TABLE b (id int);", Phase::Expand),
    ]);
    std::fs::write(dir.path().join("1_first.down.sql"), "DROP TABLE a;").unwrap();
    std::fs::write(
        dir.path().join("2_second.down.sql"),
        "DROP TABLE b;\nSELECT 1 / 0;",
    )
    .unwrap();
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let runner = Runner::new(super::set_of(dir.path()), fast_options("t"));
    runner.run(&options, Mode::Up).await.unwrap();

    let err = runner
        .down(
            &options,
            DownRequest {
                count: 2,
                force: false,
            },
        )
        .await
        .unwrap_err();
    let DownError::Migrate(MigrateError::Failed { version, file, .. }) = &err else {
        panic!("expected a failed script, got {err}");
    };
    assert_eq!((*version, file.as_str()), (2, "2_second.down.sql"));
    let pool = PgPool::connect(&db.url).await.unwrap();
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename IN ('a', 'b')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(tables, 2, "the failed script's drop was rolled back");
    let recorded: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM _sqlx_migrations) + (SELECT count(*) FROM obleth_migration_phases)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        recorded, 4,
        "both migrations still recorded with their phases"
    );
}

/// A two-migration directory whose second migration has a down script.
fn reversible_dir() -> tempfile::TempDir {
    let dir = super::migration_dir(&[
        ("1_t.sql", "CREATE TABLE t (id int);", Phase::Expand),
        (
            "2_add.sql",
            "ALTER TABLE t ADD COLUMN note text;",
            Phase::Expand,
        ),
    ]);
    std::fs::write(
        dir.path().join("2_add.down.sql"),
        "ALTER TABLE t DROP COLUMN note;",
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn a_down_blocked_by_a_table_lock_hits_lock_timeout_retries_and_succeeds_once_released() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let dir = reversible_dir();
    Runner::new(super::set_of(dir.path()), fast_options("setup"))
        .run(&options, Mode::Up)
        .await
        .unwrap();
    let mut blocker = super::connect(&db.url).await;
    sqlx::raw_sql("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE;")
        .execute(&mut blocker)
        .await
        .unwrap();

    let runner = Runner::new(super::set_of(dir.path()), fast_options("blocked-down"));
    let task = tokio::spawn(async move {
        runner
            .down(
                &options,
                DownRequest {
                    count: 1,
                    force: false,
                },
            )
            .await
    });
    // Hold the table until the down has waited in two distinct
    // transactions: it timed out at least once and came back.
    let mut observer = super::connect(&db.url).await;
    let mut attempts_seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while attempts_seen.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "down never retried");
        let waiting: Option<String> = sqlx::query_scalar(
            "SELECT xact_start::text FROM pg_stat_activity \
             WHERE application_name = 'blocked-down' AND wait_event_type = 'Lock'",
        )
        .fetch_optional(&mut observer)
        .await
        .unwrap();
        attempts_seen.extend(waiting);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();

    let report = task.await.unwrap().expect("succeeds once the lock is gone");
    assert_eq!(report.reverted.len(), 1);
    assert_eq!(report.reverted[0].file, "2_add.down.sql");
    assert!(report.reverted[0].attempts >= 2, "{:?}", report.reverted[0]);
    assert_eq!(super::applied_versions(&db.url).await, vec![1]);
    assert_eq!(super::advisory_locks(&db.url).await, 0);
}

#[tokio::test]
async fn a_down_that_cannot_get_the_migration_lock_gives_up_and_changes_nothing() {
    let db = fresh_database().await.unwrap();
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let dir = reversible_dir();
    Runner::new(super::set_of(dir.path()), fast_options("setup"))
        .run(&options, Mode::Up)
        .await
        .unwrap();
    let opts = obleth_config::migrate::RunnerOptions {
        lock_wait: std::time::Duration::from_millis(300),
        ..fast_options("waiter")
    };
    let mut hog = super::connect(&db.url).await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(opts.lock_key)
        .execute(&mut hog)
        .await
        .unwrap();

    let err = Runner::new(super::set_of(dir.path()), opts)
        .down(
            &options,
            DownRequest {
                count: 1,
                force: false,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownError::Migrate(MigrateError::LockHeld { .. })),
        "{err:?}"
    );
    assert_eq!(super::applied_versions(&db.url).await, vec![1, 2]);
}
