//! Real clients through the gateway: every client script of `tests/sdk/`
//! (`*_client.py`, each driving an official Python SDK) run against a real
//! `obleth-gateway` process in embedded mode, whose seven routes reach one
//! provider of each kind: `openai`, `anthropic`, `azure` (deployment
//! `sdk-azure`), `gemini`, `vertex` and `bedrock` (SigV4-signed with AWS
//! credentials from a file; an Anthropic model id, so `/v1/messages` goes
//! to InvokeModel and chat completions to Converse) at the testkit's mock
//! upstream over loopback HTTP, and the built-in `mock`.
//!
//! The SDKs live in the venv `tests/sdk/setup-venv` makes: `scripts/test`
//! calls it and exports `OBLETH_SDK_PYTHON`; run alone, this test calls it
//! itself, and fails (never skips) when it cannot. It needs the gateway
//! binary built: `cargo build -p obleth-gateway` first when run alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use obleth_e2e::evidence;
use obleth_e2e::procs::GatewayProc;
use obleth_testkit::mock::{
    AzureMock, BedrockMock, GeminiMock, MockConfig, MockUpstream, MockUsage, ANTHROPIC_API_KEY,
    AZURE_API_KEY, BEDROCK_ACCESS_KEY_ID, BEDROCK_SECRET_ACCESS_KEY, GEMINI_API_KEY,
    VERTEX_ACCESS_TOKEN,
};
use obleth_testkit::proc::{bin, command};
use secrecy::ExposeSecret as _;

/// The routes, one a provider kind: (kind, the model clients send).
const ROUTES: [(&str, &str); 7] = [
    ("openai", "sdk-openai"),
    ("anthropic", "sdk-anthropic"),
    ("azure", "sdk-azure"),
    ("gemini", "sdk-gemini"),
    ("vertex", "sdk-vertex"),
    ("bedrock", "anthropic.sdk-bedrock-v1:0"),
    ("mock", "sdk-mock"),
];

/// The variable naming the venv's python.
const PYTHON_VAR: &str = "OBLETH_SDK_PYTHON";

/// How long one client script may run; they take seconds.
const SCRIPT_LIMIT: Duration = Duration::from_secs(300);

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk")
}

/// The venv's python: `OBLETH_SDK_PYTHON`, else what `setup-venv` makes.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os(PYTHON_VAR) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{PYTHON_VAR}={} is not a file; unset it to let tests/sdk/setup-venv make the venv",
            path.display()
        );
        return path;
    }
    let setup = sdk_dir().join("setup-venv");
    let out = std::process::Command::new(&setup)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{PYTHON_VAR} is unset and {} cannot run: {e}",
                setup.display()
            )
        });
    assert!(
        out.status.success(),
        "{PYTHON_VAR} is unset and {} failed ({}): the SDK tests need python3 with venv and PyPI",
        setup.display(),
        out.status
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        path.is_file(),
        "setup-venv printed {}, not a file",
        path.display()
    );
    path
}

/// The client scripts: every `tests/sdk/*_client.py`, sorted.
fn scripts() -> Vec<PathBuf> {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(sdk_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("_client.py"))
        })
        .collect();
    scripts.sort();
    assert!(
        !scripts.is_empty(),
        "no *_client.py in {}",
        sdk_dir().display()
    );
    scripts
}

