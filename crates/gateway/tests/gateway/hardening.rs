//! The request path under abuse: a spray of unknown keys, random model names,
//! bodies that are not objects, oversized upstream answers, unreachable
//! upstreams, and the checks every proxy route shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use obleth_testkit::metrics::{series, value};
use obleth_testkit::{fresh_database, MockConfig, MockUpstream, PgCluster};
use secrecy::ExposeSecret;
use sqlx::PgPool;

use crate::support::*;

/// One keep-alive request on a shared client: the status.
async fn status_of(c: &HttpClient, url: &str, key: &str, body: &'static str) -> u16 {
    let request = http::Request::post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = c.request(request).await.unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

/// Sends `total` requests with fresh random well-formed keys from `tasks`
/// tasks; answers the statuses seen, counted.
async fn spray(gw: &TestGateway, total: u64, tasks: u64, sent: Arc<AtomicU64>) -> Vec<(u16, u64)> {
    let url = gw.url("/v1/chat/completions");
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (url, sent) = (url.clone(), Arc::clone(&sent));
        handles.push(tokio::spawn(async move {
            let c = client();
            let mut seen = std::collections::BTreeMap::<u16, u64>::new();
            while sent.fetch_add(1, Ordering::SeqCst) < total {
                let key = obleth_config::apikey::generate();
                let status = status_of(
                    &c,
                    &url,
                    key.secret.expose_secret(),
                    r#"{"model":"m","messages":[]}"#,
                )
                .await;
                *seen.entry(status).or_default() += 1;
            }
            seen
        }));
    }
    let mut all = std::collections::BTreeMap::<u16, u64>::new();
    for h in handles {
        for (status, n) in h.await.unwrap() {
            *all.entry(status).or_default() += n;
        }
    }
    all.into_iter().collect()
}

/// Index and sequential scans of `api_keys`, once every other client session
/// of the database has ended (a session reports its statistics when it exits).
/// One connection, not a pool: a pool's other connections would be "others".
async fn api_keys_scans(url: &str) -> i64 {
    use sqlx::Connection;
    let conn = tokio::sync::Mutex::new(sqlx::PgConnection::connect(url).await.unwrap());
    let others = "FROM pg_stat_activity WHERE datname = current_database() \
                  AND pid <> pg_backend_pid() AND backend_type = 'client backend'";
    wait_until(Duration::from_secs(30), "other sessions to end", || async {
        let mut conn = conn.lock().await;
        sqlx::query(&format!("SELECT pg_terminate_backend(pid) {others}"))
            .execute(&mut *conn)
            .await
            .unwrap();
        let left: Vec<(Option<String>, Option<String>)> =
            sqlx::query_as(&format!("SELECT application_name, state {others}"))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        if !left.is_empty() {
            eprintln!("sessions left: {left:?}");
        }
        left.is_empty()
    })
    .await;
    let scans: i64 = sqlx::query_scalar(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'api_keys'",
    )
    .fetch_one(&mut *conn.lock().await)
    .await
    .unwrap();
    let _ = conn.into_inner().close().await;
    scans
}

