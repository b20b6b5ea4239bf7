//! The key lifecycle through HTTP, the secret shown once and never stored,
//! and rotation with an overlap at a running gateway.

use std::time::Duration;

use http::Method;
use obleth_config::apikey;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::*;

/// Every row of every table in the public schema, as JSON text.
async fn every_row(pool: &PgPool) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.contains(&"api_keys".to_owned()), "{tables:?}");
    let mut rows = Vec::new();
    for table in tables {
        // Identifiers come from pg_tables, quoted; nothing here is user input.
        let sql = format!("SELECT row_to_json(t)::text FROM \"{table}\" t");
        let found: Vec<String> = sqlx::query_scalar(&sql).fetch_all(pool).await.unwrap();
        rows.extend(found);
    }
    rows
}

#[tokio::test]
async fn a_key_lives_its_whole_life_through_http_and_the_database_never_holds_the_plain_key() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;

    // Create: the only answer that carries the secret.
    let created = admin
        .call(
            Method::POST,
            "/api/v1/keys",
            json!({"name": "CI deploys", "owner": "team-a", "allowed_models": ["m", "gpt-4o*"],
                   "rpm_limit": 60, "tpm_limit": 10000, "token_budget": 1000000}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let body = created.json();
    let secret = body["secret"].as_str().unwrap().to_owned();
    let parsed = apikey::parse(&secret).unwrap();
    let key = &body["key"];
    let id = key["id"].as_str().unwrap().to_owned();
    assert_eq!(key["public_id"], parsed.public_id);
    assert_eq!(key["prefix"], format!("obk_{}_", parsed.public_id));
    assert_eq!(key["status"], "active");
    assert_eq!(key["rpm_limit"], 60);
    assert_eq!(key["allowed_models"], json!(["m", "gpt-4o*"]));

    // Get and list show the public id, never the secret or its hash.
    let got = admin.get(&format!("/api/v1/keys/{id}")).await;
    assert_eq!(got.status, 200);
    let listed = admin.get("/api/v1/keys").await;
    assert_eq!(listed.status, 200);
    for answer in [&got, &listed] {
        let text = answer.text();
        assert!(!text.contains(parsed.secret), "{text}");
        assert!(
            !text.contains("secret_hash") && !text.contains("\"secret\""),
            "{text}"
        );
        assert!(text.contains(parsed.public_id), "{text}");
    }
    assert_eq!(listed.json()["items"].as_array().unwrap().len(), 1);

    // Filters.
    for (query, count) in [
        ("owner=team-a", 1),
        ("owner=team-b", 0),
        ("name_contains=ci%20DEP", 1),
        ("name_contains=nightly", 0),
        ("revoked=false", 1),
        ("revoked=true", 0),
    ] {
        let page = admin.get(&format!("/api/v1/keys?{query}")).await.json();
        assert_eq!(
            page["items"].as_array().unwrap().len(),
            count,
            "{query}: {page}"
        );
    }

    // Update: a field left out stays, null clears.
    let updated = admin
        .call(
            Method::PATCH,
            &format!("/api/v1/keys/{id}"),
            json!({"name": "CI", "rpm_limit": null, "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text());
    let u = updated.json();
    assert_eq!(u["name"], "CI");
    assert_eq!(u["rpm_limit"], Value::Null);
    assert_eq!(u["tpm_limit"], 10000);
    assert_eq!(u["owner"], "team-a");
    assert_eq!(u["expires_at"], "2099-01-01T00:00:00Z");

    // Revoke, twice: the first revoked_at stays.
    let revoked = admin
        .call(
            Method::POST,
            &format!("/api/v1/keys/{id}/revoke"),
            Value::Null,
        )
        .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(revoked.json()["status"], "revoked");
    let again = admin
        .call(
            Method::POST,
            &format!("/api/v1/keys/{id}/revoke"),
            Value::Null,
        )
        .await;
    assert_eq!(again.json()["revoked_at"], revoked.json()["revoked_at"]);
    let page = admin.get("/api/v1/keys?revoked=true").await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // A revoked key is not rotated.
    let rotate = admin
        .call(
            Method::POST,
            &format!("/api/v1/keys/{id}/rotate"),
            json!({"overlap_secs": 60}),
        )
        .await;
    assert_eq!(rotate.status, 409);
    assert_eq!(rotate.admin_error().0, "key_revoked");

    // The database holds the hash, and nowhere the key or its secret part.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_hash FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, apikey::hash_secret(parsed.secret).to_vec());
    let hex_secret: String = parsed.secret.bytes().map(|b| format!("{b:02x}")).collect();
    for row in every_row(&pool).await {
        assert!(!row.contains(parsed.secret), "plain secret stored: {row}");
        assert!(
            !row.contains(&hex_secret),
            "plain secret stored as bytes: {row}"
        );
    }

    // Delete.
    let deleted = admin
        .call(Method::DELETE, &format!("/api/v1/keys/{id}"), Value::Null)
        .await;
    assert_eq!(deleted.status, 204);
    let gone = admin.get(&format!("/api/v1/keys/{id}")).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.admin_error(), ("not_found".to_owned(), None));
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn listing_pages_through_every_key_once_in_id_order() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    for i in 0..7 {
        let a = admin
            .call(
                Method::POST,
                "/api/v1/keys",
                json!({"name": format!("k{i}")}),
            )
            .await;
        assert_eq!(a.status, 201);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/keys?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = admin.get(&path).await.json();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_after"].as_str() {
            Some(after) => path = format!("/api/v1/keys?limit=3&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(pages >= 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "ordered by id, each once");
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn a_rotated_key_works_with_both_secrets_during_the_overlap_and_only_the_new_one_after() {
    let (admin, db, _pool) = TestAdmin::on_fresh_database().await;
    mock_route(&admin).await;
    let created = admin
        .call(Method::POST, "/api/v1/keys", json!({"name": "rotating"}))
        .await
        .json();
    let old = created["secret"].as_str().unwrap().to_owned();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    let gw = TestGateway::start(&db.url).await;
    assert_eq!(gw.chat(&old, "m").await.status, 200);

    let rotated = admin
        .call(
            Method::POST,
            &format!("/api/v1/keys/{id}/rotate"),
            json!({"overlap_secs": 5}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_eq!(rotated.header("cache-control"), Some("no-store"));
    let r = rotated.json();
    let new = r["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(
        apikey::parse(&new).unwrap().public_id,
        apikey::parse(&old).unwrap().public_id,
        "a rotation keeps the public id"
    );
    assert!(r["previous_expires_at"].is_string(), "{r}");
    let view = admin.get(&format!("/api/v1/keys/{id}")).await.json();
    assert!(view["previous_secret_expires_at"].is_string(), "{view}");

    // During the overlap: both secrets.
    wait_until(
        Duration::from_secs(2),
        "the new secret at the gateway",
        || async { gw.chat(&new, "m").await.status == 200 },
    )
    .await;
    assert_eq!(
        gw.chat(&old, "m").await.status,
        200,
        "old secret during the overlap"
    );

    // After it: only the new one.
    let waited = wait_until(
        Duration::from_secs(15),
        "the old secret to expire",
        || async { gw.chat(&old, "m").await.status == 401 },
    )
    .await;
    assert!(
        waited >= Duration::from_millis(500),
        "expired too early: {waited:?}"
    );
    assert_eq!(gw.chat(&new, "m").await.status, 200);
    gw.stop().await.unwrap();
    admin.stop().await.unwrap();
}
