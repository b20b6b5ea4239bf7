//! Tests of the mock's OAuth side over real HTTP: the token endpoint
//! accepts only assertions signed RS256 by the test key, with the right
//! audience, scope and times; the STS and the metadata server refuse what
//! Google's refuse; issued tokens open the Vertex AI endpoints; injected
//! failures and counts.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use obleth_testkit::mock::{
    MockConfig, FEDERATION_SUBJECT_TOKEN, TEST_SERVICE_ACCOUNT_PRIVATE_KEY,
};
use serde_json::{json, Value};

use super::{start, Api};

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const VERTEX: &str =
    "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A compact JWS of `claims`, signed RS256 with the test key.
fn signed(claims: &Value) -> String {
    let der = STANDARD
        .decode(
            TEST_SERVICE_ACCOUNT_PRIVATE_KEY
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn claims(aud: &str) -> Value {
    let iat = now();
    json!({"iss": "sa@mock-project.iam.gserviceaccount.com", "aud": aud,
           "scope": CLOUD_PLATFORM, "iat": iat, "exp": iat + 3600})
}

async fn exchange(api: &Api, grant_type: &str, assertion: &str) -> super::Answer {
    let form = format!(
        "grant_type={}&assertion={assertion}",
        grant_type.replace(':', "%3A")
    );
    api.send(api.request(axum::http::Method::POST, "/oauth2/token", &[], &form))
        .await
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

#[tokio::test]
async fn the_token_endpoint_checks_the_assertion_and_its_tokens_open_vertex() {
    let (mock, mut api) = start(MockConfig::default()).await;
    api.base_url = format!("http://{}", mock.addr());
    let aud = format!("http://{}/oauth2/token", mock.addr());

    let answer = exchange(&api, JWT_BEARER, &signed(&claims(&aud))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 3600);
    let token = answer.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        mock.last_token_issuer().as_deref(),
        Some("sa@mock-project.iam.gserviceaccount.com")
    );
    let contents = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let bearer = format!("Bearer {token}");
    let answer = api
        .post(VERTEX, &[("authorization", &bearer)], contents.clone())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Refused: each thing a real token endpoint checks.
    // Another issuer's claims under the original signature.
    let original = signed(&claims(&aud));
    let pieces: Vec<&str> = original.split('.').collect();
    let other = URL_SAFE_NO_PAD.encode(claims(&aud).to_string().replace("sa@", "evil@"));
    let tampered = format!("{}.{other}.{}", pieces[0], pieces[2]);
    let mut wrong_scope = claims(&aud);
    wrong_scope["scope"] = json!("https://www.googleapis.com/auth/devstorage.read_only");
    let mut expired = claims(&aud);
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    for (grant, assertion) in [
        (JWT_BEARER, tampered),
        (JWT_BEARER, signed(&claims("https://example.com/token"))),
        (JWT_BEARER, signed(&wrong_scope)),
        (JWT_BEARER, signed(&expired)),
        (JWT_BEARER, "not-a-jwt".to_owned()),
        ("client_credentials", signed(&claims(&aud))),
    ] {
        let answer = exchange(&api, grant, &assertion).await;
        assert_eq!(answer.status, 400, "{grant}: {}", answer.body);
        assert!(answer.body["error"].is_string(), "{}", answer.body);
    }
    assert_eq!(mock.token_calls(), 7);

    // Injected failures, then served again; a revoked token is refused.
    mock.fail_token_calls(1);
    let answer = exchange(&api, JWT_BEARER, &signed(&claims(&aud))).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let answer = exchange(&api, JWT_BEARER, &signed(&claims(&aud))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    mock.revoke_tokens();
    let answer = api
        .post(VERTEX, &[("authorization", &bearer)], contents)
        .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
}

#[tokio::test]
async fn the_sts_and_the_metadata_server_refuse_what_google_s_refuse() {
    let (mock, mut api) = start(MockConfig::default()).await;
    api.base_url = format!("http://{}", mock.addr());
    let sts = |subject: &str, scope: &str| {
        format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &audience=%2F%2Fiam.googleapis.com%2Fprojects%2F1&subject_token={subject}\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&scope={scope}"
        )
    };
    let scope = CLOUD_PLATFORM.replace(':', "%3A").replace('/', "%2F");
    let post =
        |form: String| api.send(api.request(axum::http::Method::POST, "/sts/v1/token", &[], &form));
    let answer = post(sts(FEDERATION_SUBJECT_TOKEN, &scope)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body["access_token"].is_string());
    let answer = post(sts("someone-else", &scope)).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let answer = post(sts(FEDERATION_SUBJECT_TOKEN, "openid")).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(mock.google_sts_calls(), 3);

    let path = "/computeMetadata/v1/instance/service-accounts/default/token";
    let get = |headers: &'static [(&'static str, &'static str)]| {
        api.send(api.request(axum::http::Method::GET, path, headers, ""))
    };
    assert_eq!(get(&[]).await.status, 403);
    let answer = get(&[("metadata-flavor", "Google")]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(mock.metadata_calls(), 2);
    assert_eq!(mock.token_calls(), 0);
}
