//! Tests of the mock's Bedrock endpoints over real HTTP: the SigV4 checks
//! (a request signed right passes; a wrong secret, region, session token
//! or a body changed after signing is a 403), Converse whole and streamed
//! (event-stream frames), InvokeModel whole and streamed, the Converse
//! body's refusals, and STS's AssumeRoleWithWebIdentity.

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_runtime_api::client::identity::Identity;
use axum::body::Bytes;
use axum::http::{Method, Request};
use base64::Engine;
use http_body_util::{BodyExt as _, Full};
use obleth_testkit::mock::{
    BedrockMock, MockConfig, MockUpstream, BEDROCK_ACCESS_KEY_ID, BEDROCK_SECRET_ACCESS_KEY,
    BEDROCK_SESSION_ACCESS_KEY_ID, BEDROCK_SESSION_SECRET_ACCESS_KEY, BEDROCK_SESSION_TOKEN,
    FAIL_STATUS_HEADER, STS_ACCESS_KEY_ID, WEB_IDENTITY_ROLE_ARN, WEB_IDENTITY_TOKEN,
};
use serde_json::{json, Value};

use super::{start, Answer, Api};

const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20240620-v1%3A0";
const NOVA: &str = "amazon.nova-pro-v1%3A0";

struct Keys<'a> {
    id: &'a str,
    secret: &'a str,
    token: Option<&'a str>,
    region: &'a str,
}

const STATIC: Keys<'static> = Keys {
    id: BEDROCK_ACCESS_KEY_ID,
    secret: BEDROCK_SECRET_ACCESS_KEY,
    token: None,
    region: "us-east-1",
};

/// A request to `path` signed with `keys` (the body signed may differ
/// from the one sent, to prove the body is checked).
fn signed(
    mock: &MockUpstream,
    path: &str,
    keys: &Keys<'_>,
    signed_body: &[u8],
    body: &[u8],
    extra: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let host = mock.addr().to_string();
    let url = format!("http://{host}{path}");
    let identity: Identity = aws_credential_types::Credentials::new(
        keys.id,
        keys.secret,
        keys.token.map(str::to_owned),
        None,
        "test",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(keys.region)
        .name("bedrock")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.into_iter(),
        SignableBody::Bytes(signed_body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header("host", &host)
        .header("content-type", "application/json");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let mut request = request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    instructions.apply_to_request_http1x(&mut request);
    request
}

fn converse_body(text: &str) -> Value {
    json!({
        "system": [{"text": "be brief"}],
        "messages": [{"role": "user", "content": [{"text": text}]}],
    })
}

async fn post(api: &Api, mock: &MockUpstream, path: &str, keys: &Keys<'_>, body: &Value) -> Answer {
    let bytes = body.to_string();
    api.send(signed(
        mock,
        path,
        keys,
        bytes.as_bytes(),
        bytes.as_bytes(),
        &[],
    ))
    .await
}

fn assert_aws_error(answer: &Answer, status: u16, kind: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
    let header = answer.headers["x-amzn-errortype"].to_str().unwrap();
    assert!(header.starts_with(&format!("{kind}:")), "{header}");
    assert!(answer.body["message"].is_string(), "{}", answer.body);
}

/// The (event type or exception type, payload) of each frame.
async fn frames(response: hyper::Response<hyper::body::Incoming>) -> Vec<(String, Value)> {
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.amazon.eventstream"
    );
    let mut bytes = response.into_body().collect().await.unwrap().to_bytes();
    let mut decoder = MessageFrameDecoder::new();
    let mut out = Vec::new();
    while let DecodedFrame::Complete(message) = decoder.decode_frame(&mut bytes).unwrap() {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .map(|h| h.value().as_string().unwrap().as_str().to_owned())
        };
        let name = header(":event-type")
            .or_else(|| header(":exception-type"))
            .unwrap();
        out.push((name, serde_json::from_slice(message.payload()).unwrap()));
    }
    out
}

