//! The drain steps both services share: not ready at once, keep serving for
//! `drain_delay` while load balancers notice, stop accepting, then wait up to
//! `drain_timeout` for what is in flight. The gateway cuts its streams and
//! flushes usage around these steps; the admin only leaves the fleet.

use std::future::Future;
use std::time::Duration;

use crate::health::Health;
use crate::server::ServerHandle;

/// The drain's timings, from a service's `[server]` settings.
#[derive(Debug, Clone, Copy)]
pub struct DrainTimings {
    pub delay: Duration,
    pub timeout: Duration,
}

/// Runs the shared drain steps and answers whether everything finished within
/// the timeout:
/// 1. `health.start_draining()`: `/readyz` answers 503 from now on, while
///    requests that still arrive are served.
/// 2. Sleep `delay`, unless `skip_delay` (a fatal start-up error: nobody is
///    routing to a node that never became ready).
/// 3. Stop accepting on every listener in `servers`; open connections finish
///    their requests and idle ones close.
/// 4. Wait up to `timeout` for `in_flight` (the service's own count, if any)
///    and then for every server to finish.
pub async fn drain<F: Future<Output = ()>>(
    health: &Health,
    timings: DrainTimings,
    skip_delay: bool,
    servers: &mut [&mut ServerHandle],
    in_flight: F,
) -> bool {
    health.start_draining();
    if !skip_delay {
        tokio::time::sleep(timings.delay).await;
    }
    for server in servers.iter() {
        server.stop_accepting();
    }
    tokio::time::timeout(timings.timeout, async {
        in_flight.await;
        for server in servers.iter_mut() {
            server.finished().await;
        }
    })
    .await
    .is_ok()
}
