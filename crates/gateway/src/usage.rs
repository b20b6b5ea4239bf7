//! Usage records: requests put one record each into a bounded channel; one
//! writer task batches them into PostgreSQL, keeps a bounded buffer while the
//! database is away, and flushes everything it can at shutdown. A record that
//! cannot be kept is counted in `obleth_usage_dropped_total` and logged.
//!
//! Intake never waits on the database: at most one write is in flight, as a
//! future polled in the same `select!` as the channel, so records keep moving
//! from the channel into the buffer while a write runs or backs off.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use obleth_config::db::nodes::{UsageDropped, USAGE_DROP_REASONS};
use obleth_config::model::UsageEvent;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::settings::UsageSettings;
use obleth_service::ratelog::RateLimitedLog;

/// Longest one INSERT may take: a partitioned network hangs a query instead of
/// failing it. A timed-out batch is retried; request ids keep that idempotent.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between two attempts while the database is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At most one "buffer full" warning in this interval, with the count since the last.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// What this process counted as dropped, by reason, for its sign-off
/// (`nodes.usage_dropped`): once the writer has stopped, the final counts.
pub fn dropped_by_reason(metrics: &Metrics) -> UsageDropped {
    USAGE_DROP_REASONS
        .iter()
        .map(|reason| {
            let count = metrics.usage_dropped.with_label_values(&[reason]).get();
            ((*reason).to_owned(), count)
        })
        .collect()
}

/// The sending side, cloned into every request.
#[derive(Debug, Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageEvent>,
    metrics: Metrics,
    /// `obleth_usage_dropped_total{reason="no_database"}` when there is no
    /// database to write to (embedded mode); `None` with a database.
    no_database: Option<prometheus::IntCounter>,
}

impl UsageSink {
    /// Queues the record `build` makes, or, with no database to write it
    /// to, counts it dropped without building it: in embedded mode a
    /// request costs no record.
    pub fn record_with(&self, build: impl FnOnce() -> UsageEvent) {
        match &self.no_database {
            Some(dropped) => dropped.inc(),
            None => self.record(build()),
        }
    }

    /// Queues a record without waiting; a full queue drops it, counted.
    pub fn record(&self, event: UsageEvent) {
        match self.tx.try_send(event) {
            Ok(()) => self.metrics.usage_queue_depth.inc(),
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.metrics
                    .usage_dropped
                    .with_label_values(&["queue_full"])
                    .inc();
                warn!(request_id = %event.request_id, "Usage queue full; record dropped.");
            }
            Err(mpsc::error::TrySendError::Closed(event)) => {
                self.metrics
                    .usage_dropped
                    .with_label_values(&["shutdown"])
                    .inc();
                warn!(request_id = %event.request_id, "Usage writer stopped; record dropped.");
            }
        }
    }
}

/// Starts the writer. It runs until `stop` is cancelled, then drains the queue,
/// flushes (retrying for at most `final_flush`) and returns.
pub fn start(
    pool: Option<PgPool>,
    settings: &UsageSettings,
    metrics: Metrics,
    stop: CancellationToken,
    final_flush: Duration,
) -> (UsageSink, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(settings.queue_capacity);
    let sink = UsageSink {
        tx,
        no_database: pool
            .is_none()
            .then(|| metrics.usage_dropped.with_label_values(&["no_database"])),
        metrics: metrics.clone(),
    };
    let interval = Duration::from_millis(settings.flush_interval_ms);
    let writer = Writer {
        pool,
        rx,
        buffer: VecDeque::new(),
        in_flight: 0,
        settings: settings.clone(),
        metrics,
        interval,
        backoff: interval,
        retry_at: Instant::now(),
        due_at: None,
        drop_log: RateLimitedLog::new(DROP_LOG_EVERY),
    };
    let handle = tokio::spawn(writer.run(stop, final_flush));
    (sink, handle)
}

/// One batch being written, and how it went. The batch comes back so that a
/// failed write can put it back at the front of the buffer.
struct Written {
    batch: Vec<UsageEvent>,
    result: Result<(), String>,
}

type Write = Pin<Box<dyn Future<Output = Written> + Send>>;

struct Writer {
    pool: Option<PgPool>,
    rx: mpsc::Receiver<UsageEvent>,
    /// Records waiting for a write, oldest first.
    buffer: VecDeque<UsageEvent>,
    /// Records in the write under way; with `buffer`, at most `buffer_max`.
    in_flight: usize,
    settings: UsageSettings,
    metrics: Metrics,
    interval: Duration,
    /// The wait after the next failed write.
    backoff: Duration,
    /// No write starts before this (after a failure).
    retry_at: Instant,
    /// When the oldest buffered record has waited `flush_interval_ms`.
    due_at: Option<Instant>,
    drop_log: RateLimitedLog,
}

