//! Amazon Bedrock providers against the strict mock, which verifies every
//! SigV4 signature (real HTTP over loopback): chat completions to Converse
//! whole and streamed (event-stream frames), tools, `/v1/messages` to an
//! Anthropic model natively (InvokeModel) and to another model through
//! Converse, usage rows, Bedrock's refusals, credentials from a file (JSON
//! or INI, rotated on disk), and, with the gateway as a process, from the
//! environment and through web identity (IRSA) with the mock's STS.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use http::Method;
use obleth_config::db::catalog::{create_provider, create_route, NewProvider};
use obleth_config::model::{ProviderKind, ProviderOptions, RouteTarget};
use obleth_testkit::mock::{
    BedrockMock, BEDROCK_ACCESS_KEY_ID, BEDROCK_SECRET_ACCESS_KEY, BEDROCK_SESSION_ACCESS_KEY_ID,
    BEDROCK_SESSION_SECRET_ACCESS_KEY, BEDROCK_SESSION_TOKEN, STS_ACCESS_KEY_ID,
    WEB_IDENTITY_ROLE_ARN, WEB_IDENTITY_TOKEN,
};
use obleth_testkit::proc::{command, free_port};
use obleth_testkit::{db, fresh_database, MockConfig, MockUpstream};
use serde_json::{json, Value};

use crate::support::*;

const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const CLAUDE_PATH: &str = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0";
const NOVA: &str = "amazon.nova-pro-v1:0";

fn static_json() -> String {
    json!({"access_key_id": BEDROCK_ACCESS_KEY_ID, "secret_access_key": BEDROCK_SECRET_ACCESS_KEY})
        .to_string()
}

fn session_ini() -> String {
    format!(
        "[default]\naws_access_key_id = {BEDROCK_SESSION_ACCESS_KEY_ID}\naws_secret_access_key = {BEDROCK_SESSION_SECRET_ACCESS_KEY}\naws_session_token = {BEDROCK_SESSION_TOKEN}\n"
    )
}

fn bedrock(name: &str, root: &str, region: &str, credential: Option<String>) -> NewProvider {
    NewProvider {
        credential_ref: credential,
        options: ProviderOptions {
            region: Some(region.to_owned()),
            ..Default::default()
        },
        ..db::provider(name, ProviderKind::Bedrock, root)
    }
}

