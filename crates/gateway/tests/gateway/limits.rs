//! The proxy listener under a slowloris: a thousand connections that stall in
//! their headers neither stop a normal client nor stay open past the header
//! timeout. Also the settings' zero checks for the connection limits.

use std::time::{Duration, Instant};

use bytes::Bytes;
use obleth_testkit::http::{exchange, read_until_closed};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

const STALLED: usize = 1_000;

#[tokio::test]
async fn a_slowloris_of_a_thousand_connections_does_not_stop_a_normal_client() {
    // Client and server ends live in this process: two descriptors each.
    let needed = 2 * STALLED as u64 + 512;
    let limit = obleth_service::server::soft_fd_limit().unwrap_or(u64::MAX);
    assert!(
        limit >= needed,
        "this test needs an open-file limit of at least {needed} (ulimit -n), this process has {limit}"
    );
    let (key_config, key) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key_config]);
    settings.server.header_timeout_secs = 3;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let models =
        format!("GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\r\n");
    let mut keep_alive = TcpStream::connect(gw.proxy).await.unwrap();
    assert!(exchange(&mut keep_alive, &models)
        .await
        .starts_with("HTTP/1.1 200"));

    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut conn = TcpStream::connect(gw.proxy).await.unwrap();
        conn.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bea")
            .await
            .unwrap();
        stalled.push(conn);
    }
    let opened = Instant::now();

    // While they are open: an existing keep-alive connection and a new one
    // are both answered.
    let answer = exchange(&mut keep_alive, &models).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let chat = tokio::time::timeout(Duration::from_secs(10), chat(&gw, &key, "m"))
        .await
        .expect("a normal request is answered while the slowloris holds its connections");
    assert_eq!(chat.status, 200);
    assert!(
        opened.elapsed() < Duration::from_secs(3),
        "the checks above must run while the stalled connections are open; took {:?}",
        opened.elapsed()
    );

    // After the header timeout the server closes every stalled connection.
    let closes = stalled
        .iter_mut()
        .map(|conn| read_until_closed(conn, Duration::from_secs(60)));
    let closed = futures_util::future::join_all(closes).await;
    assert!(
        closed.iter().all(|(_, closed)| *closed),
        "every stalled connection is closed by the server after the header timeout"
    );
    assert!(opened.elapsed() >= Duration::from_millis(2_900));
    let timed_out = metric(
        &gw,
        "obleth_connections_timed_out_total",
        &[("listener", "proxy"), ("reason", "header")],
    )
    .await;
    assert!(timed_out >= STALLED as f64, "counted {timed_out}");
    assert_eq!(
        metric(&gw, "obleth_connections_refused_total", &[]).await,
        0.0
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_keep_alive_client_reconnects_after_a_refusal_of_an_unread_body() {
    let (key_config, key) = file_key(|_| {});
    let gw = TestGateway::start(embedded_settings(vec![key_config])).await;
    gw.wait_ready().await;
    // A raw client sees the header on a 401 whose body was never read.
    let mut conn = TcpStream::connect(gw.proxy).await.unwrap();
    let body = format!("{{\"model\":\"m\",\"pad\":\"{}\"}}", "x".repeat(64 * 1024));
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(&mut conn, &request).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    // A pooled client: the refused request and the next one both succeed.
    let client = client();
    for round in 0..3 {
        let refused = client
            .request(
                http::Request::post(gw.url("/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(Bytes::from(body.clone())))
                    .unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(refused.status(), 401);
        let next = client
            .request(
                http::Request::get(gw.url("/v1/models"))
                    .header("authorization", format!("Bearer {key}"))
                    .body(http_body_util::Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: the next request failed: {e}"));
        assert_eq!(next.status(), 200);
    }
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn both_listeners_give_an_http2_preface_no_http2_answer() {
    let gw = TestGateway::start(embedded_settings(Vec::new())).await;
    for addr in [gw.proxy, gw.ops] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        // The preface and an empty SETTINGS frame, as an h2c client sends them.
        conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let (seen, closed) = read_until_closed(&mut conn, Duration::from_secs(10)).await;
        assert!(closed, "{addr} closes the connection");
        // An HTTP/2 server would answer with its own SETTINGS frame.
        assert!(
            seen.is_empty() || seen.starts_with(b"HTTP/1.1 "),
            "{addr} answered {:?}",
            String::from_utf8_lossy(&seen)
        );
    }
    gw.stop().await.unwrap();
}

#[test]
fn zero_connection_limits_are_refused_naming_the_field() {
    type Zero = fn(&mut obleth_gateway::settings::ServerSettings);
    let cases: [(&str, Zero); 4] = [
        ("server.header_timeout_secs", |s| s.header_timeout_secs = 0),
        ("server.idle_timeout_secs", |s| s.idle_timeout_secs = 0),
        ("server.max_connections", |s| s.max_connections = 0),
        ("server.ops_max_connections", |s| s.ops_max_connections = 0),
    ];
    for (field, zero) in cases {
        let mut s = embedded_settings(Vec::new());
        s.validate().unwrap();
        zero(&mut s.server);
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, field, "{e}");
    }
}

#[test]
fn more_proxy_workers_than_the_cap_are_refused_naming_the_field() {
    let mut s = embedded_settings(Vec::new());
    s.server.workers = Some(obleth_service::server::MAX_WORKERS);
    s.validate().unwrap();
    assert_eq!(s.server.proxy_workers(), 64);
    s.server.workers = Some(0);
    s.validate().unwrap();
    assert_eq!(s.server.proxy_workers(), 0, "0: the shared runtime");
    s.server.workers = None;
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(s.server.proxy_workers(), cpus.min(64), "default: the CPUs");
    s.server.workers = Some(65);
    let e = s.validate().unwrap_err();
    assert_eq!(e.field, "server.workers", "{e}");
    assert!(e.to_string().contains("at most 64"), "{e}");
}
