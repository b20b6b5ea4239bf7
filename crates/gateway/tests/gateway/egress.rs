//! The `[egress]` policy at the gateway: provider rows written straight into
//! the database (past the admin's checks) can neither make the gateway send a
//! secret it was not meant to send nor reach an address the operator refused;
//! embedded settings are refused naming the field.

use obleth_config::db::catalog::NewProvider;
use obleth_config::model::ProviderKind;
use obleth_testkit::{db, fresh_database, MockConfig, MockUpstream};
use sqlx::PgPool;

use crate::support::*;

/// A provider row and a route of the same name to it, written directly.
async fn provider_row(pool: &PgPool, name: &str, base_url: &str, credential_ref: Option<String>) {
    let row = NewProvider {
        credential_ref,
        ..db::provider(name, ProviderKind::OpenAi, base_url)
    };
    db::provider_and_route(pool, &row, name).await.unwrap();
}

#[tokio::test]
async fn a_credential_reference_the_policy_refuses_is_never_read_or_sent() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    let allowed = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "sk-stolen-secret\n").unwrap();
    std::fs::write(allowed.path().join("key"), "sk-allowed-secret\n").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        allowed.path().join("link-out"),
    )
    .unwrap();
    let url = upstream.base_url();
    let refused = [
        (
            "outside-file",
            format!("file:{}/secret", outside.path().display()),
        ),
        ("settings-env", "env:OBLETH_DATABASE__URL".to_owned()),
        ("plain-env", "env:PATH".to_owned()),
        (
            "link-out",
            format!("file:{}/link-out", allowed.path().display()),
        ),
        (
            "dotdot",
            format!("file:{}/../{}/secret", allowed.path().display(), {
                outside.path().file_name().unwrap().to_string_lossy()
            }),
        ),
    ];
    for (name, reference) in &refused {
        provider_row(&pool, name, &url, Some(reference.clone())).await;
    }
    provider_row(
        &pool,
        "good",
        &url,
        Some(format!("file:{}/key", allowed.path().display())),
    )
    .await;
    let (_, secret) = db_key(&pool, |_| {}).await;
    let mut settings = database_settings(&db.url, &pool).await;
    settings.egress.credential_dirs = vec![allowed.path().to_path_buf()];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;

    // The allowed reference is read and sent: the check below can fail.
    assert_eq!(chat(&gw, &secret, "good").await.status, 200);
    assert_eq!(
        upstream.last_request().unwrap().header("authorization"),
        Some("Bearer sk-allowed-secret")
    );
    for (name, reference) in &refused {
        let before = upstream.requests();
        let answer = chat(&gw, &secret, name).await;
        assert_eq!(answer.status, 200, "{name}: {:?}", answer.body);
        assert_eq!(upstream.requests(), before + 1, "{name}");
        let seen = upstream.last_request().unwrap();
        assert_eq!(
            seen.header("authorization"),
            None,
            "{name} ({reference}) sent a credential"
        );
        assert!(
            !seen
                .headers
                .iter()
                .any(|(_, v)| v.contains("sk-stolen") || v.contains("postgres")),
            "{name}: {:?}",
            seen.headers
        );
    }
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_loopback_provider_is_refused_at_connect_time_when_private_networks_are_not_allowed() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    let port = upstream.addr().port();
    // An IP literal, which the connector never resolves, and a name, which
    // the admin cannot judge and which resolves to loopback.
    provider_row(
        &pool,
        "literal",
        &format!("http://127.0.0.1:{port}/v1"),
        None,
    )
    .await;
    provider_row(&pool, "named", &format!("http://localhost:{port}/v1"), None).await;
    let (_, secret) = db_key(&pool, |_| {}).await;

    let mut strict = database_settings(&db.url, &pool).await;
    strict.egress.allow_private_networks = false;
    let gw = TestGateway::start(strict).await;
    gw.wait_ready().await;
    for model in ["literal", "named"] {
        let answer = chat(&gw, &secret, model).await;
        assert_eq!(answer.status, 502, "{model}: {:?}", answer.body);
    }
    assert_eq!(upstream.requests(), 0, "the mock saw a request");
    gw.stop().await.unwrap();

    // The same rows under the default policy reach the mock.
    let gw = TestGateway::start(database_settings(&db.url, &pool).await).await;
    gw.wait_ready().await;
    for model in ["literal", "named"] {
        assert_eq!(chat(&gw, &secret, model).await.status, 200, "{model}");
    }
    assert_eq!(upstream.requests(), 2);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn embedded_settings_refuse_what_the_policy_refuses_naming_the_field() {
    use obleth_gateway::settings::{GatewaySettings, TargetConfig};

    type Edit = fn(&mut GatewaySettings);
    let cases: &[(Edit, &str)] = &[
        (
            |s| s.providers[0].credential = Some("env:OBLETH_DATABASE__URL".into()),
            "providers[0].credential",
        ),
        (
            |s| s.providers[0].credential = Some("env:OPENAI_API_KEY".into()),
            "providers[0].credential",
        ),
        (
            |s| s.providers[0].credential = Some("file:/etc/passwd".into()),
            "providers[0].credential",
        ),
        (
            |s| {
                s.providers[0].credential =
                    Some("file:/var/run/secrets/kubernetes.io/serviceaccount/token".into())
            },
            "providers[0].credential",
        ),
        (
            |s| s.providers[0].credential = Some("file:/run/secrets/../../etc/passwd".into()),
            "providers[0].credential",
        ),
        (
            |s| s.providers[0].base_url = Some("http://169.254.169.254/latest".into()),
            "providers[0].base_url",
        ),
        (
            |s| s.providers[0].base_url = Some("http://metadata.google.internal/v1".into()),
            "providers[0].base_url",
        ),
        (
            |s| s.providers[0].base_url = Some("http://[fe80::1]/v1".into()),
            "providers[0].base_url",
        ),
        (
            |s| {
                s.egress.allow_private_networks = false;
                s.providers[0].base_url = Some("http://10.0.0.7:8000/v1".into());
            },
            "providers[0].base_url",
        ),
        (
            |s| s.egress.credential_env_prefix.clear(),
            "egress.credential_env_prefix",
        ),
        (
            |s| s.routes[0].model = "gpt\u{202E}4o".into(),
            "routes[0].model",
        ),
        (
            |s| {
                s.routes[0].targets = vec![TargetConfig {
                    provider: "up".into(),
                    upstream_model: Some("gpt\u{200B}4o".into()),
                    weight: 1,
                    priority: None,
                }]
            },
            "routes[0].targets[0].upstream_model",
        ),
        (|s| s.keys[0].name = "ci\u{2066}key".into(), "keys[0].name"),
        (
            |s| s.keys[0].owner = Some("team\u{FEFF}".into()),
            "keys[0].owner",
        ),
        (
            |s| s.keys[0].allowed_models = vec!["m\u{2028}".into()],
            "keys[0].allowed_models[0]",
        ),
    ];
    let base = || {
        let (key, _) = file_key(|_| {});
        let mut s = embedded_settings(vec![key]);
        let mut up = openai_provider("up", "https://api.example.com/v1");
        up.credential = Some("env:OBLETH_CREDENTIAL_UP".into());
        s.providers.push(up);
        s.providers.swap(0, 1);
        s
    };
    base().validate().unwrap();
    for (edit, field) in cases {
        let mut s = base();
        edit(&mut s);
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, *field, "{e}");
    }
}

