//! Upgrade and chaos scenarios with real processes: a throwaway PostgreSQL,
//! three gateways behind HAProxy (routing on /readyz), the mock upstream, and a
//! fixed-rate load that accounts for every request (the conversion scenario
//! loads one gateway of each release directly). Each scenario prints its
//! counts. They run one at a time: they share two cores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conversion;
mod cutoff;
mod failover;
mod longrequests;
mod matrix;
mod pgbouncer;
mod resilience;
mod scenarios;

/// Scenarios take this lock so that only one loads the machine at a time.
pub use obleth_e2e::ONE_AT_A_TIME;
