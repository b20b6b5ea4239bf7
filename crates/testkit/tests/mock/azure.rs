//! Tests of the mock's Azure OpenAI endpoints over real HTTP: the refusals
//! Azure makes (key, token, api-version, deployment), then answers from the
//! deployment paths and the `v1` Responses API.

use obleth_testkit::mock::{AzureMock, MockConfig, AZURE_API_KEY};
use serde_json::{json, Value};

use super::{chat_body, start, Answer, Api};

const KEY: (&str, &str) = ("api-key", AZURE_API_KEY);
const CHAT: &str = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";

fn assert_azure_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "{}", answer.body);
    assert!(
        answer.body["error"]["message"].is_string(),
        "{}",
        answer.body
    );
}

async fn azure(config: MockConfig) -> (obleth_testkit::mock::MockUpstream, Api) {
    let (mock, mut api) = start(config).await;
    api.base_url = format!("http://{}", mock.addr());
    (mock, api)
}

#[tokio::test]
async fn the_deployment_paths_refuse_what_azure_refuses() {
    let (mock, api) = azure(MockConfig::default()).await;
    let body = chat_body("ignored", false);
    // The key first: missing or wrong is 401, whatever else is wrong.
    assert_azure_error(&api.post(CHAT, &[], body.clone()).await, 401, "401");
    let wrong = api
        .post(CHAT, &[("api-key", "not-the-key")], body.clone())
        .await;
    assert_azure_error(&wrong, 401, "401");
    let bearer = api
        .post(
            CHAT,
            &[("authorization", "Bearer some-token")],
            body.clone(),
        )
        .await;
    assert_azure_error(&bearer, 401, "401");
    // Then the api-version: none, or one the service does not have.
    for path in [
        "/openai/deployments/gpt-4o/chat/completions",
        "/openai/deployments/gpt-4o/chat/completions?api-version=2023-01-01",
    ] {
        let answer = api.post(path, &[KEY], body.clone()).await;
        assert_azure_error(&answer, 404, "404");
    }
    // Then the deployment.
    let missing = api
        .post(
            "/openai/deployments/gpt-5/chat/completions?api-version=2024-10-21",
            &[KEY],
            body.clone(),
        )
        .await;
    assert_azure_error(&missing, 404, "DeploymentNotFound");
    assert_eq!(mock.requests(), 6, "each refusal was a request");
}

#[tokio::test]
async fn deployments_answer_chat_completions_embeddings_and_responses() {
    let config = MockConfig {
        azure: AzureMock {
            entra_token: Some("entra-token".into()),
            ..AzureMock::default()
        },
        ..MockConfig::default()
    };
    let (mock, api) = azure(config).await;
    let chat = api.post(CHAT, &[KEY], chat_body("ignored", false)).await;
    assert_eq!(chat.status.as_u16(), 200, "{}", chat.body);
    assert_eq!(chat.body["object"], "chat.completion");
    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.path, "/openai/deployments/gpt-4o/chat/completions");
    // An Entra ID token is taken once the resource trusts it.
    let entra = api
        .post(
            CHAT,
            &[("authorization", "Bearer entra-token")],
            chat_body("ignored", false),
        )
        .await;
    assert_eq!(entra.status.as_u16(), 200, "{}", entra.body);

    let embeddings = api
        .post(
            "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-06-01",
            &[KEY],
            json!({"input": "hello"}),
        )
        .await;
    assert_eq!(embeddings.status.as_u16(), 200, "{}", embeddings.body);
    assert_eq!(embeddings.body["object"], "list");

    let responses = api
        .post(
            "/openai/v1/responses",
            &[KEY],
            json!({"model": "gpt-4o-mini", "input": "hello"}),
        )
        .await;
    assert_eq!(responses.status.as_u16(), 200, "{}", responses.body);
    assert_eq!(responses.body["object"], Value::from("response"));
    let unknown = api
        .post(
            "/openai/v1/responses",
            &[KEY],
            json!({"model": "gpt-5", "input": "hello"}),
        )
        .await;
    assert_azure_error(&unknown, 404, "DeploymentNotFound");
}
