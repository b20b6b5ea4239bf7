//! Providers and routes through HTTP: create, list, get, update, delete, and
//! the refusals that name the field (unique names, unknown providers, a
//! provider still in use).

use http::Method;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn providers_and_routes_are_managed_and_conflicts_name_the_field() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;

    // Providers.
    let openai = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            json!({"name": "openai", "kind": "openai", "base_url": "https://api.openai.com/v1",
                   "credential_ref": "env:OBLETH_CREDENTIAL_OPENAI"}),
        )
        .await;
    assert_eq!(openai.status, 201, "{}", openai.text());
    assert_eq!(openai.json()["timeout_ms"], 60000);
    let mock = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            json!({"name": "mock", "kind": "mock"}),
        )
        .await;
    assert_eq!(mock.status, 201);
    assert_eq!(mock.json()["base_url"], "mock://");
    let dup = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            json!({"name": "mock", "kind": "mock"}),
        )
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(
        dup.admin_error(),
        ("already_exists".to_owned(), Some("name".to_owned()))
    );
    let list = admin.get("/api/v1/providers").await.json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mock", "openai"]);

    let patched = admin
        .call(
            Method::PATCH,
            "/api/v1/providers/openai",
            json!({"timeout_ms": 30000, "credential_ref": null}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(patched.json()["timeout_ms"], 30000);
    assert_eq!(patched.json()["credential_ref"], Value::Null);
    // A change of kind is judged against the URL the provider keeps.
    let bad_kind = admin
        .call(
            Method::PATCH,
            "/api/v1/providers/mock",
            json!({"kind": "openai"}),
        )
        .await;
    assert_eq!(bad_kind.status, 422);
    assert_eq!(bad_kind.admin_error().1.as_deref(), Some("base_url"));
    let rename_taken = admin
        .call(
            Method::PATCH,
            "/api/v1/providers/mock",
            json!({"name": "openai"}),
        )
        .await;
    assert_eq!(rename_taken.status, 409);
    assert_eq!(rename_taken.admin_error().1.as_deref(), Some("name"));
    assert_eq!(admin.get("/api/v1/providers/nope").await.status, 404);
    assert_eq!(admin.get("/api/v1/providers/no%00pe").await.status, 404);

    // Routes.
    let route = admin
        .call(
            Method::POST,
            "/api/v1/routes",
            json!({"model": "openai/gpt-4o", "targets": [
                {"provider": "openai", "upstream_model": "gpt-4o"}, {"provider": "mock"}]}),
        )
        .await;
    assert_eq!(route.status, 201, "{}", route.text());
    let id = route.json()["id"].as_str().unwrap().to_owned();
    let same_model = admin
        .call(
            Method::POST,
            "/api/v1/routes",
            json!({"model": "openai/gpt-4o", "targets": [{"provider": "mock"}]}),
        )
        .await;
    assert_eq!(same_model.status, 409);
    assert_eq!(
        same_model.admin_error(),
        ("already_exists".to_owned(), Some("model".to_owned()))
    );
    let unknown = admin
        .call(
            Method::POST,
            "/api/v1/routes",
            json!({"model": "x", "targets": [{"provider": "mock"}, {"provider": "ghost"}]}),
        )
        .await;
    assert_eq!(unknown.status, 422);
    assert_eq!(
        unknown.admin_error(),
        (
            "validation_failed".to_owned(),
            Some("targets[1].provider".to_owned())
        )
    );

    // The provider in use cannot go; a rename carries its routes along.
    let in_use = admin
        .call(Method::DELETE, "/api/v1/providers/openai", Value::Null)
        .await;
    assert_eq!(in_use.status, 409);
    assert_eq!(
        in_use.admin_error(),
        ("provider_in_use".to_owned(), Some("name".to_owned()))
    );
    assert!(in_use.text().contains("openai/gpt-4o"), "{}", in_use.text());
    let renamed = admin
        .call(
            Method::PATCH,
            "/api/v1/providers/openai",
            json!({"name": "openai-eu"}),
        )
        .await;
    assert_eq!(renamed.status, 200);
    let got = admin.get(&format!("/api/v1/routes/{id}")).await.json();
    assert_eq!(got["targets"][0]["provider"], "openai-eu");
    assert_eq!(got["targets"][0]["upstream_model"], "gpt-4o");

    // Replace the targets, then the provider is free to go.
    let replaced = admin
        .call(
            Method::PUT,
            &format!("/api/v1/routes/{id}/targets"),
            json!({"targets": [{"provider": "mock"}]}),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    assert_eq!(
        replaced.json()["targets"],
        json!([{"provider": "mock", "upstream_model": null, "weight": 1}])
    );
    let list = admin.get("/api/v1/routes").await.json();
    assert_eq!(list["items"][0]["targets"].as_array().unwrap().len(), 1);
    let freed = admin
        .call(Method::DELETE, "/api/v1/providers/openai-eu", Value::Null)
        .await;
    assert_eq!(freed.status, 204);

    // Every write left a change for the gateways.
    let changes: Vec<(String, String)> =
        sqlx::query_as("SELECT entity, op FROM changes ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected = [
        ("provider", "insert"),
        ("provider", "insert"),
        ("provider", "update"),
        ("route", "insert"),
        ("provider", "update"),
        ("route", "update"),
        ("provider", "delete"),
    ];
    let got: Vec<(&str, &str)> = changes
        .iter()
        .map(|(e, o)| (e.as_str(), o.as_str()))
        .collect();
    assert_eq!(got, expected);

    let deleted = admin
        .call(Method::DELETE, &format!("/api/v1/routes/{id}"), Value::Null)
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(admin.get(&format!("/api/v1/routes/{id}")).await.status, 404);
    admin.stop().await.unwrap();
}

/// A provider kind newer than a live gateway's release would stop that
/// gateway from loading the catalog (and from applying any change after
/// it, revocations included): the admin refuses it until the rollout is done.
#[tokio::test]
async fn an_anthropic_provider_waits_for_every_live_gateway_to_read_it() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    let body = json!({"name": "claude", "kind": "anthropic",
                      "base_url": "https://api.anthropic.com/v1",
                      "credential_ref": "env:OBLETH_CREDENTIAL_ANTHROPIC"});
    let missing = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            json!({"name": "claude", "kind": "anthropic"}),
        )
        .await;
    assert_eq!(missing.status, 422);
    assert!(
        missing.text().contains("required for kind anthropic"),
        "{}",
        missing.text()
    );

    // A gateway of the previous release, silent for an hour but never
    // stopped (it may be cut off from the database and still serving).
    sqlx::raw_sql(
        "INSERT INTO nodes (node_id, service, version, ready, last_seen) VALUES \
         ('gw-old', 'gateway', '0.2.0', true, now() - interval '1 hour'), \
         ('gw-new', 'gateway', '0.3.0', true, now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let refused = admin
        .call(Method::POST, "/api/v1/providers", body.clone())
        .await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(
        refused.admin_error(),
        ("fleet_not_ready".to_owned(), Some("kind".to_owned()))
    );
    assert!(
        refused.text().contains("gateway gw-old runs 0.2.0") && !refused.text().contains("gw-new"),
        "{}",
        refused.text()
    );
    // Nor may an existing provider become one.
    let mock = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            json!({"name": "m", "kind": "mock"}),
        )
        .await;
    assert_eq!(mock.status, 201);
    let changed = admin
        .call(
            Method::PATCH,
            "/api/v1/providers/m",
            json!({"kind": "anthropic", "base_url": "https://api.anthropic.com/v1"}),
        )
        .await;
    assert_eq!(changed.status, 409, "{}", changed.text());

    // Once it records its stop, the provider is created.
    sqlx::query("UPDATE nodes SET stopped_at = now() WHERE node_id = 'gw-old'")
        .execute(&pool)
        .await
        .unwrap();
    let created = admin.call(Method::POST, "/api/v1/providers", body).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["kind"], "anthropic");
    let stored: String = sqlx::query_scalar("SELECT kind FROM providers WHERE name = 'claude'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, "anthropic");
}