#[tokio::test]
async fn converse_needs_a_valid_sigv4_signature() {
    let (mock, api) = start(MockConfig::default()).await;
    let path = format!("/model/{NOVA}/converse");
    let body = converse_body("hello there");
    let ok = post(&api, &mock, &path, &STATIC, &body).await;
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.body);
    let session = Keys {
        id: BEDROCK_SESSION_ACCESS_KEY_ID,
        secret: BEDROCK_SESSION_SECRET_ACCESS_KEY,
        token: Some(BEDROCK_SESSION_TOKEN),
        region: "us-east-1",
    };
    assert_eq!(
        post(&api, &mock, &path, &session, &body)
            .await
            .status
            .as_u16(),
        200
    );
    for (keys, kind) in [
        (
            Keys {
                secret: "wrong",
                ..STATIC
            },
            "InvalidSignatureException",
        ),
        (
            Keys {
                region: "eu-west-1",
                ..STATIC
            },
            "InvalidSignatureException",
        ),
        (
            Keys {
                id: "AKIDUNKNOWN",
                ..STATIC
            },
            "UnrecognizedClientException",
        ),
        (
            Keys {
                token: Some("unexpected"),
                ..STATIC
            },
            "UnrecognizedClientException",
        ),
        (
            Keys {
                token: None,
                ..session
            },
            "UnrecognizedClientException",
        ),
        (
            Keys {
                token: Some("other-token"),
                ..session
            },
            "UnrecognizedClientException",
        ),
    ] {
        let answer = post(&api, &mock, &path, &keys, &body).await;
        assert_aws_error(&answer, 403, kind);
    }
    // A body changed after signing, and no signature at all.
    let sent = body.to_string();
    let tampered = api
        .send(signed(&mock, &path, &STATIC, b"{}", sent.as_bytes(), &[]))
        .await;
    assert_aws_error(&tampered, 403, "InvalidSignatureException");
    let mut unsigned = api.request(Method::POST, "", &[], &sent);
    *unsigned.uri_mut() = format!("{}{path}", mock.root_url()).parse().unwrap();
    assert_aws_error(
        &api.send(unsigned).await,
        403,
        "MissingAuthenticationTokenException",
    );
}

#[tokio::test]
async fn converse_answers_text_tools_and_usage() {
    let (mock, api) = start(MockConfig {
        completion_tokens: 3,
        bedrock: BedrockMock {
            cache_read_tokens: Some(7),
            ..BedrockMock::default()
        },
        ..MockConfig::default()
    })
    .await;
    let path = format!("/model/{CLAUDE}/converse");
    let answer = post(&api, &mock, &path, &STATIC, &converse_body("hello there")).await;
    assert_eq!(
        answer.body["output"]["message"]["content"][0]["text"],
        "tok1 tok2 tok3"
    );
    assert_eq!(answer.body["stopReason"], "end_turn");
    assert_eq!(answer.body["usage"]["inputTokens"], 4);
    assert_eq!(answer.body["usage"]["outputTokens"], 3);
    assert_eq!(answer.body["usage"]["cacheReadInputTokens"], 7);
    assert_eq!(mock.last_request().unwrap().path, path);

    let tools = json!({"tools": [{"toolSpec": {"name": "look", "inputSchema": {"json": {"type": "object"}}}}]});
    let mut body = converse_body("please use a tool");
    body["toolConfig"] = tools.clone();
    body["inferenceConfig"] = json!({"maxTokens": 50});
    let answer = post(&api, &mock, &path, &STATIC, &body).await;
    assert_eq!(answer.body["stopReason"], "tool_use");
    let tool_use = &answer.body["output"]["message"]["content"][0]["toolUse"];
    assert_eq!(tool_use["name"], "look");
    // The round trip: the result answers the use.
    let id = tool_use["toolUseId"].as_str().unwrap();
    let mut turn = converse_body("please use a tool");
    turn["toolConfig"] = tools;
    turn["messages"] = json!([
        {"role": "user", "content": [{"text": "please use a tool"}]},
        {"role": "assistant", "content": [{"toolUse": tool_use}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": id, "content": [{"text": "done"}]}}]},
    ]);
    let answer = post(&api, &mock, &path, &STATIC, &turn).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
    assert_eq!(answer.body["stopReason"], "end_turn");

    let mut short = converse_body("hi");
    short["inferenceConfig"] = json!({"maxTokens": 2});
    let answer = post(&api, &mock, &path, &STATIC, &short).await;
    assert_eq!(answer.body["stopReason"], "max_tokens");
}

#[tokio::test]
async fn converse_refuses_bodies_bedrock_refuses() {
    let (mock, api) = start(MockConfig::default()).await;
    let path = format!("/model/{NOVA}/converse");
    let user = |t: &str| json!({"role": "user", "content": [{"text": t}]});
    for body in [
        json!({"messages": []}),
        json!({"messages": [user("a")], "model": "x"}),
        json!({"messages": [user("a"), user("b")]}),
        json!({"messages": [{"role": "assistant", "content": [{"text": "a"}]}]}),
        json!({"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"toolResult": {"toolUseId": "x", "content": [{"text": "r"}]}}]}]}),
        json!({"messages": [user("a")], "inferenceConfig": {"maxTokens": 0}}),
        json!({"messages": [user("a")], "inferenceConfig": {"max_tokens": 5}}),
    ] {
        let answer = post(&api, &mock, &path, &STATIC, &body).await;
        assert_aws_error(&answer, 400, "ValidationException");
    }
    let unknown = post(
        &api,
        &mock,
        "/model/no.such-model/converse",
        &STATIC,
        &converse_body("a"),
    )
    .await;
    assert_aws_error(&unknown, 404, "ResourceNotFoundException");
    // Injected failures come in Bedrock's shape.
    let bytes = converse_body("a").to_string();
    let request = signed(
        &mock,
        &path,
        &STATIC,
        bytes.as_bytes(),
        bytes.as_bytes(),
        &[(FAIL_STATUS_HEADER, "429")],
    );
    let answer = api.send(request).await;
    assert_aws_error(&answer, 429, "ThrottlingException");
}

#[tokio::test]
async fn converse_stream_and_invoke_stream_are_event_stream_frames() {
    let (mock, api) = start(MockConfig {
        completion_tokens: 2,
        ..MockConfig::default()
    })
    .await;
    let bytes = converse_body("hello").to_string();
    let path = format!("/model/{NOVA}/converse-stream");
    let request = signed(
        &mock,
        &path,
        &STATIC,
        bytes.as_bytes(),
        bytes.as_bytes(),
        &[],
    );
    let events = frames(api.client.request(request).await.unwrap()).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert_eq!(events[2].1["delta"]["text"], " tok2");
    assert_eq!(events[5].1["usage"]["outputTokens"], 2);

    mock.set_config(MockConfig {
        completion_tokens: 2,
        bedrock: BedrockMock {
            stream_exception_after: Some(1),
            ..BedrockMock::default()
        },
        ..MockConfig::default()
    });
    let request = signed(
        &mock,
        &path,
        &STATIC,
        bytes.as_bytes(),
        bytes.as_bytes(),
        &[],
    );
    let events = frames(api.client.request(request).await.unwrap()).await;
    assert_eq!(events.last().unwrap().0, "throttlingException");

    let invoke = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]}).to_string();
    let path = format!("/model/{CLAUDE}/invoke-with-response-stream");
    let request = signed(
        &mock,
        &path,
        &STATIC,
        invoke.as_bytes(),
        invoke.as_bytes(),
        &[],
    );
    let events = frames(api.client.request(request).await.unwrap()).await;
    let inner: Vec<Value> = events
        .iter()
        .map(|(name, payload)| {
            assert_eq!(name, "chunk");
            let b = base64::engine::general_purpose::STANDARD
                .decode(payload["bytes"].as_str().unwrap())
                .unwrap();
            serde_json::from_slice(&b).unwrap()
        })
        .collect();
    assert_eq!(inner[0]["type"], "message_start");
    assert_eq!(inner.last().unwrap()["type"], "message_stop");
}

#[tokio::test]
async fn invoke_takes_bedrocks_anthropic_body_only() {
    let (mock, api) = start(MockConfig::default()).await;
    let path = format!("/model/{CLAUDE}/invoke");
    let good = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]});
    let answer = post(&api, &mock, &path, &STATIC, &good).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
    assert_eq!(answer.body["type"], "message");
    assert_eq!(answer.body["usage"]["input_tokens"], 1);
    for patch in [
        json!({"model": "x"}),
        json!({"stream": true}),
        json!({"anthropic_version": "2023-06-01"}),
    ] {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        assert_aws_error(
            &post(&api, &mock, &path, &STATIC, &body).await,
            400,
            "ValidationException",
        );
    }
    let nova = post(
        &api,
        &mock,
        &format!("/model/{NOVA}/invoke"),
        &STATIC,
        &good,
    )
    .await;
    assert_aws_error(&nova, 400, "ValidationException");
}

