//! Shared rate limits: a key's `rpm_limit` holds across the fleet, a key whose
//! traffic all lands on one gateway still gets its whole limit, and a team's
//! limit holds across its keys.

use obleth_e2e::burst::{rate_limit_problems, refusal_problems, Shot};
use obleth_e2e::fleet::{FleetSpec, Prepared};
use obleth_e2e::governance::{create_team, join_team};
use obleth_e2e::ONE_AT_A_TIME;
use obleth_testkit::{db, fresh_database};

use crate::{burst_in_one_minute, print_admitted_by_node, ADMITTED, RPM_LIMIT, SENT};

fn spec() -> FleetSpec {
    FleetSpec {
        token_delay: std::time::Duration::ZERO,
        ..FleetSpec::default()
    }
}

/// 180 requests through HAProxy, round-robin over three gateways, with one
/// key of `rpm_limit = 60`: admitted about 60 times, not 3 × 60.
#[tokio::test]
async fn a_key_spread_over_three_gateways_is_admitted_its_limit_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let scenario = "key limit, three gateways";
    let db = fresh_database().await.unwrap();
    let spec = spec();
    let prepared = Prepared::new(&db.url, &spec).await.unwrap();
    let (row, key) = db::key(&prepared.pool, |k| {
        k.name = "rpm-60-spread".to_owned();
        k.rpm_limit = Some(RPM_LIMIT);
    })
    .await
    .unwrap();
    let fleet = prepared.launch(&spec).await.unwrap();
    let shots = (0..SENT)
        .map(|_| Shot::chat(&fleet.haproxy.url(""), &key))
        .collect();
    let (answers, tally) = burst_in_one_minute(scenario, shots).await;
    print_admitted_by_node(scenario, &fleet.pool, &[row.id], tally.admitted).await;
    fleet.stop().await.unwrap();
    let problems = refusal_problems(&answers, 5, |a| {
        rate_limit_problems(a, Some(RPM_LIMIT as u32))
    });
    assert!(
        ADMITTED.contains(&tally.admitted),
        "admitted {} of {SENT}, want {ADMITTED:?}: {tally:?}",
        tally.admitted
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

/// 180 requests straight to one gateway's proxy port with a fresh key of
/// `rpm_limit = 60`: the one gateway admits the whole limit, not a third.
#[tokio::test]
async fn a_key_sent_to_one_gateway_gets_its_whole_limit() {
    let _one = ONE_AT_A_TIME.lock().await;
    let scenario = "key limit, one gateway";
    let db = fresh_database().await.unwrap();
    let spec = spec();
    let prepared = Prepared::new(&db.url, &spec).await.unwrap();
    let (row, key) = db::key(&prepared.pool, |k| {
        k.name = "rpm-60-one".to_owned();
        k.rpm_limit = Some(RPM_LIMIT);
    })
    .await
    .unwrap();
    let fleet = prepared.launch(&spec).await.unwrap();
    let base = fleet.gateways[0].url("");
    let shots = (0..SENT).map(|_| Shot::chat(&base, &key)).collect();
    let (answers, tally) = burst_in_one_minute(scenario, shots).await;
    print_admitted_by_node(scenario, &fleet.pool, &[row.id], tally.admitted).await;
    fleet.stop().await.unwrap();
    let problems = refusal_problems(&answers, 5, |a| {
        rate_limit_problems(a, Some(RPM_LIMIT as u32))
    });
    assert!(
        ADMITTED.contains(&tally.admitted),
        "admitted {} of {SENT} on one gateway, want {ADMITTED:?}: {tally:?}",
        tally.admitted
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A team with `rpm_limit = 60` and two keys without limits of their own:
/// 90 requests of each, interleaved, through HAProxy: the team is admitted
/// about 60 in all.
#[tokio::test]
async fn a_team_limit_holds_across_its_keys_and_the_fleet() {
    let _one = ONE_AT_A_TIME.lock().await;
    let scenario = "team limit, two keys, three gateways";
    let db = fresh_database().await.unwrap();
    let spec = spec();
    let prepared = Prepared::new(&db.url, &spec).await.unwrap();
    let team = create_team(&prepared.pool, "rpm-60-team", Some(RPM_LIMIT))
        .await
        .unwrap();
    let mut keys = Vec::new();
    for name in ["team-key-a", "team-key-b"] {
        let (row, key) = db::key(&prepared.pool, |k| k.name = name.to_owned())
            .await
            .unwrap();
        assert_eq!(row.rpm_limit, None);
        join_team(&prepared.pool, row.id, team).await.unwrap();
        keys.push((row.id, key));
    }
    let fleet = prepared.launch(&spec).await.unwrap();
    let base = fleet.haproxy.url("");
    let shots = (0..SENT)
        .map(|i| Shot::chat(&base, &keys[i % 2].1))
        .collect();
    let (answers, tally) = burst_in_one_minute(scenario, shots).await;
    let ids: Vec<_> = keys.iter().map(|(id, _)| *id).collect();
    let per_key: Vec<usize> = (0..2)
        .map(|k| {
            answers
                .iter()
                .skip(k)
                .step_by(2)
                .filter(|a| a.status == 200)
                .count()
        })
        .collect();
    obleth_e2e::evidence(&format!("[{scenario}] admitted per key: {per_key:?}"));
    print_admitted_by_node(scenario, &fleet.pool, &ids, tally.admitted).await;
    fleet.stop().await.unwrap();
    let problems = refusal_problems(&answers, 5, |a| {
        rate_limit_problems(a, Some(RPM_LIMIT as u32))
    });
    assert!(
        ADMITTED.contains(&tally.admitted),
        "team admitted {} of {SENT}, want {ADMITTED:?}: {tally:?}",
        tally.admitted
    );
    assert!(problems.is_empty(), "{problems:#?}");
}