/// Options and target weights: stored, shown, patched member by member, and
/// every refusal a 422 naming the option; both wait for the rollout as a
/// new kind does (an older gateway would ignore them).
#[tokio::test]
async fn provider_options_and_target_weights_are_validated_patched_and_wait_for_the_fleet() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    let create = |name: &str, options: Value| {
        json!({"name": name, "kind": "openai", "base_url": "https://api.example.com/v1",
               "credential_ref": "env:OBLETH_CREDENTIAL_A", "options": options})
    };
    for (options, field, message) in [
        (
            json!({"colour": "blue"}),
            "options",
            "unknown option `colour`",
        ),
        (
            json!({"connect_timeout_ms": 0}),
            "options.connect_timeout_ms",
            "between 1 and 600000",
        ),
        (
            json!({"credential_pool": ["env:HOME"]}),
            "options.credential_pool[0]",
            "OBLETH_CREDENTIAL_",
        ),
        (
            json!({"credential_pool": ["env:OBLETH_CREDENTIAL_B", "env:OBLETH_CREDENTIAL_B"]}),
            "options.credential_pool[1]",
            "listed twice",
        ),
        (
            json!({"ca_file": "relative.pem"}),
            "options.ca_file",
            "absolute path",
        ),
        (
            json!({"client_cert_file": "/etc/obleth/client.pem"}),
            "options.client_key_ref",
            "needed with client_cert_file",
        ),
        (
            json!({"idle_timeout_ms": "soon"}),
            "options.idle_timeout_ms",
            "expected u32",
        ),
    ] {
        let refused = admin
            .call(
                Method::POST,
                "/api/v1/providers",
                create("p", options.clone()),
            )
            .await;
        assert_eq!(refused.status, 422, "{options}: {}", refused.text());
        let body = refused.json();
        assert_eq!(body["error"]["field"], field, "{options}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(message),
            "{options}: {body}"
        );
    }
    // A pool needs a first credential; TLS files need https.
    let no_first = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            json!({"name": "p", "kind": "openai", "base_url": "https://api.example.com/v1",
                   "options": {"credential_pool": ["env:OBLETH_CREDENTIAL_B"]}}),
        )
        .await;
    assert_eq!(no_first.status, 422, "{}", no_first.text());
    assert_eq!(no_first.json()["error"]["field"], "options.credential_pool");
    let plain = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            json!({"name": "p", "kind": "openai", "base_url": "http://10.0.0.1/v1",
                   "options": {"ca_file": "/etc/obleth/ca.pem"}}),
        )
        .await;
    assert_eq!(plain.status, 422, "{}", plain.text());
    assert!(
        plain.text().contains("needs an https:// base_url"),
        "{}",
        plain.text()
    );

    let options = json!({"credential_pool": ["env:OBLETH_CREDENTIAL_B"], "connect_timeout_ms": 500,
                         "ca_file": "/etc/obleth/ca.pem"});
    let created = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            create("pooled", options.clone()),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["options"], options);

    // A patch changes the options it names, clears a null, keeps the rest;
    // the merged provider is judged whole.
    let patched = admin
        .call(
            Method::PATCH,
            "/api/v1/providers/pooled",
            json!({"options": {"connect_timeout_ms": 900, "ca_file": null}}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(
        patched.json()["options"],
        json!({"credential_pool": ["env:OBLETH_CREDENTIAL_B"], "connect_timeout_ms": 900})
    );
    let orphan = admin
        .call(
            Method::PATCH,
            "/api/v1/providers/pooled",
            json!({"credential_ref": null}),
        )
        .await;
    assert_eq!(orphan.status, 422, "{}", orphan.text());
    assert_eq!(orphan.json()["error"]["field"], "options.credential_pool");
    let unknown = admin
        .call(
            Method::PATCH,
            "/api/v1/providers/pooled",
            json!({"options": {"colour": null, "shade": 1}}),
        )
        .await;
    assert_eq!(unknown.status, 422, "{}", unknown.text());
    assert!(
        unknown.text().contains("unknown option `shade`"),
        "{}",
        unknown.text()
    );

    // Weights and priorities.
    let mock = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            json!({"name": "m", "kind": "mock"}),
        )
        .await;
    assert_eq!(mock.status, 201);
    let heavy = admin
        .call(
            Method::POST,
            "/api/v1/routes",
            json!({"model": "gpt-4o", "targets": [
                {"provider": "pooled", "weight": 1000001}]}),
        )
        .await;
    assert_eq!(heavy.status, 422, "{}", heavy.text());
    assert_eq!(heavy.json()["error"]["field"], "targets[0].weight");
    let route = admin
        .call(
            Method::POST,
            "/api/v1/routes",
            json!({"model": "gpt-4o", "targets": [
                {"provider": "pooled", "weight": 3, "priority": 0},
                {"provider": "m", "weight": 1, "priority": 0}]}),
        )
        .await;
    assert_eq!(route.status, 201, "{}", route.text());
    assert_eq!(
        route.json()["targets"],
        json!([{"provider": "pooled", "upstream_model": null, "weight": 3, "priority": 0},
               {"provider": "m", "upstream_model": null, "weight": 1, "priority": 0}])
    );
    let stored: Vec<(i32, Option<i32>)> =
        sqlx::query_as("SELECT weight, priority FROM route_targets ORDER BY position")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored, [(3, Some(0)), (1, Some(0))]);

    // While a gateway of the previous release is live, neither is accepted.
    sqlx::raw_sql(
        "INSERT INTO nodes (node_id, service, version, ready) VALUES ('gw-old', 'gateway', '0.2.0', true)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let refused = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            create("later", json!({"idle_timeout_ms": 1000})),
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(
        refused.admin_error(),
        ("fleet_not_ready".to_owned(), Some("options".to_owned()))
    );
    let id = route.json()["id"].as_str().unwrap().to_owned();
    let weighted = admin
        .call(
            Method::PUT,
            &format!("/api/v1/routes/{id}/targets"),
            json!({"targets": [{"provider": "m"}, {"provider": "pooled", "weight": 2}]}),
        )
        .await;
    assert_eq!(weighted.status, 409, "{}", weighted.text());
    assert_eq!(
        weighted.admin_error(),
        ("fleet_not_ready".to_owned(), Some("targets[1]".to_owned()))
    );
    // Plain targets and option-less providers still go through; clearing
    // options does too.
    let plain = admin
        .call(
            Method::PUT,
            &format!("/api/v1/routes/{id}/targets"),
            json!({"targets": [{"provider": "m"}, {"provider": "pooled"}]}),
        )
        .await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    let cleared = admin
        .call(
            Method::PATCH,
            "/api/v1/providers/pooled",
            json!({"options": {"connect_timeout_ms": null}}),
        )
        .await;
    assert_eq!(cleared.status, 200, "{}", cleared.text());
    admin.stop().await.unwrap();
}

