//! Tests of the throwaway PostgreSQL: shared fresh databases and private clusters.

use obleth_testkit::{fresh_database, PgCluster, PgReplicated};
use sqlx::{Connection as _, PgConnection};

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .expect("connecting to the test database")
}

async fn table_exists(conn: &mut PgConnection, table: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(conn)
        .await
        .expect("querying for the table")
}

#[tokio::test]
async fn fresh_databases_are_distinct_and_usable() {
    let a = fresh_database().await.unwrap();
    let b = fresh_database().await.unwrap();

    let mut conn_a = connect(&a.url).await;
    sqlx::query("CREATE TABLE things (id int PRIMARY KEY)")
        .execute(&mut conn_a)
        .await
        .unwrap();
    sqlx::query("INSERT INTO things VALUES (1)")
        .execute(&mut conn_a)
        .await
        .unwrap();
    let mut conn_b = connect(&b.url).await;

    assert_ne!(a.name, b.name);
    assert_ne!(a.url, b.url);
    assert!(table_exists(&mut conn_a, "things").await);
    assert!(!table_exists(&mut conn_b, "things").await);
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn_b)
        .await
        .unwrap();
    assert_eq!(database, b.name);
}

#[test]
fn eight_concurrent_fresh_databases_on_separate_runtimes_all_succeed() {
    // Each thread has a runtime of its own, as each `#[tokio::test]` does.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async {
                        let db = fresh_database().await.unwrap();
                        let mut conn = connect(&db.url).await;
                        sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
                        db.name
                    })
            })
        })
        .collect();

    let mut names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8);
}

#[tokio::test]
async fn private_cluster_comes_back_on_the_same_port_after_an_outage() {
    let cluster = PgCluster::start().unwrap();
    let db = cluster.fresh_database().await.unwrap();
    let port = cluster.port();
    let mut conn = connect(&db.url).await;
    sqlx::query("CREATE TABLE kept (id int)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    cluster.stop().unwrap();
    let during_outage = PgConnection::connect(&db.url).await;
    cluster.start_again().unwrap();
    let mut after = connect(&db.url).await;

    assert!(
        during_outage.is_err(),
        "connected while the server was stopped"
    );
    assert_eq!(cluster.port(), port);
    assert!(table_exists(&mut after, "kept").await);
}

#[tokio::test]
async fn dropping_a_cluster_stops_it_and_removes_its_dir() {
    let cluster = PgCluster::start().unwrap();
    let db = cluster.fresh_database().await.unwrap();
    let dir = cluster.dir().to_owned();
    assert!(dir.join("data").is_dir());

    drop(cluster);

    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(PgConnection::connect(&db.url).await.is_err());
}

#[tokio::test]
async fn a_promoted_synchronous_standby_has_every_commit_of_the_crashed_primary() {
    let pair = PgReplicated::start().await.unwrap();
    let db = pair.fresh_database().await.unwrap();
    let standby_url = pair.standby().url(&db.name);
    let refused_before = PgConnection::connect(&standby_url).await;
    let mut conn = connect(&db.url).await;
    sqlx::query("CREATE TABLE kept (id int PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .unwrap();
    // Each insert is a commit of its own, acknowledged only once the
    // standby flushed it.
    for id in 0..200 {
        sqlx::query("INSERT INTO kept VALUES ($1)")
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let primary_dir = pair.primary().dir().to_owned();

    pair.kill_primary().await.unwrap();
    let after_crash = sqlx::query("SELECT 1").execute(&mut conn).await;
    pair.promote_standby().unwrap();
    let mut promoted = connect(&standby_url).await;
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM kept")
        .fetch_one(&mut promoted)
        .await
        .unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut promoted)
        .await
        .unwrap();
    let written = sqlx::query("INSERT INTO kept VALUES (200)")
        .execute(&mut promoted)
        .await;
    drop(pair);

    let refusal = refused_before
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refusal.contains("not accepting connections") || refusal.contains("starting up"),
        "the standby accepted a client before its promotion: {refusal:?}"
    );
    assert!(after_crash.is_err(), "the crashed primary still answered");
    assert_eq!(kept, 200, "every acknowledged commit reached the standby");
    assert!(!in_recovery, "the promoted standby is still in recovery");
    assert!(
        written.is_ok(),
        "the promoted standby refused a write: {written:?}"
    );
    assert!(
        !primary_dir.exists(),
        "{} is still there",
        primary_dir.display()
    );
}
