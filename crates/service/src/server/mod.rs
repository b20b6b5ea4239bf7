//! Hardened HTTP/1.1 listeners, in place of `axum::serve`: an accept loop
//! with a cap on open connections, header and idle keep-alive timeouts, a
//! body timeout where asked, `ConnectInfo` on every request, `Connection:
//! close` on early refusals, and a graceful stop. HTTP/2 is not served: a
//! prior-knowledge HTTP/2 preface gets hyper's HTTP/1.1 error answer.

mod body;
mod conn;
mod limits;
mod shards;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tracing::{info, warn};

use crate::ratelog::RateLimitedLog;
pub use body::{BodyTimeout, RequestBodyLayer, RequestBodyService};
pub use limits::{fit_caps_to_fd_limit, soft_fd_limit, Cap, ConnectionLimits, FD_RESERVE};
use shards::Handoff;
pub use shards::{current_shard, serve_sharded, MAX_WORKERS};

use crate::metrics::ConnectionMetrics;
use conn::{serve_connection, ConnContext};

/// How often, at most, a warning about refused connections or failing
/// accepts is logged; each line says how many happened since the last.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The answer a connection over the cap gets before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
connection: close\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 49\r\n\
\r\n\
the server is at its connection limit; try again\n";

/// A listener to serve, with its name (the `listener` label of the
/// connection metrics: `proxy`, `ops`, `admin`) and limits.
#[derive(Debug)]
pub struct Listener {
    pub name: &'static str,
    pub listener: TcpListener,
    pub limits: ConnectionLimits,
    /// Sets `TCP_NODELAY` on accepted sockets (the gateway's proxy: SSE
    /// chunks are small, and without it each waits for the client's delayed
    /// ACK, about 40 ms per first token).
    pub nodelay: bool,
    pub metrics: ConnectionMetrics,
}

/// A server that ended although nobody stopped it: the process must drain
/// and exit non-zero. Messages name the listener (`proxy`, `ops`, `admin`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerEnded {
    /// Its task failed (`reason` says how: `its task panicked`).
    #[error("the {listener} server failed: {reason}")]
    Failed {
        listener: &'static str,
        reason: String,
    },
    #[error("the {listener} server stopped unexpectedly")]
    Stopped { listener: &'static str },
}

/// A running server: stop it accepting, wait for it, or notice it ended.
#[derive(Debug)]
pub struct ServerHandle {
    name: &'static str,
    stop: CancellationToken,
    /// Ends the server at once: [`ServerHandle::abort`] aborts `task`, and
    /// a sharded server's threads drop their connections on this token.
    kill: CancellationToken,
    /// A sharded server's threads keep their runtimes until this drops.
    _release: Option<tokio_util::sync::DropGuard>,
    task: JoinHandle<Result<(), String>>,
    ended: Option<Result<(), String>>,
}

impl ServerHandle {
    /// Stops accepting: the listening socket closes, idle connections close,
    /// and connections with a request in flight close once it is answered.
    pub fn stop_accepting(&self) {
        self.stop.cancel();
    }

    /// Waits until every connection has closed after [`Self::stop_accepting`].
    /// Cancel-safe.
    pub async fn finished(&mut self) {
        if self.ended.is_none() {
            let result = (&mut self.task).await;
            self.ended = Some(result.map_err(|e| describe(&e)).and_then(|ended| ended));
        }
    }

    /// Resolves when the server ended although nobody stopped it (a panic),
    /// saying how, with the listener's name; pending once it has ended.
    /// Cancel-safe, for `select!` beside the shutdown signal.
    pub async fn ended_unexpectedly(&mut self) -> ServerEnded {
        if self.ended.is_some() {
            return std::future::pending().await;
        }
        self.finished().await;
        let listener = self.name;
        match &self.ended {
            Some(Err(reason)) => ServerEnded::Failed {
                listener,
                reason: reason.clone(),
            },
            _ => ServerEnded::Stopped { listener },
        }
    }

    /// Ends the server and every connection at once.
    pub fn abort(&self) {
        self.kill.cancel();
        self.task.abort();
    }
}

fn describe(e: &JoinError) -> String {
    if e.is_panic() {
        "its task panicked".to_owned()
    } else {
        e.to_string()
    }
}

/// Serves `router` on `listener` until [`ServerHandle::stop_accepting`], in
/// a task of its own. Every request passes the [`RequestBodyLayer`] (with the
/// listener's body timeout) and carries `ConnectInfo<SocketAddr>`.
pub fn serve(listener: Listener, router: Router) -> ServerHandle {
    let stop = CancellationToken::new();
    let name = listener.name;
    let task = tokio::spawn(serve_here(listener, router, stop.clone()));
    ServerHandle {
        name,
        stop,
        kill: CancellationToken::new(),
        _release: None,
        task,
        ended: None,
    }
}

/// Accepts and serves every connection on this runtime until `stop`, then
/// waits for them.
async fn serve_here(
    listener: Listener,
    router: Router,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut acceptor = Acceptor::new(listener, 1);
    let ctx = acceptor.context(router, &stop);
    serve_connections(Incoming::Accept(&mut acceptor, &stop), ctx).await;
    Ok(())
}

/// Where a connection loop gets its connections.
enum Incoming<'a> {
    /// Accepted on this runtime until the token fires.
    Accept(&'a mut Acceptor, &'a CancellationToken),
    /// Handed over by a sharded server's accept loop until it stops.
    Handoff(mpsc::Receiver<Handoff>),
}

