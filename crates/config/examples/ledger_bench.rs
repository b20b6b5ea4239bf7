//! The client of `bench/ledger`: times `obleth_config::db::usage`'s real functions on a loaded database and prints one JSON object.
//!
//! ```text
//! ledger_bench URL totals KEY_UUID [RUNS]    admin totals (one key, 30 days; all keys, one day)
//! ledger_bench URL list KEY_UUID [RUNS]      the raw records of one key over a day, a page of 100
//! ledger_bench URL budget SUBJECTS [RUNS]    periods_totals for SUBJECTS subjects, and for 1
//! ledger_bench URL write WRITERS BATCH SECS [beside|after]
//!                                            insert_usage from WRITERS tasks, BATCH rows each call,
//!                                            with the rollup fold every second as a gateway runs it
//!                                            (beside), or only once they stop (after)
//! ledger_bench URL fold                      fold the whole rollup queue, timed
//! ```
//!
//! Keys and teams come from the bench's `bench_keys` table (`k`, `key_id`,
//! `team_id`), which `bench/harness/ledger.py` creates; the writer picks keys
//! with the same skew as the SQL load. With `OBLETH_BENCH_EXPLAIN=1` every
//! connection loads `auto_explain`, so the server log holds the plan of every
//! statement, with its real SQL and timings. Not part of CI.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use obleth_config::db::fold;
use obleth_config::db::usage::{self, UsageFilter, UsageGroup};
use obleth_config::model::{BudgetPeriod, UsageEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use uuid::Uuid;

type Failure = Box<dyn std::error::Error + Send + Sync>;

const MODELS: [&str; 8] = [
    "gpt-4o-mini",
    "gpt-4o",
    "o3-mini",
    "claude-3-5-haiku",
    "claude-sonnet-4",
    "gemini-2.0-flash",
    "llama-3.3-70b",
    "mistral-large",
];
const PROVIDERS: [&str; 3] = ["openai", "anthropic", "google"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let num = |i: usize, default: u64| -> Result<u64, Failure> {
        Ok(arg(i).map(str::parse).transpose()?.unwrap_or(default))
    };
    let (Some(url), Some(command)) = (arg(0), arg(1)) else {
        return Err("usage: ledger_bench URL totals|list|budget|write ...".into());
    };
    // The writers, and one connection for the fold a gateway runs beside them.
    let connections = if command == "write" {
        num(2, 4)? + 1
    } else {
        1
    };
    let pool = connect(url, connections as u32).await?;
    let out = match command {
        "totals" => {
            totals(
                &pool,
                arg(2).ok_or("totals needs a key")?.parse()?,
                num(3, 20)?,
            )
            .await?
        }
        "list" => {
            list(
                &pool,
                arg(2).ok_or("list needs a key")?.parse()?,
                num(3, 20)?,
            )
            .await?
        }
        "budget" => budget(&pool, num(2, 1000)? as usize, num(3, 20)?).await?,
        "write" => {
            let beside = match arg(5).unwrap_or("beside") {
                "beside" => true,
                "after" => false,
                other => return Err(format!("fold must be beside or after, not {other}").into()),
            };
            write(
                &pool,
                num(2, 4)?,
                num(3, 500)? as usize,
                num(4, 30)?,
                beside,
            )
            .await?
        }
        "fold" => {
            let t = Instant::now();
            let folded = fold::fold_all(&pool).await?;
            json!({"folded": folded, "ms": t.elapsed().as_secs_f64() * 1000.0})
        }
        other => return Err(format!("unknown command {other}").into()),
    };
    println!("{out}");
    Ok(())
}

async fn connect(url: &str, connections: u32) -> Result<PgPool, Failure> {
    let explain = std::env::var("OBLETH_BENCH_EXPLAIN").is_ok_and(|v| v == "1");
    Ok(PgPoolOptions::new()
        .max_connections(connections)
        .min_connections(connections)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if explain {
                    conn.execute(
                        "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
                         SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on; \
                         SET auto_explain.log_timing = on",
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

/// Median and 95th percentile, in milliseconds, of `runs` calls of `call`
/// (after one untimed call that warms the connection and its caches).
async fn time<F, Fut, T>(runs: u64, mut call: F) -> Result<(Value, T), Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut last = call().await?;
    let mut ms = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        last = call().await?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let at = ((ms.len() as f64 - 1.0) * q).round() as usize;
        ms.get(at).copied().unwrap_or(f64::NAN)
    };
    Ok((
        json!({"median_ms": pick(0.5), "p95_ms": pick(0.95), "max_ms": pick(1.0), "runs": runs}),
        last,
    ))
}

fn floor_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp().div_euclid(3600) * 3600, 0).unwrap_or(at)
}

fn filter(from: DateTime<Utc>, to: DateTime<Utc>, key_id: Option<Uuid>) -> UsageFilter {
    UsageFilter {
        from,
        to,
        key_id,
        model: None,
        provider: None,
        team_id: None,
    }
}

/// The admin's totals: one key over 30 days by model, all keys over a day by
/// key (the admin's default) and by model; each for yesterday (a UTC day,
/// what a daily report asks), the last 24 whole hours, and now-24h..now.
async fn totals(pool: &PgPool, key: Uuid, runs: u64) -> Result<Value, Failure> {
    let now = Utc::now();
    let hour = floor_hour(now);
    let day = chrono::Duration::hours(24);
    let month = chrono::Duration::days(30);
    let today = DateTime::from_timestamp(now.timestamp().div_euclid(86_400) * 86_400, 0)
        .ok_or("today out of range")?;
    let cases = [
        (
            "one key, 30 days, by model, yesterday and the 29 days before",
            today - month,
            today,
            Some(key),
            UsageGroup::Model,
        ),
        (
            "all keys, 1 day, by key, yesterday (a UTC day)",
            today - day,
            today,
            None,
            UsageGroup::Key,
        ),
        (
            "all keys, 1 day, by model, yesterday (a UTC day)",
            today - day,
            today,
            None,
            UsageGroup::Model,
        ),
        (
            "one key, 30 days, by model, aligned",
            hour - month,
            hour,
            Some(key),
            UsageGroup::Model,
        ),
        (
            "one key, 30 days, by model, now-30d..now",
            now - month,
            now,
            Some(key),
            UsageGroup::Model,
        ),
        (
            "all keys, 1 day, by key, aligned",
            hour - day,
            hour,
            None,
            UsageGroup::Key,
        ),
        (
            "all keys, 1 day, by key, now-24h..now",
            now - day,
            now,
            None,
            UsageGroup::Key,
        ),
        (
            "all keys, 1 day, by model, aligned",
            hour - day,
            hour,
            None,
            UsageGroup::Model,
        ),
        (
            "all keys, 1 day, by model, now-24h..now",
            now - day,
            now,
            None,
            UsageGroup::Model,
        ),
    ];
    let mut results = Vec::new();
    for (name, from, to, key_id, group) in cases {
        let f = filter(from, to, key_id);
        let (timing, rows) = time(runs, || usage::usage_totals(pool, group, &f)).await?;
        let requests: i64 = rows.iter().map(|r| r.requests).sum();
        results.push(json!({"case": name, "timing": timing, "groups": rows.len(),
                            "requests": requests}));
    }
    Ok(json!({"totals": results}))
}

/// The raw records of one key over the last day, the admin's first page (100).
async fn list(pool: &PgPool, key: Uuid, runs: u64) -> Result<Value, Failure> {
    let now = Utc::now();
    let f = filter(now - chrono::Duration::hours(24), now, Some(key));
    let (timing, rows) = time(runs, || usage::list_usage(pool, &f, None, 100)).await?;
    let after = rows.last().map(|r| r.id);
    let (next, _) = time(runs, || usage::list_usage(pool, &f, after, 100)).await?;
    Ok(json!({"first_page": timing, "second_page": next, "rows": rows.len()}))
}

/// The budget refresh read: `periods_totals` for `n` subjects (keys and
/// teams, every period kind) in one call, and for one subject.
async fn budget(pool: &PgPool, n: usize, runs: u64) -> Result<Value, Failure> {
    let keys = bench_keys(pool).await?;
    let periods = [
        BudgetPeriod::Day,
        BudgetPeriod::Week,
        BudgetPeriod::Month,
        BudgetPeriod::Total,
    ];
    let subjects: Vec<(Uuid, BudgetPeriod)> = (0..n)
        .map(|i| {
            let (key, team) = keys[i % keys.len()];
            let id = if i % 10 == 9 {
                team.unwrap_or(key)
            } else {
                key
            };
            (id, periods[i % periods.len()])
        })
        .collect();
    let now = Utc::now();
    let (many, rows) = time(runs, || usage::periods_totals(pool, &subjects, now)).await?;
    let found = rows.iter().filter(|t| t.requests > 0).count();
    let one = &subjects[..1];
    let (single, _) = time(runs, || usage::periods_totals(pool, one, now)).await?;
    Ok(json!({"subjects": n, "many": many, "with_usage": found, "one": single}))
}

/// The bench's keys, `k` order, with their teams.
async fn bench_keys(pool: &PgPool) -> Result<Vec<(Uuid, Option<Uuid>)>, Failure> {
    let keys: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT key_id, team_id FROM bench_keys ORDER BY k")
            .fetch_all(pool)
            .await?;
    if keys.is_empty() {
        return Err("bench_keys is empty".into());
    }
    Ok(keys)
}

/// `writers` tasks, each calling `insert_usage` with `batch` new records
/// (created now, keys skewed like the load) until `secs` have passed, while
/// one task folds the rollup queue every second (as each gateway does) when
/// `beside`; then the rest of the queue is folded, timed.
async fn write(
    pool: &PgPool,
    writers: u64,
    batch: usize,
    secs: u64,
    beside: bool,
) -> Result<Value, Failure> {
    let keys = Arc::new(bench_keys(pool).await?);
    let stop = Arc::new(AtomicBool::new(false));
    let rows = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let folder = {
        let (pool, stop) = (pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut folds, mut folded, mut ms) = (0u64, 0u64, Vec::new());
            while beside && !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = Instant::now();
                folded += fold::fold_all(&pool).await?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                folds += 1;
                // As the gateway's fold loop does (`fold::VACUUM_EVERY`).
                if folds % 10 == 0 {
                    fold::vacuum_queue(&pool).await?;
                }
            }
            Ok::<_, sqlx::Error>((folds, folded, ms))
        })
    };
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (pool, keys, stop, rows) = (pool.clone(), keys.clone(), stop.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(w);
            let mut calls = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let events: Vec<UsageEvent> =
                    (0..batch).map(|_| event(&mut rng, &keys, w)).collect();
                let t = Instant::now();
                let n = usage::insert_usage(&pool, &events).await?;
                calls.push(t.elapsed().as_secs_f64() * 1000.0);
                rows.fetch_add(n, Ordering::Relaxed);
            }
            Ok::<_, sqlx::Error>(calls)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = Vec::new();
    for task in tasks {
        calls.extend(task.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (folds, folded, mut fold_ms) = folder.await??;
    fold_ms.sort_by(f64::total_cmp);
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_rollup_queue")
        .fetch_one(pool)
        .await?;
    let t = Instant::now();
    let drained = fold::fold_all(pool).await?;
    let drain_ms = t.elapsed().as_secs_f64() * 1000.0;
    calls.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let at = ((calls.len() as f64 - 1.0) * q).round() as usize;
        calls.get(at).copied().unwrap_or(f64::NAN)
    };
    let total = rows.load(Ordering::Relaxed);
    Ok(json!({
        "writers": writers, "batch": batch, "fold": if beside { "beside" } else { "after" },
        "secs": elapsed, "rows": total,
        "rows_per_sec": total as f64 / elapsed, "calls": calls.len(),
        "call_median_ms": pick(0.5), "call_p95_ms": pick(0.95), "call_max_ms": pick(1.0),
        "folds": folds, "folded_groups": folded,
        "fold_median_ms": fold_ms.get(fold_ms.len() / 2).copied().unwrap_or(f64::NAN),
        "fold_max_ms": fold_ms.last().copied().unwrap_or(f64::NAN),
        "queued_at_end": queued, "drained_groups": drained, "drain_ms": drain_ms,
    }))
}

