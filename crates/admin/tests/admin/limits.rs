//! The admin's listener has the same limits as the gateway's: a header
//! timeout, a connection cap counted in its metrics, and `Connection: close`
//! when its token check refuses a request before reading the body.

use std::time::{Duration, Instant};

use obleth_testkit::http::{exchange, read_until_closed};
use obleth_testkit::metrics::value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn the_admin_closes_a_connection_stuck_in_its_headers() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let mut settings = admin_settings(&db.url);
    settings.server.header_timeout_secs = 1;
    let admin = TestAdmin::start(settings).await;
    admin.wait_ready().await;
    let mut stalled = TcpStream::connect(admin.addr).await.unwrap();
    stalled
        .write_all(b"GET /api/v1/keys HTTP/1.1\r\nhost: x\r\nauthori")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stalled, Duration::from_secs(30)).await;
    assert!(
        closed,
        "the admin must close a connection stuck in its headers"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    let metrics = admin.metrics().await;
    assert_eq!(
        value(
            &metrics,
            "obleth_connections_timed_out_total",
            &[("listener", "admin"), ("reason", "header")]
        ),
        Some(1.0),
        "{metrics}"
    );
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn the_admin_refuses_connections_over_its_cap_and_counts_them() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let mut settings = admin_settings(&db.url);
    settings.server.max_connections = 3;
    let admin = TestAdmin::start(settings).await;
    admin.wait_ready().await;
    // The probes of `wait_ready` may still be closing; fill the cap as they go.
    let mut open = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while open.len() < 3 {
        assert!(Instant::now() < deadline, "cannot open 3 connections");
        let mut conn = TcpStream::connect(admin.addr).await.unwrap();
        let answer = exchange(&mut conn, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
        if answer.starts_with("HTTP/1.1 200") {
            open.push(conn);
        } else {
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut excess = TcpStream::connect(admin.addr).await.unwrap();
    let (seen, closed) = read_until_closed(&mut excess, Duration::from_secs(10)).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(closed && seen.starts_with("HTTP/1.1 503"), "{seen}");
    // The open connections keep working; one of them reads the metrics.
    let metrics = exchange(&mut open[0], "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let refused = value(
        &metrics,
        "obleth_connections_refused_total",
        &[("listener", "admin")],
    )
    .unwrap_or_else(|| panic!("no refused count: {metrics}"));
    assert!(refused >= 1.0, "{metrics}");
    assert_eq!(
        value(
            &metrics,
            "obleth_open_connections",
            &[("listener", "admin")]
        ),
        Some(3.0),
        "{metrics}"
    );
    drop(open);
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_token_with_an_unread_body_says_connection_close() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let mut conn = TcpStream::connect(admin.addr).await.unwrap();
    let body = format!("{{\"name\":\"{}\"}}", "x".repeat(32 * 1024));
    let request = format!(
        "POST /api/v1/keys HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(&mut conn, &request).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_slower_than_the_body_timeout_gets_408_body_timeout() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let mut settings = admin_settings(&db.url);
    settings.server.body_timeout_secs = 1;
    let admin = TestAdmin::start(settings).await;
    admin.wait_ready().await;
    let mut conn = TcpStream::connect(admin.addr).await.unwrap();
    // A valid token and a body that stops half way.
    let request = format!(
        "POST /api/v1/keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let (seen, _) = read_until_closed(&mut conn, Duration::from_secs(30)).await;
    let answer = String::from_utf8_lossy(&seen);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    admin.stop().await.unwrap();
}
