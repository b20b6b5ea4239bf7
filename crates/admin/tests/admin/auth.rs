//! The token check, table-driven over the router's own route table: every
//! route but the public ones refuses a missing or wrong token with the same
//! 401, and the public ones need none.

use std::io::Write;

use http::Method;
use obleth_admin::{routes, Access};
use obleth_testkit::metrics::sum;

use crate::support::*;

/// A concrete path for a route template.
fn concrete(template: &str) -> String {
    template
        .replace("{id}", "6f1c1b8e-3f0e-4d7a-9a51-8d6c2b1e0f11")
        .replace("{name}", "mock")
}

#[tokio::test]
async fn every_token_route_refuses_a_missing_or_wrong_token_the_same_way() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "# second admin token\nfile-admin-token-0123456789").unwrap();
    let mut settings = admin_settings(&db.url);
    settings.auth.token_file = Some(file.path().to_path_buf());
    // Every refusal here is a 401; the throttle has its own test below.
    settings.auth.max_failures = 10_000;
    let admin = TestAdmin::start(settings).await;
    admin.wait_ready().await;

    let bad_headers: [&[(&str, &str)]; 6] = [
        &[],
        &[("authorization", "Bearer wrong-token-0123456789")],
        &[("authorization", "Bearer test-admin-token-012345678")],
        &[("authorization", "Basic dGVzdDp0ZXN0")],
        &[("authorization", "test-admin-token-0123456789")],
        &[("x-api-key", "test-admin-token-0123456789")],
    ];
    let table = routes();
    let protected: Vec<_> = table.iter().filter(|r| r.access == Access::Token).collect();
    assert!(protected.len() >= 20, "{table:?}");
    let mut first_body = None;
    for route in &protected {
        let url = admin.url(&concrete(route.path));
        for headers in bad_headers {
            let mut headers = headers.to_vec();
            headers.push(("content-type", "application/json"));
            let a = request(route.method.clone(), &url, &headers, "{}").await;
            assert_eq!(a.status, 401, "{route:?} with {headers:?}: {}", a.text());
            assert_eq!(
                a.admin_error(),
                ("unauthorized".to_owned(), None),
                "{route:?}"
            );
            assert_eq!(a.header("www-authenticate"), Some("Bearer"));
            // The same body whatever was wrong: no hint about which tokens exist.
            let body = a.text();
            assert_eq!(first_body.get_or_insert_with(|| body.clone()), &body);
        }
        for token in [TOKEN, "file-admin-token-0123456789"] {
            let auth = format!("Bearer {token}");
            let a = request(
                route.method.clone(),
                &url,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                "{}",
            )
            .await;
            assert_ne!(
                a.status,
                401,
                "{route:?} refused a valid token: {}",
                a.text()
            );
        }
    }

    for route in table.iter().filter(|r| r.access == Access::Public) {
        let a = request(route.method.clone(), &admin.url(route.path), &[], "").await;
        assert_eq!(a.status, 200, "{route:?} without a token: {}", a.text());
    }
    let metrics = admin.metrics().await;
    assert!(
        metrics.contains("obleth_admin_auth_failures_total"),
        "{metrics}"
    );
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_sending_wrong_tokens_is_throttled_before_its_token_is_checked() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let mut settings = admin_settings(&db.url);
    settings.auth.max_failures = 5;
    settings.auth.failure_window_secs = 600;
    let admin = TestAdmin::start(settings).await;
    admin.wait_ready().await;
    let guesser: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let other: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let url = admin.url("/api/v1/providers");
    let wrong = [("authorization", "Bearer wrong-token-0123456789")];
    let right_header = format!("Bearer {TOKEN}");
    let right = [("authorization", right_header.as_str())];

    for i in 0..5 {
        let a = request_from(guesser, Method::GET, &url, &wrong).await;
        assert_eq!(a.status, 401, "attempt {i}");
    }
    // Past the budget every request of that client is refused unread, even
    // with the right token, and says when to come back.
    for headers in [&wrong[..], &right[..], &[]] {
        for _ in 0..50 {
            let a = request_from(guesser, Method::GET, &url, headers).await;
            assert_eq!(a.status, 429, "{}", a.text());
            assert_eq!(a.admin_error(), ("too_many_auth_failures".to_owned(), None));
            let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=600).contains(&retry), "{retry}");
        }
    }
    // Another client is not affected.
    let a = request_from(other, Method::GET, &url, &right).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        request_from(other, Method::GET, &url, &wrong).await.status,
        401
    );

    let metrics = admin.metrics().await;
    // Only the six tokens actually checked count as failures.
    assert_eq!(
        sum(&metrics, "obleth_admin_auth_failures_total", &[]),
        6.0,
        "{metrics}"
    );
    assert_eq!(
        sum(&metrics, "obleth_admin_auth_throttled_total", &[]),
        150.0,
        "{metrics}"
    );
    admin.stop().await.unwrap();
}
