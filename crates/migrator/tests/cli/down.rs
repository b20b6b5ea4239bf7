//! `obleth-migrator down` as operators run it: what it reverts, each refusal
//! with its exit code and nothing changed, `--dry-run`, and the live nodes
//! whose release requires a migration.

use obleth_testkit::fresh_database;
use sqlx::{Connection, PgConnection};

use super::{code, execute, migrator, scalar_bool, source_with, stderr, stdout};

/// What a refusal must leave alone: the applied migrations with their
/// checksums and phases, and every table, column and function of the schema.
async fn fingerprint(url: &str) -> String {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT concat_ws('|', \
            (SELECT string_agg(version || ':' || encode(checksum, 'hex'), ',' ORDER BY version) \
             FROM _sqlx_migrations), \
            (SELECT string_agg(version || ':' || phase, ',' ORDER BY version) \
             FROM obleth_migration_phases), \
            (SELECT string_agg(table_name || '.' || column_name, ',' \
                               ORDER BY table_name, column_name) \
             FROM information_schema.columns WHERE table_schema = 'public'), \
            (SELECT string_agg(p.proname, ',' ORDER BY p.proname) FROM pg_proc p \
             JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'))",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

async fn newest_applied(url: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

const HAS_RELEASE_SCHEMA: &str = "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
     WHERE table_name = 'nodes' AND column_name = 'release_schema')";
const HAS_USAGE_DROPPED: &str = "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
     WHERE table_name = 'nodes' AND column_name = 'usage_dropped')";

#[tokio::test]
async fn down_reverts_the_newest_migrations_and_status_names_the_version() {
    let db = fresh_database().await.unwrap();
    let url = Some(db.url.as_str());
    assert_eq!(code(&migrator(url, &["up"]).await), 0);
    let out = migrator(url, &["status"]).await;
    assert!(
        stdout(&out).contains("version:  20261129000004 (usage rollup queue hour)"),
        "{}",
        stdout(&out)
    );
    // The queue's index goes first, with nothing to refuse.
    let out = migrator(url, &["down"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "reverted 20261129000004 (usage rollup queue hour) with 20261129000004_usage_rollup_queue_hour.down.sql"
        ),
        "{}",
        stdout(&out)
    );
    assert!(
        !scalar_bool(
            &db.url,
            "SELECT to_regclass('usage_rollup_queue_hour') IS NOT NULL"
        )
        .await
    );

    // The options' revert refuses while a provider has options (they would
    // be lost), changing nothing.
    execute(
        &db.url,
        "INSERT INTO providers (id, name, kind, base_url, options) \
         VALUES (gen_random_uuid(), 'pooled', 'openai', 'https://api.example.com/v1', \
                 '{\"connect_timeout_ms\": 500}')",
    )
    .await;
    let before = fingerprint(&db.url).await;
    let out = migrator(url, &["down"]).await;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("20261129000003_provider_options_target_weights.down.sql")
            && stderr(&out).contains("(pooled); clear their options or delete them first"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fingerprint(&db.url).await, before);
    execute(&db.url, "DELETE FROM providers WHERE name = 'pooled'").await;
    let out = migrator(url, &["down"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "reverted 20261129000003 (provider options target weights) with 20261129000003_provider_options_target_weights.down.sql"
        ),
        "{}",
        stdout(&out)
    );

    // The kind's revert refuses while a provider of that kind exists (the
    // previous release could not load the catalog), changing nothing.
    execute(
        &db.url,
        "INSERT INTO providers (id, name, kind, base_url) \
         VALUES (gen_random_uuid(), 'claude', 'anthropic', 'https://api.anthropic.com/v1')",
    )
    .await;
    let before = fingerprint(&db.url).await;
    let out = migrator(url, &["down"]).await;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("20261129000002_provider_kind_anthropic.down.sql")
            && stderr(&out).contains("providers of kind anthropic exist (claude)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fingerprint(&db.url).await, before);
    execute(&db.url, "DELETE FROM providers WHERE name = 'claude'").await;
    let out = migrator(url, &["down"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "reverted 20261129000002 (provider kind anthropic) with 20261129000002_provider_kind_anthropic.down.sql"
        ),
        "{}",
        stdout(&out)
    );

    let out = migrator(url, &["down"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "reverted 20261129000001 (nodes usage dropped) with 20261129000001_nodes_usage_dropped.down.sql"
        ),
        "{}",
        stdout(&out)
    );
    assert!(!scalar_bool(&db.url, HAS_USAGE_DROPPED).await);
    assert!(scalar_bool(&db.url, HAS_RELEASE_SCHEMA).await);
    assert!(
        !scalar_bool(
            &db.url,
            "SELECT EXISTS (SELECT 1 FROM obleth_migration_phases WHERE version = 20261129000001)"
        )
        .await,
        "its phase row is gone with it"
    );

    // `down 3` goes newest first: the release schema, the daily rollups,
    // then the copy's mark.
    let out = migrator(url, &["down", "3"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let release = text.find("reverted 20261128000007").expect(&text);
    let daily = text.find("reverted 20261128000006").expect(&text);
    let copy = text.find("reverted 20261128000004").expect(&text);
    assert!(release < daily && daily < copy, "{text}");
    assert!(!scalar_bool(&db.url, HAS_RELEASE_SCHEMA).await);
    assert_eq!(newest_applied(&db.url).await, 20261128000003);

    let out = migrator(url, &["status", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["database_version"]["version"], 20261128000003_i64);
    assert_eq!(
        json["database_version"]["description"],
        "usage ledger forwarding"
    );

    // And `up` brings them back, checksums verified.
    assert_eq!(code(&migrator(url, &["up"]).await), 0);
    let out = migrator(url, &["verify"]).await;
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(scalar_bool(&db.url, HAS_RELEASE_SCHEMA).await);
    assert!(scalar_bool(&db.url, HAS_USAGE_DROPPED).await);
}

#[tokio::test]
async fn down_dry_run_prints_the_down_scripts_and_changes_nothing() {
    let db = fresh_database().await.unwrap();
    let url = Some(db.url.as_str());
    assert_eq!(code(&migrator(url, &["up"]).await), 0);
    let before = fingerprint(&db.url).await;

    let out = migrator(url, &["down", "6", "--dry-run"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("would revert 20261129000004 (20261129000004_usage_rollup_queue_hour.sql)")
            && text.contains("DROP INDEX CONCURRENTLY IF EXISTS usage_rollup_queue_hour;"),
        "{text}"
    );
    assert!(
        text.contains("-- dry run: would revert 20261129000001 (20261129000001_nodes_usage_dropped.sql) with 20261129000001_nodes_usage_dropped.down.sql"),
        "{text}"
    );
    assert!(text.contains("DROP COLUMN usage_dropped,"), "{text}");
    assert!(
        text.contains(
            "would revert 20261129000003 (20261129000003_provider_options_target_weights.sql)"
        ) && text.contains("DROP COLUMN options,"),
        "{text}"
    );
    assert!(
        text.contains("would revert 20261129000002 (20261129000002_provider_kind_anthropic.sql)")
            && text.contains("CHECK (kind IN ('openai', 'mock')) NOT VALID;"),
        "{text}"
    );
    assert!(
        text.contains("-- dry run: would revert 20261128000007 (20261128000007_nodes_release_schema.sql) with 20261128000007_nodes_release_schema.down.sql"),
        "{text}"
    );
    assert!(
        text.contains("ALTER TABLE nodes DROP COLUMN release_schema;"),
        "{text}"
    );
    assert!(
        text.contains("would revert 20261128000006 (20261128000006_usage_daily.sql)")
            && text.contains("DROP AGGREGATE obleth_sum(BIGINT);"),
        "{text}"
    );
    assert_eq!(fingerprint(&db.url).await, before);

    // A dry run refuses as the real run would.
    let out = migrator(url, &["down", "99", "--dry-run"]).await;
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert_eq!(fingerprint(&db.url).await, before);
}

#[tokio::test]
async fn down_refusals_exit_with_their_codes_and_change_nothing() {
    let db = fresh_database().await.unwrap();
    let url = Some(db.url.as_str());

    // Nothing applied: not even the bookkeeping is created.
    let out = migrator(url, &["down"]).await;
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("asked to revert 1 migration(s) but 0 are applied"),
        "{}",
        stderr(&out)
    );
    assert!(
        !scalar_bool(
            &db.url,
            "SELECT to_regclass('_sqlx_migrations') IS NOT NULL"
        )
        .await
    );
    assert_eq!(
        code(&migrator(url, &["down", "0"]).await),
        2,
        "N is at least 1"
    );

    // A migration of a newer release without a down script.
    let source = source_with(&[(
        "29991231000001_add_note.sql",
        "ALTER TABLE api_keys ADD COLUMN note text;",
        "\n[[migration]]\nversion = 29991231000001\nphase = \"expand\"\n",
    )]);
    let source = source.path().to_str().unwrap();
    assert_eq!(code(&migrator(url, &["up", "--source", source]).await), 0);
    let before = fingerprint(&db.url).await;
    let out = migrator(url, &["down", "--source", source]).await;
    assert_eq!(code(&out), 12, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("migration 29991231000001 (29991231000001_add_note.sql) has no down script 29991231000001_add_note.down.sql"),
        "{}",
        stderr(&out)
    );
    // This binary does not know the migration at all: no script either.
    let out = migrator(url, &["down"]).await;
    assert_eq!(code(&out), 12, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("applied by another release"),
        "{}",
        stderr(&out)
    );
    let out = migrator(url, &["down", "100", "--source", source]).await;
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert_eq!(fingerprint(&db.url).await, before);
    execute(
        &db.url,
        "ALTER TABLE api_keys DROP COLUMN note; \
         DELETE FROM _sqlx_migrations WHERE version = 29991231000001; \
         DELETE FROM obleth_migration_phases WHERE version = 29991231000001;",
    )
    .await;

    // A contract migration among the N: 20261128000005 after 6, 7,
    // 20261129000001, 20261129000002, 20261129000003 and 20261129000004.
    assert_eq!(code(&migrator(url, &["finish"]).await), 0);
    let before = fingerprint(&db.url).await;
    let out = migrator(url, &["down", "7"]).await;
    assert_eq!(code(&out), 11, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("migration 20261128000005 (20261128000005_drop_usage_events.sql) is a contract migration"),
        "{}",
        stderr(&out)
    );
    // --force overrides only the live nodes.
    let out = migrator(url, &["down", "7", "--force"]).await;
    assert_eq!(code(&out), 11, "{}", stderr(&out));
    assert_eq!(fingerprint(&db.url).await, before);
}

#[tokio::test]
async fn a_live_node_whose_release_requires_the_migration_blocks_down() {
    let db = fresh_database().await.unwrap();
    let url = Some(db.url.as_str());
    assert_eq!(code(&migrator(url, &["up"]).await), 0);
    // This release's gateway, one of the release before it that embeds
    // migrations through 20261128000007, and a stopped node of this release.
    execute(
        &db.url,
        "INSERT INTO nodes (node_id, service, version, ready, release_schema) VALUES \
         ('gw-new', 'gateway', '0.3.0', true, 20261129000004), \
         ('gw-mid', 'gateway', '0.2.0', true, 20261128000007); \
         INSERT INTO nodes (node_id, service, version, ready, release_schema, stopped_at) VALUES \
         ('gw-gone', 'gateway', '0.3.0', false, 20261129000004, now());",
    )
    .await;
    let before = fingerprint(&db.url).await;

    let out = migrator(url, &["down"]).await;
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("gateway gw-new runs 0.3.0 whose release requires migrations through 20261129000004, including 20261129000004"),
        "{err}"
    );
    assert!(!err.contains("gw-mid") && !err.contains("gw-gone"), "{err}");
    assert_eq!(fingerprint(&db.url).await, before);
    let out = migrator(url, &["down", "--dry-run"]).await;
    assert_eq!(code(&out), 13, "{}", stderr(&out));

    // Once it stops, the older release needs neither of this release's.
    execute(
        &db.url,
        "UPDATE nodes SET stopped_at = now() WHERE node_id = 'gw-new'",
    )
    .await;
    let out = migrator(url, &["down", "4"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(newest_applied(&db.url).await, 20261128000007);

    // But it needs 20261128000007; forced past it, it goes.
    let out = migrator(url, &["down"]).await;
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("gateway gw-mid runs 0.2.0 whose release requires migrations through 20261128000007, including 20261128000007"),
        "{}",
        stderr(&out)
    );
    let out = migrator(url, &["down", "--force"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(newest_applied(&db.url).await, 20261128000006);

    // Without the column no node says what it needs: each live one blocks.
    let out = migrator(url, &["down"]).await;
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("gateway gw-mid runs 0.2.0, which records no release schema"),
        "{}",
        stderr(&out)
    );
    let out = migrator(url, &["down", "--force"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: forced past live nodes: gateway gw-mid"),
        "{}",
        stderr(&out)
    );
    assert_eq!(newest_applied(&db.url).await, 20261128000004);
}

#[tokio::test]
async fn lint_checks_down_scripts_and_names_expand_migrations_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("1_first.sql", "CREATE TABLE a (id int);"),
        ("1_first.down.sql", "DROP TABLE a;"),
        ("2_second.sql", "CREATE TABLE b (id int);"),
        ("3_third.sql", "ALTER TABLE a ADD COLUMN note text;"),
        (
            "3_third.down.sql",
            "CREATE INDEX a_id ON a (id);\nALTER TABLE a DROP COLUMN note;",
        ),
    ];
    let mut manifest = String::new();
    for (name, sql) in files {
        std::fs::write(dir.path().join(name), sql).unwrap();
        if !name.ends_with(".down.sql") {
            let version = name.split('_').next().unwrap();
            manifest.push_str(&format!(
                "[[migration]]\nversion = {version}\nphase = \"expand\"\n"
            ));
        }
    }
    std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
    let out = migrator(None, &["lint", "--dir", dir.path().to_str().unwrap()]).await;
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("2_second.sql:1: [missing-down-script] expand migration 2_second.sql has no down script; add 2_second.down.sql"),
        "{text}"
    );
    assert!(
        text.contains("3_third.down.sql:1: [index-without-concurrently]"),
        "{text}"
    );
    // Undoing is what a down script is for.
    assert!(
        !text.contains("[drop-table]") && !text.contains("[drop-column]"),
        "{text}"
    );
}
