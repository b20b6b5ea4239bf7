//! Usage records: requests put one record each into a bounded channel; one
//! writer task batches them into PostgreSQL, keeps a bounded buffer while the
//! database is away, and flushes everything it can at shutdown. A record that
//! cannot be kept is counted in `obleth_usage_dropped_total` and logged.
//!
//! A record does not wake the writer: the writer empties the channel on its
//! flush timer, and a request wakes it only when the channel holds enough to
//! complete a batch, so at a steady rate it wakes a few times a flush
//! interval rather than once a request.
//!
//! Intake never waits on the database: at most one write is in flight, as a
//! future polled in the same `select!` as the timer, so records keep moving
//! from the channel into the buffer while a write runs or backs off.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use obleth_config::db::nodes::{UsageDropped, USAGE_DROP_REASONS};
use obleth_config::model::UsageEvent;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
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
    wake: Arc<Wake>,
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
    /// Only a record that leaves a batch waiting in the channel wakes the
    /// writer; the rest wait for its flush timer.
    pub fn record(&self, event: UsageEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {
                self.metrics.usage_queue_depth.inc();
                // Two atomic loads; `notify_one` only when a batch waits, and
                // then it wakes the writer once however many callers see it.
                let depth = self.tx.max_capacity() - self.tx.capacity();
                if depth >= self.wake.at_depth.load(Ordering::Relaxed) {
                    self.wake.batch_waiting.notify_one();
                }
            }
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
    let wake = Arc::new(Wake {
        batch_waiting: Notify::new(),
        at_depth: AtomicUsize::new(wake_at_depth(settings, 0)),
    });
    let sink = UsageSink {
        tx,
        wake: wake.clone(),
        no_database: pool
            .is_none()
            .then(|| metrics.usage_dropped.with_label_values(&["no_database"])),
        metrics: metrics.clone(),
    };
    let interval = Duration::from_millis(settings.flush_interval_ms);
    let writer = Writer {
        pool,
        rx,
        wake,
        buffer: VecDeque::new(),
        in_flight: 0,
        settings: settings.clone(),
        metrics,
        interval,
        backoff: interval,
        retry_at: Instant::now(),
        due_at: None,
        last_take: Instant::now(),
        taken: 0,
        drop_log: RateLimitedLog::new(DROP_LOG_EVERY),
    };
    let handle = tokio::spawn(writer.run(stop, final_flush));
    (sink, handle)
}

/// How requests wake the writer before its flush tick.
#[derive(Debug)]
struct Wake {
    batch_waiting: Notify,
    /// The channel depth at which a request wakes the writer, which the
    /// writer sets after each change of its buffer.
    at_depth: AtomicUsize,
}

