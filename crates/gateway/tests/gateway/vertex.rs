//! Vertex AI with tokens the gateway mints, against the strict mock: a
//! service-account key (assertions checked RS256 by the mock's token
//! endpoint), a workload identity federation file (the mock's STS) and the
//! metadata server. Tokens are cached, renewed before they expire, minted
//! anew when the key file is replaced, and a token endpoint that fails
//! gives the client a clear 502 that the next request recovers from.

use http::Method;
use obleth_config::db::catalog::{create_provider, create_route, NewProvider};
use obleth_config::model::{ProviderKind, ProviderOptions, RouteTarget};
use obleth_testkit::mock::{
    federation_file, service_account_key, FEDERATION_SUBJECT_TOKEN, VERTEX_ACCESS_TOKEN,
};
use obleth_testkit::{db, fresh_database, MockConfig, MockUpstream};
use serde_json::{json, Value};

use crate::support::*;

async fn chat(gw: &TestGateway, secret: &str, model: &str) -> Answer {
    request(
        Method::POST,
        &gw.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "application/json"),
        ],
        json!({"model": model, "messages": [{"role": "user", "content": "hello"}]}).to_string(),
    )
    .await
}

fn vertex_options(auth: Option<&str>) -> ProviderOptions {
    ProviderOptions {
        project: Some("mock-project".into()),
        location: Some("us-central1".into()),
        auth: auth.map(str::to_owned),
        ..Default::default()
    }
}