/// The embedded settings: a provider and a route for each kind, the key, and
/// the egress policy that lets the providers reach the loopback mock and read
/// the Anthropic and Azure credential files from `dir`.
fn settings(dir: &Path, base_url: &str, public_id: &str, secret_sha256: &str) -> String {
    let credentials = dir.join("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("anthropic"), ANTHROPIC_API_KEY).unwrap();
    std::fs::write(credentials.join("azure"), AZURE_API_KEY).unwrap();
    std::fs::write(credentials.join("gemini"), GEMINI_API_KEY).unwrap();
    std::fs::write(credentials.join("vertex"), VERTEX_ACCESS_TOKEN).unwrap();
    std::fs::write(
        credentials.join("bedrock"),
        format!("[default]\naws_access_key_id = {BEDROCK_ACCESS_KEY_ID}\naws_secret_access_key = {BEDROCK_SECRET_ACCESS_KEY}\n"),
    )
    .unwrap();
    let root = base_url.trim_end_matches("/v1");
    let mut text = format!(
        "[egress]\ncredential_dirs = [{credentials:?}]\nallow_private_networks = true\n\n\
         [[providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = {base_url:?}\ntimeout_ms = 30000\n\n\
         [[providers]]\nname = \"anthropic\"\nkind = \"anthropic\"\nbase_url = {base_url:?}\n\
         credential = \"file:{}\"\ntimeout_ms = 30000\n\n\
         [[providers]]\nname = \"azure\"\nkind = \"azure\"\nbase_url = {root:?}\n\
         credential = \"file:{}\"\ntimeout_ms = 30000\n\n\
         [[providers]]\nname = \"gemini\"\nkind = \"gemini\"\nbase_url = \"{root}/v1beta\"\n\
         credential = \"file:{}\"\ntimeout_ms = 30000\n\n\
         [[providers]]\nname = \"vertex\"\nkind = \"vertex\"\nbase_url = {base_url:?}\n\
         credential = \"file:{}\"\ntimeout_ms = 30000\n\
         options = {{ project = \"mock-project\", location = \"us-central1\" }}\n\n\
         [[providers]]\nname = \"bedrock\"\nkind = \"bedrock\"\nbase_url = {root:?}\n\
         credential = \"file:{}\"\ntimeout_ms = 30000\n\
         options = {{ region = \"us-east-1\" }}\n\n\
         [[providers]]\nname = \"mock\"\nkind = \"mock\"\nmock = {{ tokens = 12 }}\n\n",
        credentials.join("anthropic").display(),
        credentials.join("azure").display(),
        credentials.join("gemini").display(),
        credentials.join("vertex").display(),
        credentials.join("bedrock").display()
    );
    for (kind, model) in ROUTES {
        text.push_str(&format!(
            "[[routes]]\nmodel = {model:?}\ntargets = [{{ provider = {kind:?} }}]\n\n"
        ));
    }
    text.push_str(&format!(
        "[[keys]]\nname = \"sdk\"\npublic_id = {public_id:?}\nsecret_sha256 = {secret_sha256:?}\n"
    ));
    text
}

#[tokio::test]
async fn official_sdks_through_the_gateway_to_every_provider_kind() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start(MockConfig {
        completion_tokens: 12,
        usage: MockUsage::WhenAsked,
        azure: AzureMock {
            deployments: vec!["sdk-azure".to_owned()],
            ..AzureMock::default()
        },
        gemini: GeminiMock {
            models: vec!["sdk-gemini".to_owned(), "sdk-vertex".to_owned()],
            ..GeminiMock::default()
        },
        bedrock: BedrockMock {
            models: vec!["anthropic.sdk-bedrock-v1:0".to_owned()],
            ..BedrockMock::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let key = obleth_config::apikey::generate();
    let hash: String = key.secret_hash.iter().map(|b| format!("{b:02x}")).collect();
    let binary = bin("obleth-gateway");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p obleth-gateway`",
        binary.display()
    );
    let sections = settings(dir.path(), &upstream.base_url(), &key.public_id, &hash);
    let mut gateway = GatewayProc::embedded(dir.path(), "gw-sdk", binary, &sections).unwrap();
    gateway.start().unwrap();
    gateway.wait_ready(Duration::from_secs(30)).await.unwrap();
    let origin = gateway.url("");
    let routes: Vec<String> = ROUTES.iter().map(|(k, m)| format!("{k}={m}")).collect();

    let mut failed = Vec::new();
    for script in scripts() {
        let name = script.file_name().unwrap().to_string_lossy().into_owned();
        let run = command(&python)
            .arg(&script)
            .arg("--gateway")
            .arg(&origin)
            .arg("--api-key")
            .arg(key.secret.expose_secret())
            .args(&routes)
            .current_dir(sdk_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output();
        let out = tokio::time::timeout(SCRIPT_LIMIT, run)
            .await
            .unwrap_or_else(|_| panic!("{name} ran longer than {SCRIPT_LIMIT:?}"))
            .unwrap();
        evidence(String::from_utf8_lossy(&out.stdout).trim_end());
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            evidence(&format!("[{name}] stderr:\n{}", stderr.trim_end()));
        }
        if !out.status.success() {
            failed.push(format!("{name} ({})", out.status));
        }
    }

    let metrics =
        obleth_testkit::http::request(http::Method::GET, &gateway.ops_url("/metrics"), &[], "")
            .await
            .text();
    let count = |model: &str, status: &str| {
        obleth_testkit::metrics::sum(
            &metrics,
            "obleth_requests_total",
            &[("model", model), ("status", status)],
        )
    };
    let per_model: Vec<(&str, f64, f64)> = ROUTES
        .iter()
        .map(|(_, model)| {
            let all = obleth_testkit::metrics::sum(
                &metrics,
                "obleth_requests_total",
                &[("model", model)],
            );
            (*model, count(model, "200"), all)
        })
        .collect();
    let unknown = count("other", "404");
    evidence(&format!(
        "[sdk] obleth_requests_total: {} ; model other status 404: {unknown}; mock upstream saw {} requests",
        per_model
            .iter()
            .map(|(m, ok, all)| format!("{m} 200: {ok} of {all}"))
            .collect::<Vec<_>>()
            .join(", "),
        upstream.requests()
    ));
    gateway.stop().await.unwrap();

    assert!(
        failed.is_empty(),
        "client scripts failed: {}",
        failed.join(", ")
    );
    for (model, ok, all) in &per_model {
        assert!(*ok > 0.0, "no request of {model} counted: {metrics}");
        // The Responses API's refusals on kinds that do not speak it.
        let refused = count(model, "400");
        assert_eq!(
            ok + refused,
            *all,
            "{model} has requests answered other than 200 or 400"
        );
    }
    // Every script runs the same cases on every route.
    assert!(
        per_model.windows(2).all(|w| w[0].2 == w[1].2),
        "the routes' counts differ: {per_model:?}"
    );
    assert!(unknown >= 1.0, "the unknown model's 404 was not counted");
    assert!(upstream.requests() > 0, "nothing reached the mock upstream");
}
