//! A spend budget spent through the whole fleet: priced requests sent to the
//! three gateways in turn until refused; the spend recorded stays within the
//! budget plus the documented bound, and the budget was really spent.

use obleth_e2e::burst::{budget_problems, chat_body, code, fire};
use obleth_e2e::fleet::{FleetSpec, Prepared};
use obleth_e2e::governance::{set_key_budget, set_price};
use obleth_e2e::ONE_AT_A_TIME;
use obleth_testkit::http::client;
use obleth_testkit::{db, fresh_database};

/// Gateways in the fleet.
const REPLICAS: usize = 3;

/// The request: its message is four words, which the mock upstream reports as
/// four prompt tokens; `max_tokens` is what the mock then completes.
const PROMPT: &str = "spend through the fleet";
const PROMPT_TOKENS: i64 = 4;
const COMPLETION_TOKENS: u32 = 996;

/// $1 per million tokens, input and output alike: a token costs 1 micro-dollar.
const MICROS_PER_MTOK: i64 = 1_000_000;

/// What one request costs: (4 + 996) tokens at 1 micro-dollar each.
const REQUEST_COST_MICROS: i64 =
    (PROMPT_TOKENS + COMPLETION_TOKENS as i64) * MICROS_PER_MTOK / 1_000_000;

/// The key's budget: room for 20 requests.
const BUDGET_MICROS: i64 = 20 * REQUEST_COST_MICROS;

/// The longest request body sent, in bytes (checked).
const BODY_BYTES_MAX: i64 = 200;

/// The most a gateway reserves for one request before it is answered: its
/// `max_tokens`, plus at most one token per byte of its body for the prompt,
/// at the price above.
const ONE_RESERVATION_MICROS: i64 =
    (COMPLETION_TOKENS as i64 + BODY_BYTES_MAX) * MICROS_PER_MTOK / 1_000_000;

/// The bound docs/gateway.md states for spend over a budget across the fleet:
/// replicas × one request's reservation. Adjust here if the documented bound
/// changes.
const SPEND_OVERSHOOT_BOUND_MICROS: i64 = REPLICAS as i64 * ONE_RESERVATION_MICROS;

/// Requests sent at most before giving up on a refusal (five budgets' worth).
const MOST_REQUESTS: usize = 100;

/// Requests sent after the first refusal, round the fleet twice: the last
/// round all refused (a gateway still holding part of the budget as its
/// lease may admit from it before that).
const AFTER_REFUSAL: usize = 2 * REPLICAS;