/// Kubernetes rotates a mounted secret in place: the gateway sends the new
/// credential from the next check of the file on, with no reload, and keeps
/// the one in use while the file is missing.
#[tokio::test]
async fn a_rotated_credential_file_is_used_without_a_reload() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-first\n").unwrap();
    provider_row(
        &pool,
        "rotated",
        &upstream.base_url(),
        Some(format!("file:{}", key.display())),
    )
    .await;
    let (_, secret) = db_key(&pool, |_| {}).await;
    let mut settings = database_settings(&db.url, &pool).await;
    settings.egress.credential_dirs = vec![dir.path().to_path_buf()];
    settings.cache.credential_poll_secs = 1;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let sent = |upstream: &MockUpstream| {
        upstream
            .last_request()
            .and_then(|r| r.header("authorization").map(str::to_owned))
    };
    assert_eq!(chat(&gw, &secret, "rotated").await.status, 200);
    assert_eq!(sent(&upstream).as_deref(), Some("Bearer sk-first"));

    // Replaced as Kubernetes does it: a new file renamed over the old one.
    let next = dir.path().join("key.next");
    std::fs::write(&next, "sk-second-longer\n").unwrap();
    std::fs::rename(&next, &key).unwrap();
    wait_until(
        std::time::Duration::from_secs(15),
        "the rotated credential to be sent",
        || {
            let (gw, secret, upstream) = (&gw, &secret, &upstream);
            async move {
                chat(gw, secret, "rotated").await.status == 200
                    && sent(upstream).as_deref() == Some("Bearer sk-second-longer")
            }
        },
    )
    .await;

    // Gone: the credential in use stays.
    std::fs::remove_file(&key).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(chat(&gw, &secret, "rotated").await.status, 200);
    assert_eq!(sent(&upstream).as_deref(), Some("Bearer sk-second-longer"));
    gw.stop().await.unwrap();
}
