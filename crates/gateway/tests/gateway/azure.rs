//! Azure OpenAI providers against the strict mock (real HTTP over loopback):
//! the deployment in the path, `api-version` from the provider's options,
//! the `api-key` header or an Entra ID token, chat completions whole and
//! streamed, embeddings, the `v1` Responses API, Anthropic clients
//! translated, and Azure's refusals passed on.

use http::Method;
use obleth_config::db::catalog::{create_provider, create_route, NewProvider};
use obleth_config::model::{ProviderKind, ProviderOptions, RouteTarget};
use obleth_testkit::mock::{AzureMock, AZURE_API_KEY};
use obleth_testkit::{db, fresh_database, MockConfig, MockUpstream};
use serde_json::{json, Value};

use crate::support::*;

async fn call(gw: &TestGateway, secret: &str, path: &str, body: Value) -> Answer {
    request(
        Method::POST,
        &gw.url(path),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn azure_deployments_serve_every_endpoint_with_the_key_or_an_entra_token() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(MockConfig {
        completion_tokens: 5,
        azure: AzureMock {
            entra_token: Some("entra-token".into()),
            ..AzureMock::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let root = format!("http://{}", upstream.addr());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("azure"), AZURE_API_KEY).unwrap();
    std::fs::write(dir.path().join("entra"), "entra-token").unwrap();
    let azure = |name: &str, file: &str, options: ProviderOptions| NewProvider {
        credential_ref: Some(format!("file:{}/{file}", dir.path().display())),
        options,
        ..db::provider(name, ProviderKind::Azure, &root)
    };
    for provider in [
        azure(
            "az",
            "azure",
            ProviderOptions {
                api_version: Some("2024-06-01".into()),
                ..Default::default()
            },
        ),
        azure(
            "az-entra",
            "entra",
            ProviderOptions {
                auth: Some("entra".into()),
                ..Default::default()
            },
        ),
        azure(
            "az-future",
            "azure",
            ProviderOptions {
                api_version: Some("2099-01-01".into()),
                ..Default::default()
            },
        ),
    ] {
        create_provider(&pool, &provider).await.unwrap();
    }
    for (model, provider, deployment) in [
        ("gpt-4o", "az", None),
        ("mini", "az-entra", Some("gpt-4o-mini")),
        ("embed", "az", Some("text-embedding-3-small")),
        ("absent", "az", Some("gpt-5")),
        ("odd", "az", Some("gpt/4o")),
        ("future", "az-future", Some("gpt-4o")),
    ] {
        let target = RouteTarget::new(provider, deployment.map(str::to_owned));
        create_route(&pool, model, &[target]).await.unwrap();
    }
    let (key, secret) = db_key(&pool, |_| {}).await;
    let mut settings = database_settings(&db.url, &pool).await;
    settings.egress.credential_dirs = vec![dir.path().to_path_buf()];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let hello = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});

    // The public model is the deployment; the key goes as `api-key`.
    let answer = call(&gw, &secret, "/v1/chat/completions", hello("gpt-4o")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["model"], "gpt-4o");
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path, "/openai/deployments/gpt-4o/chat/completions");
    assert_eq!(sent.header("api-key"), Some(AZURE_API_KEY));
    assert_eq!(sent.header("authorization"), None);

    // An Entra ID token as a bearer; the target's model is the deployment;
    // streamed.
    let mut body = hello("mini");
    body["stream"] = json!(true);
    let answer = call(&gw, &secret, "/v1/chat/completions", body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.text().contains("data: [DONE]"), "{}", answer.text());
    let sent = upstream.last_request().unwrap();
    assert_eq!(
        sent.path,
        "/openai/deployments/gpt-4o-mini/chat/completions"
    );
    assert_eq!(sent.header("authorization"), Some("Bearer entra-token"));
    assert_eq!(sent.header("api-key"), None);

    let answer = call(
        &gw,
        &secret,
        "/v1/embeddings",
        json!({"model": "embed", "input": "hello"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        upstream.last_request().unwrap().path,
        "/openai/deployments/text-embedding-3-small/embeddings"
    );

    // The Responses API goes to Azure's v1 API, the deployment in the body.
    let answer = call(
        &gw,
        &secret,
        "/v1/responses",
        json!({"model": "mini", "input": "hello there"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path, "/openai/v1/responses");
    assert_eq!(sent.body.unwrap()["model"], "gpt-4o-mini");

    // An Anthropic client, translated to a chat completion and back.
    let answer = request(
        Method::POST,
        &gw.url("/v1/messages"),
        &[
            ("x-api-key", secret.as_str()),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ],
        json!({"model": "gpt-4o", "max_tokens": 50,
               "messages": [{"role": "user", "content": "hello there"}]})
        .to_string(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["type"], "message");
    assert_eq!(answer.json()["usage"]["output_tokens"], 5);

    // Azure's refusals reach the client as they are: an unknown deployment,
    // an api-version the service does not have.
    let answer = call(&gw, &secret, "/v1/chat/completions", hello("absent")).await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "DeploymentNotFound");
    let answer = call(&gw, &secret, "/v1/chat/completions", hello("future")).await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    // A model that cannot be a deployment never leaves the gateway.
    let before = upstream.requests();
    let answer = call(&gw, &secret, "/v1/chat/completions", hello("odd")).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        answer.text().contains("not an Azure deployment name"),
        "{}",
        answer.text()
    );
    assert_eq!(upstream.requests(), before);

    // Usage for each served request (five), the completions' as the mock
    // counted them.
    let rows: Vec<(Option<i32>,)> = wait_for_rows(&pool, key.id, 5).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows.iter().all(|(c,)| *c == Some(5)), "{rows:?}");
}

/// The completion tokens of the key's usage rows once there are `count`.
async fn wait_for_rows(pool: &sqlx::PgPool, key: uuid::Uuid, count: usize) -> Vec<(Option<i32>,)> {
    wait_for_usage_rows(pool, key, count).await;
    sqlx::query_as(
        "SELECT completion_tokens FROM usage_ledger WHERE key_id = $1 AND status = 200 \
         AND model <> 'embed' ORDER BY created_at",
    )
    .bind(key)
    .fetch_all(pool)
    .await
    .unwrap()
}