/// The channel depth that completes a batch with the `held` records the
/// buffer holds (a whole batch when it holds one or more already), or half
/// the channel if that is smaller, so a small channel is emptied before it
/// fills and refuses records.
fn wake_at_depth(settings: &UsageSettings, held: usize) -> usize {
    let batch = settings.batch_size;
    let missing = if held < batch { batch - held } else { batch };
    missing.min(settings.queue_capacity / 2).max(1)
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
    wake: Arc<Wake>,
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
    /// When the oldest buffered record has waited at most
    /// `flush_interval_ms`: one interval after the channel was last emptied
    /// before the record was taken (it was sent after that).
    due_at: Option<Instant>,
    /// When the channel was last emptied.
    last_take: Instant,
    /// Records taken from the channel over the writer's life.
    taken: u64,
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
        // The first tick one interval from now: a tick at start would find
        // nothing.
        let mut tick = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Times the loop woke, logged at stop beside the records taken: the
        // writer's cost to the runtime.
        let mut wakeups: u64 = 0;
        loop {
            if write.is_none() && self.ready(Instant::now()) {
                write = self.start_write();
            }
            let wake = self.wake_at(write.is_some());
            tokio::select! {
                _ = stop.cancelled() => break,
                // A tick's deadline, not the time it ran: records sent since
                // then are taken now, so they count as waiting from it.
                at = tick.tick() => {
                    if !self.take_queued(at) {
                        break;
                    }
                }
                _ = self.wake.batch_waiting.notified() => {
                    if !self.take_queued(Instant::now()) {
                        break;
                    }
                }
                outcome = written(&mut write) => {
                    write = None;
                    self.finished(outcome);
                }
                _ = tokio::time::sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {}
            }
            wakeups += 1;
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
        info!(wakeups, records = self.taken, "Usage writer stopped.");
    }

    /// Moves what is queued in the channel into the buffer, at most a full
    /// channel's worth (so requests that keep sending cannot hold the task);
    /// answers false once the channel is closed and empty (every sender
    /// dropped). `at` is no later than the first `try_recv`.
    fn take_queued(&mut self, at: Instant) -> bool {
        let mut open = true;
        for _ in 0..self.settings.queue_capacity {
            match self.rx.try_recv() {
                Ok(event) => self.take(event),
                Err(mpsc::error::TryRecvError::Empty) => {
                    self.last_take = at;
                    break;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        self.set_wake_depth();
        open
    }

    /// Moves a record from the channel into the buffer. Past `buffer_max`
    /// (buffer and the write under way together) the oldest buffered record
    /// is dropped, counted.
    fn take(&mut self, event: UsageEvent) {
        self.taken += 1;
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
                // Sent after the channel was last emptied.
                self.due_at = Some(self.last_take + self.interval);
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

    fn set_wake_depth(&self) {
        let depth = wake_at_depth(&self.settings, self.buffer.len());
        self.wake.at_depth.store(depth, Ordering::Relaxed);
    }

    fn set_buffered_gauge(&self) {
        let held = self.buffer.len() + self.in_flight;
        self.metrics
            .usage_buffered
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// A write may start: records wait, any back-off has passed, and either a
    /// batch is full or the oldest record is due.
    fn ready(&self, now: Instant) -> bool {
        !self.buffer.is_empty()
            && now >= self.retry_at
            && (self.buffer.len() >= self.settings.batch_size
                || self.due_at.is_some_and(|due| now >= due))
    }

    /// When the loop must wake to start a write, if neither the tick nor a
    /// request wakes it first.
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
        self.set_wake_depth();
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
        self.set_wake_depth();
        ok
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> UsageEvent {
        UsageEvent {
            request_id: uuid::Uuid::new_v4(),
            key_id: None,
            model: "m".to_owned(),
            provider: None,
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            status: 200,
            latency_ms: 1,
            streamed: false,
            node_id: None,
            created_at: chrono::Utc::now(),
            cost_micros: None,
            estimated: false,
            team_id: None,
        }
    }

    /// A writer with no database: it takes records from the channel (the
    /// queue depth gauge falls) and counts them dropped, which shows when it
    /// ran without a database to wait for.
    fn writer(settings: &UsageSettings) -> (UsageSink, Metrics, CancellationToken, JoinHandle<()>) {
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let (sink, task) = start(
            None,
            settings,
            metrics.clone(),
            stop.clone(),
            Duration::from_secs(1),
        );
        (sink, metrics, stop, task)
    }

    /// Lets the writer (on this test's single-threaded runtime) run
    /// whatever it was woken for.
    async fn let_run() {
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
    }

    /// A flush interval no test waits out.
    fn settings() -> UsageSettings {
        UsageSettings {
            batch_size: 5,
            flush_interval_ms: 3_600_000,
            ..UsageSettings::default()
        }
    }

    #[test]
    fn the_wake_depth_completes_a_batch_with_what_the_buffer_holds() {
        let check = |queue_capacity: usize, held: usize, expected: usize| {
            let settings = UsageSettings {
                queue_capacity,
                ..settings()
            };
            assert_eq!(wake_at_depth(&settings, held), expected, "held {held}");
        };
        check(1_000, 0, 5);
        check(1_000, 3, 2);
        check(1_000, 4, 1);
        check(1_000, 5, 5);
        check(1_000, 9, 5);
        check(4, 0, 2);
        check(1, 0, 1);
    }

    #[tokio::test]
    async fn a_record_does_not_wake_the_writer_a_full_batch_does() {
        let (sink, metrics, stop, task) = writer(&settings());
        let_run().await;

        for _ in 0..4 {
            sink.record(event());
            let_run().await;
        }
        assert_eq!(
            metrics.usage_queue_depth.get(),
            4,
            "less than a batch waits"
        );

        sink.record(event());
        let_run().await;
        assert_eq!(
            metrics.usage_queue_depth.get(),
            0,
            "a batch is taken at once"
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_record_is_taken_at_the_flush_tick() {
        let settings = UsageSettings {
            flush_interval_ms: 20,
            ..settings()
        };
        let (sink, metrics, stop, task) = writer(&settings);

        sink.record(event());
        let deadline = Instant::now() + Duration::from_secs(30);
        while metrics.usage_queue_depth.get() > 0 {
            assert!(Instant::now() < deadline, "the record was never taken");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            metrics
                .usage_dropped
                .with_label_values(&["no_database"])
                .get(),
            1
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_small_channel_wakes_the_writer_when_half_full() {
        let settings = UsageSettings {
            queue_capacity: 4,
            ..settings()
        };
        let (sink, metrics, stop, task) = writer(&settings);
        let_run().await;

        sink.record(event());
        let_run().await;
        assert_eq!(metrics.usage_queue_depth.get(), 1);
        sink.record(event());
        let_run().await;
        assert_eq!(metrics.usage_queue_depth.get(), 0);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn records_queued_at_stop_are_taken_and_later_ones_refused_and_counted() {
        let (sink, metrics, stop, task) = writer(&settings());
        let_run().await;
        for _ in 0..3 {
            sink.record(event());
        }

        stop.cancel();
        task.await.unwrap();
        sink.record(event());

        assert_eq!(metrics.usage_queue_depth.get(), 0);
        let dropped = |reason: &str| metrics.usage_dropped.with_label_values(&[reason]).get();
        assert_eq!(dropped("no_database"), 3, "taken by the writer");
        assert_eq!(dropped("shutdown"), 1, "refused after the stop");
    }
}
