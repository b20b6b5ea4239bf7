//! `docs/admin-api.md` and `docs/providers.md` as printed: every `bash`
//! block of each guide runs, in order, as one script against a running
//! admin, so the examples cannot rot.

use std::path::Path;
use std::process::Stdio;

use crate::support::*;

/// The guide's `bash` blocks, in order.
fn examples(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```bash") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block in the guide");
    blocks
}

/// Runs `script` with bash against `admin`; answers its standard output,
/// failing the test with both outputs when it fails.
async fn run(admin: &TestAdmin, script: &str) -> String {
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("ADMIN_URL", admin.url(""))
        .env("ADMIN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the guide's examples failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn the_curl_examples_of_the_admin_guide_work_as_printed() {
    for tool in ["bash", "curl", "jq"] {
        assert!(
            have(tool),
            "the guide's examples need `{tool}`; install it (scripts/test does)"
        );
    }
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/admin-api.md");
    let markdown = std::fs::read_to_string(&guide).unwrap();
    let blocks = examples(&markdown);
    assert!(blocks.len() >= 10, "only {} examples", blocks.len());
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    assert!(script.matches("curl ").count() >= 20, "{script}");

    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    let stdout = run(&admin, &script).await;
    // The outputs the guide shows beside its examples.
    for shown in [
        "\"status\": \"active\"",
        "\"validation_failed\"",
        "\"uniform\": true",
        "\"enabled\": true",
        "\"budget_period\": \"day\"",
        "\"team_in_use\"",
        "\"output_micros_per_mtok\": 550000",
    ] {
        assert!(stdout.contains(shown), "missing {shown} in:\n{stdout}");
    }
    admin.stop().await.unwrap();
}

/// The providers guide's admin examples: a provider of every kind that
/// talks to a service (and its route), as printed, accepted by the admin.
#[tokio::test]
async fn the_admin_examples_of_the_providers_guide_work_as_printed() {
    for tool in ["bash", "curl", "jq"] {
        assert!(have(tool), "the guide's examples need `{tool}`");
    }
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/providers.md");
    let markdown = std::fs::read_to_string(&guide).unwrap();
    let script = format!("set -euo pipefail\n{}", examples(&markdown).join("\n"));
    for kind in ["anthropic", "azure", "gemini", "vertex", "bedrock"] {
        assert!(
            script.contains(&format!("\"kind\": \"{kind}\"")),
            "no admin example of kind {kind} in docs/providers.md"
        );
    }

    let (admin, _db, pool) = TestAdmin::on_fresh_database().await;
    let stdout = run(&admin, &script).await;
    assert!(
        stdout.contains("https://bedrock-runtime.us-east-1.amazonaws.com"),
        "{stdout}"
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT kind FROM providers ORDER BY kind")
            .fetch_all(&pool)
            .await
            .unwrap();
    for kind in ["anthropic", "azure", "bedrock", "gemini", "vertex"] {
        assert!(kinds.iter().any(|k| k == kind), "{kinds:?}");
    }
    admin.stop().await.unwrap();
}
