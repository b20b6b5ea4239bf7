//! `obleth-admin rollout-status`: the post-upgrade check. It passes only when
//! every live gateway and admin reports the expected release and schema and
//! is ready, the database has the schema that release expects, and (when a
//! gateway URL is given) a canary request through a gateway succeeds. With
//! `--wait` it polls until then or until its timeout. Its exit code is what a
//! pipeline or a `helm test` pod trusts.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use obleth_config::db::nodes::{list_nodes, NodeRow};
use obleth_config::migrate::runner::SILENT_AFTER_SECS;
use obleth_config::migrate::MigrationSet;
use obleth_config::settings::redact_url;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// Exit codes of `rollout-status`, documented in docs/upgrading.md.
pub mod exit {
    /// The rollout is complete: every node on the release and schema, ready,
    /// and the canary (if asked for) answered 2xx.
    pub const COMPLETE: u8 = 0;
    /// Bad input, or the database could not be read.
    pub const ERROR: u8 = 1;
    /// Nodes are not all on the expected release and schema, or not ready,
    /// or the database lacks the expected schema.
    pub const INCOMPLETE: u8 = 3;
    /// The nodes are right but the canary request failed.
    pub const CANARY_FAILED: u8 = 4;
}

/// Most bytes of a canary answer read (for its error message).
const CANARY_BODY_LIMIT: usize = 64 * 1024;

/// What to check, from the command line.
#[derive(Debug, Clone)]
pub struct RolloutCheck {
    pub database_url: String,
    pub expect_version: String,
    /// The migration every node must have seen and the database must have
    /// applied; by default this binary's newest expand migration.
    pub expect_schema: Option<i64>,
    pub canary: Option<Canary>,
    /// Nodes that never recorded their stop count until this long after
    /// their last heartbeat.
    pub node_horizon: Duration,
}

/// A request through a gateway with an operator's key.
#[derive(Clone)]
pub struct Canary {
    /// The gateway's base URL, such as `http://obleth-gateway:8080`.
    pub gateway_url: String,
    pub key: String,
    /// The model to ask; by default the first the key's `/v1/models` lists.
    pub model: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Canary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canary")
            .field("gateway_url", &self.gateway_url)
            .field("key", &"[redacted]")
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One node as the check sees it.
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub service: String,
    pub version: String,
    pub schema_version: Option<i64>,
    pub ready: bool,
    /// Seconds since its last heartbeat.
    pub silent_secs: i64,
    /// Why this node holds the rollout back; empty when it does not.
    pub problems: Vec<String>,
}

/// The canary's outcome.
#[derive(Debug, Serialize)]
pub struct CanaryStatus {
    pub ok: bool,
    pub model: Option<String>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub elapsed_ms: f64,
}

/// One round of the check.
#[derive(Debug, Serialize)]
pub struct RolloutStatus {
    pub complete: bool,
    pub expect_version: String,
    pub expect_schema: Option<i64>,
    /// The newest migration the database has applied.
    pub database_schema: Option<i64>,
    pub nodes: Vec<NodeStatus>,
    pub gateways: usize,
    pub admins: usize,
    /// What holds the rollout back, node by node and as a whole.
    pub problems: Vec<String>,
    pub canary: Option<CanaryStatus>,
}

impl RolloutStatus {
    /// The exit code this status gives.
    pub fn code(&self) -> u8 {
        if !self.problems.is_empty() {
            exit::INCOMPLETE
        } else if self.canary.as_ref().is_some_and(|c| !c.ok) {
            exit::CANARY_FAILED
        } else {
            exit::COMPLETE
        }
    }

