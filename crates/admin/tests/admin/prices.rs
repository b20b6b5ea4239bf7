//! Prices through HTTP: dollars per million tokens on the wire, micro-dollars
//! in the database, one price per model pattern, cost in the usage totals,
//! the models no price covers, and every refusal naming its field.

use chrono::{Duration, SecondsFormat, Utc};
use http::Method;
use obleth_config::db::usage::insert_usage;
use obleth_config::model::UsageEvent;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::*;

fn event(model: &str, tokens: i32, cost_micros: Option<i64>, hours_ago: i64) -> UsageEvent {
    UsageEvent {
        request_id: Uuid::new_v4(),
        key_id: None,
        model: model.to_owned(),
        provider: Some("mock".to_owned()),
        prompt_tokens: Some(tokens / 2),
        completion_tokens: Some(tokens - tokens / 2),
        total_tokens: Some(tokens),
        status: 200,
        latency_ms: 5,
        streamed: false,
        node_id: Some("gw-1".to_owned()),
        created_at: Utc::now() - Duration::hours(hours_ago),
        cost_micros,
        estimated: false,
        team_id: None,
    }
}

#[tokio::test]
async fn a_price_lives_its_whole_life_through_http_in_dollars_per_million_tokens() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;

    let created = admin
        .call(
            Method::POST,
            "/api/v1/prices",
            json!({"model": "gpt-4o", "input_per_mtok_usd": 2.5, "output_per_mtok_usd": 10}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let p = created.json();
    let id = p["id"].as_str().unwrap().to_owned();
    assert_eq!(p["model"], "gpt-4o");
    assert_eq!(p["input_per_mtok_usd"], 2.5);
    assert_eq!(p["output_per_mtok_usd"], 10.0);
    assert_eq!(p["input_micros_per_mtok"], 2_500_000);
    assert_eq!(p["output_micros_per_mtok"], 10_000_000);
    let glob = admin
        .call(
            Method::POST,
            "/api/v1/prices",
            json!({"model": "claude-*", "input_per_mtok_usd": 0.29, "output_per_mtok_usd": 0.000001}),
        )
        .await;
    assert_eq!(glob.status, 201, "{}", glob.text());
    let stored: (i64, i64) = sqlx::query_as(
        "SELECT input_micros_per_mtok, output_micros_per_mtok FROM prices WHERE model = 'claude-*'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (290_000, 1),
        "exact micro-dollars, no float rounding"
    );

    let listed = admin.get("/api/v1/prices").await.json();
    let models: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, vec!["claude-*", "gpt-4o"]);
    assert_eq!(listed["items"][0]["input_per_mtok_usd"], 0.29);

    let patched = admin
        .call(
            Method::PATCH,
            &format!("/api/v1/prices/{id}"),
            json!({"output_per_mtok_usd": 8}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(patched.json()["output_per_mtok_usd"], 8.0);
    assert_eq!(patched.json()["input_per_mtok_usd"], 2.5, "untouched");
    let got = admin.get(&format!("/api/v1/prices/{id}")).await;
    assert_eq!(got.json()["output_micros_per_mtok"], 8_000_000);

    let deleted = admin
        .call(Method::DELETE, &format!("/api/v1/prices/{id}"), Value::Null)
        .await;
    assert_eq!(deleted.status, 204);
    let gone = admin.get(&format!("/api/v1/prices/{id}")).await;
    assert_eq!(
        (gone.status, gone.admin_error().0.as_str()),
        (404, "not_found")
    );
    let again = admin
        .call(Method::DELETE, &format!("/api/v1/prices/{id}"), Value::Null)
        .await;
    assert_eq!(again.status, 404);

    // Every write is the `setting` change `prices`, which makes gateways re-read the table.
    let changes: Vec<(String, String, String)> =
        sqlx::query_as("SELECT entity, entity_id, op FROM changes ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let row = |op: &str| ("setting".to_owned(), "prices".to_owned(), op.to_owned());
    assert_eq!(
        changes,
        vec![row("insert"), row("insert"), row("update"), row("delete")]
    );
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn bad_prices_are_refused_naming_the_field_and_a_priced_model_is_a_conflict() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    let p = admin
        .call(
            Method::POST,
            "/api/v1/prices",
            json!({"model": "gpt-4o", "input_per_mtok_usd": 1, "output_per_mtok_usd": 1}),
        )
        .await
        .json();
    let path = format!("/api/v1/prices/{}", p["id"].as_str().unwrap());
    let other = admin
        .call(
            Method::POST,
            "/api/v1/prices",
            json!({"model": "llama-*", "input_per_mtok_usd": 0, "output_per_mtok_usd": 0}),
        )
        .await
        .json();
    let other_path = format!("/api/v1/prices/{}", other["id"].as_str().unwrap());
    let count = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM changes")
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    };
    let before = count().await;

    let prices = "/api/v1/prices";
    let cases: Vec<(Method, &str, &str, &str)> = vec![
        (
            Method::POST,
            prices,
            r#"{"input_per_mtok_usd": 1, "output_per_mtok_usd": 1}"#,
            "model",
        ),
        (
            Method::POST,
            prices,
            r#"{"model": "gpt 4", "input_per_mtok_usd": 1, "output_per_mtok_usd": 1}"#,
            "model",
        ),
        (
            Method::POST,
            prices,
            r#"{"model": "", "input_per_mtok_usd": 1, "output_per_mtok_usd": 1}"#,
            "model",
        ),
        (
            Method::POST,
            prices,
            r#"{"model": "m\u200b", "input_per_mtok_usd": 1, "output_per_mtok_usd": 1}"#,
            "model",
        ),
        (
            Method::POST,
            prices,
            r#"{"model": "m", "output_per_mtok_usd": 1}"#,
            "input_per_mtok_usd",
        ),
        (
            Method::POST,
            prices,
            r#"{"model": "m", "input_per_mtok_usd": -2.5, "output_per_mtok_usd": 1}"#,
            "input_per_mtok_usd",
        ),
        (
            Method::POST,
            prices,
            r#"{"model": "m", "input_per_mtok_usd": 1, "output_per_mtok_usd": -0.000001}"#,
            "output_per_mtok_usd",
        ),
        (
            Method::POST,
            prices,
            r#"{"model": "m", "input_per_mtok_usd": 1, "output_per_mtok_usd": 2.0000001}"#,
            "output_per_mtok_usd",
        ),
        (
            Method::POST,
            prices,
            r#"{"model": "m", "input_per_mtok_usd": 1e400, "output_per_mtok_usd": 1}"#,
            "input_per_mtok_usd",
        ),
        (
            Method::POST,
            prices,
            r#"{"model": "m", "input_per_mtok_usd": "1", "output_per_mtok_usd": 1}"#,
            "input_per_mtok_usd",
        ),
        (
            Method::POST,
            prices,
            r#"{"model": "m", "input_per_mtok_usd": 1, "output_per_mtok_usd": 1, "currency": "eur"}"#,
            "currency",
        ),
        (
            Method::PATCH,
            &path,
            r#"{"input_per_mtok_usd": -1}"#,
            "input_per_mtok_usd",
        ),
        (
            Method::PATCH,
            &path,
            r#"{"output_per_mtok_usd": 0.1234567}"#,
            "output_per_mtok_usd",
        ),
        (Method::PATCH, &path, r#"{"model": "two words"}"#, "model"),
        (Method::PATCH, "/api/v1/prices/nope", r#"{}"#, "id"),
        (
            Method::GET,
            "/api/v1/prices/unpriced?from=yesterday",
            "",
            "from",
        ),
        (
            Method::GET,
            "/api/v1/prices/unpriced?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z",
            "",
            "from",
        ),
    ];
    for (method, path, body, field) in &cases {
        let answer = if body.is_empty() {
            admin.call(method.clone(), path, Value::Null).await
        } else {
            admin.call_raw(method.clone(), path, body).await
        };
        assert_eq!(
            answer.status,
            422,
            "{method} {path} {body}: {}",
            answer.text()
        );
        assert_eq!(
            answer.admin_error(),
            ("validation_failed".to_owned(), Some((*field).to_owned())),
            "{method} {path} {body}"
        );
    }

    let dup = admin
        .call(
            Method::POST,
            prices,
            json!({"model": "gpt-4o", "input_per_mtok_usd": 2, "output_per_mtok_usd": 2}),
        )
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(
        dup.admin_error(),
        ("already_exists".to_owned(), Some("model".to_owned()))
    );
    let renamed = admin
        .call(Method::PATCH, &other_path, json!({"model": "gpt-4o"}))
        .await;
    assert_eq!(renamed.status, 409);
    assert_eq!(
        renamed.admin_error(),
        ("already_exists".to_owned(), Some("model".to_owned()))
    );

    assert_eq!(count().await, before, "nothing refused was written");
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn unpriced_models_are_listed_and_totals_carry_the_cost_of_priced_ones() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    for (model, input, output) in [("gpt-4o", 2.5, 10.0), ("claude-*", 3.0, 15.0)] {
        let p = admin
            .call(
                Method::POST,
                "/api/v1/prices",
                json!({"model": model, "input_per_mtok_usd": input, "output_per_mtok_usd": output}),
            )
            .await;
        assert_eq!(p.status, 201, "{}", p.text());
    }
    let events = vec![
        event("gpt-4o", 1000, Some(6_250), 1),
        event("claude-3-haiku", 100, Some(900), 1),
        event("gpt-4o-mini", 10, None, 1),
        event("llama-3", 20, None, 2),
        event("llama-3", 40, None, 1),
        event("mistral", 80, None, 72),
    ];
    insert_usage(&pool, &events).await.unwrap();

    let unpriced = admin.get("/api/v1/prices/unpriced").await;
    assert_eq!(unpriced.status, 200, "{}", unpriced.text());
    let summary: Vec<(String, i64, i64)> = unpriced.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap().to_owned(),
                m["requests"].as_i64().unwrap(),
                m["total_tokens"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("gpt-4o-mini".to_owned(), 1, 10),
            ("llama-3".to_owned(), 2, 60)
        ],
        "the last 24 hours by default; exact names and globs are priced"
    );
    let from = (Utc::now() - Duration::days(4)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let wider = admin
        .get(&format!("/api/v1/prices/unpriced?from={from}"))
        .await
        .json();
    assert_eq!(wider["items"].as_array().unwrap().len(), 3, "{wider}");
    // A price for a glob covering them empties the list.
    let all = admin
        .call(
            Method::POST,
            "/api/v1/prices",
            json!({"model": "*", "input_per_mtok_usd": 0.1, "output_per_mtok_usd": 0.1}),
        )
        .await;
    assert_eq!(all.status, 201);
    let none = admin.get("/api/v1/prices/unpriced").await.json();
    assert_eq!(none["items"], json!([]));

    let by_model = admin
        .get("/api/v1/usage/totals?group_by=model")
        .await
        .json();
    let costs: Vec<(String, f64, i64)> = by_model["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["group"].as_str().unwrap().to_owned(),
                t["cost_usd"].as_f64().unwrap(),
                t["cost_micros"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        costs,
        vec![
            ("claude-3-haiku".to_owned(), 0.0009, 900),
            ("gpt-4o".to_owned(), 0.00625, 6_250),
            ("gpt-4o-mini".to_owned(), 0.0, 0),
            ("llama-3".to_owned(), 0.0, 0),
        ]
    );
    admin.stop().await.unwrap();
}
