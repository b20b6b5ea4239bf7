//! The console in a real browser: headless Chromium over WebDriver
//! (`webdriver`), against an admin on a fresh database. One walk through
//! what an operator does, with a screenshot of each page in a temporary
//! directory (and in `OBLETH_CONSOLE_SCREENSHOTS`, when set, which is how
//! docs/console/ is made).

use std::path::PathBuf;
use std::time::Duration;

use crate::support::*;
use crate::webdriver::Browser;

/// Long enough for a page load or two htmx refreshes on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

struct Shots {
    dir: tempfile::TempDir,
    keep: Option<PathBuf>,
}

impl Shots {
    fn new() -> Shots {
        Shots {
            dir: tempfile::tempdir().unwrap(),
            keep: std::env::var_os("OBLETH_CONSOLE_SCREENSHOTS").map(PathBuf::from),
        }
    }

    async fn take(&self, browser: &Browser, name: &str) {
        let path = browser.screenshot(self.dir.path(), name).await;
        if let Some(keep) = &self.keep {
            std::fs::create_dir_all(keep).unwrap();
            std::fs::copy(&path, keep.join(format!("{name}.png"))).unwrap();
        }
    }
}

async fn wait_for_url(browser: &Browser, suffix: &str) {
    wait_until(PATIENCE, &format!("the browser at {suffix}"), || async {
        browser.url().await.ends_with(suffix)
    })
    .await;
}

async fn wait_for_text(browser: &Browser, text: &str) {
    wait_until(PATIENCE, &format!("{text:?} on the page"), || async {
        browser.source().await.contains(text)
    })
    .await;
}

#[tokio::test]
async fn an_operator_signs_in_watches_a_gateway_join_manages_a_key_and_charts_usage() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    let browser = Browser::start().await;
    let shots = Shots::new();

    // Without a session every page sends the browser to sign-in.
    browser.goto(&admin.url("/console/keys")).await;
    wait_for_url(&browser, "/console/sign-in").await;
    shots.take(&browser, "sign-in").await;

    // A wrong token is refused on the page; the right one opens a session.
    browser.type_into("#token", "not-an-admin-token-000").await;
    browser.click("form.signin button").await;
    wait_for_text(&browser, "that is not an admin token").await;
    browser.type_into("#token", TOKEN).await;
    browser.click("form.signin button").await;
    wait_for_url(&browser, "/console/rollout").await;
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "obleth_console")
        .expect("the session cookie");
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert_eq!(session["path"], "/console", "{session}");
    assert!(
        session["expiry"].is_u64(),
        "a persistent cookie with an expiry: {session}"
    );

    // The rollout page follows the fleet on its own (htmx, under the CSP):
    // a gateway of another release joins and the page shows it.
    wait_for_text(&browser, &admin.node_id).await;
    assert!(!browser.source().await.contains("gw-canary"));
    sqlx::query(
        "INSERT INTO nodes (node_id, service, version, git_commit, ready, started_at, last_seen) \
         VALUES ('gw-canary', 'gateway', '0.4.0', '0123456789ab', TRUE, now(), now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    wait_for_text(&browser, "gw-canary").await;
    wait_for_text(&browser, r#"data-version="0.4.0""#).await;
    assert!(browser.text("#fleet-summary").await.contains("Mixed"));
    assert_eq!(
        browser.url().await,
        admin.url("/console/rollout"),
        "no reload: htmx swapped it"
    );
    shots.take(&browser, "rollout").await;

    // Create a key: its secret is shown once, with a copy button.
    browser.click("header nav a[href='/console/keys']").await;
    wait_for_url(&browser, "/console/keys").await;
    browser
        .type_into("#create-key input[name=name]", "browser key")
        .await;
    browser
        .type_into("#create-key input[name=owner]", "ops")
        .await;
    browser.click("#create-key button[type=submit]").await;
    wait_for_text(&browser, "shown this once").await;
    let secret = browser.text("#new-secret").await;
    assert!(secret.starts_with("obk_") && secret.len() == 57, "{secret}");
    assert!(browser
        .find("button[data-copy='new-secret']")
        .await
        .is_some());
    shots.take(&browser, "keys-created").await;
    let api = admin.get("/api/v1/keys").await.json();
    assert_eq!(api["items"][0]["name"], "browser key");

    // Back on the list, the secret is gone for good.
    browser.goto(&admin.url("/console/keys")).await;
    wait_for_text(&browser, "browser key").await;
    assert!(browser.find("#new-secret").await.is_none());
    assert!(!browser.source().await.contains(&secret));

    // Revoke it.
    browser.click("#keys form.revoke button").await;
    wait_for_text(&browser, "revoked.").await;
    assert_eq!(browser.text("#keys td.status").await, "revoked");
    shots.take(&browser, "keys-revoked").await;
    let id = api["items"][0]["id"].as_str().unwrap();
    let key = admin.get(&format!("/api/v1/keys/{id}")).await.json();
    assert_eq!(key["status"], "revoked");

    // The usage page charts what the gateways recorded.
    crate::console::record_usage(&pool).await;
    browser.click("header nav a[href='/console/usage']").await;
    wait_for_url(&browser, "/console/usage").await;
    assert!(browser
        .find("#chart-requests rect.bar[data-value='3']")
        .await
        .is_some());
    assert!(browser.find("#chart-requests rect.part").await.is_some());
    assert!(browser.text("#by-group").await.contains("gpt-4o"));
    shots.take(&browser, "usage").await;

    // Providers and routes, as the API lists them.
    admin
        .call(
            http::Method::POST,
            "/api/v1/providers",
            serde_json::json!({"name": "mock", "kind": "mock"}),
        )
        .await;
    admin
        .call(
            http::Method::POST,
            "/api/v1/routes",
            serde_json::json!({"model": "gpt-4o", "targets": [{"provider": "mock", "upstream_model": "mini"}]}),
        )
        .await;
    browser.click("header nav a[href='/console/catalog']").await;
    wait_for_url(&browser, "/console/catalog").await;
    assert!(browser.text("#routes").await.contains("gpt-4o"));
    shots.take(&browser, "catalog").await;

    // No page broke the Content-Security-Policy.
    let log = browser.console_log().await;
    assert!(
        !log.iter().any(|m| m.contains("Content Security Policy")),
        "{log:?}"
    );

    // Sign out: the session is gone and pages send the browser to sign-in.
    browser.click("form.signout button").await;
    wait_for_url(&browser, "/console/sign-in").await;
    browser.goto(&admin.url("/console/rollout")).await;
    wait_for_url(&browser, "/console/sign-in").await;
    assert!(browser
        .cookies()
        .await
        .iter()
        .all(|c| c["name"] != "obleth_console"));
    browser.close().await;
}
