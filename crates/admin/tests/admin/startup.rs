//! Start-up against PostgreSQL: many admins migrating an empty database at
//! once, an admin told not to migrate, an incompatible schema, and a clean stop.

use std::time::Duration;

use http::Method;
use obleth_config::migrate::MigrationSet;
use obleth_testkit::metrics::sum;
use sqlx::PgPool;

use crate::support::*;

#[tokio::test]
async fn four_admins_started_at_once_on_an_empty_database_all_become_ready_and_migrate_once() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    // `start` only binds and spawns; the four start-up tasks then race for
    // the migration lock together.
    let mut admins = Vec::new();
    for _ in 0..4 {
        admins.push(TestAdmin::start(admin_settings(&db.url)).await);
    }
    for admin in &admins {
        admin.wait_ready().await;
    }

    // The admin applies the expand migrations at start; contract ones wait for `finish`.
    let embedded = MigrationSet::embedded()
        .unwrap()
        .iter()
        .filter(|m| m.phase == obleth_config::migrate::Phase::Expand)
        .count() as i64;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, embedded);
    let mut applied = 0.0;
    for admin in &admins {
        applied += sum(
            &admin.metrics().await,
            "obleth_admin_migrations_applied_total",
            &[],
        );
    }
    assert_eq!(
        applied, embedded as f64,
        "each migration applied by exactly one admin"
    );
    let version = admins[0].get("/api/version").await.json();
    let newest_expand = MigrationSet::embedded().unwrap().newest_expand();
    assert_eq!(
        version["schema"]["applied"].as_i64(),
        newest_expand,
        "{version}"
    );
    for admin in admins {
        admin.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_admin_not_migrating_on_startup_stays_unready_until_the_migrator_ran() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let mut settings = admin_settings(&db.url);
    settings.migrations.migrate_on_startup = false;
    let admin = TestAdmin::start(settings).await;

    let reasons = wait_for(
        Duration::from_secs(10),
        "a not-ready reason naming the migrator",
        || async {
            let a = request(Method::GET, &admin.url("/readyz"), &[], "").await;
            let text = a.text();
            (a.status == 503 && text.contains("obleth-migrator up")).then_some(text)
        },
    )
    .await;
    assert!(reasons.contains("pending"), "{reasons}");
    let refused = admin.get("/api/v1/keys").await;
    assert_eq!(
        (refused.status, refused.admin_error().0.as_str()),
        (503, "not_ready")
    );
    let health = request(Method::GET, &admin.url("/api/v1/health"), &[], "").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "unavailable");

    migrate(&db.url).await;
    admin.wait_ready().await;
    assert_eq!(admin.get("/api/v1/keys").await.status, 200);
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn an_incompatible_schema_makes_the_admin_exit_with_an_error_naming_the_migration() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    migrate(&db.url).await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000009, 'drop something', TRUE, '\\x00', 0); \
         INSERT INTO obleth_migration_phases (version, phase, requires_release) \
         VALUES (29991231000009, 'contract', '9.0.0');",
    )
    .execute(&pool)
    .await
    .unwrap();
    for migrate_on_startup in [true, false] {
        let mut settings = admin_settings(&db.url);
        settings.migrations.migrate_on_startup = migrate_on_startup;
        let admin = TestAdmin::start(settings).await;
        let err = admin.exited(Duration::from_secs(30)).await.unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<obleth_admin::RunError>(),
                Some(obleth_admin::RunError::Startup(_))
            ),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(
            err.contains("29991231000009") && err.contains("incompatible"),
            "migrate_on_startup = {migrate_on_startup}: {err}"
        );
    }
}

#[tokio::test]
async fn a_stopped_admin_marks_itself_stopped_in_the_nodes_table() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    let node_id = admin.node_id.clone();
    wait_node_ready(&pool, &node_id).await;
    let app: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = current_database()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(app.iter().any(|a| a == "obleth-admin"), "{app:?}");
    admin.stop().await.unwrap();
    let (service, stopped): (String, bool) =
        sqlx::query_as("SELECT service, stopped_at IS NOT NULL FROM nodes WHERE node_id = $1")
            .bind(&node_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((service.as_str(), stopped), ("admin", true));
}

#[tokio::test]
async fn build_refuses_bad_settings_and_tokens_with_typed_errors_before_any_connection() {
    use obleth_admin::{Admin, StartError};
    // Port 1: nothing listens, and build must not try.
    let url = "postgres://u:pg-hunter2@127.0.0.1:1/db";
    let mut zero = admin_settings(url);
    zero.auth.max_failures = 0;
    let e = Admin::build(zero).await.unwrap_err();
    assert_eq!(e.to_string(), "auth.max_failures: must be greater than 0");
    assert!(matches!(&e, StartError::Settings(s) if s.field == "auth.max_failures"));

    let mut short = admin_settings(url);
    short.auth.tokens = vec![secrecy::SecretString::from("short-tok")];
    let e = Admin::build(short).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid settings: auth.tokens[0]: an admin token must be at least 16 characters"
    );
    assert!(
        matches!(&e, StartError::Tokens(obleth_config::SettingsError::Check(c)) if c.field == "auth.tokens[0]"),
        "{e:?}"
    );
    for shown in [e.to_string(), format!("{e:?}")] {
        assert!(
            !shown.contains("short-tok") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
