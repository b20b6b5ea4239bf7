//! The operator console over plain HTTP: sessions and their cookie, CSRF,
//! the security headers, the throttle on sign-in, and that the pages act
//! through the API's functions. The browser tests are in `console_browser`.

use http::Method;
use serde_json::{json, Value};

use crate::support::*;

const FORM: &str = "application/x-www-form-urlencoded";

/// Signs in with `token` and answers the sign-in's answer.
async fn sign_in_with(admin: &TestAdmin, token: &str, extra: &[(&str, &str)]) -> Answer {
    let mut headers = vec![("content-type", FORM)];
    headers.extend_from_slice(extra);
    let body = format!("token={}", urlencode(token));
    request(Method::POST, &admin.url("/console/sign-in"), &headers, body).await
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Signs in with the test token; answers the `Cookie` header value to send.
async fn signed_in(admin: &TestAdmin) -> String {
    let answer = sign_in_with(admin, TOKEN, &[]).await;
    assert_eq!(answer.status, 303, "{}", answer.text());
    let set = answer.header("set-cookie").expect("a session cookie");
    set.split(';').next().unwrap().to_owned()
}

async fn get_page(admin: &TestAdmin, path: &str, cookie: &str) -> Answer {
    request(Method::GET, &admin.url(path), &[("cookie", cookie)], "").await
}

async fn post_form(admin: &TestAdmin, path: &str, cookie: &str, body: &str) -> Answer {
    request(
        Method::POST,
        &admin.url(path),
        &[("cookie", cookie), ("content-type", FORM)],
        body.to_owned(),
    )
    .await
}

/// The CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    page[at..at + 64].to_owned()
}

#[tokio::test]
async fn pages_without_a_session_redirect_to_sign_in_and_htmx_is_told_to_go_there() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    for path in ["/console", "/console/rollout", "/console/keys"] {
        let answer = request(Method::GET, &admin.url(path), &[], "").await;
        assert_eq!(answer.status, 303, "{path}");
        let to = answer.header("location").unwrap();
        assert!(
            to == "/console/sign-in" || to == "/console/rollout",
            "{path}: {to}"
        );
    }
    for cookie in ["", "obleth_console=v1.x.1.y.z", "obleth_console=garbage"] {
        let answer = get_page(&admin, "/console/keys", cookie).await;
        assert_eq!(answer.status, 303, "{cookie}");
        assert_eq!(answer.header("location"), Some("/console/sign-in"));
    }
    let htmx = request(
        Method::GET,
        &admin.url("/console/rollout/live"),
        &[("hx-request", "true")],
        "",
    )
    .await;
    assert_eq!(htmx.status, 401);
    assert_eq!(htmx.header("hx-redirect"), Some("/console/sign-in"));
    // A form without a session creates nothing.
    let answer = post_form(&admin, "/console/keys", "", "name=sneaky").await;
    assert_eq!(answer.status, 303);
    assert_eq!(admin.get("/api/v1/keys").await.json()["items"], json!([]));
}

#[tokio::test]
async fn sign_in_answers_a_strict_http_only_cookie_and_refuses_a_wrong_token() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let page = request(Method::GET, &admin.url("/console/sign-in"), &[], "").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(!page.text().contains("<script>"), "no inline script");
    assert!(!page.text().contains(" style="), "no inline style");

    let wrong = sign_in_with(&admin, "not-the-admin-token-000", &[]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    assert!(
        !wrong.text().contains("not-the-admin-token-000"),
        "the token is not echoed"
    );

    let right = sign_in_with(&admin, TOKEN, &[]).await;
    assert_eq!(right.status, 303);
    assert_eq!(right.header("location"), Some("/console/rollout"));
    let cookie = right.header("set-cookie").unwrap();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert!(!cookie.contains(TOKEN), "{cookie}");
    let behind_tls = sign_in_with(&admin, TOKEN, &[("x-forwarded-proto", "https")]).await;
    assert!(behind_tls
        .header("set-cookie")
        .unwrap()
        .contains("; Secure"));

    let session = cookie.split(';').next().unwrap();
    let rollout = get_page(&admin, "/console/rollout", session).await;
    assert_eq!(rollout.status, 200, "{}", rollout.text());
    assert!(rollout.text().contains("Rollout"));

    // Signing out clears the cookie, and needs the form's token.
    let refused = post_form(&admin, "/console/sign-out", session, "").await;
    assert_eq!(refused.status, 403);
    let csrf = csrf_of(&rollout.text());
    let out = post_form(
        &admin,
        "/console/sign-out",
        session,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), Some("/console/sign-in"));
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn forms_without_their_sessions_csrf_token_or_from_another_site_are_refused() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let cookie = signed_in(&admin).await;
    let other = signed_in(&admin).await;
    let other_csrf = csrf_of(&get_page(&admin, "/console/keys", &other).await.text());
    let csrf = csrf_of(&get_page(&admin, "/console/keys", &cookie).await.text());
    for body in [
        "name=no-token".to_owned(),
        "name=wrong-token&csrf=00".to_owned(),
        format!("name=other-sessions-token&csrf={other_csrf}"),
    ] {
        let answer = post_form(&admin, "/console/keys", &cookie, &body).await;
        assert_eq!(answer.status, 403, "{body}");
    }
    let cross_site = request(
        Method::POST,
        &admin.url("/console/keys"),
        &[
            ("cookie", &cookie),
            ("content-type", FORM),
            ("sec-fetch-site", "cross-site"),
        ],
        format!("name=cross-site&csrf={csrf}"),
    )
    .await;
    assert_eq!(cross_site.status, 403);
    assert_eq!(admin.get("/api/v1/keys").await.json()["items"], json!([]));
}

