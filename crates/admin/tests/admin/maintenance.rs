//! Maintenance mode through the change feed: a running gateway answers new
//! proxy requests with 503 and `Retry-After` while it is on, and serves again
//! once it is off.

use std::time::Duration;

use http::Method;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn maintenance_mode_turns_a_running_gateways_answers_into_503_with_retry_after_and_back() {
    let (admin, db, _pool) = TestAdmin::on_fresh_database().await;
    mock_route(&admin).await;
    let key = admin
        .call(Method::POST, "/api/v1/keys", json!({"name": "client"}))
        .await
        .json();
    let secret = key["secret"].as_str().unwrap().to_owned();
    let gw = TestGateway::start(&db.url).await;
    assert_eq!(gw.chat(&secret, "m").await.status, 200);
    let off = admin.get("/api/v1/maintenance").await.json();
    assert_eq!(off["enabled"], false, "{off}");

    let on = admin
        .call(
            Method::PUT,
            "/api/v1/maintenance",
            json!({"enabled": true, "message": "upgrading the database", "retry_after": 30}),
        )
        .await;
    assert_eq!(on.status, 200, "{}", on.text());
    assert_eq!(
        on.json(),
        json!({"enabled": true, "message": "upgrading the database", "retry_after": 30})
    );
    let took = wait_until(
        Duration::from_secs(10),
        "maintenance at the gateway",
        || async { gw.chat(&secret, "m").await.status == 503 },
    )
    .await;
    println!("maintenance reached the gateway after {took:?}");
    let refused = gw.chat(&secret, "m").await;
    assert_eq!(refused.header("retry-after"), Some("30"));
    let body = refused.json();
    assert_eq!(body["error"]["code"], "maintenance", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upgrading the database"),
        "{body}"
    );
    assert_eq!(
        admin.get("/api/v1/maintenance").await.json()["enabled"],
        true
    );

    let back = admin
        .call(
            Method::PUT,
            "/api/v1/maintenance",
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(back.status, 200);
    wait_until(
        Duration::from_secs(10),
        "maintenance off at the gateway",
        || async { gw.chat(&secret, "m").await.status == 200 },
    )
    .await;
    gw.stop().await.unwrap();
    admin.stop().await.unwrap();
}
