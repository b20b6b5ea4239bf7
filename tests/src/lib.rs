//! Support for the end-to-end, chaos and governance tests: obleth processes,
//! HAProxy in front of them (and in front of a PostgreSQL primary and standby), a fixed-rate load generator that accounts for
//! every request, bursts that keep every answer, the governance rows, and a
//! sampler of the lock waits in a database.

pub mod admin;
pub mod burst;
pub mod clock;
pub mod closed;
pub mod cutoff;
pub mod fleet;
pub mod governance;
pub mod haproxy;
pub mod load;
pub mod locks;
pub mod pgfront;
pub mod procs;
pub mod releases;

use std::sync::LazyLock;

/// Scenarios that load the machine take this lock so that only one of a test
/// binary's scenarios runs at a time: they share two cores.
pub static ONE_AT_A_TIME: LazyLock<tokio::sync::Mutex<()>> =
    LazyLock::new(|| tokio::sync::Mutex::new(()));

/// Writes a line of evidence straight to stderr, past the test harness's
/// output capture, so CI logs show every scenario's counts even when it passes.
pub fn evidence(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
