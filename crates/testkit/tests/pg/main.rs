//! Tests of the throwaway PostgreSQL: shared fresh databases and private clusters.

use obleth_testkit::{fresh_database, PgCluster};
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
