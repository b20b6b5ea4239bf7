//! No uncharged streams: the gateway always asks a streamed upstream for its
//! usage and removes the usage chunk for a client that did not ask; an answer
//! without usage is charged an estimate that counts for limits and budgets;
//! usage records carry their cost at the model's price.

use std::time::Duration;

use obleth_config::model::{Entity, Op, ProviderKind};
use obleth_testkit::{db, fresh_database, MockConfig, MockUpstream, MockUsage};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::*;

const COMPLETION_TOKENS: u32 = 3;

async fn upstream(usage: MockUsage) -> MockUpstream {
    MockUpstream::start(MockConfig {
        completion_tokens: COMPLETION_TOKENS,
        usage,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// A chat request for `model` with `extra` fields, answered whole.
async fn ask(gw: &TestGateway, key: &str, model: &str, extra: Value) -> (Answer, String) {
    let mut body =
        json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});
    for (name, value) in extra.as_object().unwrap() {
        body[name] = value.clone();
    }
    let body = body.to_string();
    let answer = request(
        http::Method::POST,
        &gw.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    (answer, body)
}

/// The JSON of every `data:` event but `[DONE]`, and whether `[DONE]` ended it.
fn events(answer: &Answer) -> (Vec<Value>, bool) {
    let text = answer.text();
    let mut data: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    let done = data.last() == Some(&"[DONE]");
    if done {
        data.pop();
    }
    let chunks = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    (chunks, done)
}

fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn has_usage_chunk(chunks: &[Value]) -> bool {
    chunks.iter().any(|c| !c["usage"].is_null())
}

/// A usage row: prompt, completion, total, estimated, cost_micros, team_id.
type Row = (
    Option<i32>,
    Option<i32>,
    Option<i32>,
    bool,
    Option<i64>,
    Option<Uuid>,
);

/// Waits for the usage row of the request with `request_id`.
async fn row(pool: &PgPool, request_id: &str) -> Row {
    let id: Uuid = request_id.parse().unwrap();
    obleth_testkit::poll::wait_for(Duration::from_secs(10), "the usage row", || async {
        sqlx::query_as(
            "SELECT prompt_tokens, completion_tokens, total_tokens, estimated, cost_micros, team_id \
             FROM usage_ledger WHERE request_id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
    })
    .await
}

/// A database-mode gateway with route `up` to `upstream`.
async fn database_gateway(pool: &PgPool, url: &str, upstream: &MockUpstream) -> TestGateway {
    let settings = database_settings(url, pool).await;
    let provider = db::provider("up", ProviderKind::OpenAi, &upstream.base_url());
    db::provider_and_route(pool, &provider, "up").await.unwrap();
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    gw
}

/// The mock's words for a completion of `n` tokens, as the estimate counts them.
fn completion_text(n: u32) -> String {
    (1..=n)
        .map(|i| format!("tok{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn include_usage_false_is_charged_and_its_client_sees_no_usage_chunk() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = upstream(MockUsage::WhenAsked).await;
    let (_, secret) = db_key(&pool, |_| {}).await;
    let gw = database_gateway(&pool, &db.url, &upstream).await;

    let (answer, _) = ask(
        &gw,
        &secret,
        "up",
        json!({"stream": true, "stream_options": {"include_usage": false, "include_obfuscation": false}}),
    )
    .await;

    let sent = upstream.last_request().unwrap().body.unwrap();
    assert_eq!(
        sent["stream_options"],
        json!({"include_usage": true, "include_obfuscation": false}),
        "the upstream is asked for usage, the client's other options kept"
    );
    let (chunks, done) = events(&answer);
    assert!(done, "{}", answer.text());
    assert_eq!(content(&chunks), completion_text(COMPLETION_TOKENS));
    assert!(!has_usage_chunk(&chunks), "{}", answer.text());
    assert!(chunks.iter().all(|c| c["choices"] != json!([])));
    let request_id = answer.header("x-request-id").unwrap();
    let (prompt, completion, total, estimated, cost, _) = row(&pool, request_id).await;
    // The mock counts words: "hello there" is 2, and COMPLETION_TOKENS.
    assert_eq!(
        (prompt, completion, total, estimated, cost),
        (Some(2), Some(3), Some(5), false, None),
        "charged the upstream's real tokens, unpriced"
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn the_usage_chunk_reaches_only_a_client_that_asked_for_it() {
    let upstream = upstream(MockUsage::WhenAsked).await;
    let (key_config, key) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key_config]);
    settings
        .providers
        .push(openai_provider("up", &upstream.base_url()));
    settings.routes.push(route("up", &["up"]));
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;

    let (asked, _) = ask(
        &gw,
        &key,
        "up",
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    let (chunks, done) = events(&asked);
    assert!(done);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 5, "{last}");

    // Without stream_options OpenAI sends no usage chunk; neither does the
    // gateway, though it asked the upstream for one.
    let (plain, _) = ask(&gw, &key, "up", json!({"stream": true})).await;
    let sent = upstream.last_request().unwrap().body.unwrap();
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    let (chunks, done) = events(&plain);
    assert!(done, "{}", plain.text());
    assert!(!has_usage_chunk(&chunks), "{}", plain.text());
    assert_eq!(content(&chunks), completion_text(COMPLETION_TOKENS));
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn an_upstream_that_reports_no_usage_is_charged_an_estimate_that_counts_for_limits() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = upstream(MockUsage::Never).await;
    let (_, limited) = db_key(&pool, |k| k.tpm_limit = Some(10)).await;
    let (_, budgeted) = db_key(&pool, |k| k.token_budget = Some(10)).await;
    let gw = database_gateway(&pool, &db.url, &upstream).await;

    // Streamed: the estimate is ceil(request bytes / 4) for the prompt and
    // ceil(generated text bytes / 4) for the completion.
    let (answer, body) = ask(&gw, &limited, "up", json!({"stream": true})).await;
    let (chunks, done) = events(&answer);
    assert!(done && !has_usage_chunk(&chunks));
    let prompt = body.len().div_ceil(4) as i32;
    let completion = completion_text(COMPLETION_TOKENS).len().div_ceil(4) as i32;
    let (p, c, t, estimated, _, _) = row(&pool, answer.header("x-request-id").unwrap()).await;
    assert_eq!(
        (p, c, t, estimated),
        (
            Some(prompt),
            Some(completion),
            Some(prompt + completion),
            true
        )
    );
    assert!(prompt + completion > 10, "the estimate exhausts tpm_limit");
    // The estimate counted towards the key's tokens per minute.
    let refused = chat(&gw, &limited, "up").await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.error_code(), "rate_limit_exceeded");

    // Not streamed: the same rule, over the answer's message content; it
    // counts towards the token budget.
    let (answer, body) = ask(&gw, &budgeted, "up", json!({})).await;
    assert!(answer.json().get("usage").is_none());
    let prompt = body.len().div_ceil(4) as i32;
    let (p, c, t, estimated, _, _) = row(&pool, answer.header("x-request-id").unwrap()).await;
    assert_eq!(
        (p, c, t, estimated),
        (
            Some(prompt),
            Some(completion),
            Some(prompt + completion),
            true
        )
    );
    let refused = chat(&gw, &budgeted, "up").await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.error_code(), "budget_exceeded");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn usage_rows_carry_the_cost_at_the_models_price_and_the_keys_team() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = upstream(MockUsage::WhenAsked).await;
    let free = db::provider("free-up", ProviderKind::OpenAi, &upstream.base_url());
    db::provider_and_route(&pool, &free, "free").await.unwrap();
    let (key, secret) = db_key(&pool, |_| {}).await;
    let team = Uuid::new_v4();
    sqlx::query("INSERT INTO teams (id, name) VALUES ($1, 'red')")
        .bind(team)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE api_keys SET team_id = $1 WHERE id = $2")
        .bind(team)
        .bind(key.id)
        .execute(&pool)
        .await
        .unwrap();
    // A price present at warm-up: $2.50 in, $10 out per million tokens.
    sqlx::query(
        "INSERT INTO prices (id, model, input_micros_per_mtok, output_micros_per_mtok) \
         VALUES ($1, 'up', 2500000, 10000000)",
    )
    .bind(Uuid::new_v4())
    .execute(&pool)
    .await
    .unwrap();
    let gw = database_gateway(&pool, &db.url, &upstream).await;

    let (answer, _) = ask(&gw, &secret, "up", json!({"stream": true})).await;
    let row_priced = row(&pool, answer.header("x-request-id").unwrap()).await;
    // 2 prompt and 3 completion tokens: ceil((2 * 2.5 + 3 * 10) / 1e6 * 1e6) micros.
    assert_eq!(
        row_priced,
        (Some(2), Some(3), Some(5), false, Some(35), Some(team))
    );
    let (answer, _) = ask(&gw, &secret, "free", json!({})).await;
    let row_free = row(&pool, answer.header("x-request-id").unwrap()).await;
    assert_eq!(row_free.4, None, "a model without a price has no cost");

    // A price written later reaches the gateway through the change feed.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO prices (id, model, input_micros_per_mtok, output_micros_per_mtok) \
         VALUES ($1, 'fr*', 1000000, 1000000)",
    )
    .bind(Uuid::new_v4())
    .execute(&mut *tx)
    .await
    .unwrap();
    obleth_config::db::changes::record_change(
        &mut tx,
        Entity::Setting,
        obleth_config::db::prices::CHANGE_ID,
        Op::Update,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "the new price to apply",
        || async {
            let (answer, _) = ask(&gw, &secret, "free", json!({})).await;
            row(&pool, answer.header("x-request-id").unwrap()).await.4 == Some(5)
        },
    )
    .await;
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn embedded_prices_are_checked_naming_the_field_and_loaded() {
    use std::io::Write;

    let cases = [
        (
            "[[prices]]\nmodel = \"a\"\ninput_per_mtok_usd = 1\noutput_per_mtok_usd = 2\n\
             [[prices]]\nmodel = \"b\"\ninput_per_mtok_usd = -1\noutput_per_mtok_usd = 2\n",
            "invalid settings: prices[1].input_per_mtok_usd: must not be negative",
        ),
        (
            "[[prices]]\nmodel = \"a\"\ninput_per_mtok_usd = 0.1234567\noutput_per_mtok_usd = 2\n",
            "invalid settings: prices[0].input_per_mtok_usd: must have at most 6 decimal places (a micro-dollar)",
        ),
        (
            "[[prices]]\nmodel = \"g*\"\ninput_per_mtok_usd = 1\noutput_per_mtok_usd = 2\n\
             [[prices]]\nmodel = \"g*\"\ninput_per_mtok_usd = 1\noutput_per_mtok_usd = 2\n",
            "invalid settings: prices[1].model: `g*` is priced twice",
        ),
        (
            "[database]\nurl = \"postgres://localhost/x\"\n\
             [[prices]]\nmodel = \"a\"\ninput_per_mtok_usd = 1\noutput_per_mtok_usd = 2\n",
            "invalid settings: keys, providers, routes, prices: with database.url set these come from the database; remove them from the file",
        ),
    ];
    for (toml, expected) in cases {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        let e = obleth_gateway::GatewaySettings::load(Some(file.path())).unwrap_err();
        assert_eq!(e.to_string(), expected);
    }

    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(
        b"[[prices]]\nmodel = \"m\"\ninput_per_mtok_usd = 2.5\noutput_per_mtok_usd = 10\n\
          [[prices]]\nmodel = \"gpt-*\"\ninput_per_mtok_usd = 0.15\noutput_per_mtok_usd = 0.6\n",
    )
    .unwrap();
    let settings = obleth_gateway::GatewaySettings::load(Some(file.path())).unwrap();
    let gateway = obleth_gateway::Gateway::build(settings, None)
        .await
        .unwrap();
    let prices = gateway.state.prices.get();
    let price = |m: &str| {
        prices
            .price_for(m)
            .map(|p| (p.input_micros_per_mtok, p.output_micros_per_mtok))
    };
    assert_eq!(price("m"), Some((2_500_000, 10_000_000)));
    assert_eq!(price("gpt-4o-mini"), Some((150_000, 600_000)));
    assert_eq!(price("other"), None);
}

#[tokio::test]
async fn a_stream_longer_than_max_stream_secs_is_ended_recorded_and_counted() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    // 40 tokens a second apart: a 40-second stream, ended at 2 s.
    let upstream = MockUpstream::start(MockConfig {
        completion_tokens: 40,
        token_delay: Duration::from_secs(1),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut settings = database_settings(&db.url, &pool).await;
    settings.server.max_stream_secs = 2;
    let provider = db::provider("up", ProviderKind::OpenAi, &upstream.base_url());
    db::provider_and_route(&pool, &provider, "up")
        .await
        .unwrap();
    let (_, key) = db_key(&pool, |_| {}).await;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;

    let started = std::time::Instant::now();
    let answer = request(
        http::Method::POST,
        &gw.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        json!({"model": "up", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200);
    let (_, done) = events(&answer);
    assert!(!done, "the stream was ended before [DONE]");
    assert!(
        took < Duration::from_secs(20),
        "ended at max_stream_secs, not at the upstream's end: {took:?}"
    );
    let request_id = answer.header("x-request-id").unwrap().to_owned();
    let status: i16 =
        obleth_testkit::poll::wait_for(Duration::from_secs(10), "the usage row", || async {
            sqlx::query_scalar("SELECT status FROM usage_ledger WHERE request_id = $1")
                .bind(request_id.parse::<Uuid>().unwrap())
                .fetch_optional(&pool)
                .await
                .unwrap()
        })
        .await;
    assert_eq!(status, 504, "recorded as ended by the gateway");
    assert_eq!(metric(&gw, "obleth_streams_too_long_total", &[]).await, 1.0);
    gw.stop().await.unwrap();
}
