//! Test support for obleth: a throwaway PostgreSQL server and a mock upstream LLM provider.
//!
//! Tests call [`fresh_database`] to get an empty database of their own. The
//! server behind it is `DATABASE_URL` when that is set, otherwise one private
//! cluster started on first use and shared by every test in the process. A test
//! that needs to control the server itself (to simulate an outage, say) starts
//! its own [`PgCluster`].
//!
//! [`MockUpstream`] is an OpenAI-compatible provider on a local port, with
//! latency, streaming pace and failures under the test's control; the
//! `obleth-mock-upstream` binary serves the same for Compose and benchmarks.

pub mod mock;
mod pg;

pub use mock::{MockConfig, MockUpstream, RecordedRequest};
pub use pg::{fresh_database, PgCluster, TestDb};