/// Polls the write under way, or never resolves when there is none.
async fn written(write: &mut Option<Write>) -> Written {
    match write {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

impl Writer {
    async fn run(mut self, stop: CancellationToken, final_flush: Duration) {
        let mut write: Option<Write> = None;
        loop {
            if write.is_none() && self.ready(Instant::now()) {
                write = self.start_write();
            }
            let wake = self.wake_at(write.is_some());
            tokio::select! {
                _ = stop.cancelled() => break,
                received = self.rx.recv() => match received {
                    Some(event) => {
                        self.take(event);
                        // Take what else is queued, a batch at most, so a burst
                        // costs one pass of this loop rather than one per record.
                        for _ in 1..self.settings.batch_size {
                            match self.rx.try_recv() {
                                Ok(event) => self.take(event),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                outcome = written(&mut write) => {
                    write = None;
                    self.finished(outcome);
                }
                _ = tokio::time::sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {}
            }
        }
        // Shutdown: close the channel first, so a record sent from now on is
        // refused and counted by the sender, then take everything queued.
        self.rx.close();
        while let Some(event) = self.rx.recv().await {
            self.take(event);
        }
        // The whole final flush, a write under way included, ends within
        // `final_flush`, so the pod's grace period can be computed from it.
        let _ = tokio::time::timeout(final_flush, async {
            loop {
                if let Some(w) = write.take() {
                    let outcome = w.await;
                    if !self.finished(outcome) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                if self.buffer.is_empty() {
                    break;
                }
                write = self.start_write();
                if write.is_none() {
                    break;
                }
            }
        })
        .await;
        let lost = (self.buffer.len() + self.in_flight) as u64;
        if lost > 0 {
            self.metrics
                .usage_dropped
                .with_label_values(&["shutdown"])
                .inc_by(lost);
            error!(
                records = lost,
                "Usage records could not be written before exit."
            );
        }
        info!("Usage writer stopped.");
    }

    /// Moves a record from the channel into the buffer. Past `buffer_max`
    /// (buffer and the write under way together) the oldest buffered record
    /// is dropped, counted.
    fn take(&mut self, event: UsageEvent) {
        self.metrics.usage_queue_depth.dec();
        if self.pool.is_none() {
            self.metrics
                .usage_dropped
                .with_label_values(&["no_database"])
                .inc();
            return;
        }
        let mut event = Some(event);
        if self.buffer.len() + self.in_flight >= self.settings.buffer_max {
            // Everything held may be in the write under way (when `buffer_max`
            // equals `batch_size`); then the new record is the one dropped.
            if self.buffer.pop_front().is_none() {
                event = None;
            }
            self.metrics
                .usage_dropped
                .with_label_values(&["buffer_full"])
                .inc();
            self.log_drop();
        }
        if let Some(event) = event {
            if self.buffer.is_empty() && self.due_at.is_none() {
                self.due_at = Some(Instant::now() + self.interval);
            }
            self.buffer.push_back(event);
        }
        self.set_buffered_gauge();
    }

    fn log_drop(&mut self) {
        if let Some(dropped) = self.drop_log.hit() {
            warn!(
                buffer_max = self.settings.buffer_max,
                dropped, "Usage buffer full; oldest records dropped."
            );
        }
    }

    fn set_buffered_gauge(&self) {
        let held = self.buffer.len() + self.in_flight;
        self.metrics
            .usage_buffered
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// A write may start: records wait, any back-off has passed, and either a
    /// batch is full or the oldest record has waited the flush interval.
    fn ready(&self, now: Instant) -> bool {
        !self.buffer.is_empty()
            && now >= self.retry_at
            && (self.buffer.len() >= self.settings.batch_size
                || self.due_at.is_some_and(|due| now >= due))
    }

    /// When the loop must wake to start a write, if no record arrives first.
    fn wake_at(&self, writing: bool) -> Option<Instant> {
        if writing || self.buffer.is_empty() {
            return None;
        }
        if self.buffer.len() >= self.settings.batch_size {
            return Some(self.retry_at);
        }
        self.due_at.map(|due| due.max(self.retry_at))
    }

    /// Moves the oldest batch out of the buffer into a write.
    fn start_write(&mut self) -> Option<Write> {
        let pool = self.pool.clone()?;
        let n = self.buffer.len().min(self.settings.batch_size);
        if n == 0 {
            return None;
        }
        let batch: Vec<UsageEvent> = self.buffer.drain(..n).collect();
        self.in_flight = n;
        if self.buffer.is_empty() {
            self.due_at = None;
        }
        Some(Box::pin(async move {
            let insert = obleth_config::db::usage::insert_usage(&pool, &batch);
            let result = match tokio::time::timeout(WRITE_TIMEOUT, insert).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("timed out after {} s", WRITE_TIMEOUT.as_secs())),
            };
            Written { batch, result }
        }))
    }

    /// Books a finished write; answers whether it succeeded. A failed batch
    /// goes back to the front of the buffer and the next attempt waits out
    /// the back-off.
    fn finished(&mut self, outcome: Written) -> bool {
        self.in_flight = 0;
        let ok = match outcome.result {
            Ok(()) => {
                self.metrics
                    .usage_written
                    .inc_by(outcome.batch.len() as u64);
                self.backoff = self.interval;
                self.retry_at = Instant::now();
                true
            }
            Err(e) => {
                let n = outcome.batch.len();
                for event in outcome.batch.into_iter().rev() {
                    self.buffer.push_front(event);
                }
                self.due_at = Some(Instant::now());
                self.retry_at = Instant::now() + self.backoff;
                warn!(
                    error = %e,
                    batch = n,
                    buffered = self.buffer.len(),
                    retry_in_ms = self.backoff.as_millis() as u64,
                    "Usage write failed; will retry."
                );
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                false
            }
        };
        self.set_buffered_gauge();
        ok
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}
