//! The proxy path in embedded mode: errors, policy, routing, streaming.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use obleth_testkit::http::read_until_closed;
use obleth_testkit::{MockConfig, MockUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// name, headers, body, expected status, expected code.
type Case = (
    &'static str,
    Vec<(&'static str, String)>,
    Bytes,
    u16,
    &'static str,
);

#[tokio::test]
async fn every_bad_input_gets_an_openai_error_with_the_right_status() {
    let (key, secret) =
        file_key(|k| k.allowed_models = vec!["m".to_owned(), "unrouted".to_owned()]);
    let (revoked, revoked_secret) = file_key(|k| k.revoked = true);
    let (expired, expired_secret) =
        file_key(|k| k.expires_at = Some(chrono::Utc::now() - chrono::Duration::hours(1)));
    let mut settings = embedded_settings(vec![key, revoked, expired]);
    settings.server.max_body_bytes = 2048;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let url = gw.url("/v1/chat/completions");
    let auth = format!("Bearer {secret}");
    let json = "application/json";
    let unknown = obleth_config::apikey::from_parts("aaaaaaaaaaaa", &"B".repeat(40));
    let ok_body = r#"{"model":"m","messages":[]}"#.to_owned();
    let cases: Vec<Case> = vec![
        (
            "no key",
            vec![("content-type", json.into())],
            ok_body.clone().into(),
            401,
            "missing_api_key",
        ),
        (
            "basic auth",
            vec![
                ("authorization", "Basic dXNlcjpwYXNz".into()),
                ("content-type", json.into()),
            ],
            ok_body.clone().into(),
            401,
            "invalid_api_key",
        ),
        (
            "key of the wrong shape",
            vec![
                ("authorization", "Bearer sk-not-ours".into()),
                ("content-type", json.into()),
            ],
            ok_body.clone().into(),
            401,
            "invalid_api_key",
        ),
        (
            "unknown key",
            vec![
                ("authorization", format!("Bearer {unknown}")),
                ("content-type", json.into()),
            ],
            ok_body.clone().into(),
            401,
            "invalid_api_key",
        ),
        (
            "revoked key",
            vec![
                ("authorization", format!("Bearer {revoked_secret}")),
                ("content-type", json.into()),
            ],
            ok_body.clone().into(),
            403,
            "key_revoked",
        ),
        (
            "expired key",
            vec![
                ("x-api-key", expired_secret.clone()),
                ("content-type", json.into()),
            ],
            ok_body.clone().into(),
            403,
            "key_expired",
        ),
        (
            "not JSON",
            vec![
                ("authorization", auth.clone()),
                ("content-type", json.into()),
            ],
            Bytes::from_static(b"model=m"),
            400,
            "invalid_request",
        ),
        (
            "invalid UTF-8",
            vec![
                ("authorization", auth.clone()),
                ("content-type", json.into()),
            ],
            Bytes::from_static(b"{\"model\":\"\xff\xfe\"}"),
            400,
            "invalid_request",
        ),
        (
            "missing model",
            vec![
                ("authorization", auth.clone()),
                ("content-type", json.into()),
            ],
            Bytes::from_static(b"{\"messages\":[]}"),
            400,
            "invalid_request",
        ),
        (
            "model of the wrong type",
            vec![
                ("authorization", auth.clone()),
                ("content-type", json.into()),
            ],
            Bytes::from_static(b"{\"model\":7}"),
            400,
            "invalid_request",
        ),
        (
            "wrong content type",
            vec![
                ("authorization", auth.clone()),
                ("content-type", "text/plain".into()),
            ],
            ok_body.clone().into(),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            vec![("authorization", auth.clone())],
            ok_body.clone().into(),
            415,
            "unsupported_media_type",
        ),
        (
            "body too large",
            vec![
                ("authorization", auth.clone()),
                ("content-type", json.into()),
            ],
            Bytes::from(format!(
                "{{\"model\":\"m\",\"pad\":\"{}\"}}",
                "x".repeat(4096)
            )),
            413,
            "request_too_large",
        ),
        (
            "model not allowed",
            vec![
                ("authorization", auth.clone()),
                ("content-type", json.into()),
            ],
            Bytes::from_static(b"{\"model\":\"other\"}"),
            403,
            "model_not_allowed",
        ),
        (
            "model not routed",
            vec![
                ("authorization", auth.clone()),
                ("content-type", json.into()),
            ],
            Bytes::from_static(b"{\"model\":\"unrouted\"}"),
            404,
            "model_not_found",
        ),
    ];
    for (name, headers, body, status, code) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = request(Method::POST, &url, &headers, body).await;
        assert_eq!(
            answer.status,
            status,
            "{name}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.error_code(), code, "{name}");
    }
    // Unknown paths and wrong methods keep the shape too.
    let answer = request(Method::GET, &gw.url("/v1/nothing"), &[], Bytes::new()).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (404, "not_found")
    );
    let answer = request(Method::GET, &url, &[], Bytes::new()).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (405, "method_not_allowed")
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_that_trickles_in_too_slowly_times_out_with_408() {
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    settings.server.body_timeout_secs = 1;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let mut stream = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {secret}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"model\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (response, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn huge_headers_are_refused_without_a_crash() {
    let (key, secret) = file_key(|_| {});
    let gw = TestGateway::start(embedded_settings(vec![key])).await;
    gw.wait_ready().await;
    let mut stream = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    let head = format!(
        "GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let (response, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    // The gateway still serves.
    assert_eq!(chat(&gw, &secret, "m").await.status, 200);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_and_ratelimit_headers() {
    let (key, secret) = file_key(|k| k.rpm_limit = Some(2));
    let gw = TestGateway::start(embedded_settings(vec![key])).await;
    gw.wait_ready().await;
    let first = chat(&gw, &secret, "m").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("1"));
    assert_eq!(chat(&gw, &secret, "m").await.status, 200);
    let third = chat(&gw, &secret, "m").await;
    assert_eq!(third.status, 429);
    assert_eq!(third.error_code(), "rate_limit_exceeded");
    let retry_after: u64 = third.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(third.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(third
        .header("x-ratelimit-reset-requests")
        .unwrap()
        .ends_with('s'));
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn an_exhausted_token_budget_answers_429_budget_exceeded() {
    // The mock answers 16 completion tokens plus 2 prompt tokens: 18 a request.
    let (key, secret) = file_key(|k| k.token_budget = Some(20));
    let gw = TestGateway::start(embedded_settings(vec![key])).await;
    gw.wait_ready().await;
    assert_eq!(chat(&gw, &secret, "m").await.status, 200);
    assert_eq!(
        chat(&gw, &secret, "m").await.status,
        200,
        "18 of 20 used: still allowed"
    );
    let refused = chat(&gw, &secret, "m").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_code(), "budget_exceeded");
    assert_eq!(refused.json()["error"]["type"], "insufficient_quota");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn falls_back_to_the_next_provider_when_the_first_refuses_connections() {
    let refusing = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    settings.providers = vec![
        openai_provider("down", &format!("http://{refusing}/v1")),
        openai_provider("up", &upstream.base_url()),
    ];
    settings.routes = vec![route("m", &["down", "up"])];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("x-obleth-provider"), Some("up"));
    assert_eq!(upstream.requests(), 1);
    assert!(
        metric(
            &gw,
            "obleth_upstream_attempts_total",
            &[("outcome", "error"), ("provider", "down")]
        )
        .await
            >= 1.0
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_5xx_falls_back_and_the_model_is_rewritten_for_the_upstream() {
    let failing = MockUpstream::start(MockConfig {
        fail_status: Some(503),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let healthy = MockUpstream::start(MockConfig::default()).await.unwrap();
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    settings.providers = vec![
        openai_provider("a", &failing.base_url()),
        openai_provider("b", &healthy.base_url()),
    ];
    let mut r = route("m", &["a", "b"]);
    r.targets[1].upstream_model = Some("real-model".to_owned());
    settings.routes = vec![r];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-obleth-provider"), Some("b"));
    assert_eq!((failing.requests(), healthy.requests()), (1, 1));
    let sent = healthy.last_request().unwrap().body.unwrap();
    assert_eq!(sent["model"], "real-model");
    assert_eq!(
        sent["messages"][0]["content"], "hello there",
        "the rest of the body passes through"
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn every_provider_failing_answers_502_and_a_timeout_504() {
    let failing = MockUpstream::start(MockConfig {
        fail_status: Some(500),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let slow = MockUpstream::start(MockConfig {
        latency: Duration::from_secs(3),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    let mut slow_provider = openai_provider("slow", &slow.base_url());
    slow_provider.timeout_ms = 200;
    settings.providers = vec![
        openai_provider("failing", &failing.base_url()),
        slow_provider,
    ];
    settings.routes = vec![route("m", &["failing"]), route("s", &["slow"])];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (502, "upstream_failed")
    );
    let answer = chat(&gw, &secret, "s").await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (504, "upstream_timeout")
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_reaches_the_client_chunk_by_chunk_before_the_upstream_finishes() {
    let upstream = MockUpstream::start(MockConfig {
        token_delay: Duration::from_millis(100),
        completion_tokens: 10,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (gw, secret) = gateway_over(&upstream).await;
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let started = Instant::now();
    let response = send(
        Method::POST,
        &gw.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push(started.elapsed());
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    let total = started.elapsed();
    // The upstream needs at least 10 x 100 ms; the first chunk came long before.
    assert!(total >= Duration::from_millis(1000), "{total:?}");
    assert!(
        arrivals.len() >= 5,
        "only {} frames: relayed whole?",
        arrivals.len()
    );
    assert!(
        arrivals[0] < total / 2,
        "first chunk at {:?} of {total:?}",
        arrivals[0]
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // The client did not ask for usage, so the usage chunk the gateway
    // asked for is not passed on (streams.rs has the details).
    assert!(!text.contains("\"usage\""), "{text}");
    let sent = upstream.last_request().unwrap().body.unwrap();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "the gateway asks the stream for its usage"
    );
    gw.stop().await.unwrap();
}

/// A provider that sends its headers and one SSE chunk, then drops the connection.
async fn breaks_after_first_chunk() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = socket.read(&mut buf).await;
            let chunk = "data: {\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}\n\n";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n",
                chunk.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(socket);
        }
    });
    addr
}

#[tokio::test]
async fn no_fallback_once_the_first_byte_reached_the_client() {
    let breaking = breaks_after_first_chunk().await;
    let backup = MockUpstream::start(MockConfig::default()).await.unwrap();
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    settings.providers = vec![
        openai_provider("breaking", &format!("http://{breaking}/v1")),
        openai_provider("backup", &backup.base_url()),
    ];
    settings.routes = vec![route("m", &["breaking", "backup"])];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let response = send(
        Method::POST,
        &gw.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "application/json"),
        ],
        r#"{"model":"m","stream":true,"messages":[]}"#,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-obleth-provider"], "breaking");
    let mut body = response.into_body();
    let mut text = String::new();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    text.push_str(&String::from_utf8_lossy(&d));
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(text.contains("partial"), "{text}");
    assert!(
        failed || !text.contains("[DONE]"),
        "the stream must end broken, not complete"
    );
    assert_eq!(backup.requests(), 0, "no fallback after the first byte");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn models_lists_only_what_the_key_may_use() {
    let (key, secret) = file_key(|k| k.allowed_models = vec!["gpt-*".to_owned()]);
    let mut settings = embedded_settings(vec![key]);
    settings.routes = vec![
        route("gpt-4o", &["mock"]),
        route("gpt-4o-mini", &["mock"]),
        route("claude", &["mock"]),
    ];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let answer = request(
        Method::GET,
        &gw.url("/v1/models"),
        &[("x-api-key", &secret)],
        Bytes::new(),
    )
    .await;
    assert_eq!(answer.status, 200);
    let ids: Vec<String> = answer.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec!["gpt-4o", "gpt-4o-mini"]);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn embeddings_and_completions_are_routed_too() {
    let (key, secret) = file_key(|_| {});
    let gw = TestGateway::start(embedded_settings(vec![key])).await;
    gw.wait_ready().await;
    let headers = [
        ("authorization", format!("Bearer {secret}")),
        ("content-type", "application/json".to_owned()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let e = request(
        Method::POST,
        &gw.url("/v1/embeddings"),
        &headers,
        r#"{"model":"m","input":["a","b"]}"#,
    )
    .await;
    assert_eq!(e.status, 200);
    assert_eq!(e.json()["data"].as_array().unwrap().len(), 2);
    let c = request(
        Method::POST,
        &gw.url("/v1/completions"),
        &headers,
        r#"{"model":"m","prompt":"hi"}"#,
    )
    .await;
    assert_eq!(c.status, 200);
    assert_eq!(c.json()["object"], "text_completion");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn the_provider_credential_is_read_from_its_file_and_sent_upstream() {
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("provider-key");
    std::fs::write(&secret_file, "sk-upstream-secret\n").unwrap();
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    settings.egress.credential_dirs = vec![dir.path().to_path_buf()];
    let mut provider = openai_provider("up", &upstream.base_url());
    provider.credential = Some(format!("file:{}", secret_file.display()));
    settings.providers = vec![provider];
    settings.routes = vec![route("m", &["up"])];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    assert_eq!(chat(&gw, &secret, "m").await.status, 200);
    let seen = upstream.last_request().unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert_ne!(
        seen.header("authorization"),
        Some(format!("Bearer {secret}").as_str()),
        "the client's key never goes upstream"
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_embedded_file_is_refused_at_build_with_a_typed_error_naming_the_entry() {
    use obleth_config::egress::CredentialError;
    use obleth_gateway::catalog::CatalogLoadError;
    use obleth_gateway::embedded::EmbeddedError;
    use obleth_gateway::{Gateway, StartError};

    // A credential variable the policy allows but nobody set.
    let (key, _) = file_key(|_| {});
    let mut unset = embedded_settings(vec![key]);
    let mut provider = openai_provider("up", "https://api.example.com/v1");
    provider.credential = Some("env:OBLETH_CREDENTIAL_ERRORS_TEST_NEVER_SET".into());
    unset.providers = vec![provider];
    unset.routes = vec![route("m", &["up"])];
    let e = Gateway::build(unset, None).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "providers `up`: credential: environment variable OBLETH_CREDENTIAL_ERRORS_TEST_NEVER_SET is not set"
    );
    match &e {
        StartError::Embedded(EmbeddedError::Catalog(CatalogLoadError::Credential {
            provider,
            error: CredentialError::EnvUnset { name },
        })) => assert_eq!(
            (provider.as_str(), name.as_str()),
            ("up", "OBLETH_CREDENTIAL_ERRORS_TEST_NEVER_SET")
        ),
        other => panic!("{other:?}"),
    }
    // The cause is in the message, so a report does not print it twice.
    assert!(std::error::Error::source(&e).is_none());

    // A route to a provider the file does not define.
    let (key, _) = file_key(|_| {});
    let mut dangling = embedded_settings(vec![key]);
    dangling.routes = vec![route("m", &["nowhere"])];
    let e = Gateway::build(dangling, None).await.unwrap_err();
    assert_eq!(e.to_string(), "routes `m`: unknown provider `nowhere`");
    assert!(matches!(
        e,
        StartError::Embedded(EmbeddedError::Catalog(
            CatalogLoadError::UnknownProvider { .. }
        ))
    ));

    // A key hash that is not hex: named by public id, the hash never shown.
    let (key, _) = file_key(|k| k.secret_sha256 = "zq".repeat(32));
    let public_id = key.public_id.clone();
    let e = Gateway::build(embedded_settings(vec![key]), None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("keys `{public_id}`: secret_sha256 is not hex")
    );
    assert!(!e.to_string().contains("zqzq"), "{e}");
    assert!(matches!(
        e,
        StartError::Embedded(EmbeddedError::KeyHash { public_id: ref id }) if *id == public_id
    ));
}

#[tokio::test]
async fn an_embedded_spend_budget_is_priced_and_refused_until_its_day_ends() {
    // $1 per million tokens both ways; the mock answers 2 + 16 tokens, so a
    // request costs 18 micro-dollars against a budget of 100.
    let (key, secret) = file_key(|k| {
        k.budget_usd = Some(0.0001);
        k.budget_period = obleth_config::model::BudgetPeriod::Day;
    });
    let mut settings = embedded_settings(vec![key]);
    settings.prices = vec![obleth_gateway::settings::PriceConfig {
        model: "m".to_owned(),
        input_per_mtok_usd: 1.0,
        output_per_mtok_usd: 1.0,
    }];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let mut admitted = 0;
    let refused = loop {
        let answer = chat(&gw, &secret, "m").await;
        if answer.status != 200 {
            break answer;
        }
        admitted += 1;
        assert!(admitted < 20, "the budget never ran out");
    };
    // 18 micro-dollars a request: the sixth starts at 90 of 100 and spends
    // past it (a reservation may overdraw what is left once), the seventh is
    // refused.
    assert_eq!(admitted, 6);
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_code(), "budget_exceeded");
    assert!(
        refused.text().contains("spend budget"),
        "{}",
        refused.text()
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=86_400).contains(&retry),
        "retry-after {retry} is the rest of the day"
    );
    gw.stop().await.unwrap();
}

#[test]
fn an_embedded_spend_budget_is_checked_naming_the_field() {
    let (key, _) = file_key(|k| k.budget_usd = Some(-1.0));
    let error = embedded_settings(vec![key]).validate().unwrap_err();
    assert_eq!(error.field, "keys[0].budget_usd");
    assert_eq!(error.message, "must not be negative");
}
