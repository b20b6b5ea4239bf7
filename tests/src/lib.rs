//! Support for the end-to-end and chaos tests: obleth processes, HAProxy in
//! front of them, and a fixed-rate load generator that accounts for every request.

pub mod fleet;
pub mod haproxy;
pub mod load;
pub mod previous;
pub mod procs;

/// Writes a line of evidence straight to stderr, past the test harness's
/// output capture, so CI logs show every scenario's counts even when it passes.
pub fn evidence(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