/// The bearer the mock saw last.
fn last_bearer(upstream: &MockUpstream) -> String {
    upstream
        .last_request()
        .and_then(|r| r.header("authorization").map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_service_account_key_mints_cached_tokens_renewed_on_expiry_and_rotation() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(MockConfig {
        completion_tokens: 3,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("vertex-sa.json");
    let first = "gateway@mock-project.iam.gserviceaccount.com";
    std::fs::write(&key_file, service_account_key(upstream.addr(), first)).unwrap();
    // Another provider with a plain access token keeps working beside it.
    std::fs::write(dir.path().join("token"), VERTEX_ACCESS_TOKEN).unwrap();
    let base = format!("http://{}/v1", upstream.addr());
    for (name, file, auth) in [
        // The key is recognised by its content...
        ("vtx-sa", "vertex-sa.json", None),
        // ... or named by options.auth.
        ("vtx-sa-named", "vertex-sa.json", Some("service-account")),
        ("vtx-token", "token", None),
        // A key where an access token is expected is not sent.
        ("vtx-wrong", "vertex-sa.json", Some("access-token")),
    ] {
        let provider = NewProvider {
            credential_ref: Some(format!("file:{}/{file}", dir.path().display())),
            options: vertex_options(auth),
            ..db::provider(name, ProviderKind::Vertex, &base)
        };
        create_provider(&pool, &provider).await.unwrap();
        let target = RouteTarget::new(name, Some("gemini-2.5-flash".to_owned()));
        create_route(&pool, name, &[target]).await.unwrap();
    }
    let (_key, secret) = db_key(&pool, |_| {}).await;
    let mut settings = database_settings(&db.url, &pool).await;
    settings.egress.credential_dirs = vec![dir.path().to_path_buf()];
    settings.cache.credential_poll_secs = 1;
    // One attempt a request: a failed token fetch is the client's answer.
    settings.routing.max_attempts = 1;
    settings.routing.eject_after_failures = 0;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;

    // Many requests, one token, even when they arrive together before any
    // token exists (one mints, the others wait for it): the assertion
    // verified, the minted token sent as the bearer.
    let together: Vec<Answer> =
        futures_util::future::join_all((0..4).map(|_| chat(&gw, &secret, "vtx-sa"))).await;
    for answer in together.iter().chain([&chat(&gw, &secret, "vtx-sa").await]) {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(
            answer.json()["choices"][0]["message"]["content"],
            "tok1 tok2 tok3"
        );
    }
    assert_eq!(upstream.token_calls(), 1);
    assert_eq!(upstream.last_token_issuer().as_deref(), Some(first));
    let minted = last_bearer(&upstream);
    assert!(minted.starts_with("Bearer ya29.minted-"), "{minted}");
    assert_eq!(
        upstream.last_request().unwrap().path,
        "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    // options.auth naming the mode: the same, with its own token cache.
    let answer = chat(&gw, &secret, "vtx-sa-named").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(upstream.token_calls(), 2);
    let answer = chat(&gw, &secret, "vtx-token").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        last_bearer(&upstream),
        format!("Bearer {VERTEX_ACCESS_TOKEN}")
    );
    let before = upstream.requests();
    let answer = chat(&gw, &secret, "vtx-wrong").await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(
        upstream.requests(),
        before,
        "a key is never sent as a token"
    );
    assert!(!answer.text().contains("PRIVATE KEY"), "{}", answer.text());

    // A replaced key file is read again and mints with the new account.
    let second = "rotated@mock-project.iam.gserviceaccount.com";
    std::fs::write(&key_file, service_account_key(upstream.addr(), second)).unwrap();
    wait_until(
        std::time::Duration::from_secs(10),
        "a token minted with the replaced key",
        || async {
            let answer = chat(&gw, &secret, "vtx-sa").await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            upstream.last_token_issuer().as_deref() == Some(second)
        },
    )
    .await;
    assert_ne!(last_bearer(&upstream), minted, "a new token is sent");

    // Tokens that live less than the minute of margin are renewed for each
    // request.
    let mut config = upstream.config();
    config.gemini.token_expires_in = 30;
    upstream.set_config(config);
    let third = "short@mock-project.iam.gserviceaccount.com";
    std::fs::write(&key_file, service_account_key(upstream.addr(), third)).unwrap();
    wait_until(
        std::time::Duration::from_secs(10),
        "a token minted with the third key",
        || async {
            let answer = chat(&gw, &secret, "vtx-sa").await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            upstream.last_token_issuer().as_deref() == Some(third)
        },
    )
    .await;
    let calls = upstream.token_calls();
    for _ in 0..2 {
        let answer = chat(&gw, &secret, "vtx-sa").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(upstream.token_calls(), calls + 2);

    // The token endpoint fails: a clear 502 without detail, nothing sent to
    // Vertex AI; the next request mints again and is served.
    upstream.fail_token_calls(1);
    let before = upstream.requests();
    let answer = chat(&gw, &secret, "vtx-sa").await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "upstream_auth_failed", "{error}");
    assert_eq!(error["type"], "upstream_error", "{error}");
    let shown = answer.text();
    for detail in ["127.0.0.1", "oauth2", "ya29", "temporarily_unavailable"] {
        assert!(!shown.contains(detail), "{detail} in {shown}");
    }
    assert_eq!(upstream.requests(), before);
    let answer = chat(&gw, &secret, "vtx-sa").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(upstream.token_calls(), calls + 4);

    // A token Vertex AI refuses (revoked) is not sent again: the 401 is the
    // client's, and the next request mints a new one although the cached
    // token has not expired.
    let mut config = upstream.config();
    config.gemini.token_expires_in = 3600;
    upstream.set_config(config);
    let answer = chat(&gw, &secret, "vtx-sa-named").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let calls = upstream.token_calls();
    upstream.revoke_tokens();
    let answer = chat(&gw, &secret, "vtx-sa-named").await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert_eq!(upstream.token_calls(), calls, "no mint before the refusal");
    let answer = chat(&gw, &secret, "vtx-sa-named").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(upstream.token_calls(), calls + 1);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn workload_identity_mints_through_federation_and_the_metadata_server() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("subject-token");
    std::fs::write(&subject, FEDERATION_SUBJECT_TOKEN).unwrap();
    std::fs::write(
        dir.path().join("federation.json"),
        federation_file(upstream.addr(), &subject.display().to_string()),
    )
    .unwrap();
    let base = format!("http://{}/v1", upstream.addr());
    for (name, credential) in [
        (
            "vtx-federated",
            Some(format!("file:{}/federation.json", dir.path().display())),
        ),
        ("vtx-metadata", None),
    ] {
        let provider = NewProvider {
            credential_ref: credential,
            options: vertex_options(Some("workload-identity")),
            ..db::provider(name, ProviderKind::Vertex, &base)
        };
        create_provider(&pool, &provider).await.unwrap();
        let target = RouteTarget::new(name, Some("gemini-2.0-flash".to_owned()));
        create_route(&pool, name, &[target]).await.unwrap();
    }
    let (_key, secret) = db_key(&pool, |_| {}).await;
    let mut settings = database_settings(&db.url, &pool).await;
    settings.egress.credential_dirs = vec![dir.path().to_path_buf()];
    settings.upstream.metadata_host = Some(upstream.addr().to_string());
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;

    for _ in 0..2 {
        let answer = chat(&gw, &secret, "vtx-federated").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(upstream.google_sts_calls(), 1);
    assert!(last_bearer(&upstream).starts_with("Bearer ya29.minted-"));
    for _ in 0..2 {
        let answer = chat(&gw, &secret, "vtx-metadata").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(upstream.metadata_calls(), 1);
    assert!(last_bearer(&upstream).starts_with("Bearer ya29.minted-"));
    assert_eq!(upstream.token_calls(), 0);
    let body: Value = upstream.last_request().unwrap().body.unwrap();
    assert_eq!(body["contents"][0]["role"], "user");
    gw.stop().await.unwrap();
}
