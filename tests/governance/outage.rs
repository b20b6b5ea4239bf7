//! PostgreSQL down: each gateway says `degraded` naming the limits, and falls
//! back to its share of a key's limit (limit ÷ live gateways); PostgreSQL
//! back: health is `ok` again.

use std::time::{Duration, Instant};

use obleth_e2e::burst::{rate_limit_problems, refusal_problems, Shot};
use obleth_e2e::fleet::{FleetSpec, Prepared};
use obleth_e2e::procs::GatewayProc;
use obleth_e2e::ONE_AT_A_TIME;
use obleth_testkit::poll::wait_until;
use obleth_testkit::{db, PgCluster};
use serde_json::Value;

use crate::burst_in_one_minute;

/// The key's limit, the requests sent to one gateway, and what that gateway
/// may admit on its own: about 30 ÷ 3.
const OUTAGE_RPM_LIMIT: i32 = 30;
const OUTAGE_SENT: usize = 60;
const OUTAGE_ADMITTED: std::ops::RangeInclusive<usize> = 8..=14;

/// Whether a health body says the limits fell back to this gateway's share.
fn names_the_limits(body: &Value) -> bool {
    let limits = &body["checks"]["limits"];
    limits["status"] == "fallback"
        && limits["detail"]
            .as_str()
            .is_some_and(|d| d.contains("live gateways"))
}

/// Polls `g`'s health until `done` holds for it or `deadline` passes; answers
/// the last body and whether `done` held. (Not a panicking wait: the scenario
/// goes on to measure, and asserts once PostgreSQL is back.)
async fn health_until(
    g: &GatewayProc,
    deadline: Instant,
    done: impl Fn(&Value) -> bool,
) -> (Value, bool) {
    loop {
        let (_, body) = g.health().await;
        if done(&body) {
            return (body, true);
        }
        if Instant::now() > deadline {
            return (body, false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn while_postgresql_is_down_each_gateway_admits_its_share_and_says_degraded() {
    let _one = ONE_AT_A_TIME.lock().await;
    let scenario = "database down, one gateway";
    let cluster = PgCluster::start().unwrap();
    let db = cluster.fresh_database().await.unwrap();
    let spec = FleetSpec {
        token_delay: Duration::ZERO,
        ..FleetSpec::default()
    };
    let prepared = Prepared::new(&db.url, &spec).await.unwrap();
    let (_, key) = db::key(&prepared.pool, |k| {
        k.name = "rpm-30-outage".to_owned();
        k.rpm_limit = Some(OUTAGE_RPM_LIMIT);
    })
    .await
    .unwrap();
    let fleet = prepared.launch(&spec).await.unwrap();
    wait_until(
        Duration::from_secs(30),
        "three live gateways in nodes",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM nodes WHERE service = 'gateway' AND stopped_at IS NULL",
            )
            .fetch_one(&fleet.pool)
            .await
            .unwrap_or(0)
                >= 3
        },
    )
    .await;

    cluster.stop().unwrap();
    obleth_e2e::evidence(&format!("[{scenario}] PostgreSQL stopped"));
    let mut down = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for g in &fleet.gateways {
        let (body, named) = health_until(g, deadline, |b| {
            b["status"] == "degraded" && names_the_limits(b)
        })
        .await;
        obleth_e2e::evidence(&format!(
            "[{scenario}] {} health while down: {body}",
            g.name
        ));
        down.push((g.name.clone(), body, named));
    }

    let base = fleet.gateways[0].url("");
    let shots = (0..OUTAGE_SENT).map(|_| Shot::chat(&base, &key)).collect();
    let (answers, tally) = burst_in_one_minute(scenario, shots).await;

    cluster.start_again().unwrap();
    obleth_e2e::evidence(&format!("[{scenario}] PostgreSQL back"));
    let mut back = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for g in &fleet.gateways {
        let (body, ok) = health_until(g, deadline, |b| b["status"] == "ok").await;
        back.push((g.name.clone(), body, ok));
    }
    fleet.pool.close().await;
    fleet.stop().await.unwrap();

    for (name, body, named) in &down {
        assert!(
            *named,
            "{name} did not say degraded naming the limits within 30 s: {body}"
        );
    }
    assert!(
        OUTAGE_ADMITTED.contains(&tally.admitted),
        "admitted {} of {OUTAGE_SENT} on one gateway while PostgreSQL was down, want \
         {OUTAGE_ADMITTED:?} (about {OUTAGE_RPM_LIMIT} / 3): {tally:?}",
        tally.admitted
    );
    let problems = refusal_problems(&answers, 5, |a| rate_limit_problems(a, None));
    assert!(problems.is_empty(), "{problems:#?}");
    for (name, body, ok) in &back {
        assert!(
            ok,
            "{name} not ok within 60 s of PostgreSQL's return: {body}"
        );
    }
}
