//! Teams through HTTP: their life, budgets in dollars and periods, keys
//! joining and leaving, spend read from the running totals, usage grouped by
//! team, and every refusal naming its field.

use chrono::{DateTime, Utc};
use http::Method;
use obleth_config::db::usage::insert_usage;
use obleth_config::model::{BudgetPeriod, UsageEvent};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::*;

fn event(key: &str, team: Option<&str>, tokens: i32, cost_micros: Option<i64>) -> UsageEvent {
    UsageEvent {
        request_id: Uuid::new_v4(),
        key_id: Some(key.parse().unwrap()),
        model: "m".to_owned(),
        provider: Some("mock".to_owned()),
        prompt_tokens: Some(tokens / 2),
        completion_tokens: Some(tokens - tokens / 2),
        total_tokens: Some(tokens),
        status: 200,
        latency_ms: 5,
        streamed: false,
        node_id: Some("gw-1".to_owned()),
        created_at: Utc::now(),
        cost_micros,
        estimated: false,
        team_id: team.map(|t| t.parse().unwrap()),
    }
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_team_lives_its_whole_life_through_http_with_its_budget_in_dollars() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;

    let created = admin
        .call(
            Method::POST,
            "/api/v1/teams",
            json!({"name": "research", "rpm_limit": 600, "tpm_limit": 100000,
                   "token_budget": 5000000, "budget_usd": 12.5, "budget_period": "day"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let t = created.json();
    let id = t["id"].as_str().unwrap().to_owned();
    assert_eq!(t["name"], "research");
    assert_eq!(t["rpm_limit"], 600);
    assert_eq!(t["budget_usd"], 12.5);
    assert_eq!(t["budget_usd_micros"], 12_500_000);
    assert_eq!(t["budget_period"], "day");
    assert_eq!(
        (t["spent_usd"].as_f64(), t["spent_tokens"].as_i64()),
        (Some(0.0), Some(0))
    );
    let now = Utc::now();
    let start = time(&t["period_start"]);
    assert_eq!(start, BudgetPeriod::Day.start(now));
    assert_eq!(
        Some(time(&t["period_resets_at"])),
        BudgetPeriod::Day.next_start(now)
    );
    let row: (i64, String) =
        sqlx::query_as("SELECT budget_usd_micros, budget_period FROM teams WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        row,
        (12_500_000, "day".to_owned()),
        "stored as micro-dollars"
    );

    let got = admin.get(&format!("/api/v1/teams/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["name"], "research");

    // Update: a field left out stays, null clears; `total` never resets.
    let patched = admin
        .call(
            Method::PATCH,
            &format!("/api/v1/teams/{id}"),
            json!({"name": "research-eu", "budget_usd": null, "rpm_limit": null,
                   "budget_period": "total"}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let p = patched.json();
    assert_eq!(p["name"], "research-eu");
    assert_eq!(
        (p["budget_usd"].clone(), p["rpm_limit"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(p["tpm_limit"], 100000);
    assert_eq!(p["budget_period"], "total");
    assert_eq!(p["period_resets_at"], Value::Null);
    assert_eq!(time(&p["period_start"]), DateTime::<Utc>::UNIX_EPOCH);

    // Every write is a `setting` change named `team:<id>`.
    let changes: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT entity, entity_id, op FROM changes WHERE entity_id LIKE 'team:%' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let name = format!("team:{id}");
    assert_eq!(
        changes,
        vec![
            ("setting".to_owned(), name.clone(), "insert".to_owned()),
            ("setting".to_owned(), name.clone(), "update".to_owned()),
        ]
    );

    // Pages of two, by id.
    for i in 0..3 {
        let t = admin
            .call(
                Method::POST,
                "/api/v1/teams",
                json!({"name": format!("t{i}")}),
            )
            .await;
        assert_eq!(t.status, 201);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/teams?limit=2".to_owned();
    loop {
        let page = admin.get(&path).await.json();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].clone()),
        );
        match page["next_after"].as_str() {
            Some(after) => path = format!("/api/v1/teams?limit=2&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);

    let deleted = admin
        .call(Method::DELETE, &format!("/api/v1/teams/{id}"), Value::Null)
        .await;
    assert_eq!(deleted.status, 204);
    let gone = admin.get(&format!("/api/v1/teams/{id}")).await;
    assert_eq!(
        (gone.status, gone.admin_error().0.as_str()),
        (404, "not_found")
    );
    let last: (String, String) =
        sqlx::query_as("SELECT entity_id, op FROM changes ORDER BY seq DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(last, (name, "delete".to_owned()));
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn keys_join_and_leave_a_team_and_both_show_their_spend_this_period() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    let team = admin
        .call(
            Method::POST,
            "/api/v1/teams",
            json!({"name": "ml", "budget_usd": 100, "budget_period": "month"}),
        )
        .await
        .json();
    let team_id = team["id"].as_str().unwrap().to_owned();
    let created = admin
        .call(
            Method::POST,
            "/api/v1/keys",
            json!({"name": "a", "team_id": team_id, "budget_usd": 0.25, "budget_period": "week"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let key = created.json()["key"].clone();
    let key_id = key["id"].as_str().unwrap().to_owned();
    assert_eq!(key["team_id"], team_id.as_str());
    assert_eq!(key["budget_usd"], 0.25);
    assert_eq!(key["budget_usd_micros"], 250_000);
    assert_eq!(key["budget_period"], "week");
    assert_eq!(key["spent_tokens"], 0);
    let other = admin
        .call(Method::POST, "/api/v1/keys", json!({"name": "b"}))
        .await
        .json();
    let other_id = other["key"]["id"].as_str().unwrap().to_owned();

    // Usage of the key, one row as a release before teams writes it (no
    // team_id, no cost): it counts for the key only, since the totals
    // trigger reads no api_keys.
    let events = vec![
        event(&key_id, Some(&team_id), 100, Some(1_500_000)),
        event(&key_id, None, 20, None),
        event(&other_id, None, 7, Some(10)),
    ];
    insert_usage(&pool, &events).await.unwrap();

    let t = admin.get(&format!("/api/v1/teams/{team_id}")).await.json();
    assert_eq!(
        (
            t["spent_usd"].as_f64(),
            t["spent_usd_micros"].as_i64(),
            t["spent_tokens"].as_i64(),
            t["spent_requests"].as_i64()
        ),
        (Some(1.5), Some(1_500_000), Some(100), Some(1))
    );
    assert_eq!(
        time(&t["period_start"]),
        BudgetPeriod::Month.start(Utc::now())
    );
    let k = admin.get(&format!("/api/v1/keys/{key_id}")).await.json();
    assert_eq!(
        (k["spent_usd"].as_f64(), k["spent_tokens"].as_i64()),
        (Some(1.5), Some(120))
    );
    let listed = admin.get("/api/v1/teams").await.json();
    assert_eq!(listed["items"][0]["spent_tokens"], 100);

    // The key list filters by team and shows each key's spend.
    let in_team = admin
        .get(&format!("/api/v1/keys?team_id={team_id}"))
        .await
        .json();
    let items = in_team["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0]["id"].as_str(), items[0]["spent_tokens"].as_i64()),
        (Some(key_id.as_str()), Some(120))
    );
    let all = admin.get("/api/v1/keys").await.json();
    let spent: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["spent_tokens"].as_i64().unwrap())
        .collect();
    let mut sorted = spent.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![7, 120]);

    // A team with keys is not deleted; the answer says how many.
    let refused = admin
        .call(
            Method::DELETE,
            &format!("/api/v1/teams/{team_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(refused.admin_error().0, "team_in_use");
    assert!(refused.text().contains("1 key"), "{}", refused.text());

    // `team_id: null` takes the key out; then the team can go.
    let left = admin
        .call(
            Method::PATCH,
            &format!("/api/v1/keys/{key_id}"),
            json!({"team_id": null, "budget_usd": null}),
        )
        .await;
    assert_eq!(left.status, 200, "{}", left.text());
    assert_eq!(
        (
            left.json()["team_id"].clone(),
            left.json()["budget_usd"].clone()
        ),
        (Value::Null, Value::Null)
    );
    assert_eq!(left.json()["budget_period"], "week", "untouched");
    let deleted = admin
        .call(
            Method::DELETE,
            &format!("/api/v1/teams/{team_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(deleted.status, 204);
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn usage_totals_group_by_team_with_cost_and_records_carry_cost_and_team() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    let team = admin
        .call(Method::POST, "/api/v1/teams", json!({"name": "t"}))
        .await
        .json();
    let team_id = team["id"].as_str().unwrap().to_owned();
    let key = admin
        .call(
            Method::POST,
            "/api/v1/keys",
            json!({"name": "k", "team_id": team_id}),
        )
        .await
        .json();
    let key_id = key["key"]["id"].as_str().unwrap().to_owned();
    let loner = admin
        .call(Method::POST, "/api/v1/keys", json!({"name": "l"}))
        .await
        .json();
    let loner_id = loner["key"]["id"].as_str().unwrap().to_owned();
    let mut estimated = event(&key_id, Some(&team_id), 30, Some(250_000));
    estimated.estimated = true;
    let events = vec![
        event(&key_id, Some(&team_id), 10, Some(1_000_000)),
        estimated,
        event(&loner_id, None, 5, None),
    ];
    insert_usage(&pool, &events).await.unwrap();

    let by_team = admin.get("/api/v1/usage/totals?group_by=team").await.json();
    assert_eq!(by_team["group_by"], "team");
    let items: Vec<_> = by_team["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["group"].clone(),
                t["requests"].as_i64().unwrap(),
                t["total_tokens"].as_i64().unwrap(),
                t["cost_usd"].as_f64().unwrap(),
                t["cost_micros"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        items,
        vec![
            (Value::from(team_id.clone()), 2, 40, 1.25, 1_250_000),
            (Value::Null, 1, 5, 0.0, 0),
        ]
    );
    let by_key = admin
        .get(&format!("/api/v1/usage/totals?team_id={team_id}"))
        .await
        .json();
    assert_eq!(by_key["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_key["items"][0]["cost_usd"], 1.25);

    let records = admin
        .get(&format!("/api/v1/usage/records?key_id={key_id}"))
        .await
        .json();
    let seen: Vec<_> = records["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["cost_usd"].clone(),
                r["cost_micros"].clone(),
                r["estimated"].clone(),
                r["team_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (json!(1.0), json!(1_000_000), json!(false), json!(team_id)),
            (json!(0.25), json!(250_000), json!(true), json!(team_id)),
        ]
    );
    let unpriced = admin
        .get(&format!("/api/v1/usage/records?key_id={loner_id}"))
        .await
        .json();
    assert_eq!(unpriced["items"][0]["cost_usd"], Value::Null);
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn bad_teams_budgets_and_team_ids_are_refused_naming_the_field_and_write_nothing() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    let team = admin
        .call(Method::POST, "/api/v1/teams", json!({"name": "taken"}))
        .await
        .json();
    let team_path = format!("/api/v1/teams/{}", team["id"].as_str().unwrap());
    let key = admin
        .call(Method::POST, "/api/v1/keys", json!({"name": "k"}))
        .await
        .json();
    let key_path = format!("/api/v1/keys/{}", key["key"]["id"].as_str().unwrap());
    let ghost = Uuid::new_v4();
    let changes = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM changes")
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    };
    let before = changes().await;

    use Method as M;
    let cases: Vec<(Method, &str, String, &str)> = vec![
        (M::POST, "/api/v1/teams", r#"{}"#.into(), "name"),
        (M::POST, "/api/v1/teams", r#"{"name": " "}"#.into(), "name"),
        (
            M::POST,
            "/api/v1/teams",
            r#"{"name": "a\u202eb"}"#.into(),
            "name",
        ),
        (
            M::POST,
            "/api/v1/teams",
            r#"{"name": "n", "rpm_limit": 0}"#.into(),
            "rpm_limit",
        ),
        (
            M::POST,
            "/api/v1/teams",
            r#"{"name": "n", "token_budget": -1}"#.into(),
            "token_budget",
        ),
        (
            M::POST,
            "/api/v1/teams",
            r#"{"name": "n", "budget_usd": -0.01}"#.into(),
            "budget_usd",
        ),
        (
            M::POST,
            "/api/v1/teams",
            r#"{"name": "n", "budget_usd": 1.1234567}"#.into(),
            "budget_usd",
        ),
        (
            M::POST,
            "/api/v1/teams",
            r#"{"name": "n", "budget_usd": 1e400}"#.into(),
            "budget_usd",
        ),
        (
            M::POST,
            "/api/v1/teams",
            r#"{"name": "n", "budget_usd": "12"}"#.into(),
            "budget_usd",
        ),
        (
            M::POST,
            "/api/v1/teams",
            r#"{"name": "n", "budget_usd": 2e9}"#.into(),
            "budget_usd",
        ),
        (
            M::POST,
            "/api/v1/teams",
            r#"{"name": "n", "budget_period": "year"}"#.into(),
            "budget_period",
        ),
        (
            M::PATCH,
            &team_path,
            r#"{"budget_usd": 0.0000001}"#.into(),
            "budget_usd",
        ),
        (
            M::PATCH,
            &team_path,
            r#"{"budget_period": "hourly"}"#.into(),
            "budget_period",
        ),
        (
            M::PATCH,
            &team_path,
            r#"{"tpm_limit": -3}"#.into(),
            "tpm_limit",
        ),
        (M::PATCH, "/api/v1/teams/nope", r#"{}"#.into(), "id"),
        (M::GET, "/api/v1/teams?limit=0", String::new(), "limit"),
        (M::GET, "/api/v1/teams?after=nope", String::new(), "after"),
        (
            M::POST,
            "/api/v1/keys",
            format!(r#"{{"name": "k2", "team_id": "{ghost}"}}"#),
            "team_id",
        ),
        (
            M::POST,
            "/api/v1/keys",
            r#"{"name": "k2", "team_id": "not-a-uuid"}"#.into(),
            "team_id",
        ),
        (
            M::POST,
            "/api/v1/keys",
            r#"{"name": "k2", "budget_usd": -5}"#.into(),
            "budget_usd",
        ),
        (
            M::POST,
            "/api/v1/keys",
            r#"{"name": "k2", "budget_usd": -1e400}"#.into(),
            "budget_usd",
        ),
        (
            M::POST,
            "/api/v1/keys",
            r#"{"name": "k2", "budget_period": "fortnight"}"#.into(),
            "budget_period",
        ),
        (
            M::PATCH,
            &key_path,
            format!(r#"{{"team_id": "{ghost}"}}"#),
            "team_id",
        ),
        (
            M::PATCH,
            &key_path,
            r#"{"budget_usd": 0.1234567}"#.into(),
            "budget_usd",
        ),
        (
            M::GET,
            "/api/v1/keys?team_id=nope",
            String::new(),
            "team_id",
        ),
        (
            M::GET,
            "/api/v1/usage/totals?group_by=department",
            String::new(),
            "group_by",
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
        if *field == "budget_period" {
            let message = answer.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(
                message.contains("`day`, `week`, `month`, `total`"),
                "the allowed periods are listed: {message}"
            );
        }
    }
    let unknown = admin
        .call_raw(
            Method::POST,
            "/api/v1/keys",
            &format!(r#"{{"name": "k2", "team_id": "{ghost}"}}"#),
        )
        .await;
    assert!(
        unknown.text().contains(&ghost.to_string()),
        "{}",
        unknown.text()
    );

    // A taken name is a conflict, on create and on rename.
    let dup = admin
        .call(Method::POST, "/api/v1/teams", json!({"name": "taken"}))
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(
        dup.admin_error(),
        ("already_exists".to_owned(), Some("name".to_owned()))
    );
    let other = admin
        .call(Method::POST, "/api/v1/teams", json!({"name": "other"}))
        .await
        .json();
    let rename = admin
        .call(
            Method::PATCH,
            &format!("/api/v1/teams/{}", other["id"].as_str().unwrap()),
            json!({"name": "taken"}),
        )
        .await;
    assert_eq!(rename.status, 409);
    assert_eq!(
        rename.admin_error(),
        ("already_exists".to_owned(), Some("name".to_owned()))
    );

    assert_eq!(
        changes().await,
        before + 1,
        "only the team `other` was written"
    );
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 1);
    admin.stop().await.unwrap();
}
