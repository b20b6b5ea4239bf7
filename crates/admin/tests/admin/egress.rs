//! The `[egress]` policy at the admin: credential references that would make
//! the gateway send its own secrets, and provider URLs that reach metadata or
//! (by choice) private addresses, are refused with 422 naming the field;
//! invisible characters in names likewise; and two concurrent provider
//! updates never store a combination the API refuses.

use http::Method;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn credential_references_outside_the_policy_are_refused_naming_credential_ref() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let allowed = tempfile::tempdir().unwrap();
    std::fs::write(allowed.path().join("openai"), "sk-fine").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", allowed.path().join("passwd")).unwrap();
    let mut settings = admin_settings(&db.url);
    settings
        .egress
        .credential_dirs
        .push(allowed.path().to_path_buf());
    let admin = TestAdmin::start(settings).await;
    admin.wait_ready().await;

    let refused = [
        "env:OBLETH_DATABASE__URL".to_owned(),
        "env:OBLETH_AUTH__TOKENS".to_owned(),
        "env:OPENAI_API_KEY".to_owned(),
        "env:OBLETH_CREDENTIAL_".to_owned(),
        "file:/var/run/secrets/kubernetes.io/serviceaccount/token".to_owned(),
        "file:/run/secrets/kubernetes.io/serviceaccount/token".to_owned(),
        "file:/etc/passwd".to_owned(),
        "file:/run/secrets/../../etc/passwd".to_owned(),
        format!("file:{}/passwd", allowed.path().display()),
        "sk-live-0123456789abcdef".to_owned(),
    ];
    for (i, reference) in refused.iter().enumerate() {
        let a = admin
            .call(
                Method::POST,
                "/api/v1/providers",
                json!({"name": format!("p{i}"), "kind": "openai",
                       "base_url": "https://api.example.com/v1", "credential_ref": reference}),
            )
            .await;
        assert_eq!(a.status, 422, "{reference}: {}", a.text());
        assert_eq!(
            a.admin_error(),
            (
                "validation_failed".to_owned(),
                Some("credential_ref".to_owned())
            ),
            "{reference}"
        );
        assert!(!a.text().contains("sk-live"), "{}", a.text());
    }

    // What the policy allows is stored, and a PATCH is held to the same rules.
    for (name, reference) in [
        ("env-ok", "env:OBLETH_CREDENTIAL_OPENAI".to_owned()),
        ("file-ok", "file:/run/secrets/openai".to_owned()),
        (
            "here-ok",
            format!("file:{}/openai", allowed.path().display()),
        ),
    ] {
        let a = admin
            .call(
                Method::POST,
                "/api/v1/providers",
                json!({"name": name, "kind": "openai",
                       "base_url": "https://api.example.com/v1", "credential_ref": reference}),
            )
            .await;
        assert_eq!(a.status, 201, "{reference}: {}", a.text());
    }
    let patch = admin
        .call(
            Method::PATCH,
            "/api/v1/providers/env-ok",
            json!({"credential_ref": "env:OBLETH_DATABASE__URL"}),
        )
        .await;
    assert_eq!(patch.status, 422, "{}", patch.text());
    assert_eq!(patch.admin_error().1.as_deref(), Some("credential_ref"));
    let stored = admin.get("/api/v1/providers/env-ok").await.json();
    assert_eq!(stored["credential_ref"], "env:OBLETH_CREDENTIAL_OPENAI");
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn metadata_and_link_local_urls_are_refused_and_private_ones_by_choice() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let refused = [
        "http://169.254.169.254/latest/meta-data",
        "http://169.254.1.1/v1",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://metadata/v1",
        "http://[fe80::1]/v1",
        "http://[fd00:ec2::254]/v1",
        "http://100.100.100.200/v1",
        "http://2852039166/v1",
        "http://[::ffff:169.254.169.254]/v1",
        "http://user@169.254.169.254:80/v1",
    ];
    for (i, url) in refused.iter().enumerate() {
        let a = admin
            .call(
                Method::POST,
                "/api/v1/providers",
                json!({"name": format!("p{i}"), "kind": "openai", "base_url": url}),
            )
            .await;
        assert_eq!(a.status, 422, "{url}: {}", a.text());
        assert_eq!(a.admin_error().1.as_deref(), Some("base_url"), "{url}");
    }
    // Private networks are allowed by default (in-cluster model servers).
    for (i, url) in [
        "http://10.0.0.7:8000/v1",
        "http://127.0.0.1:11434/v1",
        "http://vllm.models.svc:8000/v1",
    ]
    .iter()
    .enumerate()
    {
        let a = admin
            .call(
                Method::POST,
                "/api/v1/providers",
                json!({"name": format!("private{i}"), "kind": "openai", "base_url": url}),
            )
            .await;
        assert_eq!(a.status, 201, "{url}: {}", a.text());
    }
    let moved = admin
        .call(
            Method::PATCH,
            "/api/v1/providers/private0",
            json!({"base_url": "http://169.254.169.254/"}),
        )
        .await;
    assert_eq!(moved.status, 422);
    assert_eq!(moved.admin_error().1.as_deref(), Some("base_url"));
    admin.stop().await.unwrap();

    let db = obleth_testkit::fresh_database().await.unwrap();
    let mut strict = admin_settings(&db.url);
    strict.egress.allow_private_networks = false;
    let admin = TestAdmin::start(strict).await;
    admin.wait_ready().await;
    for url in [
        "http://10.0.0.7:8000/v1",
        "http://127.0.0.1:11434/v1",
        "http://[::1]/v1",
    ] {
        let a = admin
            .call(
                Method::POST,
                "/api/v1/providers",
                json!({"name": "p", "kind": "openai", "base_url": url}),
            )
            .await;
        assert_eq!(a.status, 422, "{url}: {}", a.text());
        assert_eq!(a.admin_error().1.as_deref(), Some("base_url"), "{url}");
    }
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn bidi_zero_width_and_control_characters_are_refused_in_names() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    mock_route(&admin).await;
    let cases: [(Method, &str, Value, &str); 9] = [
        (
            Method::POST,
            "/api/v1/keys",
            json!({"name": "ci\u{202E}yek"}),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            json!({"name": "ci\u{200B}key"}),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            json!({"name": "ci", "owner": "team\u{2066}a\u{2069}"}),
            "owner",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            json!({"name": "ci", "owner": "team\u{FEFF}"}),
            "owner",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            json!({"name": "ci", "allowed_models": ["m\u{200D}"]}),
            "allowed_models[0]",
        ),
        (
            Method::POST,
            "/api/v1/routes",
            json!({"model": "gpt\u{202E}4o", "targets": [{"provider": "mock"}]}),
            "model",
        ),
        (
            Method::POST,
            "/api/v1/routes",
            json!({"model": "gpt\u{AD}4o", "targets": [{"provider": "mock"}]}),
            "model",
        ),
        (
            Method::POST,
            "/api/v1/routes",
            json!({"model": "x", "targets": [{"provider": "mock", "upstream_model": "gpt\u{2060}4o"}]}),
            "targets[0].upstream_model",
        ),
        (
            Method::POST,
            "/api/v1/providers",
            json!({"name": "mo\u{200B}ck", "kind": "mock"}),
            "name",
        ),
    ];
    for (method, path, body, field) in cases {
        let a = admin.call(method, path, body.clone()).await;
        assert_eq!(a.status, 422, "{body}: {}", a.text());
        assert_eq!(a.admin_error().1.as_deref(), Some(field), "{body}");
    }
    // Visible Unicode is fine.
    let ok = admin
        .call(
            Method::POST,
            "/api/v1/keys",
            json!({"name": "Zoë's key – prod", "owner": "équipe"}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text());
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_provider_updates_never_store_a_refused_combination() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    // Each round: a mock provider on an http URL. Moving to `mock://` is fine
    // for a mock, and becoming `openai` is fine with an http URL; both
    // together (openai on `mock://`) the API refuses.
    for round in 0..20 {
        let name = format!("p{round}");
        let created = admin
            .call(
                Method::POST,
                "/api/v1/providers",
                json!({"name": name, "kind": "mock", "base_url": "http://models.example"}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let path = format!("/api/v1/providers/{name}");
        let (a, b) = tokio::join!(
            admin.call(Method::PATCH, &path, json!({"base_url": "mock://"})),
            admin.call(Method::PATCH, &path, json!({"kind": "openai"})),
        );
        let statuses = [a.status, b.status];
        assert!(
            statuses.iter().all(|s| [200, 409, 422].contains(s)),
            "{statuses:?}"
        );
        assert!(
            statuses.contains(&200) && statuses != [200, 200],
            "round {round}: {statuses:?} {} {}",
            a.text(),
            b.text()
        );
        let (kind, base_url): (String, String) =
            sqlx::query_as("SELECT kind, base_url FROM providers WHERE name = $1")
                .bind(&name)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(
            !(kind == "openai" && base_url == "mock://"),
            "round {round} stored openai on mock://"
        );
    }
    admin.stop().await.unwrap();
}