async fn call(gw_url: &str, secret: &str, body: Value) -> Answer {
    request(
        Method::POST,
        &format!("{gw_url}/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ]})
}

/// The access key id a recorded request was signed with.
fn signed_by(upstream: &MockUpstream) -> Option<String> {
    let sent = upstream.last_request()?;
    let auth = sent.header("authorization")?;
    let credential = auth.split("Credential=").nth(1)?;
    Some(credential.split('/').next()?.to_owned())
}

#[tokio::test]
async fn bedrock_serves_chat_and_messages_signed_with_rotating_file_credentials() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(MockConfig {
        completion_tokens: 5,
        bedrock: BedrockMock {
            cache_read_tokens: Some(10),
            ..BedrockMock::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let root = upstream.root_url();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, content: &str| {
        std::fs::write(dir.path().join(name), content).unwrap();
        Some(format!("file:{}/{name}", dir.path().display()))
    };
    let wrong_secret =
        json!({"access_key_id": BEDROCK_ACCESS_KEY_ID, "secret_access_key": "not-the-secret"})
            .to_string();
    for p in [
        bedrock(
            "bdr",
            &root,
            "us-east-1",
            file("static.json", &static_json()),
        ),
        bedrock(
            "bdr-session",
            &root,
            "us-east-1",
            file("session.ini", &session_ini()),
        ),
        bedrock(
            "bdr-rotating",
            &root,
            "us-east-1",
            file("rotating.json", &static_json()),
        ),
        bedrock(
            "bdr-elsewhere",
            &root,
            "eu-west-1",
            file("static2.json", &static_json()),
        ),
        bedrock(
            "bdr-wrong",
            &root,
            "us-east-1",
            file("wrong.json", &wrong_secret),
        ),
        bedrock(
            "bdr-garbled",
            &root,
            "us-east-1",
            file("garbled", "not credentials"),
        ),
    ] {
        create_provider(&pool, &p).await.unwrap();
    }
    for (model, provider, upstream_model) in [
        ("claude", "bdr", CLAUDE),
        ("nova", "bdr-session", NOVA),
        ("rotating", "bdr-rotating", NOVA),
        ("elsewhere", "bdr-elsewhere", NOVA),
        ("wrong", "bdr-wrong", NOVA),
        ("garbled", "bdr-garbled", NOVA),
        ("absent", "bdr", "amazon.titan-none-v1:0"),
        ("odd", "bdr", "amazon nova?"),
    ] {
        let target = RouteTarget::new(provider, Some(upstream_model.to_owned()));
        create_route(&pool, model, &[target]).await.unwrap();
    }
    let (key, secret) = db_key(&pool, |_| {}).await;
    let mut settings = database_settings(&db.url, &pool).await;
    settings.egress.credential_dirs = vec![dir.path().to_path_buf()];
    settings.cache.credential_poll_secs = 1;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let url = gw.url("");
    let url = url.trim_end_matches('/');

    // Whole: Converse at the model's encoded path, signed with the file's
    // key; the answer a chat completion with the mock's counts.
    let answer = call(url, &secret, hello("claude")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "claude");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "tok1 tok2 tok3 tok4 tok5"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 14);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 10);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path, format!("{CLAUDE_PATH}/converse"));
    assert_eq!(signed_by(&upstream).as_deref(), Some(BEDROCK_ACCESS_KEY_ID));
    assert_eq!(sent.header("x-amz-security-token"), None);
    let sent = sent.body.unwrap();
    assert_eq!(sent["system"], json!([{"text": "be brief"}]));
    assert!(sent.get("model").is_none());

    // Streamed, with a session token from an INI file: chunks, the usage
    // chunk and [DONE].
    let mut body = hello("nova");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let answer = call(url, &secret, body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    let (parsed, text) = done_chunks(&answer.text());
    assert_eq!(text, "tok1 tok2 tok3 tok4 tok5");
    assert!(parsed
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(parsed.last().unwrap()["usage"]["completion_tokens"], 5);
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path, "/model/amazon.nova-pro-v1%3A0/converse-stream");
    assert_eq!(
        sent.header("x-amz-security-token"),
        Some(BEDROCK_SESSION_TOKEN)
    );

    // An image as a data URL becomes an image block the mock decodes.
    let image = json!({"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}]});
    let answer = call(url, &secret, image).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        upstream.last_request().unwrap().body.unwrap()["messages"][0]["content"][1],
        json!({"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}})
    );

    // Tools: a toolUse comes back as a tool call; its result goes back as
    // a toolResult the mock matches with the use.
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]);
    let ask = json!({"model": "claude", "tools": tools,
        "messages": [{"role": "user", "content": "please use a tool"}]});
    let answer = call(url, &secret, ask).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let tool_call = body["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(tool_call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(tool_call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["text"], "tok1 tok2 tok3 tok4 tok5");
    let follow = json!({"model": "claude", "tools": tools, "messages": [
        {"role": "user", "content": "please use a tool"},
        {"role": "assistant", "content": null, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": tool_call["id"], "content": "sunny"},
    ]});
    let answer = call(url, &secret, follow).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["finish_reason"], "stop");
    let sent = upstream.last_request().unwrap().body.unwrap();
    assert_eq!(
        sent["messages"][2]["content"][0]["toolResult"]["content"],
        json!([{"text": "sunny"}])
    );
    // Streamed tool calls arrive in pieces.
    let ask = json!({"model": "claude", "tools": tools, "stream": true,
        "messages": [{"role": "user", "content": "please use a tool"}]});
    let answer = call(url, &secret, ask).await;
    let arguments: String = chunks(&answer.text())
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap()["text"],
        "tok1 tok2 tok3 tok4 tok5"
    );

    // Anthropic clients of an Anthropic model: InvokeModel natively, whole
    // and streamed; of another model: through Converse.
    let messages_url = gw.url("/v1/messages");
    let headers = [
        ("x-api-key", secret.as_str()),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ];
    let messages = |model: &str, stream: bool| {
        let body = json!({"model": model, "max_tokens": 50, "stream": stream,
               "system": "be brief",
               "messages": [{"role": "user", "content": "hello there"}]});
        request(Method::POST, &messages_url, &headers, body.to_string())
    };
    let answer = messages("claude", false).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["model"], "claude");
    assert_eq!(body["content"][0]["text"], "tok1 tok2 tok3 tok4 tok5");
    assert_eq!(body["usage"]["output_tokens"], 5);
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path, format!("{CLAUDE_PATH}/invoke"));
    let sent = sent.body.unwrap();
    assert_eq!(sent["anthropic_version"], "bedrock-2023-05-31");
    assert_eq!(sent["system"], "be brief");
    let answer = messages("claude", true).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.text();
    for event in [
        "message_start",
        "content_block_delta",
        "message_delta",
        "message_stop",
    ] {
        assert!(text.contains(&format!("event: {event}\n")), "{text}");
    }
    assert!(text.contains("\"output_tokens\":5"), "{text}");
    assert!(text.contains("\"model\":\"claude\""), "{text}");
    assert_eq!(
        upstream.last_request().unwrap().path,
        format!("{CLAUDE_PATH}/invoke-with-response-stream")
    );
    let answer = messages("nova", false).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.json()["content"][0]["text"],
        "tok1 tok2 tok3 tok4 tok5"
    );
    assert!(upstream.last_request().unwrap().path.ends_with("/converse"));
    let answer = messages("nova", true).await;
    assert!(
        answer.text().contains("event: message_stop"),
        "{}",
        answer.text()
    );

    // Bedrock's refusals, in each client's shape with their status: a
    // region the key is not scoped for, a wrong secret (the mock computes
    // the signature again), an unknown model.
    for (model, status, code) in [
        ("elsewhere", 403, "InvalidSignatureException"),
        ("wrong", 403, "InvalidSignatureException"),
        ("absent", 404, "ResourceNotFoundException"),
    ] {
        let answer = call(url, &secret, hello(model)).await;
        assert_eq!(answer.status, status, "{model}: {}", answer.text());
        let error = &answer.json()["error"];
        assert!(error["message"].is_string(), "{}", answer.text());
        assert_eq!(error["code"], code, "{}", answer.text());
    }
    let answer = messages("wrong", false).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.json()["type"], "error", "{}", answer.text());

    // What the gateway refuses itself never leaves it.
    let before = upstream.requests();
    let answer = call(url, &secret, hello("odd")).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        answer.text().contains("not a Bedrock model id"),
        "{}",
        answer.text()
    );
    let answer = request(
        Method::POST,
        &gw.url("/v1/embeddings"),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "application/json"),
        ],
        json!({"model": "claude", "input": "hi"}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("kind bedrock"), "{}", answer.text());
    let answer = call(url, &secret, hello("garbled")).await;
    assert!(answer.status >= 500, "{}", answer.text());
    assert!(
        !answer.text().contains("not credentials"),
        "{}",
        answer.text()
    );
    assert_eq!(upstream.requests(), before);

    // A credential file rotated on disk is used without a reload: the
    // static key gives way to the session key and its token.
    assert_eq!(call(url, &secret, hello("rotating")).await.status, 200);
    assert_eq!(signed_by(&upstream).as_deref(), Some(BEDROCK_ACCESS_KEY_ID));
    let next = dir.path().join("rotating.next");
    std::fs::write(&next, session_ini()).unwrap();
    std::fs::rename(&next, dir.path().join("rotating.json")).unwrap();
    wait_until(Duration::from_secs(15), "the rotated credential", || {
        let (secret, upstream) = (&secret, &upstream);
        async move {
            call(url, secret, hello("rotating")).await.status == 200
                && signed_by(upstream).as_deref() == Some(BEDROCK_SESSION_ACCESS_KEY_ID)
        }
    })
    .await;
    assert_eq!(
        upstream
            .last_request()
            .unwrap()
            .header("x-amz-security-token"),
        Some(BEDROCK_SESSION_TOKEN)
    );

    // A throttling exception in the middle of a stream ends it with an
    // error payload and no [DONE].
    upstream.set_config(MockConfig {
        completion_tokens: 5,
        bedrock: BedrockMock {
            stream_exception_after: Some(2),
            ..BedrockMock::default()
        },
        ..MockConfig::default()
    });
    let mut body = hello("claude");
    body["stream"] = json!(true);
    let answer = call(url, &secret, body).await;
    let text = answer.text();
    assert!(text.contains("throttlingException"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");

    // Throttled: a 429 in each client's shape, rate_limit_error, the
    // exception's name as the OpenAI code.
    upstream.set_config(MockConfig {
        fail_status: Some(429),
        ..MockConfig::default()
    });
    let answer = call(url, &secret, hello("claude")).await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert_eq!(
        answer.json()["error"]["type"],
        "rate_limit_error",
        "{}",
        answer.text()
    );
    assert_eq!(
        answer.json()["error"]["code"],
        "ThrottlingException",
        "{}",
        answer.text()
    );
    let answer = messages("claude", false).await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert_eq!(
        answer.json()["error"]["type"],
        "rate_limit_error",
        "{}",
        answer.text()
    );

    // Usage rows with the mock's counts: the first whole answer (4 words
    // of prompt and 10 cached) and the stream (4 and 10 too).
    // The same for the /v1/messages requests, native (InvokeModel's
    // Anthropic usage, whole and from the stream's events) and through
    // Converse.
    let rows = usage_tokens(&pool, key.id, 10).await;
    assert_eq!(rows[0], (Some(14), Some(5)), "{rows:?}");
    assert_eq!(rows[1], (Some(14), Some(5)), "streamed: {rows:?}");
    for (i, what) in [
        (6, "invoke"),
        (7, "invoke stream"),
        (8, "converse"),
        (9, "converse stream"),
    ] {
        assert_eq!(rows[i], (Some(14), Some(5)), "{what}: {rows:?}");
    }
    gw.stop().await.unwrap();
}

const BIN: &str = env!("CARGO_BIN_EXE_obleth-gateway");

/// The gateway as a process with `envs` and no AWS variable of the test's
/// own environment; its listen port.
async fn spawn(dir: &Path, db_url: &str, envs: &[(&str, String)]) -> (tokio::process::Child, u16) {
    let config = dir.join("gateway.toml");
    let (port, ops) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops}\"\ndrain_delay_secs = 0\n"),
    )
    .unwrap();
    let mut cmd = command(BIN);
    cmd.arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("OBLETH_DATABASE__URL", db_url)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], ops));
    obleth_testkit::poll::wait_ready(addr, Duration::from_secs(60))
        .await
        .expect("process ready");
    (child, port)
}

