//! Bursts for the governance scenarios: a list of requests sent as fast as a
//! few concurrent clients can send them, every answer kept whole with its
//! headers, and the checks of the two refusals, rate limit and budget.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Method;
use obleth_testkit::http::{client, request_with, Answer};

/// The chat completions path every shot posts to.
pub const CHAT: &str = "/v1/chat/completions";

/// One request of a burst: where to, with which key.
#[derive(Debug, Clone)]
pub struct Shot {
    pub url: String,
    pub key: String,
}

impl Shot {
    /// A chat completion at `base` (a proxy's `http://host:port`) with `key`.
    pub fn chat(base: &str, key: &str) -> Shot {
        Shot {
            url: format!("{base}{CHAT}"),
            key: key.to_owned(),
        }
    }
}

/// A chat completion body for model `model` with one user message, and
/// `max_tokens` when given.
pub fn chat_body(model: &str, content: &str, max_tokens: Option<u32>) -> Bytes {
    let mut body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
    });
    if let Some(n) = max_tokens {
        body["max_tokens"] = n.into();
    }
    Bytes::from(body.to_string())
}

/// Sends one shot with `body` on `client` and reads the answer whole.
pub async fn fire(client: &obleth_testkit::http::HttpClient, shot: &Shot, body: Bytes) -> Answer {
    let bearer = format!("Bearer {}", shot.key);
    request_with(
        client,
        Method::POST,
        &shot.url,
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

/// Sends every shot with `body` through `clients` concurrent clients, each on
/// its own kept-alive connections and sending as soon as its previous answer
/// arrived; answers in the order of `shots`.
pub async fn burst(shots: Vec<Shot>, body: Bytes, clients: usize) -> Vec<Answer> {
    let shots = Arc::new(shots);
    let next = Arc::new(AtomicUsize::new(0));
    let answers: Arc<Mutex<Vec<Option<Answer>>>> =
        Arc::new(Mutex::new((0..shots.len()).map(|_| None).collect()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (shots, next, answers, body) = (
            Arc::clone(&shots),
            Arc::clone(&next),
            Arc::clone(&answers),
            body.clone(),
        );
        workers.spawn(async move {
            let client = client();
            loop {
                let i = next.fetch_add(1, Ordering::AcqRel);
                let Some(shot) = shots.get(i) else { break };
                let answer = fire(&client, shot, body.clone()).await;
                answers.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(answer);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        if let Err(e) = done {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap_or_else(|e| e.into_inner()));
    answers.into_iter().flatten().collect()
}

/// How a burst was answered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// 200s.
    pub admitted: usize,
    /// 429s.
    pub refused: usize,
    /// Anything else, by status and error code.
    pub other: BTreeMap<String, usize>,
}

impl Tally {
    pub fn of(answers: &[Answer]) -> Tally {
        let mut t = Tally::default();
        for a in answers {
            match a.status {
                200 => t.admitted += 1,
                429 => t.refused += 1,
                s => *t.other.entry(format!("{s} {}", code(a))).or_default() += 1,
            }
        }
        t
    }
}

/// `error.code` of an OpenAI error body, or empty.
pub fn code(a: &Answer) -> String {
    serde_json::from_slice::<serde_json::Value>(&a.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What is wrong with `a` as a refusal by the requests-per-minute limit;
/// empty when nothing is: status 429, OpenAI's error body with code
/// `rate_limit_exceeded`, `retry-after` in whole seconds (at most a minute),
/// and `x-ratelimit-limit-requests` (equal to `limit` when given),
/// `x-ratelimit-remaining-requests` (a number) and `x-ratelimit-reset-requests`.
pub fn rate_limit_problems(a: &Answer, limit: Option<u32>) -> Vec<String> {
    let mut problems = Vec::new();
    if a.status != 429 {
        problems.push(format!("status {} (want 429): {}", a.status, a.text()));
        return problems;
    }
    if let Some(p) = openai_error_problem(a, "rate_limit_exceeded") {
        problems.push(p);
    }
    match a.header("retry-after").map(str::parse::<u64>) {
        Some(Ok(secs)) if secs <= 60 => {}
        other => problems.push(format!(
            "retry-after {other:?} is not whole seconds within a minute"
        )),
    }
    match a
        .header("x-ratelimit-limit-requests")
        .map(str::parse::<u32>)
    {
        Some(Ok(n)) if limit.is_none_or(|l| l == n) => {}
        other => problems.push(format!(
            "x-ratelimit-limit-requests {other:?}, want {limit:?}"
        )),
    }
    if !matches!(
        a.header("x-ratelimit-remaining-requests")
            .map(str::parse::<i64>),
        Some(Ok(_))
    ) {
        problems.push(format!(
            "x-ratelimit-remaining-requests {:?} is not a number",
            a.header("x-ratelimit-remaining-requests")
        ));
    }
    if a.header("x-ratelimit-reset-requests")
        .is_none_or(str::is_empty)
    {
        problems.push("no x-ratelimit-reset-requests".to_owned());
    }
    problems
}

/// What is wrong with `a` as a refusal by a spend budget; empty when
/// nothing is: status 429 and OpenAI's error body with code `budget_exceeded`.
pub fn budget_problems(a: &Answer) -> Vec<String> {
    if a.status != 429 {
        return vec![format!("status {} (want 429): {}", a.status, a.text())];
    }
    openai_error_problem(a, "budget_exceeded")
        .into_iter()
        .collect()
}

/// OpenAI's error shape with `code`, or what is wrong with it.
fn openai_error_problem(a: &Answer, want: &str) -> Option<String> {
    let v: serde_json::Value = match serde_json::from_slice(&a.body) {
        Ok(v) => v,
        Err(_) => return Some(format!("body is not JSON: {}", a.text())),
    };
    let e = &v["error"];
    let shaped = e["message"].is_string() && e["type"].is_string() && e.get("param").is_some();
    if !shaped || e["code"] != want {
        return Some(format!("error body {v} is not OpenAI's with code {want}"));
    }
    None
}

/// The first `n` problems of all `answers` that are not 200, by `check`,
/// for an assertion message; empty when every refusal passed.
pub fn refusal_problems(
    answers: &[Answer],
    n: usize,
    check: impl Fn(&Answer) -> Vec<String>,
) -> Vec<String> {
    answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.status != 200)
        .flat_map(|(i, a)| {
            check(a)
                .into_iter()
                .map(move |p| format!("answer {i}: {p}"))
        })
        .take(n)
        .collect()
}
