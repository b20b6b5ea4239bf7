//! The hardened listener over real TCP on loopback: header and idle
//! timeouts, the connection cap and its metric, HTTP/2 refused,
//! `Connection: close` on early refusals, `ConnectInfo`, and the graceful stop,
//! on the calling runtime and sharded over worker threads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::Full;
use obleth_service::metrics::ConnectionMetrics;
use obleth_service::server::serve_sharded;
use obleth_service::{ConnectionLimits, Listener, ServerHandle};
use obleth_testkit::http::{client, read_response, read_until_closed, request};
use obleth_testkit::poll::wait_until;
use prometheus::Registry;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A server on loopback with a few routes, and its metrics.
struct TestServer {
    addr: SocketAddr,
    registry: Registry,
    handle: ServerHandle,
    /// Notified when `/slow` has begun.
    slow_started: Arc<Notify>,
}

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        max_connections: 100,
        body_timeout: Some(Duration::from_secs(1)),
    }
}

async fn start(limits: ConnectionLimits) -> TestServer {
    start_with(limits, 0).await
}

/// [`start`] with `workers` threads of its own (0: on the test's runtime).
async fn start_with(limits: ConnectionLimits, workers: usize) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Registry::new();
    let metrics = ConnectionMetrics::register(&registry);
    let slow_started = Arc::new(Notify::new());
    let started = slow_started.clone();
    let router = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        // Refuses before reading the body, as auth does.
        .route("/refuse", post(|| async { StatusCode::UNAUTHORIZED }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/thread", get(|| async { thread_name() }))
        // Holds its thread (a blocking call, as a runaway handler would).
        .route(
            "/block",
            get(|| async {
                std::thread::sleep(Duration::from_millis(1500));
                thread_name()
            }),
        )
        .route(
            "/slow",
            get(move || async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(500)).await;
                "slow"
            }),
        );
    let handle = serve_sharded(
        Listener {
            name: "test",
            listener,
            limits,
            nodelay: true,
            metrics,
        },
        router,
        workers,
    )
    .unwrap();
    TestServer {
        addr,
        registry,
        handle,
        slow_started,
    }
}

impl TestServer {
    /// The sum of metric `name`'s samples whose labels include `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = obleth_service::metrics::render(&self.registry);
        obleth_testkit::metrics::sum(&text, name, labels)
    }
}

fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned()
}

/// `GET /` on a new client: must answer 200; answers the body.
async fn get_ok(addr: SocketAddr) -> String {
    let answer = request(Method::GET, &format!("http://{addr}/"), &[], "").await;
    assert_eq!(answer.status, 200);
    answer.text()
}

#[tokio::test]
async fn a_connection_that_sends_half_its_headers_is_closed_after_the_header_timeout() {
    let server = start(limits()).await;
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stalled, Duration::from_secs(30)).await;
    assert!(
        closed,
        "the server must close a connection stuck in its headers"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the header timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(
        server.metric(
            "obleth_connections_timed_out_total",
            &[("listener", "test"), ("reason", "header")]
        ),
        1.0
    );
    // A connection that never sends a byte is closed the same way.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(30)).await;
    assert!(closed);
    assert_eq!(get_ok(server.addr).await, "ok");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = start(limits()).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Past the header timeout (1 s) but within the idle timeout (2 s), the
    // idle connection still serves: the two are kept apart.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let idle_from = Instant::now();
    let (_, closed) = read_until_closed(&mut conn, Duration::from_secs(30)).await;
    assert!(closed, "an idle keep-alive connection must be closed");
    assert!(idle_from.elapsed() >= Duration::from_millis(1900));
    assert_eq!(
        server.metric(
            "obleth_connections_timed_out_total",
            &[("listener", "test"), ("reason", "idle")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_request_in_flight_is_not_cut_by_the_idle_or_header_timeout() {
    let server = start(ConnectionLimits {
        header_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(200),
        ..limits()
    })
    .await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("slow"), "{answer}");
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_and_counted_while_open_ones_keep_working() {
    refuses_over_the_cap(0).await;
}

#[tokio::test]
async fn the_connection_cap_holds_across_a_sharded_servers_threads() {
    refuses_over_the_cap(2).await;
}

async fn refuses_over_the_cap(workers: usize) {
    let server = start_with(
        ConnectionLimits {
            max_connections: 3,
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            ..limits()
        },
        workers,
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut conn).await.starts_with("HTTP/1.1 200"));
        open.push(conn);
    }
    for _ in 0..2 {
        let mut excess = TcpStream::connect(server.addr).await.unwrap();
        let (seen, closed) = read_until_closed(&mut excess, Duration::from_secs(10)).await;
        assert!(closed, "a connection over the cap is closed at once");
        let text = String::from_utf8_lossy(&seen);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("connection: close"), "{text}");
    }
    assert_eq!(
        server.metric("obleth_connections_refused_total", &[("listener", "test")]),
        2.0
    );
    assert_eq!(
        server.metric("obleth_open_connections", &[("listener", "test")]),
        3.0
    );
    // The open connections keep being served.
    for conn in &mut open {
        conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(conn).await.starts_with("HTTP/1.1 200"));
    }
    // Once one closes, a new connection is served again.
    drop(open.pop());
    wait_until(
        Duration::from_secs(10),
        "the closed connection to be counted",
        || async { server.metric("obleth_open_connections", &[("listener", "test")]) <= 2.0 },
    )
    .await;
    assert_eq!(get_ok(server.addr).await, "ok");
}

