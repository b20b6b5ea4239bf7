//! The change log's pruning (a prefix of old rows, in bounded batches, the
//! newest row always kept) and the bounds a gateway's feed checks.

use chrono::{Duration, Utc};
use obleth_config::db::changes;
use obleth_config::model::{Entity, Op};
use sqlx::PgPool;

use super::migrated;

/// Records a setting change in its own transaction; answers its seq.
async fn change(pool: &PgPool, id: &str) -> i64 {
    let mut tx = pool.begin().await.unwrap();
    let seq = changes::record_change(&mut tx, Entity::Setting, id, Op::Update)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    seq
}

/// Dates the changes with seq in `seqs` `days` days back.
async fn age(pool: &PgPool, seqs: &[i64], days: i64) {
    sqlx::query(
        "UPDATE changes SET changed_at = now() - make_interval(days => $2) WHERE seq = ANY($1)",
    )
    .bind(seqs)
    .bind(i32::try_from(days).unwrap())
    .execute(pool)
    .await
    .unwrap();
}

async fn seqs(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM changes ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Records how many rows each DELETE statement on `changes` removed, in
/// `deletes`, through a statement-level trigger of this test's database.
async fn count_delete_statements(pool: &PgPool) {
    for statement in [
        "CREATE TABLE deletes (n bigint NOT NULL, at serial)",
        "CREATE FUNCTION count_deletes() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN INSERT INTO deletes (n) SELECT count(*) FROM gone; RETURN NULL; END $$",
        "CREATE TRIGGER count_deletes AFTER DELETE ON changes \
         REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION count_deletes()",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
}

async fn delete_statements(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT n FROM deletes ORDER BY at")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn pruning_deletes_only_rows_older_than_the_cutoff_in_bounded_batches() {
    let (_db, pool) = migrated().await;
    count_delete_statements(&pool).await;
    let mut all = Vec::new();
    for i in 0..10 {
        all.push(change(&pool, &format!("s{i}")).await);
    }
    age(&pool, &all[..7], 8).await;
    let cutoff = Utc::now() - Duration::days(7);

    let deleted = changes::prune_changes(&pool, cutoff, 3).await.unwrap();

    assert_eq!(deleted, 7);
    assert_eq!(
        seqs(&pool).await,
        all[7..].to_vec(),
        "only the old rows went"
    );
    assert_eq!(
        delete_statements(&pool).await,
        vec![3, 3, 1],
        "one bounded statement a batch, stopping at the short one"
    );
    assert_eq!(changes::prune_changes(&pool, cutoff, 3).await.unwrap(), 0);
}

#[tokio::test]
async fn pruning_keeps_the_newest_row_and_never_leaves_a_hole() {
    let (_db, pool) = migrated().await;
    assert_eq!(
        changes::prune_changes(&pool, Utc::now(), 100)
            .await
            .unwrap(),
        0,
        "an empty log"
    );
    let mut all = Vec::new();
    for i in 0..6 {
        all.push(change(&pool, &format!("s{i}")).await);
    }
    // Row 3 is recent, the rows around it old (a transaction that began
    // long before it committed): only the prefix below it may go, or a
    // gateway could not tell from the lowest seq that it missed row 4.
    let old: Vec<i64> = all.iter().copied().filter(|&s| s != all[3]).collect();
    age(&pool, &old, 30).await;
    let cutoff = Utc::now() - Duration::days(7);

    assert_eq!(changes::prune_changes(&pool, cutoff, 100).await.unwrap(), 3);
    assert_eq!(seqs(&pool).await, all[3..].to_vec());

    // Everything old: all but the newest row go, so the lowest seq still
    // says where history starts.
    age(&pool, &all, 30).await;
    assert_eq!(changes::prune_changes(&pool, cutoff, 100).await.unwrap(), 2);
    assert_eq!(seqs(&pool).await, vec![all[5]]);
    let bounds = changes::log_bounds(&pool, all[2]).await.unwrap();
    assert_eq!((bounds.oldest, bounds.newest), (Some(all[5]), Some(all[5])));
    assert_eq!(bounds.at_seq, None, "a pruned row");
}

#[tokio::test]
async fn two_pruners_at_once_delete_each_row_once_and_keep_the_newest() {
    let (_db, pool) = migrated().await;
    let mut all = Vec::new();
    for i in 0..40 {
        all.push(change(&pool, &format!("s{i}")).await);
    }
    age(&pool, &all, 30).await;
    let cutoff = Utc::now() - Duration::days(7);

    let (a, b) = tokio::join!(
        changes::prune_changes(&pool, cutoff, 4),
        changes::prune_changes(&pool, cutoff, 4)
    );

    assert_eq!(a.unwrap() + b.unwrap(), 39);
    assert_eq!(seqs(&pool).await, vec![all[39]]);
}

#[tokio::test]
async fn log_bounds_name_the_server_the_ends_of_the_log_and_a_changes_time() {
    let (_db, pool) = migrated().await;
    let started: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT pg_postmaster_start_time()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let empty = changes::log_bounds(&pool, 0).await.unwrap();
    assert_eq!(
        empty,
        changes::LogBounds {
            server_started: started,
            oldest: None,
            newest: None,
            newest_at: None,
            at_seq: None,
        }
    );

    let first = change(&pool, "a").await;
    let second = change(&pool, "b").await;
    let times: Vec<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT changed_at FROM changes ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();

    let bounds = changes::log_bounds(&pool, first).await.unwrap();
    assert_eq!(bounds.server_started, started);
    assert_eq!((bounds.oldest, bounds.newest), (Some(first), Some(second)));
    assert_eq!(bounds.newest_at, Some(times[1]));
    assert_eq!(bounds.at_seq, Some(times[0]));
    assert_eq!(
        changes::log_bounds(&pool, second + 1).await.unwrap().at_seq,
        None
    );
}