#[tokio::test]
async fn a_spray_of_50000_unknown_keys_with_the_feed_live_makes_no_key_queries() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let (_, served) = db_key(&pool, |_| {}).await;
    let (doomed, revoked) = db_key(&pool, |_| {}).await;
    let settings = database_settings(&db.url, &pool).await;
    pool.close().await;
    let scans_before = api_keys_scans(&db.url).await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    assert_eq!(chat(&gw, &served, "m").await.status, 200);

    let total = 50_000;
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A valid key keeps being served throughout.
    let valid = {
        let (url, done, key) = (
            gw.url("/v1/chat/completions"),
            Arc::clone(&done),
            served.clone(),
        );
        tokio::spawn(async move {
            let c = client();
            let mut statuses = Vec::new();
            while !done.load(Ordering::SeqCst) {
                statuses.push(status_of(&c, &url, &key, r#"{"model":"m","messages":[]}"#).await);
            }
            statuses
        })
    };
    // A revocation made during the spray takes effect.
    let revocation = {
        let (url, sent, pool) = (
            gw.url("/v1/chat/completions"),
            Arc::clone(&sent),
            pool.clone(),
        );
        tokio::spawn(async move {
            while sent.load(Ordering::SeqCst) < total / 5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            obleth_config::db::keys::revoke_key(&pool, doomed.id)
                .await
                .unwrap()
                .unwrap();
            let c = client();
            let started = Instant::now();
            loop {
                let status = status_of(&c, &url, &revoked, r#"{"model":"m","messages":[]}"#).await;
                if status == 403 {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the revocation never took effect (last status {status})"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let statuses = spray(&gw, total, 16, Arc::clone(&sent)).await;
    let took = started.elapsed();
    let revoked_after = revocation.await.unwrap();
    done.store(true, Ordering::SeqCst);
    let valid = valid.await.unwrap();
    let lookups = metric(&gw, "obleth_key_db_lookups_total", &[]).await + 0.0;
    gw.stop().await.unwrap();
    pool.close().await;
    let scans = api_keys_scans(&db.url).await - scans_before;
    eprintln!(
        "spray: {total} unknown keys in {took:?}, statuses {statuses:?}; key lookups (metric) {lookups}; \
         api_keys scans {scans}; valid key served {} times; revocation took effect after {revoked_after:?}",
        valid.len()
    );
    assert_eq!(statuses, vec![(401, total)]);
    assert!(lookups <= 5.0, "{lookups} key lookups");
    // The warm-up, the revocation and the feed's re-read of the revoked key
    // scan `api_keys` a few times; one scan per unknown key would be 50,000.
    assert!(scans <= 20, "{scans} scans of api_keys");
    assert!(
        !valid.is_empty() && valid.iter().all(|s| *s == 200),
        "{valid:?}"
    );
}

/// The gateway reports ready before the feed's first catch-up has run; here
/// that catch-up is held back (a lock on the change log, taken after the
/// warm-up read it), and a spray sent meanwhile must still find the store
/// complete: every unknown key refused without a query, none answered 503.
#[tokio::test]
async fn a_spray_the_moment_the_gateway_is_ready_makes_no_key_queries() {
    use sqlx::Connection;
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let settings = database_settings(&db.url, &pool).await;
    // The warm-up reads the change log first and the teams last: holding
    // the teams keeps it from finishing until the change log is held.
    let mut teams = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE teams IN ACCESS EXCLUSIVE MODE")
        .execute(&mut teams)
        .await
        .unwrap();
    let gw = TestGateway::start(settings).await;
    wait_until(
        Duration::from_secs(30),
        "the warm-up to wait for the teams",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE relation = 'teams'::regclass AND NOT granted",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            waiting > 0
        },
    )
    .await;
    let mut changes = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE changes IN ACCESS EXCLUSIVE MODE")
        .execute(&mut changes)
        .await
        .unwrap();
    sqlx::query("COMMIT").execute(&mut teams).await.unwrap();
    gw.wait_ready().await;
    wait_until(
        Duration::from_secs(30),
        "the feed's first catch-up to wait for the change log",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE relation = 'changes'::regclass AND NOT granted",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            waiting > 0
        },
    )
    .await;

    // Well within the feed's catch-up timeout (5 s), past which it would
    // count the database as unreachable.
    let statuses = spray(&gw, 64, 16, Arc::new(AtomicU64::new(0))).await;
    let lookups = metric(&gw, "obleth_key_db_lookups_total", &[]).await + 0.0;
    sqlx::query("COMMIT").execute(&mut changes).await.unwrap();
    gw.stop().await.unwrap();
    eprintln!("spray at ready: statuses {statuses:?}, key lookups {lookups}");
    assert_eq!(statuses, vec![(401, 64)]);
    assert_eq!(lookups, 0.0);
}

#[tokio::test]
async fn with_the_feed_down_a_spray_makes_at_most_the_allowed_rate_of_lookups() {
    let cluster = PgCluster::start().unwrap();
    let db = cluster.fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let (_, served) = db_key(&pool, |_| {}).await;
    let mut settings = database_settings(&db.url, &pool).await;
    settings.database.acquire_timeout_ms = 500;
    let rate = 5;
    settings.cache.miss_lookups_per_sec = rate;
    pool.close().await;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    cluster.stop().unwrap();
    wait_until(Duration::from_secs(20), "the feed to go down", || async {
        get_json(&gw.ops_url("/api/v1/health")).await.1["checks"]["database"]["status"] == "down"
    })
    .await;

    let started = Instant::now();
    let statuses = spray(&gw, 3_000, 16, Arc::new(AtomicU64::new(0))).await;
    let took = started.elapsed();
    let lookups = metric(&gw, "obleth_key_db_lookups_total", &[]).await + 0.0;
    let served_status = chat(&gw, &served, "m").await.status;
    eprintln!(
        "spray with the feed down: 3000 unknown keys in {took:?}, statuses {statuses:?}, \
         key lookups {lookups} (allowed {rate}/s), known key answered {served_status}"
    );
    let allowed = f64::from(rate) * (1.0 + took.as_secs_f64()) + 1.0;
    assert!(lookups <= allowed, "{lookups} lookups, allowed {allowed}");
    assert!(statuses.iter().all(|(s, _)| *s == 503), "{statuses:?}");
    assert_eq!(served_status, 200, "a known key is served from memory");
    cluster.start_again().unwrap();
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn ten_thousand_random_model_names_add_no_metric_series() {
    let (key, secret) = file_key(|_| {});
    let gw = TestGateway::start(embedded_settings(vec![key])).await;
    gw.wait_ready().await;
    let scrape = || async {
        let text = request(http::Method::GET, &gw.ops_url("/metrics"), &[], "")
            .await
            .text();
        (series(&text, "obleth_requests_total"), text.len())
    };
    let send_random = |n: usize| {
        let (url, secret) = (gw.url("/v1/chat/completions"), secret.clone());
        async move {
            let c = client();
            let mut statuses = std::collections::BTreeSet::new();
            for _ in 0..n {
                let model = uuid::Uuid::new_v4().to_string();
                let request = http::Request::post(&url)
                    .header("authorization", format!("Bearer {secret}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(
                        r#"{{"model":"{model}","messages":[]}}"#
                    ))))
                    .unwrap();
                let response = c.request(request).await.unwrap();
                statuses.insert(response.status().as_u16());
                let _ = response.into_body().collect().await;
            }
            statuses
        }
    };
    send_random(10).await;
    assert_eq!(chat(&gw, &secret, "m").await.status, 200);
    let (series_before, size_before) = scrape().await;

    let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(send_random(1_250))).collect();
    let mut statuses = std::collections::BTreeSet::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    let (series_after, size_after) = scrape().await;
    eprintln!(
        "random models: statuses {statuses:?}; obleth_requests_total series {series_before} -> {series_after}; \
         /metrics {size_before} -> {size_after} bytes"
    );
    assert_eq!(statuses, [404].into());
    assert_eq!(series_after, series_before);
    assert!(
        size_after < size_before + 512,
        "{size_before} -> {size_after}"
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_that_is_not_an_object_is_refused_before_anything_is_recorded() {
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    let (gw, secret) = gateway_over(&upstream).await;
    for body in [r#"["m"]"#, r#"["m", true]"#, r#""m""#] {
        let answer = request(
            http::Method::POST,
            &gw.url("/v1/chat/completions"),
            &[
                ("authorization", &format!("Bearer {secret}")),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (400, "invalid_request"),
            "{body}"
        );
        assert_eq!(
            answer.json()["error"]["message"],
            "request body must be a JSON object",
            "{body}"
        );
    }
    assert_eq!(upstream.requests(), 0, "nothing forwarded upstream");
    assert_eq!(
        metric(&gw, "obleth_requests_total", &[]).await,
        3.0,
        "each counted once"
    );
    // Embedded mode counts every usage record it is given as dropped: none was made.
    assert_eq!(metric(&gw, "obleth_usage_dropped_total", &[]).await, 0.0);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_non_streamed_answer_past_max_response_bytes_is_refused_with_502() {
    let big = MockUpstream::start(MockConfig {
        completion_tokens: 5_000,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let small = MockUpstream::start(MockConfig::default()).await.unwrap();
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    settings.server.max_response_bytes = 4_096;
    settings.providers = vec![
        openai_provider("big", &big.base_url()),
        openai_provider("small", &small.base_url()),
    ];
    settings.routes = vec![route("big", &["big"]), route("small", &["small"])];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;

    let answer = chat(&gw, &secret, "big").await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (502, "upstream_response_too_large"),
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(big.requests(), 1);
    assert_eq!(
        chat(&gw, &secret, "small").await.status,
        200,
        "small answers pass"
    );
    let text = request(http::Method::GET, &gw.ops_url("/metrics"), &[], "")
        .await
        .text();
    assert_eq!(
        value(
            &text,
            "obleth_rejected_requests_total",
            &[("code", "upstream_response_too_large")]
        ),
        Some(1.0),
        "counted"
    );
    assert_eq!(
        value(
            &text,
            "obleth_upstream_attempts_total",
            &[("outcome", "too_large"), ("provider", "big")]
        ),
        Some(1.0)
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_closed_port_and_an_unresolvable_host_give_identical_502_bodies() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    settings.providers = vec![
        openai_provider("closed-port", &format!("http://{closed}/v1")),
        openai_provider("no-such-host", "http://no-such-host.invalid/v1"),
    ];
    settings.routes = vec![route("a", &["closed-port"]), route("b", &["no-such-host"])];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let a = chat(&gw, &secret, "a").await;
    let b = chat(&gw, &secret, "b").await;
    let body = String::from_utf8_lossy(&a.body).into_owned();
    eprintln!("unreachable upstream: {} {body}", a.status);
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (502, "upstream_failed")
    );
    assert_eq!(b.status, a.status);
    assert_eq!(a.body, b.body, "the same body whatever the network said");
    for detail in [
        "refused",
        "dns",
        "closed-port",
        "no-such-host",
        "127.0.0.1",
        "resolve",
    ] {
        assert!(!body.to_lowercase().contains(detail), "{detail} in {body}");
    }
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn models_goes_through_the_same_maintenance_check_as_completions() {
    use obleth_config::db::settings::{set_maintenance, Maintenance};
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let (_, secret) = db_key(&pool, |_| {}).await;
    let gw = TestGateway::start(database_settings(&db.url, &pool).await).await;
    gw.wait_ready().await;
    let models = || async {
        request(
            http::Method::GET,
            &gw.url("/v1/models"),
            &[("authorization", &format!("Bearer {secret}"))],
            Bytes::new(),
        )
        .await
    };
    assert_eq!(models().await.status, 200);
    set_maintenance(
        &pool,
        &Maintenance {
            enabled: true,
            message: "upgrading".to_owned(),
            retry_after_secs: 7,
        },
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(10), "maintenance on", || async {
        chat(&gw, &secret, "m").await.status == 503
    })
    .await;
    let answer = models().await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (503, "maintenance")
    );
    assert_eq!(answer.header("retry-after"), Some("7"));
    set_maintenance(&pool, &Maintenance::default())
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "maintenance off", || async {
        models().await.status == 200
    })
    .await;
    gw.stop().await.unwrap();
}
