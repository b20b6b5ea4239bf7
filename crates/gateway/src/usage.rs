//! Usage records: requests put one record each into a bounded channel; one
//! writer task batches them into PostgreSQL, keeps a bounded buffer while the
//! database is away, and flushes everything it can at shutdown. A record that
//! cannot be kept is counted in `obleth_usage_dropped_total` and logged.

use std::collections::VecDeque;
use std::time::Duration;

use obleth_config::model::UsageEvent;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::settings::UsageSettings;

/// The sending side, cloned into every request.
#[derive(Debug, Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageEvent>,
    metrics: Metrics,
}

impl UsageSink {
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
        metrics: metrics.clone(),
    };
    let writer = Writer {
        pool,
        rx,
        buffer: VecDeque::new(),
        settings: settings.clone(),
        metrics,
    };
    let handle = tokio::spawn(writer.run(stop, final_flush));
    (sink, handle)
}

struct Writer {
    pool: Option<PgPool>,
    rx: mpsc::Receiver<UsageEvent>,
    buffer: VecDeque<UsageEvent>,
    settings: UsageSettings,
    metrics: Metrics,
}

impl Writer {
    async fn run(mut self, stop: CancellationToken, final_flush: Duration) {
        let interval = Duration::from_millis(self.settings.flush_interval_ms);
        let mut backoff = interval;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                received = self.rx.recv() => match received {
                    Some(event) => self.take(event),
                    None => break,
                },
                _ = tokio::time::sleep(backoff), if !self.buffer.is_empty() => {}
            }
            while self.buffer.len() < self.settings.batch_size {
                match self.rx.try_recv() {
                    Ok(event) => self.take(event),
                    Err(_) => break,
                }
            }
            if self.buffer.len() >= self.settings.batch_size || self.due(interval).await {
                if self.flush().await {
                    backoff = interval;
                } else {
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Shutdown: close the channel first, so a record sent from now on is
        // refused and counted by the sender, then take everything queued.
        self.rx.close();
        while let Some(event) = self.rx.recv().await {
            self.take(event);
        }
        // The whole final flush, an insert under way included, ends within
        // `final_flush`, so the pod's grace period can be computed from it.
        let _ = tokio::time::timeout(final_flush, async {
            while !self.buffer.is_empty() {
                if !self.flush().await {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .await;
        if !self.buffer.is_empty() {
            let lost = self.buffer.len() as u64;
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

    fn take(&mut self, event: UsageEvent) {
        self.metrics.usage_queue_depth.dec();
        if self.pool.is_none() {
            self.metrics
                .usage_dropped
                .with_label_values(&["no_database"])
                .inc();
            return;
        }
        if self.buffer.len() >= self.settings.buffer_max {
            self.buffer.pop_front();
            self.metrics
                .usage_dropped
                .with_label_values(&["buffer_full"])
                .inc();
            warn!(
                buffer_max = self.settings.buffer_max,
                "Usage buffer full; oldest record dropped."
            );
        }
        self.buffer.push_back(event);
        self.metrics.usage_buffered.set(self.buffer.len() as i64);
    }

    /// Waits out the flush interval unless more records arrive to fill a batch.
    async fn due(&mut self, interval: Duration) -> bool {
        if self.buffer.is_empty() {
            return false;
        }
        let sleep = tokio::time::sleep(interval);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                received = self.rx.recv() => match received {
                    Some(event) => {
                        self.take(event);
                        if self.buffer.len() >= self.settings.batch_size {
                            return true;
                        }
                    }
                    None => return true,
                },
            }
        }
    }

    /// Writes the buffer in batches; answers whether everything was written.
    async fn flush(&mut self) -> bool {
        let Some(pool) = &self.pool else {
            return true;
        };
        while !self.buffer.is_empty() {
            let n = self.buffer.len().min(self.settings.batch_size);
            let batch: Vec<UsageEvent> = self.buffer.iter().take(n).cloned().collect();
            // A partitioned network hangs the insert instead of failing it; a
            // timed-out batch is retried, and request ids keep that idempotent.
            let insert = obleth_config::db::usage::insert_usage(pool, &batch);
            let outcome = match tokio::time::timeout(Duration::from_secs(10), insert).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("timed out after 10 s".to_owned()),
            };
            match outcome {
                Ok(_) => {
                    self.buffer.drain(..n);
                    self.metrics.usage_written.inc_by(n as u64);
                    self.metrics.usage_buffered.set(self.buffer.len() as i64);
                }
                Err(e) => {
                    warn!(error = %e, buffered = self.buffer.len(), "Usage write failed; will retry.");
                    return false;
                }
            }
        }
        true
    }
}