    /// The status for people: one line a node, then the verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let schema = self
            .expect_schema
            .map_or("(none)".to_owned(), |s| s.to_string());
        let _ = writeln!(
            out,
            "expected: release {} and schema {schema}; database schema {}",
            self.expect_version,
            self.database_schema
                .map_or("(none applied)".to_owned(), |s| s.to_string())
        );
        for n in &self.nodes {
            let state = if n.problems.is_empty() {
                "ok".to_owned()
            } else {
                n.problems.join("; ")
            };
            let _ = writeln!(
                out,
                "{:<8} {:<24} {:<10} schema {:<16} ready {:<5} last beat {:>4} s ago  {state}",
                n.service,
                n.node_id,
                n.version,
                n.schema_version.map_or("-".to_owned(), |s| s.to_string()),
                n.ready,
                n.silent_secs,
            );
        }
        if let Some(c) = &self.canary {
            let what = match (&c.status, &c.error) {
                (Some(status), None) => format!("HTTP {status}"),
                (Some(status), Some(e)) => format!("HTTP {status}: {e}"),
                (None, Some(e)) => e.clone(),
                (None, None) => "no answer".to_owned(),
            };
            let _ = writeln!(
                out,
                "canary: {} (model {}, {what}, {:.0} ms)",
                if c.ok { "ok" } else { "FAILED" },
                c.model.as_deref().unwrap_or("-"),
                c.elapsed_ms
            );
        }
        match self.code() {
            exit::COMPLETE => out.push_str("rollout complete\n"),
            exit::CANARY_FAILED => out.push_str("rollout incomplete: the canary failed\n"),
            _ => {
                out.push_str("rollout incomplete:\n");
                for p in &self.problems {
                    let _ = writeln!(out, "  - {p}");
                }
            }
        }
        out
    }
}

/// Runs the check once, or with `wait` until it passes or `timeout` ends
/// (polling every `interval`); returns the last status, or an error when the
/// database could not be read at the last attempt.
pub async fn run(
    check: &RolloutCheck,
    wait: bool,
    timeout: Duration,
    interval: Duration,
    mut on_round: impl FnMut(&Result<RolloutStatus, String>),
) -> Result<RolloutStatus, String> {
    let deadline = Instant::now() + timeout;
    let client = http_client();
    let expect_schema = check.expect_schema.or_else(|| {
        MigrationSet::embedded()
            .ok()
            .and_then(|s| s.newest_expand())
    });
    loop {
        let round = check_once(check, expect_schema, &client).await;
        on_round(&round);
        let done = matches!(&round, Ok(s) if s.code() == exit::COMPLETE);
        if done || !wait || Instant::now() + interval > deadline {
            return round;
        }
        tokio::time::sleep(interval).await;
    }
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn http_client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

async fn check_once(
    check: &RolloutCheck,
    expect_schema: Option<i64>,
    client: &HttpClient,
) -> Result<RolloutStatus, String> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&check.database_url)
        .await
        .map_err(|e| {
            format!(
                "cannot read the database at {}: {e}",
                redact_url(&check.database_url)
            )
        })?;
    let result = read_fleet(check, expect_schema, &pool).await;
    pool.close().await;
    let mut status = result.map_err(|e| format!("cannot read the fleet: {e}"))?;
    if let Some(canary) = &check.canary {
        status.canary = Some(send_canary(client, canary).await);
    }
    status.complete = status.code() == exit::COMPLETE;
    Ok(status)
}

