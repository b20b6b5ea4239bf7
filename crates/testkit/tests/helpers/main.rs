//! The shared test helpers against real sockets, processes and PostgreSQL:
//! the raw HTTP readers, the client, polling with a deadline, the readiness
//! wait, signals and the database fixtures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use http::Method;
use obleth_config::model::ProviderKind;
use obleth_testkit::http::{exchange, read_until_closed, request};
use obleth_testkit::poll::{wait_for, wait_ready, wait_until};
use obleth_testkit::proc::{command, free_port, signal, Signal};
use obleth_testkit::{db, MockConfig, MockUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server that answers one request on each connection with `answer`, in
/// two writes, then closes.
async fn one_shot_server(answer: impl Into<String>) -> std::net::SocketAddr {
    let answer = answer.into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let (head, body) = answer.split_at(answer.len() / 2);
            conn.write_all(head.as_bytes()).await.unwrap();
            conn.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn.write_all(body.as_bytes()).await.unwrap();
        }
    });
    addr
}

#[tokio::test]
async fn exchange_reads_a_response_split_across_writes_up_to_its_content_length() {
    let addr =
        one_shot_server("HTTP/1.1 200 OK\r\ncontent-length: 11\r\nx-a: b\r\n\r\nhello world").await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let answer = exchange(&mut conn, "GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello world"), "{answer}");
}

#[tokio::test]
async fn read_until_closed_tells_a_closed_connection_from_a_silent_one() {
    let addr = one_shot_server("HTTP/1.1 503 x\r\n\r\n").await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let (seen, closed) = read_until_closed(&mut conn, Duration::from_secs(10)).await;
    assert!(closed);
    assert!(seen.starts_with(b"HTTP/1.1 503"));

    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut conn = TcpStream::connect(silent.local_addr().unwrap())
        .await
        .unwrap();
    let (seen, closed) = read_until_closed(&mut conn, Duration::from_millis(200)).await;
    assert!(!closed && seen.is_empty());
}

/// A raw HTTP/1.1 answer with a JSON body.
fn json_answer(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn request_reads_an_answer_whole_and_checks_both_error_shapes() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let ok = request(Method::GET, &format!("{}/models", mock.base_url()), &[], "").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["object"], "list", "{}", ok.text());

    let openai = one_shot_server(json_answer(
        "401 Unauthorized",
        r#"{"error":{"message":"no key","type":"invalid_request_error","param":null,"code":"missing_api_key"}}"#,
    ))
    .await;
    let a = request(Method::GET, &format!("http://{openai}/"), &[], "").await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (401, "missing_api_key")
    );
    assert_eq!(a.header("content-type"), Some("application/json"));

    let admin = one_shot_server(json_answer(
        "422 Unprocessable Entity",
        r#"{"error":{"code":"invalid","message":"name: too long","field":"name"}}"#,
    ))
    .await;
    let a = request(Method::GET, &format!("http://{admin}/"), &[], "").await;
    assert_eq!(
        a.admin_error(),
        ("invalid".to_owned(), Some("name".to_owned()))
    );
}

#[tokio::test]
#[should_panic(expected = "no error object")]
async fn error_code_refuses_a_body_without_an_error() {
    let addr = one_shot_server(json_answer("200 OK", r#"{"ok":true}"#)).await;
    request(Method::GET, &format!("http://{addr}/"), &[], "")
        .await
        .error_code();
}

#[tokio::test]
async fn wait_until_answers_once_the_condition_holds() {
    let started = Instant::now();
    let took = wait_until(Duration::from_secs(10), "a tenth of a second", || async {
        started.elapsed() >= Duration::from_millis(100)
    })
    .await;
    assert!(took >= Duration::from_millis(100));
    let mut n = 0;
    let third = wait_for(Duration::from_secs(10), "the third poll", || {
        n += 1;
        let seen = n;
        async move { (seen == 3).then_some(seen) }
    })
    .await;
    assert_eq!(third, 3);
}

#[tokio::test]
#[should_panic(expected = "timed out waiting for something that never happens")]
async fn wait_until_panics_naming_what_it_waited_for() {
    wait_until(
        Duration::from_millis(100),
        "something that never happens",
        || async { false },
    )
    .await;
}

#[tokio::test]
async fn wait_ready_fails_on_a_closed_port_and_succeeds_on_a_200() {
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let err = wait_ready(closed, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not ready"), "{err}");
    let ready = one_shot_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    wait_ready(ready, Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_signalled_child_ends_and_a_dropped_one_is_killed() {
    let mut child = command("sleep").arg("60").spawn().unwrap();
    signal(&child, Signal::Term).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());

    let dropped = command("sleep").arg("60").spawn().unwrap();
    let pid = dropped.id().unwrap();
    drop(dropped);
    wait_until(
        Duration::from_secs(10),
        "the dropped child to die",
        || async {
            // A killed child not yet reaped is a zombie: state `Z`.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.split_whitespace().nth(2) == Some("Z"))
                .unwrap_or(true)
        },
    )
    .await;
}

#[tokio::test]
async fn db_fixtures_write_through_the_admins_functions_and_migrations_extend_the_shipped_set() {
    let (_db, pool) = db::migrated().await.unwrap();
    let row = db::provider("up", ProviderKind::OpenAi, "https://up.invalid/v1");
    db::provider_and_route(&pool, &row, "m").await.unwrap();
    let (key, secret) = db::key(&pool, |k| k.name = "fixture".to_owned())
        .await
        .unwrap();
    assert_eq!(key.name, "fixture");
    assert!(secret.starts_with("obk_"), "a whole key");
    let catalog = obleth_config::db::catalog::load_catalog(&pool)
        .await
        .unwrap();
    assert_eq!(catalog.routes.len(), 1);
    let changes: i64 = sqlx::query_scalar("SELECT count(*) FROM changes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(changes, 3, "each write has its change row");

    let dir = db::migrations_with(&[(
        "29991231000001_extra.sql",
        "CREATE TABLE extra (id int);\n",
        "\n[[migration]]\nversion = 29991231000001\nphase = \"expand\"\n",
    )])
    .unwrap();
    let set = obleth_config::migrate::MigrationSet::from_dir(dir.path()).unwrap();
    let embedded = obleth_config::migrate::MigrationSet::embedded().unwrap();
    assert_eq!(set.len(), embedded.len() + 1);
}
