//! Thread per core: one listener served by `workers` threads, each with a
//! current-thread runtime of its own that runs every connection it is given,
//! and every task those connections spawn, on that thread.
//!
//! A request then never crosses threads: no work stealing, no wake-up of
//! another worker for each socket event, and the upstream connections a
//! shard's requests use (one client a shard, see [`current_shard`]) live on
//! the same thread. `bench/ab` measured the multi-threaded runtime's 2
//! workers against 2 shards (bench/README.md, "Thread per core").
//!
//! One accept loop, on the calling runtime, takes every connection (the cap
//! is checked there) and hands it to the shard with the fewest open
//! connections, which registers it with its own reactor: a hop between
//! threads a connection, none a request. Shards accepting from a shared
//! socket for themselves would all wake for each connection, and the first
//! awake took a whole burst (wrk's 32 connections all went to one of two).
//!
//! A shard's runtime outlives its connections until the [`ServerHandle`] is
//! dropped: sockets opened on its thread (a database connection the pool
//! opened for a request) are driven by it, and the gateway still uses the
//! pool after its listeners stop (the last usage flush).

use std::cell::Cell;
use std::net::SocketAddr;

use axum::Router;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{serve, serve_connections, Acceptor, Incoming, Listener, OpenGuard, ServerHandle};

/// The most worker threads a sharded listener takes (`server.workers`).
pub const MAX_WORKERS: usize = 64;

/// Connections handed to a shard and not yet taken by it.
const HANDOFF_QUEUE: usize = 1024;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// The shard the current thread serves: `1..=workers` on a sharded server's
/// threads, 0 on any other thread. Per-shard state (an upstream client a
/// shard) is indexed by it.
pub fn current_shard() -> usize {
    SHARD.with(Cell::get)
}

/// A connection on its way to a shard.
pub(super) type Handoff = (std::net::TcpStream, SocketAddr, OpenGuard);

/// Serves `router` on `listener` with `workers` threads of their own (see
/// the module); `workers = 0` serves it on the calling runtime, as
/// [`serve`] does. Fails when a thread or its runtime cannot be started.
pub fn serve_sharded(
    listener: Listener,
    router: Router,
    workers: usize,
) -> std::io::Result<ServerHandle> {
    if workers == 0 {
        return Ok(serve(listener, router));
    }
    let workers = workers.min(MAX_WORKERS);
    let name = listener.name;
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let release = CancellationToken::new();
    let mut acceptor = Acceptor::new(listener, workers);
    let ctx = acceptor.context(router, &stop);
    let mut handoff = Vec::with_capacity(workers);
    let mut done = Vec::with_capacity(workers);
    for shard in 1..=workers {
        // I/O and timers only: signals and child processes are the shared
        // runtime's (a process driver would look for orphans at every turn).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (tx, rx) = mpsc::channel::<Handoff>(HANDOFF_QUEUE);
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
        let (ctx, kill, release) = (ctx.clone(), kill.clone(), release.clone());
        std::thread::Builder::new()
            .name(format!("obleth-{name}-{shard}"))
            .spawn(move || {
                SHARD.with(|s| s.set(shard));
                runtime.block_on(async move {
                    tokio::select! {
                        _ = serve_connections(Incoming::Handoff(rx), ctx) => {}
                        _ = kill.cancelled() => {}
                    }
                    // A panic above drops `ended_tx` unsent: the handle
                    // reports it.
                    let _ = ended_tx.send(());
                    release.cancelled().await;
                });
            })?;
        handoff.push(tx);
        done.push(ended_rx);
    }
    let accepting = stop.clone();
    let task = tokio::spawn(async move {
        let mut last = 0;
        while let Some((stream, peer)) = acceptor.next(&accepting).await {
            let shard = acceptor.least_loaded(last);
            last = shard;
            let guard = acceptor.open(shard);
            // Off this runtime's reactor; the shard registers it with its own.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "Cannot hand a connection to a shard.");
                    continue;
                }
            };
            if handoff[shard].send((stream, peer, guard)).await.is_err() {
                return Err(format!("worker thread {} ended", shard + 1));
            }
        }
        acceptor.stopped();
        // Each shard serves what it holds and ends once its queue closes.
        drop(handoff);
        for ended in done {
            if ended.await.is_err() {
                return Err("a worker thread panicked".to_owned());
            }
        }
        Ok(())
    });
    Ok(ServerHandle {
        name,
        stop,
        kill,
        _release: Some(release.drop_guard()),
        task,
        ended: None,
    })
}
