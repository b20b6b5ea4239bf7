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

/// A gateway process writing JSON logs at info to a pipe, in embedded mode
/// with the demo key and `sections` (providers, routes, more settings);
/// answers it, its proxy port and the directory of its settings file.
async fn json_logging_gateway(
    sections: &str,
    env: &[(&str, &str)],
) -> (tokio::process::Child, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let (port, ops) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops}\"\n\
             drain_delay_secs = 0\n\n[log]\nformat = \"json\"\n\n{sections}\n\
             [[keys]]\nname = \"demo\"\npublic_id = \"3rel61ft4g40\"\nsecret_sha256 = {KEY_SHA256:?}\n"
        ),
    )
    .unwrap();
    let mut cmd = command(BIN);
    cmd.arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    obleth_testkit::poll::wait_ready(
        std::net::SocketAddr::from(([127, 0, 0, 1], ops)),
        Duration::from_secs(60),
    )
    .await
    .expect("gateway ready");
    (child, port, dir)
}

/// Stops the gateway with SIGTERM and answers what it logged.
async fn stop(child: tokio::process::Child) -> String {
    signal(&child, Signal::Term).unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&output.stderr).into_owned()
}

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
    let base = upstream.base_url();
    let (child, port, _dir) = json_logging_gateway(
        &format!(
            "[[providers]]\nname = \"first\"\nkind = \"openai\"\nbase_url = {base:?}\n\n\
             [[providers]]\nname = \"second\"\nkind = \"openai\"\nbase_url = {base:?}\n\n\
             [[routes]]\nmodel = \"m\"\ntargets = [{{ provider = \"first\" }}, {{ provider = \"second\" }}]\n"
        ),
        &[],
    )
    .await;

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

    let logs = stop(child).await;
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Upstream answered with a server error"))
        .collect();
    assert_eq!(warned.len(), 1, "{logs}");
    let line: serde_json::Value = serde_json::from_str(warned[0]).unwrap();
    assert_eq!(line["span"]["request_id"], id.as_str(), "{line}");
    assert_eq!(line["span"]["name"], "request", "{line}");
}

