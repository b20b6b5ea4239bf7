//! The change log's pruning by running admins: old rows go, the newest
//! stays, several admins share the work, and 0 days turns it off.

use std::time::Duration;

use obleth_admin::Admin;
use obleth_config::model::ProviderKind;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::support::*;

async fn seqs(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM changes ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Dates every change row `days` days back.
async fn age_all(pool: &PgPool, days: i32) {
    sqlx::query("UPDATE changes SET changed_at = now() - make_interval(days => $1)")
        .bind(days)
        .execute(pool)
        .await
        .unwrap();
}

/// Five change rows: a provider and route, and three keys.
async fn some_changes(pool: &PgPool) {
    let mock = obleth_testkit::db::provider("mock", ProviderKind::Mock, "mock://");
    obleth_testkit::db::provider_and_route(pool, &mock, "m")
        .await
        .unwrap();
    for _ in 0..3 {
        obleth_testkit::db::key(pool, |_| {}).await.unwrap();
    }
}

#[tokio::test]
async fn two_admins_prune_changes_older_than_the_retention_keeping_the_newest_and_count_them() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let pool = obleth_testkit::db::migrate(&db.url).await.unwrap();
    some_changes(&pool).await;
    let before = seqs(&pool).await;
    assert!(before.len() >= 5, "{before:?}");
    age_all(&pool, 8).await;
    let mut settings = admin_settings(&db.url);
    settings.changes.prune_interval_secs = 1;
    let a = TestAdmin::start(settings.clone()).await;
    let b = TestAdmin::start(settings).await;

    let newest = *before.last().unwrap();
    wait_until(Duration::from_secs(30), "the old rows pruned", || async {
        seqs(&pool).await == vec![newest]
    })
    .await;
    let pruned = |text: String| {
        obleth_testkit::metrics::sum(&text, "obleth_admin_changes_pruned_total", &[])
    };
    let counted = pruned(a.metrics().await) + pruned(b.metrics().await);
    assert_eq!(counted, (before.len() - 1) as f64, "each row counted once");

    // The next interval prunes what aged since, and leaves a recent row.
    obleth_testkit::db::key(&pool, |_| {}).await.unwrap();
    age_all(&pool, 8).await;
    obleth_testkit::db::key(&pool, |_| {}).await.unwrap();
    let recent = *seqs(&pool).await.last().unwrap();
    wait_until(
        Duration::from_secs(30),
        "the rows aged since pruned",
        || async { seqs(&pool).await == vec![recent] },
    )
    .await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_retention_of_zero_days_prunes_nothing() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let pool = obleth_testkit::db::migrate(&db.url).await.unwrap();
    some_changes(&pool).await;
    age_all(&pool, 400).await;
    let before = seqs(&pool).await;
    let mut settings = admin_settings(&db.url);
    settings.changes.retention_days = 0;
    settings.changes.prune_interval_secs = 1;
    let admin = Admin::build(settings).await.unwrap();

    // Off means the task ends at once, without being stopped, having
    // touched nothing.
    tokio::time::timeout(
        Duration::from_secs(10),
        obleth_admin::prune::run(admin.state.clone(), CancellationToken::new()),
    )
    .await
    .expect("pruning off returns at once");

    assert_eq!(seqs(&pool).await, before);
    assert_eq!(
        obleth_testkit::metrics::sum(
            &admin.state.metrics.render(),
            "obleth_admin_changes_pruned_total",
            &[]
        ),
        0.0
    );
}
