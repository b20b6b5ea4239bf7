//! Table-driven refusals: every invalid input is a 422 naming the field (or
//! 400, 413, 415 for bodies that are not JSON at all), and none writes anything.

use http::Method;
use serde_json::{json, Value};

use crate::support::*;

/// One refused request: method, path, body (`Null`: none), the field named.
struct Case {
    method: Method,
    path: String,
    body: Value,
    field: &'static str,
}

fn case(method: Method, path: impl Into<String>, body: Value, field: &'static str) -> Case {
    Case {
        method,
        path: path.into(),
        body,
        field,
    }
}

#[tokio::test]
async fn invalid_input_is_refused_with_422_naming_the_field_and_changes_nothing() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    mock_route(&admin).await;
    let key = admin
        .call(Method::POST, "/api/v1/keys", json!({"name": "k"}))
        .await
        .json();
    let key_id = key["key"]["id"].as_str().unwrap().to_owned();
    let routes = admin.get("/api/v1/routes").await.json();
    let route_id = routes["items"][0]["id"].as_str().unwrap().to_owned();
    let changes_before: i64 = sqlx::query_scalar("SELECT count(*) FROM changes")
        .fetch_one(&pool)
        .await
        .unwrap();

    use Method as M;
    let keys = "/api/v1/keys";
    let key_path = format!("/api/v1/keys/{key_id}");
    let rotate = format!("/api/v1/keys/{key_id}/rotate");
    let targets = format!("/api/v1/routes/{route_id}/targets");
    let seventeen: Vec<Value> = (0..17)
        .map(|i| json!({"provider": format!("p{i}")}))
        .collect();
    let cases = [
        // Keys.
        case(M::POST, keys, json!({}), "name"),
        case(M::POST, keys, json!({"name": ""}), "name"),
        case(M::POST, keys, json!({"name": 5}), "name"),
        case(
            M::POST,
            keys,
            json!({"name": "k", "colour": "red"}),
            "colour",
        ),
        case(M::POST, keys, json!({"name": "k", "owner": " "}), "owner"),
        case(
            M::POST,
            keys,
            json!({"name": "k", "rpm_limit": 0}),
            "rpm_limit",
        ),
        case(
            M::POST,
            keys,
            json!({"name": "k", "rpm_limit": 3_000_000_000_i64}),
            "rpm_limit",
        ),
        case(
            M::POST,
            keys,
            json!({"name": "k", "tpm_limit": -5}),
            "tpm_limit",
        ),
        case(
            M::POST,
            keys,
            json!({"name": "k", "token_budget": -1}),
            "token_budget",
        ),
        case(
            M::POST,
            keys,
            json!({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        case(
            M::POST,
            keys,
            json!({"name": "k", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        case(
            M::POST,
            keys,
            json!({"name": "k", "allowed_models": ["gpt 4"]}),
            "allowed_models[0]",
        ),
        case(M::PATCH, &key_path, json!({"rpm_limit": 0}), "rpm_limit"),
        case(M::PATCH, &key_path, json!({"name": ""}), "name"),
        case(M::PATCH, "/api/v1/keys/not-a-uuid", json!({}), "id"),
        case(M::GET, "/api/v1/keys/not-a-uuid", Value::Null, "id"),
        case(M::POST, &rotate, json!({}), "overlap_secs"),
        case(
            M::POST,
            &rotate,
            json!({"overlap_secs": -1}),
            "overlap_secs",
        ),
        case(
            M::POST,
            &rotate,
            json!({"overlap_secs": 99_999_999}),
            "overlap_secs",
        ),
        case(M::GET, "/api/v1/keys?limit=0", Value::Null, "limit"),
        case(M::GET, "/api/v1/keys?limit=1001", Value::Null, "limit"),
        case(M::GET, "/api/v1/keys?limit=ten", Value::Null, "limit"),
        case(M::GET, "/api/v1/keys?after=nope", Value::Null, "after"),
        case(M::GET, "/api/v1/keys?revoked=maybe", Value::Null, "revoked"),
        case(M::GET, "/api/v1/keys?colour=red", Value::Null, "colour"),
        case(M::GET, "/api/v1/keys?owner=a%00b", Value::Null, "owner"),
        // Providers.
        case(
            M::POST,
            "/api/v1/providers",
            json!({"name": "has space", "kind": "mock"}),
            "name",
        ),
        case(
            M::POST,
            "/api/v1/providers",
            json!({"name": "p", "kind": "watsonx"}),
            "kind",
        ),
        case(
            M::POST,
            "/api/v1/providers",
            json!({"name": "p", "kind": "openai"}),
            "base_url",
        ),
        case(
            M::POST,
            "/api/v1/providers",
            json!({"name": "p", "kind": "openai", "base_url": "ftp://x"}),
            "base_url",
        ),
        case(
            M::POST,
            "/api/v1/providers",
            json!({"name": "p", "kind": "openai", "base_url": "https://"}),
            "base_url",
        ),
        case(
            M::POST,
            "/api/v1/providers",
            json!({"name": "p", "kind": "mock", "credential_ref": "sk-live-abc"}),
            "credential_ref",
        ),
        case(
            M::POST,
            "/api/v1/providers",
            json!({"name": "p", "kind": "mock", "timeout_ms": 0}),
            "timeout_ms",
        ),
        case(
            M::PATCH,
            "/api/v1/providers/mock",
            json!({"timeout_ms": 700_000}),
            "timeout_ms",
        ),
        case(
            M::PATCH,
            "/api/v1/providers/mock",
            json!({"name": "a/b"}),
            "name",
        ),
        // Routes.
        case(
            M::POST,
            "/api/v1/routes",
            json!({"model": "m2", "targets": []}),
            "targets",
        ),
        case(M::POST, "/api/v1/routes", json!({"model": "m2"}), "targets"),
        case(
            M::POST,
            "/api/v1/routes",
            json!({"model": "m2", "targets": seventeen}),
            "targets",
        ),
        case(
            M::POST,
            "/api/v1/routes",
            json!({"model": "", "targets": [{"provider": "mock"}]}),
            "model",
        ),
        case(
            M::POST,
            "/api/v1/routes",
            json!({"model": "a b", "targets": [{"provider": "mock"}]}),
            "model",
        ),
        case(
            M::POST,
            "/api/v1/routes",
            json!({"model": "m2", "targets": [{"provider": "mock"}, {"provider": "mock"}]}),
            "targets[1].provider",
        ),
        case(
            M::POST,
            "/api/v1/routes",
            json!({"model": "m2", "targets": [{"provider": "mock", "upstream_model": ""}]}),
            "targets[0].upstream_model",
        ),
        case(
            M::POST,
            "/api/v1/routes",
            json!({"model": "m2", "targets": [{"provider": "ghost"}]}),
            "targets[0].provider",
        ),
        case(
            M::POST,
            "/api/v1/routes",
            json!({"model": "m2", "targets": [{"provider": "mock", "colour": 2}]}),
            "targets[0].colour",
        ),
        case(
            M::PUT,
            &targets,
            json!({"targets": [{"provider": "ghost"}]}),
            "targets[0].provider",
        ),
        case(M::PUT, &targets, json!({"targets": []}), "targets"),
        // Usage.
        case(
            M::GET,
            "/api/v1/usage/totals?group_by=colour",
            Value::Null,
            "group_by",
        ),
        case(
            M::GET,
            "/api/v1/usage/totals?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z",
            Value::Null,
            "from",
        ),
        case(
            M::GET,
            "/api/v1/usage/totals?from=yesterday",
            Value::Null,
            "from",
        ),
        case(
            M::GET,
            "/api/v1/usage/records?limit=5000",
            Value::Null,
            "limit",
        ),
        case(
            M::GET,
            "/api/v1/usage/records?key_id=x",
            Value::Null,
            "key_id",
        ),
        // Maintenance.
        case(M::PUT, "/api/v1/maintenance", json!({}), "enabled"),
        case(
            M::PUT,
            "/api/v1/maintenance",
            json!({"enabled": true, "retry_after": 0}),
            "retry_after",
        ),
        case(
            M::PUT,
            "/api/v1/maintenance",
            json!({"enabled": true, "message": ""}),
            "message",
        ),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let a = admin.call(c.method.clone(), &c.path, c.body.clone()).await;
        let got = if a.status == 422 {
            a.admin_error()
        } else {
            (format!("status {}", a.status), None)
        };
        let expected = ("validation_failed".to_owned(), Some(c.field.to_owned()));
        if got != expected {
            failures.push(format!(
                "{} {} {}: expected field {}, got {got:?}: {}",
                c.method,
                c.path,
                c.body,
                c.field,
                a.text()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    let changes_after: i64 = sqlx::query_scalar("SELECT count(*) FROM changes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        changes_before, changes_after,
        "a refused request wrote a change"
    );
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_that_are_not_acceptable_json_get_400_413_or_415() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let mut settings = admin_settings(&db.url);
    settings.server.max_body_bytes = 1024;
    let admin = TestAdmin::start(settings).await;
    admin.wait_ready().await;
    let auth = format!("Bearer {TOKEN}");
    let url = admin.url("/api/v1/keys");
    let big = json!({"name": "x".repeat(2048)}).to_string();
    let cases: [(&str, String, u16, &str); 4] = [
        (
            "application/json",
            "{\"name\":".to_owned(),
            400,
            "invalid_json",
        ),
        (
            "application/json",
            "{\"name\":\"a\"} {}".to_owned(),
            400,
            "invalid_json",
        ),
        (
            "text/plain",
            "{\"name\":\"a\"}".to_owned(),
            415,
            "unsupported_media_type",
        ),
        ("application/json", big, 413, "payload_too_large"),
    ];
    for (content_type, body, status, code) in cases {
        let a = request(
            Method::POST,
            &url,
            &[("authorization", &auth), ("content-type", content_type)],
            body,
        )
        .await;
        assert_eq!(
            (a.status, a.admin_error().0.as_str()),
            (status, code),
            "{}",
            a.text()
        );
    }
    let listed = admin.get("/api/v1/keys").await.json();
    assert_eq!(listed["items"], json!([]));
    admin.stop().await.unwrap();
}
