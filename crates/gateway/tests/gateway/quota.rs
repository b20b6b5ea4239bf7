//! Limits and budgets shared by gateways on one database: two in-process
//! gateways, one PostgreSQL. The bound under test is the one
//! docs/gateway.md states: admitted ≤ limit + live gateways × overdraft.

use std::time::Duration;

use chrono::{Timelike, Utc};
use obleth_config::db::changes::record_change;
use obleth_config::model::{Entity, Op};
use obleth_gateway::quota::REQUEST_OVERDRAFT;
use obleth_testkit::{fresh_database, PgCluster};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::*;

/// A burst that straddled two clock minutes would be judged against two
/// windows; waiting for a fresh minute when fewer than `need` seconds are
/// left keeps each burst in one. It aligns with the wall clock, which is
/// what the limit counts by, so no poll could replace it.
async fn within_one_minute(need: u32) {
    let second = Utc::now().second();
    if second + need >= 60 {
        tokio::time::sleep(Duration::from_secs(u64::from(61 - second))).await;
    }
}

/// Sends `n` chat requests, `concurrency` at a time, each to
/// `targets[i % len]` with `keys[i % len]`; answers the statuses and the
/// 429s' headers.
async fn burst(
    targets: &[&TestGateway],
    keys: &[&str],
    n: usize,
    concurrency: usize,
) -> Vec<Answer> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let urls: Vec<String> = targets
        .iter()
        .map(|gw| gw.url("/v1/chat/completions"))
        .collect();
    let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    for _ in 0..concurrency {
        let (next, urls, keys) = (next.clone(), urls.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return answers;
                }
                let auth = format!("Bearer {}", keys[i % keys.len()]);
                answers.push(
                    request(
                        http::Method::POST,
                        &urls[i % urls.len()],
                        &[
                            ("authorization", auth.as_str()),
                            ("content-type", "application/json"),
                        ],
                        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                    )
                    .await,
                );
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn admitted(answers: &[Answer]) -> usize {
    for a in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(a.status, 429, "{}", String::from_utf8_lossy(&a.body));
        assert!(a.header("retry-after").is_some(), "429 without retry-after");
    }
    answers.iter().filter(|a| a.status == 200).count()
}

async fn two_gateways(pool: &PgPool, url: &str) -> (TestGateway, TestGateway) {
    let settings = database_settings(url, pool).await;
    let a = TestGateway::start(settings.clone()).await;
    let b = TestGateway::start(settings).await;
    a.wait_ready().await;
    b.wait_ready().await;
    // Both gateways count both as live once their heartbeats are in.
    wait_until(Duration::from_secs(10), "two live gateways", || async {
        get_json(&a.ops_url("/api/v1/health")).await.1["checks"]["limits"]["live_gateways"] == 2
            && get_json(&b.ops_url("/api/v1/health")).await.1["checks"]["limits"]["live_gateways"]
                == 2
    })
    .await;
    (a, b)
}

const BOUND_TWO: usize = 2 * REQUEST_OVERDRAFT as usize;

#[tokio::test]
async fn an_rpm_limit_holds_across_two_gateways_and_one_gateway_gets_all_of_it() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let (_, spread) = db_key(&pool, |k| k.rpm_limit = Some(30)).await;
    let (_, single) = db_key(&pool, |k| k.rpm_limit = Some(30)).await;
    let (a, b) = two_gateways(&pool, &db.url).await;

    within_one_minute(20).await;
    let answers = burst(&[&a, &b], &[&spread], 90, 6).await;
    let n = admitted(&answers);
    assert!(
        (30..=30 + BOUND_TWO).contains(&n),
        "spread over two: {n} admitted"
    );
    let refused = answers.iter().find(|a| a.status == 429).unwrap();
    for h in [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ] {
        assert!(refused.header(h).is_some(), "429 without {h}");
    }
    assert_eq!(refused.error_code(), "rate_limit_exceeded");

    within_one_minute(20).await;
    let n = admitted(&burst(&[&a], &[&single], 90, 6).await);
    assert!(
        (28..=30 + BOUND_TWO).contains(&n),
        "all on one of two gateways: {n} admitted"
    );
    let used: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(used), 0)::bigint FROM quota_counters WHERE dimension = 'requests'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(used > 0, "the fleet's counters live in the database");
    assert!(metric(&a, "obleth_quota_lease_calls_total", &[("outcome", "ok")]).await >= 1.0);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Writes a team and puts `keys` in it, each write with its change-log