/// The fleet's part of the status; `complete` is set once the canary ran.
async fn read_fleet(
    check: &RolloutCheck,
    expect_schema: Option<i64>,
    pool: &PgPool,
) -> Result<RolloutStatus, sqlx::Error> {
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    let (database_schema, has_expected) = if migrated {
        let newest: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await?;
        let has: bool =
            match expect_schema {
                Some(v) => sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = $1 AND success)",
                )
                .bind(v)
                .fetch_one(pool)
                .await?,
                None => true,
            };
        (newest, has)
    } else {
        (None, expect_schema.is_none())
    };
    let rows = if migrated {
        list_nodes(pool, check.node_horizon).await?
    } else {
        Vec::new()
    };
    let now = chrono::Utc::now();
    let nodes: Vec<NodeStatus> = rows
        .into_iter()
        .filter(|n| n.service == "gateway" || n.service == "admin")
        .map(|n| judge(n, &check.expect_version, expect_schema, now))
        .collect();
    let mut problems = Vec::new();
    if !has_expected {
        problems.push(format!(
            "the database has not applied migration {}: run `obleth-migrator up` with release {}",
            expect_schema.unwrap_or_default(),
            check.expect_version
        ));
    }
    for n in &nodes {
        if !n.problems.is_empty() {
            problems.push(format!(
                "{} {}: {}",
                n.service,
                n.node_id,
                n.problems.join("; ")
            ));
        }
    }
    let gateways = nodes.iter().filter(|n| n.service == "gateway").count();
    let admins = nodes.iter().filter(|n| n.service == "admin").count();
    if gateways == 0 {
        problems.push("no live gateway is registered".to_owned());
    }
    Ok(RolloutStatus {
        complete: false,
        expect_version: check.expect_version.clone(),
        expect_schema,
        database_schema,
        nodes,
        gateways,
        admins,
        problems,
        canary: None,
    })
}

/// What holds `node` back from the expected release and schema.
fn judge(
    node: NodeRow,
    expect_version: &str,
    expect_schema: Option<i64>,
    now: chrono::DateTime<chrono::Utc>,
) -> NodeStatus {
    let silent_secs = (now - node.last_seen).num_seconds().max(0);
    let mut problems = Vec::new();
    if node.version != expect_version {
        problems.push(format!("runs {} (expected {expect_version})", node.version));
    }
    if let Some(expected) = expect_schema {
        match node.schema_version {
            Some(seen) if seen >= expected => {}
            Some(seen) => problems.push(format!("has seen schema {seen} (expected {expected})")),
            None => problems.push(format!("has seen no schema (expected {expected})")),
        }
    }
    if !node.ready {
        problems.push("not ready".to_owned());
    }
    if silent_secs > SILENT_AFTER_SECS {
        problems.push(format!(
            "silent for {silent_secs} s with no recorded stop (cut off from the database, or killed)"
        ));
    }
    NodeStatus {
        node_id: node.node_id,
        service: node.service,
        version: node.version,
        schema_version: node.schema_version,
        ready: node.ready,
        silent_secs,
        problems,
    }
}

async fn send_canary(client: &HttpClient, canary: &Canary) -> CanaryStatus {
    let started = Instant::now();
    let outcome = tokio::time::timeout(canary.timeout, canary_request(client, canary)).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (model, status, error) = match outcome {
        Ok(result) => result,
        Err(_) => (
            canary.model.clone(),
            None,
            Some(format!("no answer within {} s", canary.timeout.as_secs())),
        ),
    };
    CanaryStatus {
        ok: error.is_none() && status.is_some_and(|s| (200..300).contains(&s)),
        model,
        status,
        error,
        elapsed_ms,
    }
}

type CanaryOutcome = (Option<String>, Option<u16>, Option<String>);

async fn canary_request(client: &HttpClient, canary: &Canary) -> CanaryOutcome {
    let base = canary.gateway_url.trim_end_matches('/');
    let model = match &canary.model {
        Some(m) => m.clone(),
        None => match first_model(client, base, &canary.key).await {
            Ok(m) => m,
            Err((status, e)) => return (None, status, Some(e)),
        },
    };
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "obleth rollout canary: answer with one word"}],
        "max_tokens": 1,
    });
    match call(
        client,
        "POST",
        &format!("{base}/v1/chat/completions"),
        &canary.key,
        Some(body),
    )
    .await
    {
        Ok((status, _)) if (200..300).contains(&status) => (Some(model), Some(status), None),
        Ok((status, body)) => (Some(model), Some(status), Some(error_message(&body))),
        Err(e) => (Some(model), None, Some(e)),
    }
}

