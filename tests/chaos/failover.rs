//! g. PostgreSQL failover under load: the primary crashes, its synchronous
//! standby is promoted behind HAProxy, and the fleet carries on.

use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use obleth_e2e::admin::AdminProc;
use obleth_e2e::closed::{total, ClosedLoad};
use obleth_e2e::evidence;
use obleth_e2e::fleet::{FleetSpec, Prepared};
use obleth_e2e::pgfront::PgFront;
use obleth_e2e::procs::GatewayProc;
use obleth_testkit::http::request;
use obleth_testkit::poll::wait_until;
use obleth_testkit::{db, PgReplicated};

use crate::ONE_AT_A_TIME;

/// Generous bounds for a loaded two-core machine; the printed figures are
/// what matters.
const LIMIT: Duration = Duration::from_secs(60);

/// Two gateways and an admin reach PostgreSQL through HAProxy, which routes
/// to whichever server accepts clients. Under a closed-loop load on both
/// gateways the primary is SIGKILLed (its whole process group, as a host
/// crash) and the synchronous standby promoted. Cached keys are served
/// throughout, every 200 has its usage row in the promoted database, and
/// the change feed resumes: a key revoked through the admin after the
/// failover is refused by both gateways, and a key created after it is
/// admitted by both.
#[tokio::test]
async fn failover_to_a_synchronous_standby_loses_no_request_no_usage_and_no_change() {
    let _one = ONE_AT_A_TIME.lock().await;
    let pair = PgReplicated::start().await.unwrap();
    let test_db = pair.fresh_database().await.unwrap();
    let front_dir = tempfile::tempdir().unwrap();
    let front = PgFront::start(front_dir.path(), &pair).await.unwrap();
    let url = front.url(&test_db.name);
    let spec = FleetSpec {
        gateways: 2,
        ..FleetSpec::default()
    };
    let prepared = Prepared::new(&url, &spec).await.unwrap();
    let (doomed, doomed_key) = db::key(&prepared.pool, |k| k.name = "doomed".to_owned())
        .await
        .unwrap();
    let fleet = prepared.launch(&spec).await.unwrap();
    let admin = AdminProc::start(fleet.dir.path(), "admin", &url)
        .await
        .unwrap();
    let gateways = &fleet.gateways;
    let mut probe_200s = 0;
    for g in gateways {
        let status = ask(g, &doomed_key).await;
        assert_eq!(status, 200, "{} admits the doomed key before", g.name);
        probe_200s += 1;
    }
    let targets: Vec<_> = gateways
        .iter()
        .map(|g| obleth_e2e::load::LoadSpec {
            base_url: g.url(""),
            ..fleet.load_spec(1, 0)
        })
        .collect();
    let load = ClosedLoad::start(&targets, 2, Duration::from_millis(20));
    wait_until(LIMIT, "the load to be served", || async {
        load.succeeded() >= 100
    })
    .await;

    // The primary dies; the gateways notice; the standby is promoted.
    let at_kill = load.succeeded();
    pair.kill_primary().await.unwrap();
    let killed = Instant::now();
    for g in gateways {
        wait_until(LIMIT, "the gateway to see the database gone", || async {
            g.health().await.1["checks"]["database"]["status"] == "down"
        })
        .await;
    }
    // The outage lasts until the fleet has served on without a database, so
    // that usage is buffered and writes fail and must be retried.
    wait_until(LIMIT, "the load to be served with no database", || async {
        load.succeeded() >= at_kill + 100
    })
    .await;
    let at_promote = load.succeeded();
    pair.promote_standby().unwrap();
    let routed = front
        .wait_routes_to(pair.standby().port(), LIMIT)
        .await
        .unwrap();
    let failover_ms = killed.elapsed().as_millis();
    evidence(&format!(
        "[failover] primary killed; {} requests served with no database; standby promoted, \
         haproxy routing to it {failover_ms} ms after the kill ({} ms after the promotion)",
        at_promote - at_kill,
        routed.as_millis()
    ));

    // A change made after the failover reaches every gateway.
    admin.revoke_key(&doomed.id.to_string()).await.unwrap();
    let revoked = Instant::now();
    let mut refused = Vec::new();
    for g in gateways {
        // Until the revocation arrives the key is admitted, and each 200
        // has its usage row like any other.
        let admitted = Cell::new(0);
        on_gateway(g, "the revocation to reach it", || async {
            // A cached key that is revoked is 403 `key_revoked`; one the
            // gateway no longer knows would be 401.
            match ask(g, &doomed_key).await {
                401 | 403 => true,
                200 => {
                    admitted.set(admitted.get() + 1);
                    false
                }
                _ => false,
            }
        })
        .await;
        probe_200s += admitted.get();
        refused.push(revoked.elapsed());
    }
    let revocation_ms = refused.iter().max().map_or(0, Duration::as_millis);
    let (_, fresh_key) = admin.create_key("after failover").await.unwrap();
    let created = Instant::now();
    for g in gateways {
        on_gateway(g, "the new key to be admitted", || async {
            ask(g, &fresh_key).await == 200
        })
        .await;
        probe_200s += 1;
    }
    let admission_ms = created.elapsed().as_millis();
    // The load goes on past all of it.
    let after = load.succeeded();
    wait_until(LIMIT, "the load to go on after the failover", || async {
        load.succeeded() >= after + 100
    })
    .await;

    let reports = load.finish().await;
    let gateways_logs: Vec<(String, String)> =
        gateways.iter().map(|g| (g.name.clone(), g.log())).collect();
    let all = total(&reports);
    admin.stop().await;
    let stopped = fleet.stop().await.unwrap();
    let rows = stopped.successful_usage_rows().await.unwrap();
    let expected = all.succeeded + probe_200s;
    let per_gateway: Vec<String> = reports
        .iter()
        .zip(gateways_names(&spec))
        .map(|(r, name)| format!("{name} {}", r.succeeded))
        .collect();
    evidence(&format!(
        "[failover] failover: {} of {} requests ok ({}), failed {} {:?}",
        all.succeeded,
        all.sent,
        per_gateway.join(", "),
        all.failed_total(),
        all.failed
    ));
    let retried: Vec<String> = gateways_logs
        .iter()
        .map(|(name, log)| {
            let n = log.matches("Usage write failed; will retry.").count();
            format!("{name} {n}")
        })
        .collect();
    evidence(&format!(
        "[failover] usage rows {rows} of {expected} (load {} + probes {probe_200s}); \
         failed usage writes retried: {}",
        all.succeeded,
        retried.join(", ")
    ));
    evidence(&format!(
        "[failover] revocation reached {} of {} gateways in {revocation_ms} ms; \
         a key created after the failover admitted by {} of {} in {admission_ms} ms",
        refused.len(),
        spec.gateways,
        spec.gateways,
        spec.gateways
    ));
    front.stop().await;
    drop(pair);

    assert!(
        at_promote > at_kill,
        "cached keys were served with no database"
    );
    assert_eq!(all.failed_total(), 0, "{:?}", all.failed);
    assert_eq!(all.sent, all.succeeded, "every request accounted for");
    assert!(
        reports.iter().all(|r| r.succeeded > 0),
        "both gateways served"
    );
    assert_eq!(rows, expected as i64, "one usage row per 200, none lost");
}

/// Polls `check` until it holds, within [`LIMIT`]; panics naming `what`
/// and quoting the gateway's log when it never does.
async fn on_gateway<F, Fut>(g: &GatewayProc, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < LIMIT,
            "timed out waiting on {} for {what}; log:\n{}",
            g.name,
            g.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `gw1`, `gw2`...: the names `Prepared::launch` gives the gateways.
fn gateways_names(spec: &FleetSpec) -> Vec<String> {
    (1..=spec.gateways).map(|i| format!("gw{i}")).collect()
}

/// One chat completion with `key` on gateway `g`; answers the status.
async fn ask(g: &GatewayProc, key: &str) -> u16 {
    let body = serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": "are you there"}],
    });
    request(
        Method::POST,
        &g.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        Bytes::from(body.to_string()),
    )
    .await
    .status
}
