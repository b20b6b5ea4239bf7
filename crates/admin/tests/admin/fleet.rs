//! The fleet view: a running gateway and the admin with their versions and
//! the schema they see; a stopped node leaves it.

use std::time::Duration;

use obleth_config::migrate::MigrationSet;
use obleth_config::version::VERSION;
use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn the_fleet_lists_a_running_gateway_and_the_admin_with_their_versions() {
    let (admin, db, _pool) = TestAdmin::on_fresh_database().await;
    let gw = TestGateway::start(&db.url).await;
    let expected_schema = MigrationSet::embedded().unwrap().latest_version().unwrap();

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
