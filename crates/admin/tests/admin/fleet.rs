//! The fleet view: a running gateway and the admin with their versions and
//! the schema they see; a stopped node leaves it.

use std::time::Duration;

use http::Method;
use obleth_config::migrate::MigrationSet;
use obleth_config::version::VERSION;
use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn the_fleet_lists_a_running_gateway_and_the_admin_with_their_versions() {
    let (admin, db, _pool) = TestAdmin::on_fresh_database().await;
    let gw = TestGateway::start(&db.url).await;
    let expected_schema = MigrationSet::embedded().unwrap().newest_expand().unwrap();

    let fleet: Value = wait_for(
        Duration::from_secs(15),
        "both nodes live and ready",
        || async {
            let fleet = admin.get("/api/v1/fleet").await.json();
            let nodes = fleet["nodes"].as_array().cloned().unwrap_or_default();
            let all_ready = nodes
                .iter()
                .all(|n| n["ready"] == true && n["schema_version"] == expected_schema);
            (nodes.len() == 2 && all_ready).then_some(fleet)
        },
    )
    .await;
    let nodes = fleet["nodes"].as_array().unwrap();
    let by_service = |service: &str| {
        nodes
            .iter()
            .find(|n| n["service"] == service)
            .unwrap_or_else(|| panic!("no {service} in {fleet}"))
            .clone()
    };
    let (a, g) = (by_service("admin"), by_service("gateway"));
    assert_eq!(a["node_id"], admin.node_id);
    assert_eq!(g["node_id"], gw.node_id);
    for node in [&a, &g] {
        assert_eq!(node["version"], VERSION, "{node}");
        assert!(node["last_heartbeat"].is_string(), "{node}");
        assert!(node["started_at"].is_string(), "{node}");
    }
    let summary = &fleet["summary"];
    assert_eq!(
        summary["versions"],
        serde_json::json!([VERSION]),
        "{summary}"
    );
    assert_eq!(
        summary["schema_versions"],
        serde_json::json!([expected_schema])
    );
    assert_eq!(summary["uniform"], true);
    assert_eq!(
        (summary["gateways"].as_u64(), summary["admins"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(summary["ready"], 2);

    gw.stop().await.unwrap();
    let after = admin.get("/api/v1/fleet").await.json();
    assert_eq!(
        after["summary"]["gateways"], 0,
        "a stopped gateway leaves the fleet: {after}"
    );
    admin.stop().await.unwrap();
}

/// The embedded migrations plus one new expand migration, in a directory, as
/// the next release would ship them.
fn next_release_migrations() -> (tempfile::TempDir, i64) {
    let version = 20991231000001_i64;
    let dir = obleth_testkit::db::migrations_with(&[(
        &format!("{version}_fleet_probe.sql"),
        "CREATE TABLE fleet_probe (id bigint PRIMARY KEY);\n",
        &format!("\n[[migration]]\nversion = {version}\nphase = \"expand\"\n"),
    )])
    .unwrap();
    (dir, version)
}

#[tokio::test]
async fn the_fleet_and_api_version_show_a_new_schema_within_one_heartbeat_of_a_migration() {
    let (admin, db, _pool) = TestAdmin::on_fresh_database().await;
    let gw = TestGateway::start(&db.url).await;
    let embedded = MigrationSet::embedded().unwrap().newest_expand().unwrap();
    wait_for(
        Duration::from_secs(15),
        "both nodes on the embedded schema",
        || async {
            let fleet = admin.get("/api/v1/fleet").await.json();
            let nodes = fleet["nodes"].as_array().cloned().unwrap_or_default();
            (nodes.len() == 2 && nodes.iter().all(|n| n["schema_version"] == embedded))
                .then_some(())
        },
    )
    .await;

    // `obleth-migrator up` of the next release: one more expand migration.
    let (dir, newer) = next_release_migrations();
    obleth_testkit::db::migrate_from(MigrationSet::from_dir(dir.path()).unwrap(), &db.url)
        .await
        .unwrap()
        .close()
        .await;

    // Both nodes beat every second (the test settings); allow a few beats on
    // a loaded machine, far less than a restart would take to be noticed.
    let fleet = wait_for(
        Duration::from_secs(10),
        "the fleet shows the new schema",
        || async {
            let fleet = admin.get("/api/v1/fleet").await.json();
            let nodes = fleet["nodes"].as_array().cloned().unwrap_or_default();
            (nodes.len() == 2 && nodes.iter().all(|n| n["schema_version"] == newer))
                .then_some(fleet)
        },
    )
    .await;
    assert_eq!(
        fleet["summary"]["schema_versions"],
        serde_json::json!([newer]),
        "{fleet}"
    );
    let version = admin.get("/api/version").await.json();
    assert_eq!(version["schema"]["applied"], newer, "{version}");
    assert_eq!(
        version["schema"]["expected"],
        MigrationSet::embedded().unwrap().latest_version().unwrap(),
        "{version}"
    );
    let gw_version = request(Method::GET, &gw.ops_url("/api/version"), &[], "")
        .await
        .json();
    assert_eq!(gw_version["schema"]["applied"], newer, "{gw_version}");
    assert_eq!(gw_version["service"], "gateway");

    gw.stop().await.unwrap();
    admin.stop().await.unwrap();
}

/// A gateway's sign-off records the usage it dropped (a record lost at
/// shutdown is counted after its pod left the endpoints); the admin exports
/// what gateways that stopped in the last day recorded, by reason.
#[tokio::test]
async fn the_admin_exports_the_usage_gateways_dropped_as_they_stopped() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    // Counts go with the life that wrote them (`usage_dropped_life` is its
    // `started_at`): gw-reused was restarted by a release that does not
    // write them, so its counts are an earlier life's.
    sqlx::raw_sql(
        "INSERT INTO nodes (node_id, service, version, ready, started_at, last_seen, stopped_at, usage_dropped, usage_dropped_life) VALUES \
         ('gw-recent', 'gateway', '0.3.0', FALSE, now() - interval '2 hours', now() - interval '1 hour', now() - interval '1 hour', \
          '{\"shutdown\": 3, \"queue_full\": 1, \"buffer_full\": 0}', now() - interval '2 hours'), \
         ('gw-other', 'gateway', '0.3.0', FALSE, now() - interval '3 hours', now() - interval '2 hours', now() - interval '2 hours', \
          '{\"shutdown\": 2, \"queue_full\": 0, \"buffer_full\": 0}', now() - interval '3 hours'), \
         ('gw-old', 'gateway', '0.3.0', FALSE, now() - interval '3 days', now() - interval '2 days', now() - interval '2 days', \
          '{\"shutdown\": 100}', now() - interval '3 days'), \
         ('gw-reused', 'gateway', '0.2.0', FALSE, now() - interval '1 hour', now() - interval '30 minutes', now() - interval '30 minutes', \
          '{\"shutdown\": 50}', now() - interval '5 hours'), \
         ('gw-live', 'gateway', '0.3.0', TRUE, now(), now(), NULL, NULL, NULL), \
         ('gw-previous', 'gateway', '0.2.0', FALSE, now() - interval '2 hours', now() - interval '1 hour', now() - interval '1 hour', NULL, NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let name = "obleth_fleet_usage_dropped_at_stop";
    let text = wait_for(
        Duration::from_secs(15),
        "the dropped usage of stopped gateways in /metrics",
        || async {
            let text = admin.metrics().await;
            (obleth_testkit::metrics::value(&text, name, &[("reason", "shutdown")]) == Some(5.0))
                .then_some(text)
        },
    )
    .await;
    for (reason, count) in [("shutdown", 5.0), ("queue_full", 1.0), ("buffer_full", 0.0)] {
        assert_eq!(
            obleth_testkit::metrics::value(&text, name, &[("reason", reason)]),
            Some(count),
            "{reason}: {text}"
        );
    }
}

/// The admin exports the live fleet's versions and whether it is uniform,
/// read from `nodes`: a node on another version makes it not uniform, and
/// once that node stops its version leaves the label set.
#[tokio::test]
async fn the_admin_exports_the_fleet_versions_and_whether_they_are_uniform() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    sqlx::query(
        "INSERT INTO nodes (node_id, service, version, ready, started_at, last_seen) VALUES \
         ('gw-old', 'gateway', '0.0.1-old', TRUE, now(), now() + interval '1 hour'), \
         ('gw-new', 'gateway', $1, TRUE, now(), now() + interval '1 hour')",
    )
    .bind(VERSION)
    .execute(&pool)
    .await
    .unwrap();
    let nodes = "obleth_fleet_nodes";
    let text = wait_for(
        Duration::from_secs(15),
        "two versions in obleth_fleet_nodes",
        || async {
            let text = admin.metrics().await;
            let old = [("service", "gateway"), ("version", "0.0.1-old")];
            (obleth_testkit::metrics::value(&text, nodes, &old) == Some(1.0)).then_some(text)
        },
    )
    .await;
    let new = [("service", "gateway"), ("version", VERSION)];
    assert_eq!(
        obleth_testkit::metrics::value(&text, nodes, &new),
        Some(1.0),
        "{text}"
    );
    let this_admin = [("service", "admin"), ("version", VERSION)];
    assert_eq!(
        obleth_testkit::metrics::value(&text, nodes, &this_admin),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        obleth_testkit::metrics::value(&text, "obleth_fleet_uniform", &[]),
        Some(0.0),
        "{text}"
    );

    sqlx::query("UPDATE nodes SET stopped_at = now() WHERE node_id = 'gw-old'")
        .execute(&pool)
        .await
        .unwrap();
    let text = wait_for(
        Duration::from_secs(15),
        "the fleet uniform again",
        || async {
            let text = admin.metrics().await;
            (obleth_testkit::metrics::value(&text, "obleth_fleet_uniform", &[]) == Some(1.0))
                .then_some(text)
        },
    )
    .await;
    assert!(
        !text.contains("0.0.1-old"),
        "a stopped node's version leaves: {text}"
    );
    assert_eq!(obleth_testkit::metrics::series(&text, nodes), 2, "{text}");
}
