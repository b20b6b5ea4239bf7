//! The obleth migration CLI over obleth-config's runner: `up`, `status`, `plan`,
//! `finish`, `down`, `verify` and `lint`.

/// Prints a line to stdout, ignoring a closed pipe (`obleth-migrator status | head`)
/// instead of panicking as `println!` does.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod commands;
mod down;
mod preflight;
mod probe;
mod report;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use obleth_config::telemetry::LogFormat;

pub use commands::run;

/// Exit codes, documented in `docs/migrations.md`.
pub mod exit {
    /// Success; for `status`: the schema is up to date.
    pub const OK: u8 = 0;
    /// Any other failure: unreachable database, a failed migration, lint findings.
    pub const ERROR: u8 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: u8 = 2;
    /// `status`: the database was never migrated.
    pub const NOT_INITIALISED: u8 = 3;
    /// `status`: migrations are pending (`up` or `finish` has work).
    pub const PENDING: u8 = 4;
    /// The schema is incompatible with this release, a shipped migration was
    /// edited, or a migration is dirty.
    pub const INCOMPATIBLE: u8 = 5;
    /// The migration lock stayed held for the whole lock wait.
    pub const LOCK_HELD: u8 = 6;
    /// `finish` refused: live nodes run releases older than a contract migration requires.
    pub const OLD_NODES: u8 = 7;
    /// `down` refused: fewer migrations are applied than it was asked to revert.
    pub const DOWN_NOTHING: u8 = 10;
    /// `down` refused: a contract migration is among those to revert.
    pub const DOWN_CONTRACT: u8 = 11;
    /// `down` refused: a migration to revert has no down script.
    pub const DOWN_NO_SCRIPT: u8 = 12;
    /// `down` refused: a live node's release requires a migration to revert
    /// (`--force` overrides).
    pub const DOWN_NODES: u8 = 13;
    /// `preflight`: go, with warnings (a big table under a blocking lock,
    /// code whose locks the text hides, a long transaction, replay lag).
    pub const PREFLIGHT_WARNINGS: u8 = 20;
    /// `preflight`: no-go (unreachable, a standby, a fatal schema verdict, a
    /// long transaction holding a lock the step needs, a version-skew violation).
    pub const PREFLIGHT_NO_GO: u8 = 21;
    /// `preflight`: a check could not run; treat as no-go.
    pub const PREFLIGHT_INCOMPLETE: u8 = 22;
}

/// Applies and inspects obleth's database migrations.
#[derive(Debug, Parser)]
#[command(name = "obleth-migrator", version = obleth_config::version::VERSION, about)]
pub struct Cli {
    /// PostgreSQL URL, e.g. postgres://obleth:PASSWORD@db:5432/obleth.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// Seconds to wait for the migration lock before giving up.
    #[arg(
        long,
        env = "OBLETH_MIGRATIONS__LOCK_WAIT_SECS",
        default_value_t = 60,
        global = true
    )]
    pub lock_wait_secs: u64,

    /// `lock_timeout` of each migration statement, in milliseconds.
    #[arg(
        long,
        env = "OBLETH_MIGRATIONS__LOCK_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub lock_timeout_ms: u64,

    /// `statement_timeout` of each migration statement, in seconds.
    #[arg(
        long,
        env = "OBLETH_MIGRATIONS__STATEMENT_TIMEOUT_SECS",
        default_value_t = 600,
        global = true
    )]
    pub statement_timeout_secs: u64,

    /// Retries of a migration that hit `lock_timeout`.
    #[arg(
        long,
        env = "OBLETH_MIGRATIONS__MAX_RETRIES",
        default_value_t = 10,
        global = true
    )]
    pub max_retries: u32,

    /// First back-off after a lock timeout, in milliseconds (doubles each retry).
    #[arg(
        long,
        env = "OBLETH_MIGRATIONS__RETRY_BACKOFF_MS",
        default_value_t = 500,
        global = true
    )]
    pub retry_backoff_ms: u64,

    /// `finish` (and `down`) count a node that never recorded its stop as
    /// alive until this many seconds after its last heartbeat: a gateway cut
    /// off from the database serves on from its key store without beating.
    #[arg(
        long,
        env = "OBLETH_MIGRATIONS__NODE_HORIZON_SECS",
        default_value_t = 86_400,
        global = true
    )]
    pub node_horizon_secs: u64,

    /// For development: use the migrations in this directory (with its
    /// manifest.toml) instead of the ones built into this binary.
    #[arg(long, value_name = "DIR", global = true)]
    pub source: Option<PathBuf>,

    /// Log format: pretty or json.
    #[arg(
        long,
        env = "OBLETH_LOG__FORMAT",
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending expand migrations.
    Up {
        /// Print the SQL that would run and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print each applied migration with its timing.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Show applied, pending and unknown migrations; the exit code tells the state.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show what `up` and what `finish` would apply.
    Plan {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apply contract migrations (and any pending expand ones) once no live node is too old.
    Finish {
        /// Run even while older nodes are recorded alive.
        #[arg(long)]
        force: bool,
        /// Print the SQL that would run and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revert the last N applied migrations, newest first, with their down scripts.
    Down {
        /// How many applied migrations to revert.
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// Revert even migrations that a live node's release requires.
        #[arg(long)]
        force: bool,
        /// Print the SQL that would run and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare the checksums of applied migrations with this binary's files.
    Verify,
    /// Whether this release's binaries can run on the database as it is: exit 0
    /// when they can (pending contract migrations and backfills included), 4
    /// when `up` must run first, 5 when they cannot (a contract migration they
    /// do not know: a rollback past `finish`; or a modified or dirty
    /// migration), 3 when it was never migrated. Changes nothing; the chart's
    /// pre-rollback hook runs it so that such a rollback fails in seconds.
    Check,
    /// GET a plain http:// URL and exit 0 on a 2xx answer, 1 otherwise. For
    /// container healthchecks in images without curl; needs no database.
    Probe {
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// For example http://127.0.0.1:9090/readyz.
        url: String,
    },
    /// Before an upgrade, with the new release: can `up` (or `finish`) run now?
    /// Locks, table sizes, long transactions, replication, fleet versions; the
    /// exit code says go (0), go with warnings (20), no-go (21) or incomplete (22).
    Preflight(preflight::PreflightArgs),
    /// Check migration files for changes that break the previous release or lock tables.
    Lint {
        /// Lint this directory instead of the built-in migrations.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}
