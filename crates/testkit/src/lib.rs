//! Test support for obleth: a throwaway PostgreSQL server and fresh databases in it.
//!
//! Tests call [`fresh_database`] to get an empty database of their own. The
//! server behind it is `DATABASE_URL` when that is set, otherwise one private
//! cluster started on first use and shared by every test in the process. A test
//! that needs to control the server itself (to simulate an outage, say) starts
//! its own [`PgCluster`].

mod pg;

pub use pg::{fresh_database, PgCluster, TestDb};