#[tokio::test]
async fn a_spend_budget_spent_through_three_gateways_stops_within_the_bound() {
    let _one = ONE_AT_A_TIME.lock().await;
    let scenario = "spend budget, three gateways";
    let db = fresh_database().await.unwrap();
    let spec = FleetSpec {
        token_delay: std::time::Duration::ZERO,
        stream_tokens: COMPLETION_TOKENS,
        ..FleetSpec::default()
    };
    assert_eq!(spec.gateways, REPLICAS);
    let prepared = Prepared::new(&db.url, &spec).await.unwrap();
    set_price(&prepared.pool, "m", MICROS_PER_MTOK, MICROS_PER_MTOK)
        .await
        .unwrap();
    let (row, key) = db::key(&prepared.pool, |k| k.name = "spender".to_owned())
        .await
        .unwrap();
    set_key_budget(&prepared.pool, row.id, BUDGET_MICROS, "total")
        .await
        .unwrap();
    let fleet = prepared.launch(&spec).await.unwrap();

    let body = chat_body("m", PROMPT, Some(COMPLETION_TOKENS));
    assert!(body.len() as i64 <= BODY_BYTES_MAX, "{}", body.len());
    let client = client();
    let shot =
        |i: usize| obleth_e2e::burst::Shot::chat(&fleet.gateways[i % REPLICAS].url(""), &key);
    // One at a time, each gateway in turn, until the first refusal.
    let mut admitted = vec![0usize; REPLICAS];
    let mut first_refusal = None;
    let mut sent = 0;
    while sent < MOST_REQUESTS {
        let answer = fire(&client, &shot(sent), body.clone()).await;
        sent += 1;
        if answer.status == 200 {
            admitted[(sent - 1) % REPLICAS] += 1;
        } else {
            first_refusal = Some(answer);
            break;
        }
    }
    let mut after = Vec::new();
    if first_refusal.is_some() {
        for i in sent..sent + AFTER_REFUSAL {
            after.push(fire(&client, &shot(i), body.clone()).await);
        }
    }
    let total_admitted: usize = admitted.iter().sum();
    obleth_e2e::evidence(&format!(
        "[{scenario}] admitted {total_admitted} ({admitted:?} by gateway) before the first refusal \
         ({:?}); after it: {:?}",
        first_refusal.as_ref().map(|a| (a.status, code(a))),
        after.iter().map(|a| (a.status, code(a))).collect::<Vec<_>>()
    ));

    let stopped = fleet.stop().await.unwrap();
    let (spent, rows_ok, mispriced): (i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(cost_micros), 0)::bigint, \
                count(*) FILTER (WHERE status = 200), \
                count(*) FILTER (WHERE status = 200 AND cost_micros IS DISTINCT FROM $2) \
         FROM usage_ledger WHERE key_id = $1",
    )
    .bind(row.id)
    .bind(REQUEST_COST_MICROS)
    .fetch_one(&stopped.pool)
    .await
    .unwrap();
    let totals: Option<i64> = sqlx::query_scalar(
        "SELECT cost_micros FROM usage_totals WHERE subject_id = $1 AND period = 'total'",
    )
    .bind(row.id)
    .fetch_optional(&stopped.pool)
    .await
    .unwrap();
    obleth_e2e::evidence(&format!(
        "[{scenario}] recorded spend {spent} micro-dollars (running total {totals:?}) over \
         {rows_ok} usage rows with status 200; budget {BUDGET_MICROS}, bound \
         +{SPEND_OVERSHOOT_BOUND_MICROS}, one request {REQUEST_COST_MICROS}"
    ));

    let refusal = first_refusal
        .unwrap_or_else(|| panic!("no refusal after {MOST_REQUESTS} requests of {REQUEST_COST_MICROS} micro-dollars on a budget of {BUDGET_MICROS}"));
    // The fleet does not refuse all at once: after one gateway's refusal,
    // another may still hold part of the budget as its lease and admit from
    // it. Such an admission must fit the budget; every other answer is the
    // budget's 429, and the last round of the fleet is refused.
    let mut problems = budget_problems(&refusal);
    let mut admitted_after = 0usize;
    for (i, answer) in after.iter().enumerate() {
        let last_round = i >= AFTER_REFUSAL - REPLICAS;
        if answer.status == 200 && !last_round {
            admitted_after += 1;
            let running = (total_admitted + admitted_after) as i64 * REQUEST_COST_MICROS;
            if running > BUDGET_MICROS {
                problems.push(format!(
                    "answer {i} after the first refusal admitted past the budget ({running} of {BUDGET_MICROS})"
                ));
            }
        } else {
            problems.extend(budget_problems(answer));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        rows_ok as usize,
        total_admitted + admitted_after,
        "one usage row per admitted request"
    );
    assert_eq!(
        mispriced, 0,
        "every admitted request costs {REQUEST_COST_MICROS}"
    );
    assert!(
        spent <= BUDGET_MICROS + SPEND_OVERSHOOT_BOUND_MICROS,
        "spent {spent}, more than the budget {BUDGET_MICROS} plus the bound {SPEND_OVERSHOOT_BOUND_MICROS}"
    );
    assert!(
        spent >= BUDGET_MICROS - REQUEST_COST_MICROS,
        "spent only {spent} of {BUDGET_MICROS} before the refusals"
    );
}