/// entry, as the admin API writes them.
async fn team_with(pool: &PgPool, rpm: i32, keys: &[Uuid]) -> Uuid {
    let team = Uuid::new_v4();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO teams (id, name, rpm_limit) VALUES ($1, $2, $3)")
        .bind(team)
        .bind(format!("team-{team}"))
        .bind(rpm)
        .execute(&mut *tx)
        .await
        .unwrap();
    record_change(
        &mut tx,
        Entity::Setting,
        &obleth_config::db::teams::change_id(team),
        Op::Insert,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    for key in keys {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("UPDATE api_keys SET team_id = $1 WHERE id = $2")
            .bind(team)
            .bind(key)
            .execute(&mut *tx)
            .await
            .unwrap();
        record_change(&mut tx, Entity::ApiKey, &key.to_string(), Op::Update)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    team
}

#[tokio::test]
async fn a_team_rpm_limit_is_shared_by_its_keys_on_both_gateways() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let (k1, s1) = db_key(&pool, |_| {}).await;
    let (k2, s2) = db_key(&pool, |_| {}).await;
    team_with(&pool, 20, &[k1.id, k2.id]).await;
    let (a, b) = two_gateways(&pool, &db.url).await;

    within_one_minute(20).await;
    let answers = burst(&[&a, &b, &b, &a], &[&s1, &s2], 80, 6).await;
    let n = admitted(&answers);
    assert!(
        (20..=20 + BOUND_TWO).contains(&n),
        "team of two keys: {n} admitted"
    );
    let refused = answers.iter().find(|a| a.status == 429).unwrap();
    assert!(
        refused.text().contains("team"),
        "the refusal names the team: {}",
        refused.text()
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_team_made_after_start_reaches_a_running_gateway_through_the_feed() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let gw = TestGateway::start(database_settings(&db.url, &pool).await).await;
    gw.wait_ready().await;
    let (key, secret) = db_key(&pool, |_| {}).await;
    wait_until(
        Duration::from_secs(10),
        "the new key at the gateway",
        || async { chat(&gw, &secret, "m").await.status == 200 },
    )
    .await;
    let team = team_with(&pool, 1, &[key.id]).await;
    // With a team limit of one request a minute, the feed has delivered the
    // team and the key's membership once a request is refused naming it.
    wait_until(Duration::from_secs(10), "a refusal by the team", || async {
        let answer = chat(&gw, &secret, "m").await;
        answer.status == 429 && answer.text().contains("team")
    })
    .await;
    // Lifting the team's limit reaches the gateway the same way.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE teams SET rpm_limit = NULL WHERE id = $1")
        .bind(team)
        .execute(&mut *tx)
        .await
        .unwrap();
    record_change(
        &mut tx,
        Entity::Setting,
        &obleth_config::db::teams::change_id(team),
        Op::Update,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    wait_until(Duration::from_secs(10), "the lifted limit", || async {
        chat(&gw, &secret, "m").await.status == 200
    })
    .await;
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn with_the_database_down_each_gateway_admits_its_share_and_health_says_why() {
    let cluster = PgCluster::start().unwrap();
    let db = cluster.fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let (_, secret) = db_key(&pool, |k| k.rpm_limit = Some(20)).await;
    let mut settings = database_settings(&db.url, &pool).await;
    settings.database.acquire_timeout_ms = 500;
    let a = TestGateway::start(settings.clone()).await;
    let b = TestGateway::start(settings).await;
    a.wait_ready().await;
    b.wait_ready().await;
    wait_until(Duration::from_secs(10), "two live gateways", || async {
        get_json(&a.ops_url("/api/v1/health")).await.1["checks"]["limits"]["live_gateways"] == 2
    })
    .await;
    pool.close().await;
    cluster.stop().unwrap();
    wait_until(Duration::from_secs(20), "limits to fall back", || async {
        let health = get_json(&a.ops_url("/api/v1/health")).await.1;
        health["status"] == "degraded" && health["checks"]["limits"]["status"] == "fallback"
    })
    .await;
    let health = get_json(&a.ops_url("/api/v1/health")).await.1;
    let detail = health["checks"]["limits"]["detail"].as_str().unwrap();
    assert!(detail.contains("2 live gateways"), "{detail}");
    assert_eq!(metric(&a, "obleth_quota_fallback", &[]).await, 1.0);

    within_one_minute(15).await;
    let n = admitted(&burst(&[&a], &[&secret], 40, 4).await);
    assert_eq!(n, 10, "the share of one of two gateways: 20 / 2");

    cluster.start_again().unwrap();
    wait_until(Duration::from_secs(30), "limits shared again", || async {
        let health = get_json(&a.ops_url("/api/v1/health")).await.1;
        health["checks"]["limits"]["status"] == "shared"
    })
    .await;
    assert_eq!(metric(&a, "obleth_quota_fallback", &[]).await, 0.0);
    // What was admitted while the database was away is charged to the
    // fleet's counter once it is back.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    wait_until(Duration::from_secs(10), "the outage's admissions charged", || async {
        let used: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(used), 0)::bigint FROM quota_counters WHERE dimension = 'requests'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        used >= 10
    })
    .await;
    assert!(metric(&a, "obleth_quota_lease_calls_total", &[("outcome", "ok")]).await >= 1.0);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
