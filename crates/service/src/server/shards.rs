//! Thread-per-core serving: one listener served by `workers` threads, each
//! with a current-thread runtime of its own that accepts from the shared
//! listening socket and runs every connection it accepted, and every task
//! those connections spawn, on that thread.
//!
//! A request then never crosses threads: no work stealing, no wake-up of
//! another worker for each socket event, and the upstream connections a
//! shard's requests use (one client a shard, see [`current_shard`]) live on
//! the same thread. `bench/ab` measured the multi-threaded runtime's 2
//! workers against 2 shards (bench/README.md, "Thread per core").
//!
//! The threads share one socket (a duplicate of the listener's descriptor
//! each), not `SO_REUSEPORT` sockets: the kernel hands a new connection to
//! whichever thread accepts first, so an idle shard takes it, and a second
//! process cannot silently bind the same port.
//!
//! A shard's runtime outlives its accept loop until the [`ServerHandle`] is
//! dropped: sockets opened on its thread (a database connection the pool
//! opened for a request) are driven by it, and the gateway still uses the
//! pool after its listeners stop (the last usage flush).

use std::cell::Cell;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{accept_loop, serve, Listener, ServerHandle};

/// The most worker threads a sharded listener takes (`server.workers`).
pub const MAX_WORKERS: usize = 64;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// The shard the current thread serves: `1..=workers` on a sharded server's
/// threads, 0 on any other thread. Per-shard state (an upstream client a
/// shard) is indexed by it.
pub fn current_shard() -> usize {
    SHARD.with(Cell::get)
}

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
    let Listener {
        name,
        listener,
        limits,
        nodelay,
        metrics,
    } = listener;
    let shared = listener.into_std()?;
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let release = CancellationToken::new();
    let open = Arc::new(AtomicUsize::new(0));
    let mut done = Vec::with_capacity(workers);
    for shard in 1..=workers {
        let socket = shared.try_clone()?;
        // I/O and timers only: signals and child processes are the shared
        // runtime's (a process driver would look for orphans at every turn).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (router, stop, kill, release, open) = (
            router.clone(),
            stop.clone(),
            kill.clone(),
            release.clone(),
            open.clone(),
        );
        let metrics = metrics.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name(format!("obleth-{name}-{shard}"))
            .spawn(move || {
                SHARD.with(|s| s.set(shard));
                runtime.block_on(async move {
                    let ended = match TcpListener::from_std(socket) {
                        Ok(listener) => {
                            let listener = Listener {
                                name,
                                listener,
                                limits,
                                nodelay,
                                metrics,
                            };
                            tokio::select! {
                                _ = accept_loop(listener, router, stop, open) => Ok(()),
                                _ = kill.cancelled() => Ok(()),
                            }
                        }
                        Err(e) => Err(format!("shard {shard} cannot use the listener: {e}")),
                    };
                    // A panic above drops `tx` unsent: the handle reports it.
                    let _ = tx.send(ended);
                    release.cancelled().await;
                });
            })?;
        done.push(rx);
    }
    drop(shared);
    let task = tokio::spawn(async move {
        for rx in done {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return Err(reason),
                Err(_) => return Err("a worker thread panicked".to_owned()),
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
