//! Test support for obleth, written once for every crate's tests: a
//! throwaway PostgreSQL server, a mock upstream LLM provider, and the helpers
//! every test binary needs.
//!
//! Tests call [`fresh_database`] to get an empty database of their own. The
//! server behind it is `DATABASE_URL` when that is set, otherwise one private
//! cluster started on first use and shared by every test in the process. A test
//! that needs to control the server itself (to simulate an outage, say) starts
//! its own [`PgCluster`], and a failover test a [`PgReplicated`] primary with
//! its synchronous standby.
//!
//! [`MockUpstream`] is an OpenAI-compatible provider on a local port, with
//! latency, streaming pace and failures under the test's control; the
//! `obleth-mock-upstream` binary serves the same for Compose and benchmarks.
//!
//! The helpers, by concern: [`db`] (the schema applied, migrations of a next
//! release, providers, routes and keys written as the admin writes them),
//! [`http`] (a loopback HTTP/1.1 client, whole or raw over TCP), [`ledger`]
//! (the usage ledger's conversion: migrations up to a version, old usage rows
//! generated in SQL, totals and rollups recounted), [`metrics`]
//! (samples from Prometheus text by name and labels), [`poll`] (waiting with a
//! deadline, `/readyz` included) and [`proc`] (built binaries, free ports,
//! child processes and signals). This crate depends on `obleth-config` only:
//! the gateway and the admin dev-depend on it, so helpers that need them live
//! in their own test support.

pub mod db;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod mock;
pub mod otlp;
mod pg;
pub mod pgbouncer;
pub mod poll;
pub mod proc;

pub use mock::{MockConfig, MockUpstream, MockUsage, RecordedRequest};
pub use pg::{fresh_database, PgCluster, PgReplicated, TestDb, REPLICATION_ROLE};
