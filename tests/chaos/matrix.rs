//! h. The upgrade matrix (CHANGELOG.md): N-2 → N-1 → N and back to N-2,
//! through the releases' pinned git revisions, each release's own migrator
//! and gateway, three gateways behind HAProxy under load the whole way.
//! Each leg prints its counts; every request succeeds and every success
//! has its usage row, in whichever table the schema of the moment keeps.
//!
//! The legs: 0.1.0's `up` lays down its schema; 0.2.0's `up` (the ledger,
//! copied online), gateways rolled to 0.2.0; this release's `up`, gateways
//! rolled to it; back: gateways rolled to 0.2.0, this release's `down 2`;
//! gateways rolled to 0.1.0, 0.2.0's `down 6`. No `finish` runs: after
//! one, the release before cannot come back (scenario c shows the refusal).
//! On the way, this release's `preflight` says no-go while 0.1.0 (two
//! minor releases behind) serves and go once 0.2.0 does, and `down` refuses
//! while a node of the release that needs the migration serves.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use obleth_e2e::fleet::{Fleet, FleetSpec, Prepared};
use obleth_e2e::load::Load;
use obleth_e2e::releases::{BEFORE_PREVIOUS, PREVIOUS};
use obleth_testkit::fresh_database;
use obleth_testkit::poll::wait_for;
use obleth_testkit::proc::{bin, command};
use sqlx::PgPool;

use crate::ONE_AT_A_TIME;

/// One release's binaries.
#[derive(Debug, Clone)]
struct Bins {
    version: &'static str,
    gateway: PathBuf,
    migrator: PathBuf,
}

/// This release's newest migration; `down 4` reverts its four on the way
/// back.
const NEWEST: i64 = 20261129000004;
/// 0.2.0's schema and the migrations `down 6` reverts (all but the
/// contract one, which never ran).
const PREVIOUS_SCHEMA: i64 = 20261128000007;
const FIRST_SCHEMA: i64 = 20261122000003;

async fn migrator(binary: &Path, url: &str, args: &[&str]) -> Output {
    command(binary)
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap()
}