#[tokio::test]
async fn sts_exchanges_the_web_identity_token_for_temporary_credentials() {
    let (mock, api) = start(MockConfig::default()).await;
    let form = |token: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "AssumeRoleWithWebIdentity")
            .append_pair("Version", "2011-06-15")
            .append_pair("RoleArn", WEB_IDENTITY_ROLE_ARN)
            .append_pair("RoleSessionName", "test")
            .append_pair("WebIdentityToken", token)
            .finish()
    };
    let sts = |body: String| {
        Request::builder()
            .method(Method::POST)
            .uri(format!("{}/sts/", mock.root_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let ok = api.send(sts(form(WEB_IDENTITY_TOKEN))).await;
    assert_eq!(ok.status.as_u16(), 200);
    let xml = ok.body.as_str().unwrap();
    assert!(
        xml.contains(&format!("<AccessKeyId>{STS_ACCESS_KEY_ID}</AccessKeyId>")),
        "{xml}"
    );
    assert!(xml.contains("<Expiration>"), "{xml}");
    let bad = api.send(sts(form("another-token"))).await;
    assert_eq!(bad.status.as_u16(), 400);
    assert!(bad.body.as_str().unwrap().contains("InvalidIdentityToken"));
    assert_eq!(mock.aws_sts_calls(), 2);
    assert_eq!(
        mock.requests(),
        0,
        "STS is not counted among model requests"
    );
}