/// The first model `/v1/models` lists for the key.
async fn first_model(
    client: &HttpClient,
    base: &str,
    key: &str,
) -> Result<String, (Option<u16>, String)> {
    let (status, body) = call(client, "GET", &format!("{base}/v1/models"), key, None)
        .await
        .map_err(|e| (None, e))?;
    if !(200..300).contains(&status) {
        return Err((
            Some(status),
            format!("GET /v1/models: {}", error_message(&body)),
        ));
    }
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["data"][0]["id"].as_str().map(str::to_owned))
        .ok_or_else(|| {
            (
                Some(status),
                "GET /v1/models lists no model for the canary key; pass --canary-model".to_owned(),
            )
        })
}

async fn call(
    client: &HttpClient,
    method: &str,
    url: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, Bytes), String> {
    let payload = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::AUTHORIZATION, format!("Bearer {key}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "obleth-admin rollout-status")
        .body(Full::new(payload))
        .map_err(|e| format!("bad gateway URL {url}: {e}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("cannot reach the gateway at {url}: {}", source_chain(&e)))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), CANARY_BODY_LIMIT)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((status, body))
}

/// The OpenAI-style `error.message` of an answer, else its start.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned()
        })
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn row(version: &str, schema: Option<i64>, ready: bool, silent: i64) -> NodeRow {
        let now = Utc::now();
        NodeRow {
            node_id: "gw-1".to_owned(),
            service: "gateway".to_owned(),
            version: version.to_owned(),
            git_commit: None,
            hostname: None,
            schema_version: schema,
            ready,
            started_at: now,
            last_seen: now - chrono::Duration::seconds(silent),
            stopped_at: None,
        }
    }

    #[test]
    fn a_node_is_judged_on_version_schema_readiness_and_silence() {
        let now = Utc::now();
        let cases = [
            (row("0.2.0", Some(7), true, 1), 0),
            (row("0.2.0", Some(8), true, 1), 0),
            (row("0.1.0", Some(7), true, 1), 1),
            (row("0.2.0", Some(6), true, 1), 1),
            (row("0.2.0", None, true, 1), 1),
            (row("0.2.0", Some(7), false, 1), 1),
            (row("0.2.0", Some(7), true, 120), 1),
            (row("0.1.0", Some(6), false, 120), 4),
        ];
        for (node, problems) in cases {
            let judged = judge(node, "0.2.0", Some(7), now);
            assert_eq!(judged.problems.len(), problems, "{judged:?}");
        }
    }

    #[test]
    fn the_code_puts_nodes_before_the_canary() {
        let mut status = RolloutStatus {
            complete: true,
            expect_version: "0.2.0".to_owned(),
            expect_schema: Some(7),
            database_schema: Some(7),
            nodes: Vec::new(),
            gateways: 1,
            admins: 1,
            problems: Vec::new(),
            canary: None,
        };
        assert_eq!(status.code(), exit::COMPLETE);
        status.canary = Some(CanaryStatus {
            ok: false,
            model: None,
            status: Some(401),
            error: Some("bad key".to_owned()),
            elapsed_ms: 1.0,
        });
        assert_eq!(status.code(), exit::CANARY_FAILED);
        status.problems.push("gateway gw-1: runs 0.1.0".to_owned());
        assert_eq!(status.code(), exit::INCOMPLETE);
        assert!(status.render().contains("runs 0.1.0"));
    }

    #[test]
    fn error_messages_come_from_the_openai_shape_or_the_body_start() {
        assert_eq!(
            error_message(br#"{"error":{"message":"invalid api key","type":"x"}}"#),
            "invalid api key"
        );
        assert_eq!(error_message(b"  plain text  "), "plain text");
    }

    #[test]
    fn the_canary_key_never_shows_in_debug() {
        let canary = Canary {
            gateway_url: "http://gw".to_owned(),
            key: "obk_secret".to_owned(),
            model: None,
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{canary:?}").contains("obk_secret"));
    }
}
