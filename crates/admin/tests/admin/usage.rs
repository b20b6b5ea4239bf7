//! Usage reports: totals per key, model and provider over a time range, and
//! the raw records one page at a time.

use chrono::{Duration, Utc};
use obleth_config::db::usage::insert_usage;
use obleth_config::model::UsageEvent;
use serde_json::Value;
use uuid::Uuid;

use crate::support::*;

fn event(
    key: Uuid,
    model: &str,
    provider: &str,
    tokens: i32,
    status: i16,
    ago_hours: i64,
) -> UsageEvent {
    UsageEvent {
        request_id: Uuid::new_v4(),
        key_id: Some(key),
        model: model.to_owned(),
        provider: Some(provider.to_owned()),
        prompt_tokens: Some(tokens / 2),
        completion_tokens: Some(tokens - tokens / 2),
        total_tokens: Some(tokens),
        status,
        latency_ms: 5,
        streamed: false,
        node_id: Some("gw-1".to_owned()),
        created_at: Utc::now() - Duration::hours(ago_hours),
        cost_micros: None,
        estimated: false,
        team_id: None,
    }
}

fn totals(v: &Value) -> Vec<(Value, i64, i64, i64)> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["group"].clone(),
                t["requests"].as_i64().unwrap(),
                t["errors"].as_i64().unwrap(),
                t["total_tokens"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn usage_totals_group_by_key_model_and_provider_and_records_page_through() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let events = vec![
        event(a, "gpt-4o", "openai", 10, 200, 1),
        event(a, "gpt-4o", "openai", 20, 200, 2),
        event(a, "mini", "mock", 30, 500, 3),
        event(b, "mini", "mock", 40, 200, 4),
        event(b, "mini", "mock", 50, 200, 48),
    ];
    assert_eq!(insert_usage(&pool, &events).await.unwrap(), 5);

    let by_key = admin.get("/api/v1/usage/totals?group_by=key").await.json();
    assert_eq!(by_key["group_by"], "key");
    let mut expected = vec![
        (Value::from(a.to_string()), 3, 1, 60),
        (Value::from(b.to_string()), 1, 0, 40),
    ];
    expected.sort_by(|x, y| x.0.as_str().cmp(&y.0.as_str()));
    assert_eq!(
        totals(&by_key),
        expected,
        "the 48-hour-old event is outside the default day"
    );
    let by_model = admin
        .get("/api/v1/usage/totals?group_by=model")
        .await
        .json();
    assert_eq!(
        totals(&by_model),
        vec![("gpt-4o".into(), 2, 0, 30), ("mini".into(), 2, 1, 70)]
    );
    let from = (Utc::now() - Duration::days(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let by_provider = admin
        .get(&format!(
            "/api/v1/usage/totals?group_by=provider&from={from}&key_id={b}"
        ))
        .await
        .json();
    assert_eq!(totals(&by_provider), vec![("mock".into(), 2, 0, 90)]);

    let mut ids = Vec::new();
    let mut path = format!("/api/v1/usage/records?limit=2&from={from}");
    loop {
        let page = admin.get(&path).await.json();
        for r in page["items"].as_array().unwrap() {
            assert_eq!(r["node_id"], "gw-1");
            ids.push(r["id"].as_i64().unwrap());
        }
        match page["next_after"].as_i64() {
            Some(after) => {
                path = format!("/api/v1/usage/records?limit=2&from={from}&after={after}")
            }
            None => break,
        }
    }
    assert_eq!(ids.len(), 5);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let only_a = admin
        .get(&format!(
            "/api/v1/usage/records?from={from}&key_id={a}&model=mini"
        ))
        .await
        .json();
    assert_eq!(only_a["items"].as_array().unwrap().len(), 1);
    assert_eq!(only_a["items"][0]["status"], 500);
    admin.stop().await.unwrap();
}
