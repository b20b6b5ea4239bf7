//! One accepted connection: HTTP/1.1 through hyper, with a watchdog that
//! closes it when a request's headers take longer than `header_timeout` or
//! when it idles between requests longer than `idle_timeout`, and that stops
//! it gracefully when the listener stops accepting.
//!
//! hyper's own `header_read_timeout` (which needs a timer; `axum::serve`
//! runs hyper without one, so it never fired) starts counting when the
//! connection goes idle after a response, so it bounds idle time and header
//! time together and cannot tell them apart. The watchdog keeps them apart:
//! it sees requests start and end (the service below) and the first byte of
//! the next request (the stream wrapper). hyper's timeout stays on as a
//! backstop at `header_timeout + idle_timeout`.

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::IntCounterVec;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};
use tracing::debug;

use super::limits::ConnectionLimits;

/// What the watchdog knows of one connection.
#[derive(Debug)]
struct Tracker {
    state: Mutex<TrackState>,
    changed: Notify,
    limits: ConnectionLimits,
}

#[derive(Debug)]
struct TrackState {
    /// Requests handed to the service whose answers are not yet sent whole.
    in_flight: usize,
    /// Requests answered on this connection.
    served: u64,
    /// When the connection last had nothing in flight (its accept, at first).
    idle_since: Instant,
    /// The first byte read since then, if any: a next request has begun.
    first_byte: Option<Instant>,
    /// The deadline the watchdog's timer is set to, if it is set. A change
    /// wakes the watchdog only when it brings the deadline before this: a
    /// later deadline is found when the timer fires and re-checks, so a busy
    /// connection costs the watchdog no wake-up and no timer a request.
    armed: Option<Instant>,
}

impl TrackState {
    /// When the connection must be closed if nothing changes, and why.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Expiry)> {
        if self.in_flight > 0 {
            return None;
        }
        Some(if self.served == 0 {
            // The first request's headers are timed from the accept, so a
            // client cannot stretch them by waiting before its first byte.
            (self.idle_since + limits.header_timeout, Expiry::Header)
        } else if let Some(first) = self.first_byte {
            (first + limits.header_timeout, Expiry::Header)
        } else {
            (self.idle_since + limits.idle_timeout, Expiry::Idle)
        })
    }
}

/// Why the watchdog closed a connection, as the metric's label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Header,
    Idle,
}

impl Expiry {
    fn label(self) -> &'static str {
        match self {
            Expiry::Header => "header",
            Expiry::Idle => "idle",
        }
    }
}