#[tokio::test]
async fn bedrock_signs_with_the_environments_credentials_or_web_identity() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    create_provider(
        &pool,
        &bedrock("bdr", &upstream.root_url(), "us-east-1", None),
    )
    .await
    .unwrap();
    let target = RouteTarget::new("bdr", Some(NOVA.to_owned()));
    create_route(&pool, "nova", &[target]).await.unwrap();
    let (_, secret) = db_key(&pool, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();

    // The environment's temporary credentials, token included.
    let (mut child, port) = spawn(
        dir.path(),
        &db.url,
        &[
            (
                "AWS_ACCESS_KEY_ID",
                BEDROCK_SESSION_ACCESS_KEY_ID.to_owned(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY",
                BEDROCK_SESSION_SECRET_ACCESS_KEY.to_owned(),
            ),
            ("AWS_SESSION_TOKEN", BEDROCK_SESSION_TOKEN.to_owned()),
        ],
    )
    .await;
    let url = format!("http://127.0.0.1:{port}");
    let answer = call(&url, &secret, hello("nova")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        signed_by(&upstream).as_deref(),
        Some(BEDROCK_SESSION_ACCESS_KEY_ID)
    );
    assert_eq!(
        upstream
            .last_request()
            .unwrap()
            .header("x-amz-security-token"),
        Some(BEDROCK_SESSION_TOKEN)
    );
    child.kill().await.unwrap();

    // Web identity: the token file exchanged at the mock's STS for
    // temporary credentials, which sign the request.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, WEB_IDENTITY_TOKEN).unwrap();
    // Credentials about to expire are exchanged again at each request, and
    // the token file is read each time.
    upstream.set_config(MockConfig {
        bedrock: BedrockMock {
            sts_lifetime_secs: 60,
            ..BedrockMock::default()
        },
        ..MockConfig::default()
    });
    let (mut child, port) = spawn(
        dir.path(),
        &db.url,
        &[
            ("AWS_ROLE_ARN", WEB_IDENTITY_ROLE_ARN.to_owned()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            (
                "AWS_ENDPOINT_URL_STS",
                format!("{}/sts", upstream.root_url()),
            ),
        ],
    )
    .await;
    let url = format!("http://127.0.0.1:{port}");
    let answer = call(&url, &secret, hello("nova")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(signed_by(&upstream).as_deref(), Some(STS_ACCESS_KEY_ID));
    assert!(upstream
        .last_request()
        .unwrap()
        .header("x-amz-security-token")
        .is_some());
    assert_eq!(upstream.aws_sts_calls(), 1);
    assert_eq!(call(&url, &secret, hello("nova")).await.status, 200);
    assert_eq!(
        upstream.aws_sts_calls(),
        2,
        "credentials near expiry are renewed"
    );
    std::fs::write(&token_file, "a-token-sts-refuses").unwrap();
    let answer = call(&url, &secret, hello("nova")).await;
    assert!(answer.status >= 500, "{}", answer.text());
    assert!(
        !answer.text().contains("a-token-sts-refuses"),
        "{}",
        answer.text()
    );
    // Each of the route's attempts tried the exchange again.
    let refused = upstream.aws_sts_calls();
    assert!(refused > 2, "{refused}");
    // Credentials valid for an hour are kept.
    std::fs::write(&token_file, WEB_IDENTITY_TOKEN).unwrap();
    upstream.set_config(MockConfig::default());
    assert_eq!(call(&url, &secret, hello("nova")).await.status, 200);
    assert_eq!(call(&url, &secret, hello("nova")).await.status, 200);
    assert_eq!(
        upstream.aws_sts_calls(),
        refused + 1,
        "fresh credentials are cached"
    );
    child.kill().await.unwrap();
}