/// With `[telemetry] otlp_endpoint` set, every proxied request is one span
/// at the receiver, with the GenAI conventions' attributes; it continues
/// the client's trace and is the upstream's parent; a 5xx is an error span
/// whose request id is in the log lines written inside it.
#[tokio::test]
async fn each_request_is_one_span_at_the_otlp_receiver_with_the_genai_attributes() {
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    let receiver = obleth_testkit::otlp::OtlpReceiver::start().await.unwrap();
    let closed = free_port();
    let base = upstream.base_url();
    let endpoint = receiver.endpoint();
    let (child, port, _dir) = json_logging_gateway(
        &format!(
            "[telemetry]\notlp_endpoint = {endpoint:?}\nservice_name = \"gw-under-test\"\n\
             otlp_headers = {{ x-collector-key = \"not-logged\" }}\n\n\
             [routing]\nmax_attempts = 1\n\n\
             [[providers]]\nname = \"main\"\nkind = \"openai\"\nbase_url = {base:?}\n\n\
             [[providers]]\nname = \"down\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{closed}\"\n\n\
             [[routes]]\nmodel = \"m\"\ntargets = [{{ provider = \"main\" }}]\n\n\
             [[routes]]\nmodel = \"broken\"\ntargets = [{{ provider = \"down\" }}]\n"
        ),
        // Export every 100 ms instead of every 5 s (the SDK's variable).
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let auth = format!("Bearer {KEY}");
    let send = |body: &'static str, traceparent: Option<&'static str>| {
        let (url, auth) = (url.clone(), auth.clone());
        async move {
            let mut headers = vec![
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ];
            if let Some(t) = traceparent {
                headers.push(("traceparent", t));
            }
            request(Method::POST, &url, &headers, body).await
        }
    };
    let wait = Duration::from_secs(30);

    // Not streamed, in the client's trace.
    let answer = send(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        Some(CLIENT_TRACEPARENT),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let id = answer.header("x-request-id").unwrap().to_owned();
    let usage = answer.json()["usage"].clone();
    let span = receiver
        .wait_for(wait, |s| s.str_attr("request_id") == Some(id.as_str()))
        .await
        .expect("the request's span reaches the receiver");
    assert_eq!(span.name, "chat m");
    assert_eq!(span.kind, 2, "a server span");
    assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(span.str_attr("gen_ai.operation.name"), Some("chat"));
    assert_eq!(span.str_attr("gen_ai.request.model"), Some("m"));
    assert_eq!(span.str_attr("gen_ai.provider.name"), Some("openai"));
    assert_eq!(span.str_attr("obleth.provider"), Some("main"));
    assert_eq!(span.str_attr("obleth.key.id"), Some("3rel61ft4g40"));
    assert_eq!(span.str_attr("http.route"), Some("/v1/chat/completions"));
    assert_eq!(
        span.int_attr("http.response.status_code"),
        Some(200),
        "{span:?}"
    );
    assert_eq!(
        span.int_attr("gen_ai.usage.input_tokens"),
        usage["prompt_tokens"].as_i64()
    );
    assert_eq!(
        span.int_attr("gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64()
    );
    let ttfb = span
        .attr("obleth.time_to_first_byte_ms")
        .and_then(|v| v.as_f64())
        .expect("time to first byte");
    assert!(ttfb > 0.0, "{ttfb}");
    assert_eq!(span.status_code, 0, "a 200 is not an error");
    assert_eq!(
        span.resource.get("service.name").and_then(|v| v.as_str()),
        Some("gw-under-test")
    );
    // The upstream's parent is the gateway's span, in the client's trace.
    let sent = upstream.last_request().unwrap();
    assert_eq!(
        sent.header("traceparent"),
        Some(format!("00-{}-{}-01", span.trace_id, span.span_id).as_str())
    );
    assert_eq!(
        receiver
            .last_headers()
            .and_then(|h| h.get("x-collector-key").cloned())
            .as_ref()
            .map(|v| v.as_bytes()),
        Some(&b"not-logged"[..])
    );

    // Streamed, a trace of its own: the tokens are recorded when it ends.
    let answer = send(
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let streamed = answer.header("x-request-id").unwrap().to_owned();
    let span = receiver
        .wait_for(wait, |s| {
            s.str_attr("request_id") == Some(streamed.as_str())
        })
        .await
        .expect("the stream's span reaches the receiver");
    assert_eq!(span.parent_span_id, "", "a root span");
    assert_ne!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.int_attr("gen_ai.usage.output_tokens"), Some(16));
    assert!(span.int_attr("gen_ai.usage.input_tokens").unwrap_or(0) > 0);
    assert!(span.attr("obleth.time_to_first_byte_ms").is_some());
    let sent = upstream.last_request().unwrap();
    assert_eq!(
        sent.header("traceparent"),
        Some(format!("00-{}-{}-01", span.trace_id, span.span_id).as_str())
    );

    // Every attempt fails: a 5xx error span.
    let answer = send(
        r#"{"model":"broken","messages":[{"role":"user","content":"hi"}]}"#,
        None,
    )
    .await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    let failed = answer.header("x-request-id").unwrap().to_owned();
    let span = receiver
        .wait_for(wait, |s| s.str_attr("request_id") == Some(failed.as_str()))
        .await
        .expect("the failed request's span reaches the receiver");
    assert_eq!(span.name, "chat broken");
    assert_eq!(span.int_attr("http.response.status_code"), Some(502));
    assert_eq!(span.status_code, 2, "an error span");
    assert_eq!(span.str_attr("error.type"), Some("502"));
    assert_eq!(receiver.refused(), 0);

    let logs = stop(child).await;
    assert!(!logs.contains("not-logged"), "{logs}");
    // The log lines written inside the failed request carry its id and
    // the span's fields.
    let inside: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["span"]["request_id"] == failed.as_str())
        .collect();
    assert!(!inside.is_empty(), "{logs}");
    for line in &inside {
        assert_eq!(line["span"]["gen_ai.request.model"], "broken", "{line}");
        assert_eq!(line["span"]["obleth.key.id"], "3rel61ft4g40", "{line}");
    }
}