impl Tracker {
    fn new(limits: ConnectionLimits) -> Self {
        Tracker {
            limits,
            state: Mutex::new(TrackState {
                in_flight: 0,
                served: 0,
                idle_since: Instant::now(),
                first_byte: None,
                armed: None,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_some(&self) {
        let mut state = self.lock();
        if state.in_flight == 0 && state.first_byte.is_none() {
            state.first_byte = Some(Instant::now());
            self.wake_if_sooner(state);
        }
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        // In flight there is no deadline: nothing the watchdog must act on
        // sooner, so it is not woken (its timer re-checks when it fires).
        self.lock().in_flight += 1;
        RequestGuard(self.clone())
    }

    fn request_ended(&self) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.served += 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.first_byte = None;
        }
        self.wake_if_sooner(state);
    }

    /// Wakes the watchdog when the deadline is now before its timer (or its
    /// timer is not set).
    fn wake_if_sooner(&self, state: std::sync::MutexGuard<'_, TrackState>) {
        let sooner = match (state.deadline(&self.limits).map(|(at, _)| at), state.armed) {
            (Some(at), Some(armed)) => at < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        drop(state);
        if sooner {
            self.changed.notify_one();
        }
    }

    /// Sets the timer to `at` when that is before what it is set to (or it
    /// is not set); answers whether it changed.
    fn arm(&self, at: Instant) -> bool {
        let mut state = self.lock();
        if state.armed.is_some_and(|armed| armed <= at) {
            return false;
        }
        state.armed = Some(at);
        true
    }

    /// The timer fired (or was dropped): it is no longer set.
    fn disarm(&self) {
        self.lock().armed = None;
    }

    /// When the connection must be closed if nothing changes, and why.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        self.lock().deadline(&self.limits)
    }

    /// Nothing in flight and no request begun: closing loses nothing.
    fn quiet(&self) -> bool {
        let state = self.lock();
        state.in_flight == 0 && state.first_byte.is_none()
    }
}

/// Held while a request is served; its answer's body holds it until sent.
#[derive(Debug)]
struct RequestGuard(Arc<Tracker>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

pin_project_lite::pin_project! {
    /// The accepted socket, telling the tracker when request bytes arrive.
    struct TrackedStream {
        #[pin]
        inner: TcpStream,
        tracker: Arc<Tracker>,
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.tracker.read_some();
        }
        polled
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

pin_project_lite::pin_project! {
    /// An answer's body, holding its request's guard until sent or dropped.
    struct GuardedBody {
        #[pin]
        inner: Body,
        _guard: RequestGuard,
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a connection needs from its listener.
#[derive(Debug, Clone)]
pub(super) struct ConnContext<S> {
    pub name: &'static str,
    pub service: S,
    pub limits: ConnectionLimits,
    pub stop: CancellationToken,
    pub timed_out: IntCounterVec,
}

/// Serves one connection until it ends, times out, or the listener stops
/// and it has finished what it was doing.
pub(super) async fn serve_connection<S>(stream: TcpStream, peer: SocketAddr, ctx: ConnContext<S>)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let tracker = Arc::new(Tracker::new(ctx.limits));
    let io = TokioIo::new(TrackedStream {
        inner: stream,
        tracker: tracker.clone(),
    });
    let service = {
        let tracker = tracker.clone();
        let service = ctx.service.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = tracker.request_started();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            let service = service.clone();
            async move {
                let response = service.oneshot(request).await?;
                Ok::<_, std::convert::Infallible>(response.map(|inner| {
                    Body::new(GuardedBody {
                        inner,
                        _guard: guard,
                    })
                }))
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.limits.header_timeout + ctx.limits.idle_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed = false;
    loop {
        // Set the timer only when the deadline comes sooner than it is set
        // for; a later deadline is found when it fires and re-checks.
        if let Some((at, _)) = tracker.deadline() {
            if tracker.arm(at) {
                timer.as_mut().reset(at);
                armed = true;
            }
        }
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    debug!(listener = ctx.name, %peer, error = %e, "Connection ended with an error.");
                }
                return;
            }
            _ = ctx.stop.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
                if tracker.quiet() {
                    return;
                }
            }
            () = timer.as_mut(), if armed => {
                armed = false;
                tracker.disarm();
                // Re-check: the deadline may have moved since the timer was set.
                if let Some((at, why)) = tracker.deadline() {
                    if at <= Instant::now() {
                        ctx.timed_out.with_label_values(&[ctx.name, why.label()]).inc();
                        debug!(listener = ctx.name, %peer, reason = why.label(), "Closing a connection: timeout.");
                        return;
                    }
                }
            }
            _ = tracker.changed.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10,
            body_timeout: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_connection_state() {
        let t = Arc::new(Tracker::new(limits()));
        let accepted = Instant::now();
        let header = |at: Instant| Some((at + Duration::from_secs(10), Expiry::Header));
        // First request: timed from the accept, bytes or not.
        assert_eq!(t.deadline(), header(accepted));
        tokio::time::advance(Duration::from_secs(3)).await;
        t.read_some();
        assert_eq!(t.deadline(), header(accepted));
        // In flight: no deadline.
        let guard = t.request_started();
        assert_eq!(t.deadline(), None);
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(guard);
        // Idle after a response: the idle timeout.
        let idle = Instant::now();
        assert_eq!(
            t.deadline(),
            Some((idle + Duration::from_secs(60), Expiry::Idle))
        );
        assert!(t.quiet());
        // A next request begins: its headers are timed from its first byte.
        tokio::time::advance(Duration::from_secs(5)).await;
        t.read_some();
        assert_eq!(t.deadline(), header(Instant::now()));
        assert!(!t.quiet());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_wakes_the_watchdog_only_for_a_sooner_deadline() {
        let t = Arc::new(Tracker::new(limits()));
        let woken = |t: &Arc<Tracker>| {
            let t = t.clone();
            async move {
                tokio::time::timeout(Duration::ZERO, t.changed.notified())
                    .await
                    .is_ok()
            }
        };
        // The watchdog sets its timer for the first request's headers.
        let (at, _) = t.deadline().unwrap();
        assert!(t.arm(at));
        assert!(
            !t.arm(at + Duration::from_secs(1)),
            "a later deadline is not set"
        );
        // Requests one after another: every deadline they make is later
        // than the timer, so the watchdog sleeps on.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_millis(1)).await;
            t.read_some();
            let guard = t.request_started();
            drop(guard);
        }
        assert!(!woken(&t).await);
        // The timer fired and was set again for the idle deadline, 60 s
        // out: a request's first byte brings a header deadline 10 s out,
        // sooner, and that wakes it.
        t.disarm();
        let (idle, why) = t.deadline().unwrap();
        assert_eq!(why, Expiry::Idle);
        assert!(t.arm(idle));
        tokio::time::advance(Duration::from_secs(1)).await;
        t.read_some();
        assert!(woken(&t).await);
    }
}