/// One record like the SQL load's: key `floor(10000 * r^3)` (a few keys
/// carry most traffic), mostly the key's own model, mostly 200.
fn event(rng: &mut StdRng, keys: &[(Uuid, Option<Uuid>)], writer: u64) -> UsageEvent {
    let k = ((keys.len() as f64) * rng.random::<f64>().powi(3)) as usize % keys.len();
    let (key_id, team_id) = keys[k];
    let m = if rng.random::<f64>() < 0.85 {
        k % MODELS.len()
    } else {
        rng.random_range(0..MODELS.len())
    };
    let r: f64 = rng.random();
    let status: i16 = match r {
        r if r < 0.97 => 200,
        r if r < 0.985 => 429,
        r if r < 0.99 => 400,
        r if r < 0.995 => 500,
        _ => 502,
    };
    let ok = status == 200;
    let prompt = ok.then(|| rng.random_range(50..2050));
    let completion = ok.then(|| rng.random_range(0..800));
    let total = prompt.zip(completion).map(|(p, c)| p + c);
    UsageEvent {
        request_id: Uuid::new_v4(),
        key_id: Some(key_id),
        model: MODELS[m].to_string(),
        provider: Some(PROVIDERS[m % PROVIDERS.len()].to_string()),
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: total,
        status,
        latency_ms: rng.random_range(100..3100),
        streamed: rng.random::<f64>() < 0.4,
        node_id: Some(format!("bench-{writer}")),
        created_at: Utc::now(),
        cost_micros: (m < 6).then(|| i64::from(total.unwrap_or(0)) * (m as i64 + 1)),
        estimated: rng.random::<f64>() < 0.02,
        team_id,
    }
}
