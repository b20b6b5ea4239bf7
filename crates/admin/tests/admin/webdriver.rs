//! Just enough of a WebDriver client for the console's browser tests:
//! Debian's `chromedriver` started on a free port, driving headless
//! `chromium`, over the W3C protocol's JSON (no WebDriver crate, so no TLS
//! stack or new dependency tree for the tests).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use http::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::request;

/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver` or `chromium`: the variable's path, else the first on
/// `PATH` (where `scripts/test` installs them).
fn binary(var: &str, name: &str) -> String {
    if let Ok(path) = std::env::var(var) {
        return path;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| {
            panic!("no {name} on PATH nor in {var}; scripts/test installs chromium and chromium-driver")
        })
}

/// A headless Chromium session; the driver is killed when this is dropped.
pub struct Browser {
    base: String,
    _driver: Child,
}

impl Browser {
    pub async fn start() -> Browser {
        let driver_path = binary("OBLETH_CHROMEDRIVER", "chromedriver");
        let chromium = binary("OBLETH_CHROMIUM", "chromium");
        let mut driver = Command::new(&driver_path)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {driver_path} ({e}); scripts/test installs chromium and chromium-driver")
            });
        let stdout = driver.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').trim().parse::<u16>().unwrap();
                }
            }
            panic!("chromedriver ended before it said its port");
        })
        .await
        .expect("chromedriver says its port");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let root = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }
        }}});
        let answer = call(Method::POST, &format!("{root}/session"), caps).await;
        let id = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        Browser {
            base: format!("{root}/session/{id}"),
            _driver: driver,
        }
    }

    async fn cmd(&self, method: Method, path: &str, body: Value) -> Value {
        call(method, &format!("{}{path}", self.base), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.cmd(Method::GET, "/url", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn source(&self) -> String {
        self.cmd(Method::GET, "/source", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The first element `css` selects, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .cmd(
                Method::POST,
                "/elements",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found.as_array()?.first()?[ELEMENT]
            .as_str()
            .map(str::to_owned)
    }

    pub async fn must_find(&self, css: &str) -> String {
        match self.find(css).await {
            Some(el) => el,
            None => panic!("no element {css} in {}", self.source().await),
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.must_find(css).await;
        self.cmd(
            Method::POST,
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Empties the input or text area `css` selects.
    pub async fn clear(&self, css: &str) {
        let el = self.must_find(css).await;
        self.cmd(Method::POST, &format!("/element/{el}/clear"), json!({}))
            .await;
    }

    pub async fn click(&self, css: &str) {
        let el = self.must_find(css).await;
        self.cmd(Method::POST, &format!("/element/{el}/click"), json!({}))
            .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let el = self.must_find(css).await;
        self.cmd(Method::GET, &format!("/element/{el}/text"), Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The browser's cookies for the current page, as WebDriver reports them.
    pub async fn cookies(&self) -> Vec<Value> {
        self.cmd(Method::GET, "/cookie", Value::Null)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The console messages logged since the last call (Chromium's log).
    pub async fn console_log(&self) -> Vec<String> {
        let log = self
            .cmd(Method::POST, "/se/log", json!({"type": "browser"}))
            .await;
        log.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a PNG of the window as `dir/name.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let b64 = self.cmd(Method::GET, "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn close(self) {
        self.cmd(Method::DELETE, "", Value::Null).await;
    }
}

/// One WebDriver command; answers its `value`, panicking on a WebDriver error.
async fn call(method: Method, url: &str, body: Value) -> Value {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let answer = request(
        method,
        url,
        &[("content-type", "application/json; charset=utf-8")],
        body,
    )
    .await;
    let json = answer.json();
    assert!(
        answer.status == 200,
        "WebDriver {url}: {} {json}",
        answer.status
    );
    json["value"].clone()
}