#[tokio::test]
async fn an_http2_preface_gets_no_http2_answer() {
    let server = start(limits()).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame, as an h2c client sends next.
    conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let (seen, closed) = read_until_closed(&mut conn, Duration::from_secs(10)).await;
    assert!(closed, "the connection is closed");
    // An HTTP/2 server would answer with a SETTINGS frame (type 4).
    assert!(
        seen.is_empty() || seen.starts_with(b"HTTP/1.1 "),
        "answered {:?}",
        String::from_utf8_lossy(&seen)
    );
}

#[tokio::test]
async fn a_refusal_before_the_body_is_read_says_connection_close() {
    let server = start(limits()).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let body = "x".repeat(64 * 1024);
    let request = format!(
        "POST /refuse HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = read_response(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // A request whose body was read keeps its connection.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let answer = read_response(&mut conn).await;
    assert!(answer.ends_with("hello"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // So does a request without a body.
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut conn).await;
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_pooled_client_survives_an_early_refusal_on_its_keep_alive_connection() {
    let server = start(limits()).await;
    let client = client();
    let body = Bytes::from("x".repeat(256 * 1024));
    for round in 0..3 {
        let refused = client
            .request(
                http::Request::post(format!("http://{}/refuse", server.addr))
                    .body(Full::new(body.clone()))
                    .unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: the refused request failed: {e}"));
        assert_eq!(refused.status(), 401);
        let next = client
            .request(
                http::Request::post(format!("http://{}/echo", server.addr))
                    .body(Full::new(Bytes::from("next")))
                    .unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: the next request failed: {e}"));
        assert_eq!(next.status(), 200);
    }
}

#[tokio::test]
async fn a_body_slower_than_the_body_timeout_is_cut() {
    let server = start(limits()).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhel")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_response(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn every_request_carries_the_client_address() {
    let server = start(limits()).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let local = conn.local_addr().unwrap();
    conn.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut conn).await;
    assert!(answer.ends_with(&local.to_string()), "{answer}");
}

#[tokio::test]
async fn stopping_closes_idle_connections_and_lets_a_request_in_flight_finish() {
    stops_gracefully(0).await;
}

#[tokio::test]
async fn a_sharded_server_stops_gracefully_on_every_thread() {
    stops_gracefully(2).await;
}

async fn stops_gracefully(workers: usize) {
    let mut server = start_with(limits(), workers).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut idle).await;
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.slow_started.notified())
        .await
        .expect("the slow request reaches its handler");
    server.handle.stop_accepting();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(closed, "the idle connection closes at once");
    let answer = read_response(&mut busy).await;
    assert!(answer.ends_with("slow"), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), server.handle.finished())
        .await
        .expect("the server finishes once its connections have");
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_server_that_ends_says_how_as_a_typed_error_naming_the_listener() {
    use obleth_service::ServerEnded;
    let mut stopped = start(limits()).await;
    stopped.handle.stop_accepting();
    let ended = tokio::time::timeout(Duration::from_secs(10), stopped.handle.ended_unexpectedly())
        .await
        .expect("the server should have ended");
    assert_eq!(ended, ServerEnded::Stopped { listener: "test" });
    assert_eq!(ended.to_string(), "the test server stopped unexpectedly");

    let mut aborted = start(limits()).await;
    aborted.handle.abort();
    let ended = tokio::time::timeout(Duration::from_secs(10), aborted.handle.ended_unexpectedly())
        .await
        .expect("the server should have ended");
    match &ended {
        ServerEnded::Failed { listener, reason } => {
            assert_eq!(*listener, "test");
            assert_eq!(
                ended.to_string(),
                format!("the test server failed: {reason}")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_sharded_server_serves_each_connection_on_one_worker_and_goes_on_while_one_is_held() {
    let server = start_with(limits(), 2).await;
    let workers = ["obleth-test-1", "obleth-test-2"];
    // A handler holds its worker thread; the other worker still accepts
    // and answers new connections meanwhile.
    let addr = server.addr;
    let held = tokio::spawn(async move {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /block HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut conn).await;
        (answer, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        conn.write_all(b"GET /thread HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut conn).await;
        seen.push(answer.rsplit("\r\n").next().unwrap().to_owned());
    }
    let answered = Instant::now();
    let (held_answer, held_done) = held.await.unwrap();
    let held_by = held_answer.rsplit("\r\n").next().unwrap().to_owned();
    assert!(workers.contains(&held_by.as_str()), "{held_answer}");
    assert!(
        answered < held_done,
        "the free worker answered while the other was held"
    );
    assert!(
        seen.iter().all(|s| s == &seen[0]),
        "one connection, one thread: {seen:?}"
    );
    assert!(workers.contains(&seen[0].as_str()), "{seen:?}");
    assert_ne!(seen[0], held_by, "served by the worker that was free");
}

#[tokio::test]
async fn a_sharded_server_gives_each_new_connection_to_its_least_loaded_worker() {
    let server = start_with(limits(), 2).await;
    let mut open = Vec::new();
    let mut by_thread = std::collections::BTreeMap::<String, usize>::new();
    // Opened at once, as a load generator's burst does.
    for _ in 0..8 {
        open.push(TcpStream::connect(server.addr).await.unwrap());
    }
    for conn in &mut open {
        conn.write_all(b"GET /thread HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(conn).await;
        let thread = answer.rsplit("\r\n").next().unwrap().to_owned();
        *by_thread.entry(thread).or_default() += 1;
    }
    let expected: std::collections::BTreeMap<String, usize> = [
        ("obleth-test-1".to_owned(), 4),
        ("obleth-test-2".to_owned(), 4),
    ]
    .into();
    assert_eq!(by_thread, expected);
}