/// Azure providers: the URL and the kind's options checked with 422s naming
/// the option; options of one kind refused on another.
#[tokio::test]
async fn azure_providers_are_checked_with_their_options() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let azure = |options: Value| {
        json!({"name": "az", "kind": "azure", "base_url": "https://res.openai.azure.com",
               "credential_ref": "env:OBLETH_CREDENTIAL_AZURE", "options": options})
    };
    for (body, field, message) in [
        (
            json!({"name": "az", "kind": "azure"}),
            "base_url",
            "required for kind azure",
        ),
        (
            azure(json!({"api_version": "latest"})),
            "options.api_version",
            "must be a date",
        ),
        (
            azure(json!({"api_version": "2024-10-21&x=1"})),
            "options.api_version",
            "must be a date",
        ),
        (
            azure(json!({"auth": "password"})),
            "options.auth",
            "`api-key` or `entra`",
        ),
        (
            json!({"name": "o", "kind": "openai", "base_url": "https://api.example.com/v1",
                   "options": {"api_version": "2024-10-21"}}),
            "options.api_version",
            "does not apply to kind openai",
        ),
    ] {
        assert_provider_refused(&admin, body, field, message).await;
    }
    let options = json!({"api_version": "2025-01-01-preview", "auth": "entra"});
    let created = admin
        .call(Method::POST, "/api/v1/providers", azure(options.clone()))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["kind"], "azure");
    assert_eq!(created.json()["options"], options);
    admin.stop().await.unwrap();
}

