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
    manage_the_catalog(&browser, &admin, &shots).await;

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

/// What the API answers `body` at `path` with, as the console shows it.
async fn api_refusal(
    admin: &TestAdmin,
    method: http::Method,
    path: &str,
    body: serde_json::Value,
) -> String {
    let answer = admin.call(method, path, body).await;
    assert!(
        answer.status == 422 || answer.status == 409,
        "{}",
        answer.text()
    );
    let body = answer.json();
    let e = &body["error"];
    let message = e["message"].as_str().unwrap();
    match (e["code"].as_str(), e["field"].as_str()) {
        (Some("validation_failed"), Some(field)) => format!("{field}: {message}"),
        _ => message.to_owned(),
    }
}

/// Waits for the page's error notice and answers its text.
async fn refusal_shown(browser: &Browser, css: &str) -> String {
    wait_until(PATIENCE, &format!("a refusal at {css}"), || async {
        browser.find(css).await.is_some()
    })
    .await;
    browser.text(css).await
}

/// On the providers and routes page: a provider created (refused first for
/// its options, with the API's message), its options edited, a route with
/// two targets created (refused first for an unknown provider), a weight
/// changed, a provider in use refused deletion, then the route and the
/// provider deleted; the API sees each change.
async fn manage_the_catalog(browser: &Browser, admin: &TestAdmin, shots: &Shots) {
    let options = "#new-provider textarea[name=options]";
    browser
        .type_into("#new-provider input[name=name]", "mock-a")
        .await;
    browser
        .click("#new-provider select[name=kind] option[value='mock']")
        .await;
    browser.clear(options).await;
    browser
        .type_into(options, r#"{"connect_timeout_ms": "soon"}"#)
        .await;
    browser.click("#new-provider button[type=submit]").await;
    let shown = refusal_shown(browser, "p.notice.error").await;
    let api = api_refusal(
        admin,
        http::Method::POST,
        "/api/v1/providers",
        serde_json::json!({"name": "mock-a", "kind": "mock", "options": {"connect_timeout_ms": "soon"}}),
    )
    .await;
    assert!(shown.contains(&api), "{api} in {shown}");
    // The form kept what was typed; fix the options.
    browser.clear(options).await;
    browser
        .type_into(options, r#"{"connect_timeout_ms": 2000}"#)
        .await;
    browser.click("#new-provider button[type=submit]").await;
    wait_for_text(browser, "Provider “mock-a” created.").await;
    let stored = admin.get("/api/v1/providers/mock-a").await.json();
    assert_eq!(stored["options"]["connect_timeout_ms"], 2000, "{stored}");
    browser
        .type_into("#new-provider input[name=name]", "mock-b")
        .await;
    browser
        .click("#new-provider select[name=kind] option[value='mock']")
        .await;
    browser.click("#new-provider button[type=submit]").await;
    wait_for_text(browser, "Provider “mock-b” created.").await;

    // Edit mock-a's options in its row.
    let row_options = "tr[data-provider='mock-a'] textarea[name=options]";
    assert!(browser.text(row_options).await.contains("2000"));
    browser.clear(row_options).await;
    browser
        .type_into(
            row_options,
            r#"{"connect_timeout_ms": 2500, "idle_timeout_ms": 4000}"#,
        )
        .await;
    browser
        .click("tr[data-provider='mock-a'] form.provider button")
        .await;
    wait_for_text(browser, "Provider “mock-a” saved.").await;
    let stored = admin.get("/api/v1/providers/mock-a").await.json();
    assert_eq!(
        stored["options"],
        serde_json::json!({"connect_timeout_ms": 2500, "idle_timeout_ms": 4000})
    );

    // A route over both, first naming a provider that does not exist.
    browser
        .type_into("#new-route input[name=model]", "fast")
        .await;
    let target = |i: usize, field: &str| format!("#new-route input[name='targets[{i}].{field}']");
    browser.type_into(&target(0, "provider"), "mock-a").await;
    browser.type_into(&target(0, "weight"), "3").await;
    browser.type_into(&target(1, "provider"), "ghost").await;
    browser.click("#new-route button[type=submit]").await;
    let shown = refusal_shown(browser, "p.notice.error").await;
    let api = api_refusal(
        admin,
        http::Method::POST,
        "/api/v1/routes",
        serde_json::json!({"model": "fast", "targets": [{"provider": "mock-a", "weight": 3}, {"provider": "ghost"}]}),
    )
    .await;
    assert!(shown.contains(&api), "{api} in {shown}");
    browser.clear(&target(1, "provider")).await;
    browser.type_into(&target(1, "provider"), "mock-b").await;
    browser.click("#new-route button[type=submit]").await;
    wait_for_text(browser, "Route “fast” created.").await;
    let route = find_route(admin, "fast").await;
    assert_eq!(route["targets"][0]["weight"], 3, "{route}");
    assert_eq!(route["targets"][1]["provider"], "mock-b", "{route}");

    // Change mock-b's weight in the route's row.
    let weight = "tr[data-route='fast'] input[name='targets[1].weight']";
    browser.clear(weight).await;
    browser.type_into(weight, "5").await;
    browser
        .click("tr[data-route='fast'] form.targets button")
        .await;
    wait_for_text(browser, "Targets of “fast” saved.").await;
    let route = find_route(admin, "fast").await;
    assert_eq!(route["targets"][1]["weight"], 5, "{route}");
    shots.take(browser, "catalog").await;
    browser.goto(&admin.url("/console/catalog#routes")).await;
    wait_for_text(browser, "Save targets").await;
    shots.take(browser, "catalog-routes").await;

    // A provider a route uses is not deleted: the API's message says why.
    browser
        .click("tr[data-provider='mock-a'] details.confirm summary")
        .await;
    browser
        .click("tr[data-provider='mock-a'] form.delete button")
        .await;
    let shown = refusal_shown(browser, "tr[data-notice-for='mock-a'] p.notice.error").await;
    let api = api_refusal(
        admin,
        http::Method::DELETE,
        "/api/v1/providers/mock-a",
        serde_json::Value::Null,
    )
    .await;
    assert!(shown.contains(&api), "{api} in {shown}");

    // Delete the route, then the provider.
    browser
        .click("tr[data-route='fast'] details.confirm summary")
        .await;
    browser
        .click("tr[data-route='fast'] form.delete button")
        .await;
    wait_for_text(browser, "Route “fast” deleted.").await;
    assert_eq!(
        admin
            .get(&format!("/api/v1/routes/{}", route["id"].as_str().unwrap()))
            .await
            .status,
        404
    );
    browser
        .click("tr[data-provider='mock-a'] details.confirm summary")
        .await;
    browser
        .click("tr[data-provider='mock-a'] form.delete button")
        .await;
    wait_for_text(browser, "Provider “mock-a” deleted.").await;
    assert_eq!(admin.get("/api/v1/providers/mock-a").await.status, 404);
}

/// The route for `model`, as the API lists it.
async fn find_route(admin: &TestAdmin, model: &str) -> serde_json::Value {
    let routes = admin.get("/api/v1/routes").await.json();
    routes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == model)
        .unwrap_or_else(|| panic!("no route {model} in {routes}"))
        .clone()
}