#[tokio::test]
async fn a_created_key_shows_its_secret_once_then_rotates_and_revokes_through_the_api_code() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let cookie = signed_in(&admin).await;
    let csrf = csrf_of(&get_page(&admin, "/console/keys", &cookie).await.text());

    // The API's own checks and messages.
    let invalid = post_form(
        &admin,
        "/console/keys",
        &cookie,
        &format!("csrf={csrf}&name=ok&rpm_limit=0"),
    )
    .await;
    assert_eq!(invalid.status, 422);
    let api = admin
        .call(
            Method::POST,
            "/api/v1/keys",
            json!({"name": "ok", "rpm_limit": 0}),
        )
        .await;
    let (_, message) = api.admin_error();
    assert!(
        invalid.text().contains(&message.unwrap()),
        "{}",
        invalid.text()
    );

    let created = post_form(
        &admin,
        "/console/keys",
        &cookie,
        &format!("csrf={csrf}&name=ci+key&owner=ops&budget_usd=5&budget_period=month"),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let page = created.text();
    let at = page.find("obk_").expect("the secret once");
    let secret: String = page[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert_eq!(secret.len(), 4 + 12 + 1 + 40, "{secret}");
    let listed = admin.get("/api/v1/keys").await.json();
    let key: &Value = &listed["items"][0];
    assert_eq!(key["name"], "ci key");
    assert_eq!(key["budget_period"], "month");
    let id = key["id"].as_str().unwrap().to_owned();

    let again = get_page(&admin, "/console/keys", &cookie).await.text();
    assert!(again.contains("ci key"));
    assert!(!again.contains(&secret), "the secret is never shown again");
    assert!(!again.contains(&secret[17..]), "not even its secret part");

    let rotated = post_form(
        &admin,
        &format!("/console/keys/{id}/rotate"),
        &cookie,
        &format!("csrf={csrf}&overlap_secs=60"),
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let text = rotated.text();
    assert!(text.contains("The previous secret works until"), "{text}");
    assert!(!text.contains(&secret));
    assert!(text.contains(&format!("obk_{}_", &secret[4..16])));

    let revoked = post_form(
        &admin,
        &format!("/console/keys/{id}/revoke"),
        &cookie,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(revoked.status, 200);
    assert!(revoked.text().contains("revoked"));
    let key = admin.get(&format!("/api/v1/keys/{id}")).await.json();
    assert_eq!(key["status"], "revoked");
    let listed = get_page(&admin, "/console/keys?status=revoked&name=ci", &cookie).await;
    assert!(listed.text().contains("ci key"));
    let active = get_page(&admin, "/console/keys?status=active", &cookie).await;
    assert!(!active.text().contains("ci key"));
    let by_owner = get_page(&admin, "/console/keys?status=all&owner=ops", &cookie).await;
    assert!(by_owner.text().contains("ci key"));
    let other_owner = get_page(&admin, "/console/keys?status=all&owner=dev", &cookie).await;
    assert!(!other_owner.text().contains("ci key"));
    let bad_team = get_page(&admin, "/console/keys?team=nope", &cookie).await;
    assert_eq!(bad_team.status, 422);

    let unknown = post_form(
        &admin,
        "/console/keys/not-a-uuid/revoke",
        &cookie,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(unknown.status, 422);
}

#[tokio::test]
async fn the_rollout_page_shows_a_node_that_joins_with_another_version() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    let cookie = signed_in(&admin).await;
    let before = get_page(&admin, "/console/rollout/live", &cookie)
        .await
        .text();
    assert!(before.contains(&admin.node_id) || before.contains("No live node"));
    assert!(!before.contains("gw-next"));
    sqlx::query(
        "INSERT INTO nodes (node_id, service, version, git_commit, ready, started_at, last_seen) \
         VALUES ('gw-next', 'gateway', '9.9.0', 'abcdef123456', TRUE, now(), now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let after = get_page(&admin, "/console/rollout/live", &cookie)
        .await
        .text();
    assert!(after.contains("gw-next"), "{after}");
    assert!(after.contains("abcdef123456"));
    assert!(
        after.contains(r#"data-version="9.9.0""#),
        "in the versions bar"
    );
    assert!(after.contains("Mixed"), "two versions: {after}");
    assert!(after.contains("Maintenance mode is off"));
    admin
        .call(
            Method::PUT,
            "/api/v1/maintenance",
            json!({"enabled": true, "message": "upgrading <b>now</b>"}),
        )
        .await;
    let on = get_page(&admin, "/console/rollout/live", &cookie)
        .await
        .text();
    assert!(on.contains("Maintenance mode is ON"), "{on}");
    assert!(
        on.contains("upgrading &lt;b&gt;now&lt;/b&gt;"),
        "escaped: {on}"
    );

    // The page's form turns it off, through the API's checks.
    let page = get_page(&admin, "/console/rollout", &cookie).await.text();
    assert!(page.contains("Turn maintenance off"), "{page}");
    let csrf = csrf_of(&page);
    let refused = post_form(
        &admin,
        "/console/maintenance",
        &cookie,
        &format!("csrf={csrf}&enabled=false&message=x&retry_after=0"),
    )
    .await;
    assert_eq!(refused.status, 422);
    assert!(refused
        .text()
        .contains("retry_after: must be between 1 and 86400 seconds"));
    assert_eq!(
        admin.get("/api/v1/maintenance").await.json()["enabled"],
        true
    );
    let no_csrf = post_form(&admin, "/console/maintenance", &cookie, "enabled=false").await;
    assert_eq!(no_csrf.status, 403);
    let off = post_form(
        &admin,
        "/console/maintenance",
        &cookie,
        &format!("csrf={csrf}&enabled=false&message=done&retry_after=30"),
    )
    .await;
    assert_eq!(off.status, 200, "{}", off.text());
    assert!(off.text().contains("Maintenance mode turned off."));
    let stored = admin.get("/api/v1/maintenance").await.json();
    assert_eq!(
        (
            stored["enabled"].clone(),
            stored["message"].clone(),
            stored["retry_after"].clone()
        ),
        (json!(false), json!("done"), json!(30))
    );
}

#[tokio::test]
async fn sign_in_failures_share_the_api_tokens_throttle() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let mut settings = admin_settings(&db.url);
    settings.auth.max_failures = 2;
    let admin = TestAdmin::start(settings).await;
    admin.wait_ready().await;
    for _ in 0..2 {
        let wrong = sign_in_with(&admin, "wrong-token-0123456789", &[]).await;
        assert_eq!(wrong.status, 401);
    }
    let blocked = sign_in_with(&admin, TOKEN, &[]).await;
    assert_eq!(blocked.status, 429);
    assert!(blocked.header("retry-after").is_some());
    assert!(blocked.header("set-cookie").is_none());
    let api = admin.get("/api/v1/keys").await;
    assert_eq!(api.status, 429, "the same budget as the API's bearer check");
}

#[tokio::test]
async fn the_console_is_a_plain_404_when_disabled() {
    let db = obleth_testkit::fresh_database().await.unwrap();
    let mut settings = admin_settings(&db.url);
    settings.console.enabled = false;
    let admin = TestAdmin::start(settings).await;
    admin.wait_ready().await;
    let answer = request(Method::GET, &admin.url("/console/sign-in"), &[], "").await;
    assert_eq!(answer.status, 404);
}

fn usage_event(
    model: &str,
    tokens: i32,
    status: i16,
    at: chrono::DateTime<chrono::Utc>,
) -> obleth_config::model::UsageEvent {
    obleth_config::model::UsageEvent {
        request_id: uuid::Uuid::new_v4(),
        key_id: Some(uuid::Uuid::new_v4()),
        model: model.to_owned(),
        provider: Some("mock".to_owned()),
        prompt_tokens: Some(tokens / 2),
        completion_tokens: Some(tokens - tokens / 2),
        total_tokens: Some(tokens),
        status,
        latency_ms: 5,
        streamed: false,
        node_id: Some("gw-1".to_owned()),
        created_at: at,
        cost_micros: Some(1_500),
        estimated: false,
        team_id: None,
    }
}

/// Usage of two models: three requests (one failed) an hour ago and one
/// three hours ago.
pub async fn record_usage(pool: &sqlx::PgPool) {
    // One instant for the three, so they always share an hour.
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let events = vec![
        usage_event("gpt-4o", 100, 200, hour_ago),
        usage_event("gpt-4o", 100, 500, hour_ago),
        usage_event("mini", 50, 200, hour_ago),
        usage_event("mini", 50, 200, hour_ago - chrono::Duration::hours(2)),
    ];
    obleth_config::db::usage::insert_usage(pool, &events)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_usage_page_charts_the_api_totals_by_bucket_and_group() {
    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    record_usage(&pool).await;
    let cookie = signed_in(&admin).await;
    let page = get_page(&admin, "/console/usage?range=24h&group_by=model", &cookie).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let text = page.text();
    for id in ["chart-requests", "chart-tokens", "chart-cost"] {
        assert!(text.contains(&format!(r#"id="{id}""#)), "{id}");
    }
    assert_eq!(
        text.matches(r#"class="bar""#).count(),
        3 * 24,
        "24 hour buckets a chart"
    );
    // The bucket an hour ago holds three requests and one error, the one
    // three hours ago one request.
    assert!(text.contains(r#"class="bar" x="#), "{text}");
    assert!(text.contains(r#"data-value="3""#), "{text}");
    assert!(text.contains(r#"class="part""#), "errors drawn");
    assert!(
        text.contains("4 requests, 1 errors, 300 tokens, $0.0060"),
        "{text}"
    );
    // The group table is the API's answer for the same range.
    let api = admin
        .get("/api/v1/usage/totals?group_by=model")
        .await
        .json();
    assert_eq!(api["items"][0]["group"], "gpt-4o");
    assert!(text.contains("gpt-4o") && text.contains("mini"));

    let days = get_page(&admin, "/console/usage?range=7d&group_by=provider", &cookie).await;
    assert_eq!(days.status, 200);
    assert_eq!(days.text().matches(r#"class="bar""#).count(), 3 * 7);
    assert!(days.text().contains("4 requests"));
    for bad in ["range=1y", "group_by=colour"] {
        let answer = get_page(&admin, &format!("/console/usage?{bad}"), &cookie).await;
        assert_eq!(answer.status, 422, "{bad}");
    }
}

#[tokio::test]
async fn the_catalog_page_lists_the_apis_providers_and_routes_escaped() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let cookie = signed_in(&admin).await;
    let empty = get_page(&admin, "/console/catalog", &cookie).await;
    assert_eq!(empty.status, 200);
    assert!(empty.text().contains("No provider.") && empty.text().contains("No route."));
    let provider = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            json!({"name": "mock", "kind": "mock"}),
        )
        .await;
    assert_eq!(provider.status, 201, "{}", provider.text());
    let route = admin
        .call(
            Method::POST,
            "/api/v1/routes",
            json!({"model": "gpt-<4o>", "targets": [{"provider": "mock", "upstream_model": "mini", "weight": 3}]}),
        )
        .await;
    assert_eq!(route.status, 201, "{}", route.text());
    let page = get_page(&admin, "/console/catalog", &cookie).await.text();
    assert!(page.contains("mock://"), "{page}");
    assert!(page.contains("gpt-&lt;4o&gt;"), "escaped: {page}");
    assert!(
        page.contains(r#"name="targets[0].weight" size="5" value="3""#),
        "{page}"
    );
    assert!(!page.contains("gpt-<4o>"));

    // Editing a provider: the API's checks and messages, then the change.
    let csrf = csrf_of(&page);
    for (body, field) in [
        (
            "base_url=mock%3A%2F%2F&timeout_ms=0",
            json!({"timeout_ms": 0}),
        ),
        (
            "base_url=mock%3A%2F%2F&timeout_ms=1000&credential_ref=env%3AHOME",
            json!({"credential_ref": "env:HOME"}),
        ),
    ] {
        let refused = post_form(
            &admin,
            "/console/catalog/providers/mock",
            &cookie,
            &format!("csrf={csrf}&{body}"),
        )
        .await;
        assert_eq!(refused.status, 422, "{body}");
        let api = admin
            .call(Method::PATCH, "/api/v1/providers/mock", field)
            .await;
        assert_eq!(api.status, 422, "{}", api.text());
        let (_, message) = api.admin_error();
        let message = message.unwrap().replace('`', "");
        let shown = refused.text().replace('`', "");
        assert!(
            shown.contains(&html_escape(&message)),
            "{message} in {shown}"
        );
    }
    let saved = post_form(
        &admin,
        "/console/catalog/providers/mock",
        &cookie,
        &format!("csrf={csrf}&base_url=mock%3A%2F%2F&timeout_ms=30000&credential_ref="),
    )
    .await;
    assert_eq!(saved.status, 200, "{}", saved.text());
    assert!(saved.text().contains("saved"));
    let stored = admin.get("/api/v1/providers/mock").await.json();
    assert_eq!(stored["timeout_ms"], 30000);
    let no_csrf = post_form(
        &admin,
        "/console/catalog/providers/mock",
        &cookie,
        "base_url=mock%3A%2F%2F&timeout_ms=1",
    )
    .await;
    assert_eq!(no_csrf.status, 403);
}

/// What the API's error answer says, as the console shows it: a
/// validation message after its field, others as they are.
fn api_says(answer: &Answer) -> String {
    let body = answer.json();
    let e = &body["error"];
    let message = e["message"].as_str().unwrap_or_else(|| panic!("{body}"));
    match (e["code"].as_str(), e["field"].as_str()) {
        (Some("validation_failed"), Some(field)) => format!("{field}: {message}"),
        _ => message.to_owned(),
    }
}

/// The notice shown in the row above the provider's or route's row
/// marked `key`.
fn notice_for<'a>(page: &'a str, key: &str) -> &'a str {
    let at = page
        .find(&format!(r#"data-notice-for="{key}""#))
        .unwrap_or_else(|| panic!("no notice for {key} in {page}"));
    let row = &page[at..];
    &row[..row.find("</tr>").unwrap()]
}

/// The notice shown above the form `id` (the new-provider or new-route form).
fn notice_above<'a>(page: &'a str, id: &str) -> &'a str {
    let form = page
        .find(&format!(r#"id="{id}""#))
        .unwrap_or_else(|| panic!("no form {id}"));
    let heading = page[..form].rfind("</h3>").unwrap();
    &page[heading..form]
}

/// Asserts that the console refused a new form's `fields` as the API
/// refused their JSON twin (`api`): the same status, 422 or 409, and the
/// API's message in the notice above the form `id`. Answers the page.
#[track_caller]
fn assert_form_refused_as_api(
    refused: &Answer,
    api: &Answer,
    fields: &[(&str, &str)],
    id: &str,
) -> String {
    assert!(api.status == 422 || api.status == 409, "{}", api.text());
    assert_eq!(refused.status, api.status, "{fields:?}: {}", refused.text());
    let said = html_escape(&api_says(api));
    let text = refused.text();
    assert!(notice_above(&text, id).contains(&said), "{said} in {text}");
    text
}

/// Asserts that the console refused an edit of the row `key` with 422, as
/// the API refused the same edit (`api`), with the API's message in the
/// row's notice. Answers the page.
#[track_caller]
fn assert_edit_refused_as_api(refused: &Answer, api: &Answer, key: &str) -> String {
    assert_eq!(api.status, 422, "{}", api.text());
    assert_eq!(refused.status, 422, "{}", refused.text());
    let said = html_escape(&api_says(api));
    let text = refused.text();
    assert!(notice_for(&text, key).contains(&said), "{said} in {text}");
    text
}

/// Posts the console form at `path` with `fields`, URL-encoded, and the
/// page's CSRF token.
async fn post_fields(
    admin: &TestAdmin,
    path: &str,
    cookie: &str,
    csrf: &str,
    fields: &[(&str, &str)],
) -> Answer {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", csrf)
        .extend_pairs(fields)
        .finish();
    post_form(admin, path, cookie, &body).await
}

#[tokio::test]
async fn the_catalog_page_creates_edits_and_deletes_a_provider_with_the_apis_messages() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let cookie = signed_in(&admin).await;
    let page = get_page(&admin, "/console/catalog", &cookie).await.text();
    let csrf = csrf_of(&page);
    for kind in [
        "openai",
        "anthropic",
        "azure",
        "gemini",
        "vertex",
        "bedrock",
        "mock",
    ] {
        assert!(
            page.contains(&format!(r#"<option value="{kind}""#)),
            "{kind}"
        );
    }

    // Create: kind, timeout and options as typed, base URL by default.
    let created = post_fields(
        &admin,
        "/console/catalog/providers",
        &cookie,
        &csrf,
        &[
            ("name", "alpha"),
            ("kind", "mock"),
            ("base_url", ""),
            ("credential_ref", ""),
            ("timeout_ms", "5000"),
            ("options", r#"{"connect_timeout_ms": 2000}"#),
        ],
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert!(notice_for(&created.text(), "alpha").contains("Provider “alpha” created."));
    let stored = admin.get("/api/v1/providers/alpha").await.json();
    assert_eq!(stored["base_url"], "mock://", "{stored}");
    assert_eq!(stored["timeout_ms"], 5000, "{stored}");
    assert_eq!(stored["options"], json!({"connect_timeout_ms": 2000}));

    // Refused creations: the API's status and message, above the form,
    // which keeps what was typed.
    let refusals: &[(&[(&str, &str)], Value)] = &[
        (
            &[
                ("name", "beta"),
                ("kind", "mock"),
                ("options", r#"{"connect_timeout_ms": "soon"}"#),
            ],
            json!({"name": "beta", "kind": "mock", "options": {"connect_timeout_ms": "soon"}}),
        ),
        (
            &[
                ("name", "beta"),
                ("kind", "mock"),
                ("options", r#"{"colour": "blue"}"#),
            ],
            json!({"name": "beta", "kind": "mock", "options": {"colour": "blue"}}),
        ),
        (
            &[
                ("name", "beta"),
                ("kind", "mock"),
                ("options", r#"{"idle_timeout_ms": 0}"#),
            ],
            json!({"name": "beta", "kind": "mock", "options": {"idle_timeout_ms": 0}}),
        ),
        (
            &[
                ("name", "beta"),
                ("kind", "mock"),
                ("options", r#"["connect_timeout_ms"]"#),
            ],
            json!({"name": "beta", "kind": "mock", "options": ["connect_timeout_ms"]}),
        ),
        (
            &[("name", "beta"), ("kind", "cobol")],
            json!({"name": "beta", "kind": "cobol"}),
        ),
        (
            &[("name", "beta"), ("kind", "openai")],
            json!({"name": "beta", "kind": "openai"}),
        ),
        (
            &[("name", "two words"), ("kind", "mock")],
            json!({"name": "two words", "kind": "mock"}),
        ),
        (
            &[("name", "beta"), ("kind", "mock"), ("timeout_ms", "0")],
            json!({"name": "beta", "kind": "mock", "timeout_ms": 0}),
        ),
        (
            &[("name", "alpha"), ("kind", "mock")],
            json!({"name": "alpha", "kind": "mock"}),
        ),
    ];
    for (fields, api_body) in refusals {
        let refused =
            post_fields(&admin, "/console/catalog/providers", &cookie, &csrf, fields).await;
        let api = admin
            .call(Method::POST, "/api/v1/providers", api_body.clone())
            .await;
        let text = assert_form_refused_as_api(&refused, &api, fields, "new-provider");
        if let Some((_, options)) = fields.iter().find(|(k, _)| *k == "options") {
            assert!(text.contains(&html_escape(options)), "kept: {options}");
        }
    }
    // Options that are not JSON at all: named, and not a 500.
    let garbled = post_fields(
        &admin,
        "/console/catalog/providers",
        &cookie,
        &csrf,
        &[
            ("name", "beta"),
            ("kind", "mock"),
            ("options", "{connect_timeout_ms: 1"),
        ],
    )
    .await;
    assert_eq!(garbled.status, 422);
    assert!(
        notice_above(&garbled.text(), "new-provider").contains("options: must be a JSON object (")
    );
    assert_eq!(admin.get("/api/v1/providers/beta").await.status, 404);

    // Edit the options: the form shows them whole; what it says is stored.
    let page = get_page(&admin, "/console/catalog", &cookie).await.text();
    assert!(
        page.contains(&html_escape(r#""connect_timeout_ms": 2000"#)),
        "prefilled: {page}"
    );
    let edit = |options: &'static str| {
        let (admin, cookie, csrf) = (&admin, &cookie, &csrf);
        async move {
            post_fields(
                admin,
                "/console/catalog/providers/alpha",
                cookie,
                csrf,
                &[
                    ("base_url", "mock://"),
                    ("credential_ref", ""),
                    ("timeout_ms", "5000"),
                    ("options", options),
                ],
            )
            .await
        }
    };
    let saved = edit(r#"{"connect_timeout_ms": 3000, "idle_timeout_ms": 4000}"#).await;
    assert_eq!(saved.status, 200, "{}", saved.text());
    assert!(notice_for(&saved.text(), "alpha").contains("saved"));
    let stored = admin.get("/api/v1/providers/alpha").await.json();
    assert_eq!(
        stored["options"],
        json!({"connect_timeout_ms": 3000, "idle_timeout_ms": 4000})
    );
    let saved = edit(r#"{"idle_timeout_ms": 4000}"#).await;
    assert_eq!(saved.status, 200, "{}", saved.text());
    let stored = admin.get("/api/v1/providers/alpha").await.json();
    assert_eq!(
        stored["options"],
        json!({"idle_timeout_ms": 4000}),
        "one removed is cleared"
    );
    for (options, patch) in [
        (
            r#"{"idle_timeout_ms": "later"}"#,
            json!({"options": {"idle_timeout_ms": "later"}}),
        ),
        (
            r#"{"region": "us-east-1"}"#,
            json!({"options": {"region": "us-east-1"}}),
        ),
    ] {
        let refused = edit(options).await;
        let api = admin
            .call(Method::PATCH, "/api/v1/providers/alpha", patch)
            .await;
        let text = assert_edit_refused_as_api(&refused, &api, "alpha");
        assert!(text.contains(&html_escape(options)), "kept: {options}");
    }
    let stored = admin.get("/api/v1/providers/alpha").await.json();
    assert_eq!(stored["options"], json!({"idle_timeout_ms": 4000}));

    // Delete: refused, with the API's message, while a route uses it.
    let route = admin
        .call(
            Method::POST,
            "/api/v1/routes",
            json!({"model": "m", "targets": [{"provider": "alpha"}]}),
        )
        .await;
    assert_eq!(route.status, 201, "{}", route.text());
    let in_use = post_fields(
        &admin,
        "/console/catalog/providers/alpha/delete",
        &cookie,
        &csrf,
        &[],
    )
    .await;
    let api = admin
        .call(Method::DELETE, "/api/v1/providers/alpha", Value::Null)
        .await;
    assert_eq!(api.status, 409, "{}", api.text());
    assert_eq!(in_use.status, 409, "{}", in_use.text());
    let said = html_escape(&api_says(&api));
    assert!(
        notice_for(&in_use.text(), "alpha").contains(&said),
        "{said}"
    );
    let id = route.json()["id"].as_str().unwrap().to_owned();
    admin
        .call(Method::DELETE, &format!("/api/v1/routes/{id}"), Value::Null)
        .await;
    let deleted = post_fields(
        &admin,
        "/console/catalog/providers/alpha/delete",
        &cookie,
        &csrf,
        &[],
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert!(deleted.text().contains("Provider “alpha” deleted."));
    assert!(!deleted.text().contains(r#"data-provider="alpha""#));
    assert_eq!(admin.get("/api/v1/providers/alpha").await.status, 404);
    let gone = post_fields(
        &admin,
        "/console/catalog/providers/alpha/delete",
        &cookie,
        &csrf,
        &[],
    )
    .await;
    assert_eq!(gone.status, 404);
    assert!(gone.text().contains("provider `alpha` not found"));

    // Every new form needs the session's CSRF token.
    for path in [
        "/console/catalog/providers",
        "/console/catalog/providers/alpha/delete",
    ] {
        let answer = post_form(&admin, path, &cookie, "name=x&kind=mock").await;
        assert_eq!(answer.status, 403, "{path}");
    }
}

#[tokio::test]
async fn the_catalog_page_creates_edits_and_deletes_a_route_with_the_apis_messages() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let cookie = signed_in(&admin).await;
    for name in ["alpha", "beta"] {
        let made = admin
            .call(
                Method::POST,
                "/api/v1/providers",
                json!({"name": name, "kind": "mock"}),
            )
            .await;
        assert_eq!(made.status, 201, "{}", made.text());
    }
    let page = get_page(&admin, "/console/catalog", &cookie).await.text();
    let csrf = csrf_of(&page);
    assert!(page.contains(r#"<option value="beta">"#), "offered: {page}");

    // Create with two targets; the empty third row adds none.
    let created = post_fields(
        &admin,
        "/console/catalog/routes",
        &cookie,
        &csrf,
        &[
            ("model", "gpt-4o"),
            ("targets[0].provider", "alpha"),
            ("targets[0].upstream_model", "mini"),
            ("targets[0].weight", "3"),
            ("targets[0].priority", ""),
            ("targets[1].provider", "beta"),
            ("targets[1].upstream_model", ""),
            ("targets[1].weight", "1"),
            ("targets[1].priority", "1"),
            ("targets[2].provider", ""),
            ("targets[2].upstream_model", ""),
            ("targets[2].weight", ""),
            ("targets[2].priority", ""),
        ],
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert!(notice_for(&created.text(), "gpt-4o").contains("Route “gpt-4o” created."));
    let routes = admin.get("/api/v1/routes").await.json();
    let route = &routes["items"][0];
    assert_eq!(
        route["targets"],
        json!([
            {"provider": "alpha", "upstream_model": "mini", "weight": 3},
            {"provider": "beta", "upstream_model": null, "weight": 1, "priority": 1},
        ]),
        "{routes}"
    );
    let id = route["id"].as_str().unwrap().to_owned();

    // Refused creations: the API's status and message above the form.
    let refusals: &[(&[(&str, &str)], Value)] = &[
        (
            &[
                ("model", "m2"),
                ("targets[0].provider", "alpha"),
                ("targets[1].provider", "ghost"),
            ],
            json!({"model": "m2", "targets": [{"provider": "alpha"}, {"provider": "ghost"}]}),
        ),
        (
            &[
                ("model", "m2"),
                ("targets[0].provider", "alpha"),
                ("targets[0].weight", "2000000"),
            ],
            json!({"model": "m2", "targets": [{"provider": "alpha", "weight": 2_000_000}]}),
        ),
        (
            &[
                ("model", "m2"),
                ("targets[0].provider", "alpha"),
                ("targets[1].provider", "alpha"),
            ],
            json!({"model": "m2", "targets": [{"provider": "alpha"}, {"provider": "alpha"}]}),
        ),
        (
            &[("model", "m2"), ("targets[0].provider", "")],
            json!({"model": "m2", "targets": []}),
        ),
        (
            &[("model", ""), ("targets[0].provider", "alpha")],
            json!({"model": "", "targets": [{"provider": "alpha"}]}),
        ),
        (
            &[("model", "gpt-4o"), ("targets[0].provider", "alpha")],
            json!({"model": "gpt-4o", "targets": [{"provider": "alpha"}]}),
        ),
    ];
    for (fields, api_body) in refusals {
        let refused = post_fields(&admin, "/console/catalog/routes", &cookie, &csrf, fields).await;
        let api = admin
            .call(Method::POST, "/api/v1/routes", api_body.clone())
            .await;
        assert_form_refused_as_api(&refused, &api, fields, "new-route");
    }
    let not_a_number = post_fields(
        &admin,
        "/console/catalog/routes",
        &cookie,
        &csrf,
        &[
            ("model", "m2"),
            ("targets[0].provider", "alpha"),
            ("targets[0].weight", "heavy"),
        ],
    )
    .await;
    assert_eq!(not_a_number.status, 422);
    let text = not_a_number.text();
    assert!(notice_above(&text, "new-route").contains("targets[0].weight: must be a whole number"));
    assert!(text.contains(r#"value="heavy""#), "kept: {text}");
    assert_eq!(
        admin.get("/api/v1/routes").await.json()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Edit the targets: a weight changed, a target removed, one added.
    let targets = format!("/console/catalog/routes/{id}/targets");
    let saved = post_fields(
        &admin,
        &targets,
        &cookie,
        &csrf,
        &[
            ("targets[0].provider", ""),
            ("targets[0].weight", "3"),
            ("targets[1].provider", "beta"),
            ("targets[1].weight", "5"),
            ("targets[1].priority", "1"),
            ("targets[2].provider", "alpha"),
            ("targets[2].upstream_model", "large"),
            ("targets[2].weight", "0"),
        ],
    )
    .await;
    assert_eq!(saved.status, 200, "{}", saved.text());
    assert!(notice_for(&saved.text(), "gpt-4o").contains("Targets of “gpt-4o” saved."));
    let route = admin.get(&format!("/api/v1/routes/{id}")).await.json();
    assert_eq!(
        route["targets"],
        json!([
            {"provider": "beta", "upstream_model": null, "weight": 5, "priority": 1},
            {"provider": "alpha", "upstream_model": "large", "weight": 0},
        ]),
        "{route}"
    );
    let refused = post_fields(
        &admin,
        &targets,
        &cookie,
        &csrf,
        &[("targets[0].provider", "ghost")],
    )
    .await;
    let api = admin
        .call(
            Method::PUT,
            &format!("/api/v1/routes/{id}/targets"),
            json!({"targets": [{"provider": "ghost"}]}),
        )
        .await;
    let text = assert_edit_refused_as_api(&refused, &api, "gpt-4o");
    assert!(text.contains(r#"value="ghost""#), "kept: {text}");
    let unknown = post_fields(
        &admin,
        "/console/catalog/routes/not-an-id/targets",
        &cookie,
        &csrf,
        &[("targets[0].provider", "alpha")],
    )
    .await;
    assert_eq!(unknown.status, 422, "{}", unknown.text());

    // Delete.
    let delete = format!("/console/catalog/routes/{id}/delete");
    let deleted = post_fields(&admin, &delete, &cookie, &csrf, &[]).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert!(deleted.text().contains("Route “gpt-4o” deleted."));
    assert!(deleted.text().contains("No route."));
    assert_eq!(admin.get(&format!("/api/v1/routes/{id}")).await.status, 404);
    let again = post_fields(&admin, &delete, &cookie, &csrf, &[]).await;
    assert_eq!(again.status, 404, "{}", again.text());
    assert!(again.text().contains("not found"));

    for path in ["/console/catalog/routes", targets.as_str(), delete.as_str()] {
        let answer = post_form(
            &admin,
            path,
            &cookie,
            "model=x&targets%5B0%5D.provider=alpha",
        )
        .await;
        assert_eq!(answer.status, 403, "{path}");
    }
}

/// What maud makes of text in a page.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