/// Gemini and Vertex AI providers: a Vertex provider needs its project and
/// location, path-safe; neither applies to another kind.
#[tokio::test]
async fn gemini_and_vertex_providers_are_checked_with_their_options() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let vertex = |options: Value| {
        json!({"name": "vx", "kind": "vertex",
               "base_url": "https://us-central1-aiplatform.googleapis.com/v1",
               "credential_ref": "env:OBLETH_CREDENTIAL_VERTEX", "options": options})
    };
    let gemini = |options: Value| {
        json!({"name": "gm", "kind": "gemini",
               "base_url": "https://generativelanguage.googleapis.com/v1beta",
               "credential_ref": "env:OBLETH_CREDENTIAL_GEMINI", "options": options})
    };
    for (body, field, message) in [
        (
            json!({"name": "gm", "kind": "gemini"}),
            "base_url",
            "required for kind gemini",
        ),
        (
            vertex(json!({"location": "us-central1"})),
            "options.project",
            "required for kind vertex",
        ),
        (
            vertex(json!({"project": "my-project"})),
            "options.location",
            "required for kind vertex",
        ),
        (
            vertex(json!({"project": "my/project", "location": "us-central1"})),
            "options.project",
            "lowercase letters",
        ),
        (
            vertex(json!({"project": "p", "location": "us-central1?x=1"})),
            "options.location",
            "lowercase letters",
        ),
        (
            gemini(json!({"project": "p"})),
            "options.project",
            "does not apply to kind gemini",
        ),
        (
            json!({"name": "o", "kind": "openai", "base_url": "https://api.example.com/v1",
                   "options": {"location": "us-central1"}}),
            "options.location",
            "does not apply to kind openai",
        ),
        (
            vertex(json!({"project": "p", "location": "us-central1", "auth": "entra"})),
            "options.auth",
            "`access-token`, `service-account` or `workload-identity`",
        ),
        (
            vertex(json!({"project": "p", "location": "us-central1",
                          "auth": "service_account"})),
            "options.auth",
            "`access-token`, `service-account` or `workload-identity`",
        ),
        (
            json!({"name": "vx", "kind": "vertex",
                   "base_url": "https://us-central1-aiplatform.googleapis.com/v1",
                   "options": {"project": "p", "location": "us-central1",
                               "auth": "service-account"}}),
            "options.auth",
            "needs credential_ref",
        ),
        (
            gemini(json!({"auth": "service-account"})),
            "options.auth",
            "does not apply to kind gemini",
        ),
    ] {
        assert_provider_refused(&admin, body, field, message).await;
    }
    let options = json!({"project": "my-project-42", "location": "europe-west4"});
    let created = admin
        .call(Method::POST, "/api/v1/providers", vertex(options.clone()))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["kind"], "vertex");
    assert_eq!(created.json()["options"], options);
    // Workload identity through the metadata server needs no credential.
    let metadata = json!({"project": "p", "location": "global", "auth": "workload-identity"});
    let created = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            json!({"name": "vx-wi", "kind": "vertex",
                   "base_url": "https://aiplatform.googleapis.com/v1",
                   "options": metadata.clone()}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["options"], metadata);
    let created = admin
        .call(Method::POST, "/api/v1/providers", gemini(json!({})))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["kind"], "gemini");
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn bedrock_providers_need_a_region_and_default_their_base_url() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let bedrock = |options: Value| {
        json!({"name": "bd", "kind": "bedrock",
               "credential_ref": "env:OBLETH_CREDENTIAL_BEDROCK", "options": options})
    };
    for (body, field, message) in [
        (
            bedrock(json!({})),
            "options.region",
            "required for kind bedrock",
        ),
        (
            bedrock(json!({"region": "US-EAST-1"})),
            "options.region",
            "AWS region",
        ),
        (
            bedrock(json!({"region": "us-east-1.evil.example"})),
            "options.region",
            "AWS region",
        ),
        (
            bedrock(json!({"region": ""})),
            "options.region",
            "AWS region",
        ),
        (
            bedrock(json!({"region": "us-east-1", "project": "p"})),
            "options.project",
            "does not apply to kind bedrock",
        ),
        (
            json!({"name": "o", "kind": "openai", "base_url": "https://api.example.com/v1",
                   "options": {"region": "us-east-1"}}),
            "options.region",
            "does not apply to kind openai",
        ),
        (
            json!({"name": "bd", "kind": "bedrock", "base_url": "ftp://bedrock.example",
                   "options": {"region": "us-east-1"}}),
            "base_url",
            "http:// or https://",
        ),
    ] {
        assert_provider_refused(&admin, body, field, message).await;
    }
    let created = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            bedrock(json!({"region": "eu-central-1"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["kind"], "bedrock");
    assert_eq!(
        created.json()["base_url"],
        "https://bedrock-runtime.eu-central-1.amazonaws.com"
    );
    assert_eq!(created.json()["options"], json!({"region": "eu-central-1"}));
    // The base URL can point elsewhere (a VPC endpoint, a test double).
    let mut own = bedrock(json!({"region": "us-east-1"}));
    own["name"] = json!("bd-vpc");
    own["base_url"] = json!("https://vpce-0abc.bedrock-runtime.us-east-1.vpce.amazonaws.com");
    let created = admin.call(Method::POST, "/api/v1/providers", own).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        created.json()["base_url"],
        "https://vpce-0abc.bedrock-runtime.us-east-1.vpce.amazonaws.com"
    );
    admin.stop().await.unwrap();
}

/// Asserts that creating the provider `body` is refused with 422, naming
/// `field` and saying `message`.
async fn assert_provider_refused(admin: &TestAdmin, body: Value, field: &str, message: &str) {
    let refused = admin
        .call(Method::POST, "/api/v1/providers", body.clone())
        .await;
    assert_eq!(refused.status, 422, "{body}: {}", refused.text());
    let answer = refused.json();
    assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(message),
        "{body}: {answer}"
    );
}
