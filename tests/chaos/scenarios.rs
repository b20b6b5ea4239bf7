//! The scenarios of the upgrade contract.

use std::time::Duration;

use obleth_e2e::fleet::{Fleet, FleetSpec};
use obleth_e2e::load::Load;
use obleth_e2e::procs::GatewayProc;
use obleth_testkit::poll::{wait_ready, wait_until};
use obleth_testkit::proc::{bin, command, free_port};
use obleth_testkit::{db, fresh_database, PgCluster};

use crate::ONE_AT_A_TIME;

/// a. Each gateway in turn gets SIGTERM, exits, is replaced and becomes ready,
/// under load that includes long streams.
#[tokio::test]
async fn rolling_restart_under_load_fails_no_request_and_loses_no_usage() {
    let _one = ONE_AT_A_TIME.lock().await;
    let db = fresh_database().await.unwrap();
    let mut fleet = Fleet::start(&db.url, &FleetSpec::default()).await.unwrap();
    let load = Load::start(fleet.load_spec(40, 8));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..fleet.gateways.len() {
        fleet.roll(i, None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.finish().await;
    let stopped = fleet.stop().await.unwrap();
    let rows = stopped.successful_usage_rows().await.unwrap();
    report.print("rolling restart");
    obleth_e2e::evidence(&format!(
        "[rolling restart] usage rows with status 200: {rows}"
    ));
    assert!(report.streams_succeeded > 0, "the load included streams");
    assert_eq!(report.failed_total(), 0, "{:?}", report.failed);
    assert_eq!(report.sent, report.succeeded, "every request accounted for");
    assert_eq!(
        rows, report.succeeded as i64,
        "one usage row per successful request"
    );
}

/// b. The previous release runs on the schema of the current one (which adds
/// expand migrations it does not know); roll forward, then back.
#[tokio::test]
async fn previous_and_current_release_roll_forward_and_back_without_failures() {
    let previous = tokio::task::spawn_blocking(|| obleth_e2e::releases::PREVIOUS.gateway())
        .await
        .unwrap()
        .unwrap();
    let _one = ONE_AT_A_TIME.lock().await;
    let db = fresh_database().await.unwrap();
    let spec = FleetSpec {
        gateway_binary: previous.clone(),
        ..FleetSpec::default()
    };
    let mut fleet = Fleet::start(&db.url, &spec).await.unwrap();
    let load = Load::start(fleet.load_spec(30, 10));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..fleet.gateways.len() {
        fleet.roll(i, Some(bin("obleth-gateway"))).await.unwrap();
    }
    let forward = load.in_flight();
    for i in 0..fleet.gateways.len() {
        fleet.roll(i, Some(previous.clone())).await.unwrap();
    }
    let report = load.finish().await;
    let stopped = fleet.stop().await.unwrap();
    let rows = stopped.successful_usage_rows().await.unwrap();
    report.print("N-1 -> N -> N-1");
    obleth_e2e::evidence(&format!(
        "[N-1 -> N -> N-1] usage rows with status 200: {rows} (in flight at the turn: {forward})"
    ));
    assert_eq!(report.failed_total(), 0, "{:?}", report.failed);
    assert_eq!(rows, report.succeeded as i64);
}

/// c. A binary facing an unknown contract migration refuses to start, naming
/// it; the running fleet is unaffected.
#[tokio::test]
async fn a_binary_facing_an_unknown_contract_migration_refuses_and_the_fleet_serves_on() {
    let _one = ONE_AT_A_TIME.lock().await;
    let db = fresh_database().await.unwrap();
    let fleet = Fleet::start(&db.url, &FleetSpec::default()).await.unwrap();
    let load = Load::start(fleet.load_spec(30, 0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::raw_sql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000001, 'drop legacy columns', true, '\\x00', 1); \
         INSERT INTO obleth_migration_phases (version, phase, requires_release) \
         VALUES (29991231000001, 'contract', '9.0.0');",
    )
    .execute(&fleet.pool)
    .await
    .unwrap();
    let mut newcomer = GatewayProc::new(
        fleet.dir.path(),
        "newcomer",
        bin("obleth-gateway"),
        &db.url,
        1,
    )
    .unwrap();
    newcomer.start().unwrap();
    let code = newcomer.wait_exit(Duration::from_secs(30)).await.unwrap();
    let log = newcomer.log();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.finish().await;
    report.print("skew refusal");
    obleth_e2e::evidence(&format!("[skew refusal] newcomer exit code {code:?}"));
    assert_ne!(code, Some(0));
    assert!(
        log.contains("29991231000001 (drop legacy columns, contract)"),
        "{log}"
    );
    assert!(log.contains("schema is incompatible"), "{log}");
    assert_eq!(report.failed_total(), 0, "{:?}", report.failed);
    sqlx::raw_sql("DELETE FROM obleth_migration_phases WHERE version = 29991231000001; DELETE FROM _sqlx_migrations WHERE version = 29991231000001;")
        .execute(&fleet.pool)
        .await
        .unwrap();
    fleet.stop().await.unwrap();
}

/// d. PostgreSQL goes away for about 20 s under load: valid keys keep working,
/// and the usage of every answered request arrives after recovery.
#[tokio::test]
async fn a_database_outage_under_load_fails_no_request_and_loses_no_usage() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = PgCluster::start().unwrap();
    let db = cluster.fresh_database().await.unwrap();
    let fleet = Fleet::start(&db.url, &FleetSpec::default()).await.unwrap();
    let load = Load::start(fleet.load_spec(30, 10));
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.stop().unwrap();
    obleth_e2e::evidence("[database outage] PostgreSQL stopped");
    tokio::time::sleep(Duration::from_secs(20)).await;
    cluster.start_again().unwrap();
    obleth_e2e::evidence("[database outage] PostgreSQL back");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;
    fleet.pool.close().await;
    let stopped = fleet.stop().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_ledger WHERE status = 200")
        .fetch_one(&pool)
        .await
        .unwrap();
    drop(stopped);
    report.print("database outage");
    obleth_e2e::evidence(&format!(
        "[database outage] usage rows with status 200 after recovery: {rows}"
    ));
    assert_eq!(report.failed_total(), 0, "{:?}", report.failed);
    assert_eq!(rows, report.succeeded as i64, "no usage record lost");
}

/// e. One gateway is SIGKILLed under load: HAProxy routes around it; failures
/// are limited to requests in flight at the kill (bounded here by the count
/// across all nodes, which includes that node's), and counted.
#[tokio::test]
async fn sigkill_of_one_gateway_fails_only_requests_in_flight_at_the_kill() {
    let _one = ONE_AT_A_TIME.lock().await;
    let db = fresh_database().await.unwrap();
    let mut fleet = Fleet::start(&db.url, &FleetSpec::default()).await.unwrap();
    let load = Load::start(fleet.load_spec(40, 5));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let in_flight_everywhere = load.in_flight();
    fleet.gateways[1].sigkill().unwrap();
    let code = fleet.gateways[1]
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;
    report.print("SIGKILL");
    obleth_e2e::evidence(&format!("[SIGKILL] requests in flight on all nodes at the kill: {in_flight_everywhere}; exit code {code:?}"));
    assert!(
        report.failed_total() <= in_flight_everywhere,
        "failures {} exceed what was in flight ({in_flight_everywhere}): {:?}",
        report.failed_total(),
        report.failed
    );
    assert_eq!(
        report.sent,
        report.succeeded + report.failed_total(),
        "every request accounted for"
    );
    fleet.gateways.remove(1);
    fleet.stop().await.unwrap();
}

/// f. Admins start all at once while `obleth-migrator up` is applying a slow
/// migration under load: they wait for the migration lock, apply nothing
/// twice, and become ready; the fleet serves on.
#[tokio::test]
async fn admins_started_while_a_migration_runs_wait_for_it_and_become_ready() {
    let _one = ONE_AT_A_TIME.lock().await;
    let db = fresh_database().await.unwrap();
    let fleet = Fleet::start(&db.url, &FleetSpec::default()).await.unwrap();
    let load = Load::start(fleet.load_spec(30, 10));

    // The next release's migrations: the shipped ones plus a slow expand one.
    let source = db::migrations_with(&[(
        "29991231000100_slow_expand.sql",
        "CREATE TABLE slow_marker (id int);\nSELECT pg_sleep(4);\n",
        "\n[[migration]]\nversion = 29991231000100\nphase = \"expand\"\n",
    )])
    .unwrap();

    let mut migrator = command(bin("obleth-migrator"))
        .args(["up", "--source"])
        .arg(source.path())
        .env("DATABASE_URL", &db.url)
        .spawn()
        .unwrap();
    // Start the admins once the migrator holds the lock.
    wait_until(
        Duration::from_secs(30),
        "the migrator to take the lock",
        || async {
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
                 WHERE l.locktype = 'advisory' AND a.application_name = 'obleth-migrator'",
            )
            .fetch_one(&fleet.pool)
            .await
            .unwrap();
            held > 0
        },
    )
    .await;
    let mut admins = Vec::new();
    for i in 0..3 {
        let port = free_port();
        let config = fleet.dir.path().join(format!("admin{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\ndrain_delay_secs = 0\nnode_id = \"admin{i}\"\n\n\
                 [auth]\ntokens = [\"chaos-admin-token-0123456789\"]\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(fleet.dir.path().join(format!("admin{i}.log"))).unwrap();
        let child = command(bin("obleth-admin"))
            .arg("--config")
            .arg(&config)
            .env("OBLETH_DATABASE__URL", &db.url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .unwrap();
        admins.push((port, child));
    }
    let migrating_when_admins_started = migrator.try_wait().unwrap().is_none();
    let code = tokio::time::timeout(Duration::from_secs(60), migrator.wait())
        .await
        .unwrap()
        .unwrap();
    for (port, _) in &admins {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
        let waited = wait_ready(addr, Duration::from_secs(60)).await.unwrap();
        obleth_e2e::evidence(&format!(
            "[admins during a migration] admin on {port} ready after {waited:?}"
        ));
    }
    let report = load.finish().await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&fleet.pool)
        .await
        .unwrap();
    // Every shipped expand migration and the scenario's own; the shipped
    // contract ones wait for `finish`.
    let expected = obleth_config::migrate::MigrationSet::embedded()
        .unwrap()
        .iter()
        .filter(|m| m.phase == obleth_config::migrate::Phase::Expand)
        .count() as i64
        + 1;
    // Only the migration lock: the fleet serving the load holds other
    // advisory locks, legitimately and at any moment, in short transactions:
    // each gateway's fold of the usage rollups every second
    // (`hashtext('obleth_fold_usage')`, and `hashtext('obleth_usage_daily')`
    // in its triggers), the ledger upkeep creating a day's partition
    // (`hashtext(<partition>)`), and the admins' change writers
    // (`db::changes::CHANGES_LOCK_KEY`).
    let key = obleth_config::migrate::runner::LOCK_KEY;
    let locks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1",
    )
    .bind((key >> 32) & 0xffff_ffff)
    .bind(key & 0xffff_ffff)
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    report.print("admins during a migration");
    obleth_e2e::evidence(&format!("[admins during a migration] migrator exit {code:?}; migrations recorded {applied} (expected {expected}); migration locks left {locks}"));
    assert!(
        migrating_when_admins_started,
        "the admins started while the migration ran"
    );
    assert!(code.success());
    assert_eq!(applied, expected, "each migration applied exactly once");
    assert_eq!(locks, 0);
    assert_eq!(report.failed_total(), 0, "{:?}", report.failed);
    for (_, mut child) in admins {
        let _ = child.kill().await;
    }
    fleet.stop().await.unwrap();
}
