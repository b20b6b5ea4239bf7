//! scratch
use obleth_testkit::pgbouncer::{PgBouncer, PoolMode};
use obleth_testkit::PgCluster;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;

#[tokio::test]
async fn scratch() {
    let pg = PgCluster::start().unwrap();
    let db = pg.fresh_database().await.unwrap();
    let b = PgBouncer::start(pg.port(), PoolMode::Transaction, 2)
        .await
        .unwrap();
    for cache in [100usize, 0] {
        let opts = PgConnectOptions::from_str(&b.url(&db.name))
            .unwrap()
            .statement_cache_capacity(cache);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect_with(opts)
            .await
            .unwrap();
        let mut tasks = vec![];
        for i in 0..200i32 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let r: Result<i32, _> = if i % 2 == 0 {
                    sqlx::query_scalar("SELECT $1::int + 1")
                        .bind(i)
                        .fetch_one(&pool)
                        .await
                } else {
                    sqlx::query_scalar("SELECT length($1::text)")
                        .bind("abc")
                        .fetch_one(&pool)
                        .await
                };
                r.map_err(|e| e.to_string())
            }));
        }
        let mut errs = std::collections::BTreeMap::<String, u32>::new();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => *errs.entry(e).or_default() += 1,
            }
        }
        eprintln!("cache={cache} ok={ok} errs={errs:?}");
        // pid stability
        let mut conn = pool.acquire().await.unwrap();
        let a: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        eprintln!("pid {a}");
    }
    // LISTEN over bouncer
    let mut l = sqlx::postgres::PgListener::connect(&b.url(&db.name))
        .await
        .unwrap();
    l.listen("x").await.unwrap();
    sqlx::query("SELECT pg_notify('x','hi')")
        .execute(&sqlx::PgPool::connect(&b.url(&db.name)).await.unwrap())
        .await
        .unwrap();
    let r = tokio::time::timeout(std::time::Duration::from_secs(3), l.recv()).await;
    eprintln!("listen: {r:?}");
    eprintln!("{}", b.log());
}