impl Incoming<'_> {
    /// The next connection with its count, or `None` once there are no more
    /// (an acceptor then closes its listening socket). Cancel-safe.
    async fn next(&mut self) -> Option<(TcpStream, SocketAddr, OpenGuard)> {
        match self {
            Incoming::Accept(acceptor, stop) => match acceptor.next(stop).await {
                Some((stream, peer)) => Some((stream, peer, acceptor.open(0))),
                None => {
                    acceptor.stopped();
                    None
                }
            },
            Incoming::Handoff(handoff) => loop {
                let (stream, peer, guard) = handoff.recv().await?;
                // Onto this runtime's reactor.
                match TcpStream::from_std(stream) {
                    Ok(stream) => return Some((stream, peer, guard)),
                    Err(e) => tracing::debug!(error = %e, "A shard cannot take a connection."),
                }
            },
        }
    }
}

/// Serves every connection `incoming` gives, each in a task of its own on
/// this runtime, until it gives no more; then waits for them.
async fn serve_connections(mut incoming: Incoming<'_>, ctx: ConnContext<Routed>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer, guard) = tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            next = incoming.next() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let ctx = ctx.clone();
        connections.spawn(async move {
            let _guard = guard;
            serve_connection(stream, peer, ctx).await;
        });
    }
    drop(incoming);
    while connections.join_next().await.is_some() {}
}

/// The service every connection is served with: the router behind the
/// request-body layer.
type Routed = RequestBodyService<Router>;

/// A listener's accept side: its socket, cap, metrics and the open
/// connections it counts, in all and (sharded) a shard.
struct Acceptor {
    name: &'static str,
    listener: Option<TcpListener>,
    limits: ConnectionLimits,
    nodelay: bool,
    metrics: ConnectionMetrics,
    open: Arc<AtomicUsize>,
    /// Each shard's open connections; one entry when not sharded.
    shards: Arc<[AtomicUsize]>,
    open_gauge: IntGauge,
    refused: prometheus::IntCounter,
    refused_log: RateLimitedLog,
    error_log: RateLimitedLog,
    backoff: Duration,
}

impl Acceptor {
    fn new(l: Listener, shards: usize) -> Self {
        let Listener {
            name,
            listener,
            limits,
            nodelay,
            metrics,
        } = l;
        Acceptor {
            name,
            listener: Some(listener),
            limits,
            nodelay,
            open_gauge: metrics.open.with_label_values(&[name]),
            refused: metrics.refused.with_label_values(&[name]),
            metrics,
            open: Arc::new(AtomicUsize::new(0)),
            shards: (0..shards.max(1)).map(|_| AtomicUsize::new(0)).collect(),
            refused_log: RateLimitedLog::new(WARN_EVERY),
            error_log: RateLimitedLog::new(WARN_EVERY),
            backoff: Duration::from_millis(10),
        }
    }

    /// What each connection is served with.
    fn context(&self, router: Router, stop: &CancellationToken) -> ConnContext<Routed> {
        ConnContext {
            name: self.name,
            service: RequestBodyLayer::new(self.limits.body_timeout).layer(router),
            limits: self.limits,
            stop: stop.clone(),
            timed_out: self.metrics.timed_out.clone(),
        }
    }

    /// The next connection under the cap (over it: refused, counted and
    /// closed), or `None` once `stop` fires. Cancel-safe.
    async fn next(&mut self, stop: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
        let listener = self.listener.as_ref()?;
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return None,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    self.backoff = Duration::from_millis(10);
                    accepted
                }
                Err(e) => {
                    // EMFILE and the like: back off (never a busy loop) and
                    // say so, at most once per WARN_EVERY.
                    if let Some(count) = self.error_log.hit() {
                        warn!(listener = self.name, error = %e, count, "Cannot accept connections; backing off.");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            if self.open.load(Ordering::Acquire) >= self.limits.max_connections {
                refuse(stream);
                self.refused.inc();
                if let Some(count) = self.refused_log.hit() {
                    warn!(
                        listener = self.name,
                        max_connections = self.limits.max_connections,
                        refused = count,
                        "At the connection cap; refused new connections since the last warning."
                    );
                }
                continue;
            }
            if self.nodelay {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "Cannot set TCP_NODELAY.");
                }
            }
            return Some((stream, peer));
        }
    }

    /// The shard with the fewest open connections; of equals, the first
    /// after `after`, so that ties take turns.
    fn least_loaded(&self, after: usize) -> usize {
        let n = self.shards.len();
        (1..=n)
            .map(|i| (after + i) % n)
            .min_by_key(|&i| self.shards[i].load(Ordering::Acquire))
            .unwrap_or(0)
    }

    /// Counts a connection served by `shard` until the guard drops.
    fn open(&self, shard: usize) -> OpenGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.shards[shard].fetch_add(1, Ordering::AcqRel);
        self.open_gauge.inc();
        OpenGuard {
            open: self.open.clone(),
            shards: self.shards.clone(),
            shard,
            gauge: self.open_gauge.clone(),
        }
    }

    /// Closes the listening socket and says so.
    fn stopped(&mut self) {
        self.listener = None;
        info!(
            listener = self.name,
            open = self.open.load(Ordering::Acquire),
            "Stopped accepting; open connections finish what they are doing."
        );
    }
}

/// Counts an open connection until dropped.
struct OpenGuard {
    open: Arc<AtomicUsize>,
    shards: Arc<[AtomicUsize]>,
    shard: usize,
    gauge: IntGauge,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.shards[self.shard].fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

/// Tells a connection over the cap why, if its socket takes the bytes at
/// once, and closes it. The excess never waits on the server.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSED);
    drop(stream);
}
