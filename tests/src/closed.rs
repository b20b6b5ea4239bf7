//! A closed-loop load: a few workers per target, each sending its next
//! request once the last one was answered (after a short pause), so the load
//! follows what the targets can serve instead of piling up while they stall.
//! Every request's outcome is counted, per target and in all.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::load::{client, one, LoadSpec, Report};

/// A running closed-loop load.
#[derive(Debug)]
pub struct ClosedLoad {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    reports: Vec<Arc<Mutex<Report>>>,
}

impl ClosedLoad {
    /// Starts `workers` workers on each target (non-streamed requests),
    /// each pausing `pause` between an answer and its next request.
    pub fn start(targets: &[LoadSpec], workers: usize, pause: Duration) -> ClosedLoad {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut reports = Vec::new();
        for spec in targets {
            let report = Arc::new(Mutex::new(Report::default()));
            for _ in 0..workers {
                let (spec, report, stop) = (spec.clone(), Arc::clone(&report), stop.clone());
                tasks.spawn(async move {
                    let client = client();
                    while !stop.is_cancelled() {
                        report.lock().unwrap_or_else(|e| e.into_inner()).sent += 1;
                        let outcome = tokio::time::timeout(
                            Duration::from_secs(90),
                            one(&client, &spec, false),
                        )
                        .await
                        .unwrap_or_else(|_| Err("timeout".to_owned()));
                        {
                            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                            match outcome {
                                Ok(()) => r.succeeded += 1,
                                Err(cause) => *r.failed.entry(cause).or_default() += 1,
                            }
                        }
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                });
            }
            reports.push(report);
        }
        ClosedLoad {
            stop,
            tasks,
            reports,
        }
    }

    /// Requests answered 200 so far, on every target.
    pub fn succeeded(&self) -> u64 {
        self.reports
            .iter()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).succeeded)
            .sum()
    }

    /// Stops the workers once their requests in flight are answered, and
    /// reports per target, in the order given to `start`.
    pub async fn finish(mut self) -> Vec<Report> {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.reports
            .iter()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }
}

/// The reports of several targets added up.
pub fn total(reports: &[Report]) -> Report {
    let mut all = Report::default();
    for r in reports {
        all.sent += r.sent;
        all.succeeded += r.succeeded;
        all.streams_succeeded += r.streams_succeeded;
        for (cause, n) in &r.failed {
            *all.failed.entry(cause.clone()).or_default() += n;
        }
    }
    all
}