/// Runs the migrator and checks its exit code, printing what it said otherwise.
async fn expect_exit(binary: &Path, url: &str, args: &[&str], code: i32) {
    let out = migrator(binary, url, args).await;
    assert_eq!(
        out.status.code(),
        Some(code),
        "{} {args:?}\nstdout: {}\nstderr: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn newest_applied(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn table_exists(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until `table` holds one status-200 row per request that succeeded
/// so far (the writers flush within a second), and never more.
async fn rows_match(pool: &PgPool, table: &str, succeeded: u64, leg: &str) {
    let sql = format!("SELECT count(*) FROM {table} WHERE status = 200");
    let rows: i64 = wait_for(
        Duration::from_secs(30),
        "every success's usage row",
        || async {
            let rows: i64 = sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap();
            (rows >= succeeded as i64).then_some(rows)
        },
    )
    .await;
    obleth_e2e::evidence(&format!(
        "[matrix {leg}] usage rows with status 200 in {table}: {rows} (successes so far: {succeeded})"
    ));
    assert_eq!(rows, succeeded as i64, "{leg}: one row per success");
}

/// What each stopped gateway's node record says it dropped at sign-off, read
/// before its replacement registers under the same node id.
type SignOffs = Vec<Option<serde_json::Value>>;

/// Rolls every gateway to `to` under load; prints and checks the leg.
async fn leg(fleet: &mut Fleet, to: &Bins, name: &str, before: &mut u64) -> (u64, SignOffs) {
    let load = Load::start(fleet.load_spec(25, 8));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut sign_offs = Vec::new();
    for i in 0..fleet.gateways.len() {
        fleet.gateways[i].stop().await.unwrap();
        sign_offs.push(
            sqlx::query_scalar(
                "SELECT usage_dropped FROM nodes \
                 WHERE node_id = $1 AND stopped_at IS NOT NULL AND usage_dropped_life = started_at",
            )
            .bind(&fleet.gateways[i].name)
            .fetch_optional(&fleet.pool)
            .await
            .unwrap_or(None),
        );
        fleet.restart(i, Some(to.gateway.clone())).await.unwrap();
    }
    let report = load.finish().await;
    report.print(&format!("matrix {name}"));
    assert!(report.streams_succeeded > 0, "{name}: the load streamed");
    assert_eq!(report.failed_total(), 0, "{name}: {:?}", report.failed);
    assert_eq!(
        report.sent, report.succeeded,
        "{name}: every request accounted for"
    );
    *before += report.succeeded;
    (*before, sign_offs)
}

/// The live gateways' versions, as they registered.
async fn live_versions(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT version FROM nodes WHERE service = 'gateway' AND stopped_at IS NULL ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn n_minus_2_to_n_and_back_under_load_fails_no_request_and_loses_no_usage_row() {
    let (n2, n1) = tokio::task::spawn_blocking(|| -> anyhow::Result<(Bins, Bins)> {
        let of = |r: obleth_e2e::releases::Release| -> anyhow::Result<Bins> {
            Ok(Bins {
                version: r.version,
                gateway: r.gateway()?,
                migrator: r.migrator()?,
            })
        };
        Ok((of(BEFORE_PREVIOUS)?, of(PREVIOUS)?))
    })
    .await
    .unwrap()
    .unwrap();
    let n = Bins {
        version: obleth_config::version::VERSION,
        gateway: bin("obleth-gateway"),
        migrator: bin("obleth-migrator"),
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let db = fresh_database().await.unwrap();
    let url = db.url.clone();

    // N-2 lays down its own schema and serves.
    expect_exit(&n2.migrator, &url, &["up"], 0).await;
    let spec = FleetSpec {
        gateway_binary: n2.gateway.clone(),
        ..FleetSpec::default()
    };
    let mut fleet = Prepared::on_first_release_schema(&url, &spec)
        .await
        .unwrap()
        .launch(&spec)
        .await
        .unwrap();
    let pool = fleet.pool.clone();
    assert_eq!(newest_applied(&pool).await, FIRST_SCHEMA);
    assert_eq!(live_versions(&pool).await, [n2.version]);
    let mut succeeded = 0;

    // This release's preflight: N-2 is two minor releases behind, no-go.
    expect_exit(&n.migrator, &url, &["preflight"], 21).await;

    // N-2 → N-1: N-1's `up` (the ledger, its copy) while N-2 serves, then the roll.
    expect_exit(&n1.migrator, &url, &["up"], 0).await;
    assert_eq!(newest_applied(&pool).await, PREVIOUS_SCHEMA);
    let (so_far, _) = leg(&mut fleet, &n1, "N-2 -> N-1", &mut succeeded).await;
    assert_eq!(live_versions(&pool).await, [n1.version]);
    rows_match(&pool, "usage_ledger", so_far, "N-2 -> N-1").await;

    // N-1 → N: go now; this release's `up`, then the roll.
    let preflight = migrator(&n.migrator, &url, &["preflight"]).await;
    assert!(
        matches!(preflight.status.code(), Some(0 | 20)),
        "preflight with N-1 serving: {}\n{}",
        String::from_utf8_lossy(&preflight.stdout),
        String::from_utf8_lossy(&preflight.stderr)
    );
    expect_exit(&n.migrator, &url, &["up"], 0).await;
    assert_eq!(newest_applied(&pool).await, NEWEST);
    let (so_far, _) = leg(&mut fleet, &n, "N-1 -> N", &mut succeeded).await;
    assert_eq!(live_versions(&pool).await, [n.version]);
    rows_match(&pool, "usage_ledger", so_far, "N-1 -> N").await;

    // N → N-1: `down 4` refuses while N serves (its release needs the
    // migrations), the roll, then `down 4` reverts them.
    expect_exit(&n.migrator, &url, &["down", "4"], 13).await;
    assert_eq!(
        newest_applied(&pool).await,
        NEWEST,
        "a refusal changes nothing"
    );
    let (so_far, sign_offs) = leg(&mut fleet, &n1, "N -> N-1", &mut succeeded).await;
    assert_eq!(live_versions(&pool).await, [n1.version]);
    // Each N gateway signed off with what it dropped: nothing.
    let nothing = serde_json::json!({"buffer_full": 0, "queue_full": 0, "shutdown": 0});
    assert!(
        sign_offs.iter().all(|s| s.as_ref() == Some(&nothing)),
        "every N gateway's sign-off: {sign_offs:?}"
    );
    expect_exit(&n.migrator, &url, &["down", "4"], 0).await;
    assert_eq!(newest_applied(&pool).await, PREVIOUS_SCHEMA);
    rows_match(&pool, "usage_ledger", so_far, "N -> N-1").await;

    // N-1 → N-2: the roll, then N-1's `down 6`. 0.1.0 nodes predate
    // `nodes.release_schema`, so N-1's `down` cannot tell what they need and
    // refuses while they serve (13); the operator, knowing they run the
    // release before, passes `--force` (CHANGELOG.md, the matrix).
    let (so_far, _) = leg(&mut fleet, &n2, "N-1 -> N-2", &mut succeeded).await;
    assert_eq!(live_versions(&pool).await, [n2.version]);
    expect_exit(&n1.migrator, &url, &["down", "6"], 13).await;
    expect_exit(&n1.migrator, &url, &["down", "6", "--force"], 0).await;
    assert_eq!(newest_applied(&pool).await, FIRST_SCHEMA);
    assert!(!table_exists(&pool, "usage_ledger").await);
    rows_match(&pool, "usage_events", so_far, "N-1 -> N-2").await;

    // N-2 keeps serving on its own schema: a last leg with no roll.
    let load = Load::start(fleet.load_spec(25, 8));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;
    report.print("matrix N-2 after the way back");
    assert_eq!(report.failed_total(), 0, "{:?}", report.failed);
    succeeded += report.succeeded;
    let stopped = fleet.stop().await.unwrap();
    rows_match(&stopped.pool, "usage_events", succeeded, "end").await;
}
