//! A request's trace context: the request id in every log line of the
//! request (a gateway process writing JSON logs) and, with the W3C
//! `traceparent`, in the request sent upstream.

use std::process::Stdio;
use std::time::Duration;

use http::Method;
use obleth_testkit::proc::{command, free_port, signal, Signal};
use obleth_testkit::{MockConfig, MockUpstream};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_obleth-gateway");
/// The demo key of examples/quickstart.toml.
const KEY: &str = "obk_3rel61ft4g40_lQesUp0XR5djATDhL7L7I1qjxing5VZXU3jfJUc3";
const KEY_SHA256: &str = "bac6f04854ae961d431415607dba2c2c078c618322bd22b2989c5d491e9c512e";
const CLIENT_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn the_request_id_is_in_every_log_line_of_the_request_and_goes_upstream() {
    // The first attempt is answered 500 (a warning logged inside the
    // request), the second, through the route's next target, succeeds.
    let upstream = MockUpstream::start(MockConfig {
        fail_status: Some(500),
        fail_first: 1,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let (port, ops) = (free_port(), free_port());
    let base = upstream.base_url();
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops}\"\n\
             drain_delay_secs = 0\n\n[log]\nformat = \"json\"\n\n\
             [[providers]]\nname = \"first\"\nkind = \"openai\"\nbase_url = {base:?}\n\n\
             [[providers]]\nname = \"second\"\nkind = \"openai\"\nbase_url = {base:?}\n\n\
             [[routes]]\nmodel = \"m\"\ntargets = [{{ provider = \"first\" }}, {{ provider = \"second\" }}]\n\n\
             [[keys]]\nname = \"demo\"\npublic_id = \"3rel61ft4g40\"\nsecret_sha256 = {KEY_SHA256:?}\n"
        ),
    )
    .unwrap();
    let mut cmd = command(BIN);
    cmd.arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    obleth_testkit::poll::wait_ready(
        std::net::SocketAddr::from(([127, 0, 0, 1], ops)),
        Duration::from_secs(60),
    )
    .await
    .expect("gateway ready");

    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let auth = format!("Bearer {KEY}");
    let answer = request(
        Method::POST,
        &url,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("traceparent", CLIENT_TRACEPARENT),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.header("x-request-id"), Some(id.as_str()));
    assert_eq!(sent.header("traceparent"), Some(CLIENT_TRACEPARENT));

    // Without a (valid) traceparent, the trace is the request's own.
    let answer = request(
        Method::POST,
        &url,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("traceparent", "not-a-trace"),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let second = answer.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(second, id);
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.header("x-request-id"), Some(second.as_str()));
    let own = sent.header("traceparent").unwrap().to_owned();
    assert!(
        own.starts_with(&format!("00-{}-", second.replace('-', ""))),
        "{own}"
    );

    signal(&child, Signal::Term).unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Upstream answered with a server error"))
        .collect();
    assert_eq!(warned.len(), 1, "{logs}");
    let line: serde_json::Value = serde_json::from_str(warned[0]).unwrap();
    assert_eq!(line["span"]["request_id"], id.as_str(), "{line}");
    assert_eq!(line["span"]["name"], "request", "{line}");
}
