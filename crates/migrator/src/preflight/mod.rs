//! `obleth-migrator preflight`: run with the new release's binary before an
//! upgrade, it says whether `up` (or, with `--finish`, `finish`) may run now,
//! and its exit code is what a pipeline trusts: 0 go, 20 go with warnings,
//! 21 no-go, 22 a check could not run (treat as no-go).
//!
//! It changes nothing and takes no lock beyond reading the catalog. What it
//! checks, in order: the database is reachable and a primary; the schema
//! verdict; the plan of `up` and `finish`; the lock of every pending
//! statement (see `obleth_config::migrate::locks`) with the size and row
//! estimate of its table; open transactions and lock holders on the tables
//! the plan touches; standbys' replay lag; the live fleet against the
//! version-skew rule. Which finding is which severity is decided here and
//! documented in `docs/migrations.md#preflight`.

mod catalog;
mod judge;
mod render;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use obleth_config::migrate::compat::{check, Compatibility};
use obleth_config::migrate::locks::{classify_sql, LockEffect, Target, Work};
use obleth_config::migrate::runner::live_nodes;
use obleth_config::migrate::skew::SkewFinding;
use obleth_config::migrate::{
    read_applied, MigrationDef, MigrationSet, Mode, Runner, RunnerOptions,
};
use obleth_config::settings::redact_url;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

use crate::exit;
use catalog::{HeldLock, Relation, Session, Standby};

/// The flags of `preflight`.
#[derive(Debug, Clone, clap::Args)]
pub struct PreflightArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Judge the `finish` step: a live node older than a pending contract
    /// migration requires is a no-go (before the rollout it is expected, and
    /// only reported).
    #[arg(long)]
    pub finish: bool,
    /// A statement that blocks writes, rewrites or scans a table larger than
    /// this needs a maintenance window (default 10 GiB).
    #[arg(long, value_name = "BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub window_threshold_bytes: u64,
    /// Transactions open longer than this are reported; one that holds a lock
    /// a pending statement needs is a no-go.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub long_xact_secs: u64,
    /// A standby replaying further behind than this is a warning.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub max_replay_lag_secs: u64,
    /// Give up connecting to the database after this long.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout_secs: u64,
}

/// How much a finding weighs, lightest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    /// A check could not run; preflight cannot vouch for the upgrade.
    Incomplete,
    NoGo,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "WARNING",
            Severity::Incomplete => "INCOMPLETE",
            Severity::NoGo => "NO-GO",
        }
    }
}

/// One thing preflight found, with the check that found it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// `database`, `schema`, `locks`, `window`, `transactions`, `replication`
    /// or `fleet`.
    pub check: &'static str,
    pub message: String,
}

/// The overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Go,
    GoWithWarnings,
    NoGo,
    Incomplete,
}

impl Verdict {
    fn exit_code(self) -> u8 {
        match self {
            Verdict::Go => exit::OK,
            Verdict::GoWithWarnings => exit::PREFLIGHT_WARNINGS,
            Verdict::NoGo => exit::PREFLIGHT_NO_GO,
            Verdict::Incomplete => exit::PREFLIGHT_INCOMPLETE,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Go => "GO",
            Verdict::GoWithWarnings => "GO WITH WARNINGS",
            Verdict::NoGo => "NO-GO",
            Verdict::Incomplete => "INCOMPLETE",
        }
    }
}

/// The server preflight talked to.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    pub version: String,
    /// Whether it is a standby (`pg_is_in_recovery()`).
    pub in_recovery: bool,
}

/// One pending migration and the locks of its statements.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationCheck {
    pub version: i64,
    pub file: String,
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requires_release: Option<String>,
    pub no_transaction: bool,
    /// A `-- batched` backfill: each statement repeats in short transactions
    /// until it answers 0, so its locks are held briefly, many times.
    pub batched: bool,
    /// Whether `up` applies it; otherwise only `finish` does.
    pub in_up: bool,
    pub statements: Vec<StatementCheck>,
}

/// One statement of a pending migration.
#[derive(Debug, Clone, Serialize)]
pub struct StatementCheck {
    pub line: usize,
    /// The statement's start, shortened to one line.
    pub sql: String,
    pub locks: Vec<EffectCheck>,
}

/// One lock of one statement, joined with the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct EffectCheck {
    #[serde(flatten)]
    pub effect: LockEffect,
    /// The existing table it falls on, with its size and rows; `None` for a
    /// new object, or a table this upgrade creates first.
    pub table: Option<Relation>,
    /// The target is not in the database, but an earlier pending statement
    /// creates it.
    pub new_in_upgrade: bool,
    pub rewrites: bool,
    pub needs_window: bool,
}

/// A lock another session holds on a table the plan touches.
#[derive(Debug, Clone, Serialize)]
pub struct LockHolder {
    #[serde(flatten)]
    pub lock: HeldLock,
    /// The strongest pending lock on that table this lock conflicts with.
    pub conflicts_with: Option<String>,
}

/// A live node as the `nodes` table records it.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub node_id: String,
    pub service: String,
    pub version: String,
    /// Seconds since its last heartbeat; a node counts as live until it
    /// records its stop or `--node-horizon-secs` pass.
    pub silent_secs: i64,
}

/// Everything preflight found, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub exit_code: u8,
    /// The URL with its password masked.
    pub database: String,
    pub reachable: bool,
    pub release: &'static str,
    /// The step judged: `up`, or `finish` with `--finish`.
    pub step: &'static str,
    pub window_threshold_bytes: u64,
    pub long_xact_secs: u64,
    pub server: Option<Server>,
    pub schema: Option<Compatibility>,
    /// Versions `up` would apply, in order.
    pub up: Vec<i64>,
    /// Versions `finish` would apply, in order.
    pub finish: Vec<i64>,
    pub migrations: Vec<MigrationCheck>,
    /// The sessions and fleet checks: `null` when the check did not run
    /// (not reached, or stopped by an earlier failure), `[]` when it found nothing.
    pub long_transactions: Option<Vec<Session>>,
    pub lock_holders: Option<Vec<LockHolder>>,
    pub standbys: Option<Vec<Standby>>,
    pub nodes: Option<Vec<Node>>,
    pub skew: Option<Vec<SkewFinding>>,
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, severity: Severity, check: &'static str, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            check,
            message: message.into(),
        });
    }

    /// Records a check that could not run.
    fn incomplete(&mut self, check: &'static str, what: &str, err: &sqlx::Error) {
        self.push(Severity::Incomplete, check, format!("cannot {what}: {err}"));
    }

    fn conclude(&mut self) {
        let worst = self.findings.iter().map(|f| f.severity).max();
        self.verdict = match worst {
            Some(Severity::NoGo) => Verdict::NoGo,
            Some(Severity::Incomplete) => Verdict::Incomplete,
            Some(Severity::Warning) => Verdict::GoWithWarnings,
            Some(Severity::Info) | None => Verdict::Go,
        };
        self.exit_code = self.verdict.exit_code();
    }
}

/// Runs preflight and answers its exit code. `options` is the parsed
/// `--database-url`, or why it could not be parsed; `horizon` is how long a
/// node that never recorded its stop counts as live, as for `finish`.
pub async fn run(
    set: MigrationSet,
    args: &PreflightArgs,
    url: Option<&str>,
    options: Result<PgConnectOptions, String>,
    horizon: Duration,
) -> u8 {
    let mut report = Report {
        verdict: Verdict::Go,
        exit_code: exit::OK,
        database: redact_url(url.unwrap_or("")),
        reachable: false,
        release: obleth_config::version::VERSION,
        step: if args.finish { "finish" } else { "up" },
        window_threshold_bytes: args.window_threshold_bytes,
        long_xact_secs: args.long_xact_secs,
        server: None,
        schema: None,
        up: Vec::new(),
        finish: Vec::new(),
        migrations: Vec::new(),
        long_transactions: None,
        lock_holders: None,
        standbys: None,
        nodes: None,
        skew: None,
        findings: Vec::new(),
    };
    match options {
        Ok(options) => match connect(&options, args).await {
            Ok(mut conn) => {
                report.reachable = true;
                match session_of_its_own(&options, args).await {
                    Ok(()) => inspect(&mut conn, &set, args, horizon, &mut report).await,
                    Err(message) => report.push(Severity::NoGo, "database", message),
                }
                let _ = conn.close().await;
            }
            Err(message) => report.push(Severity::NoGo, "database", message),
        },
        Err(message) => report.push(Severity::NoGo, "database", message),
    }
    report.conclude();
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => out!("{text}"),
            Err(err) => eprintln!("error: cannot render JSON: {err}"),
        }
    } else {
        render::text(&report);
    }
    report.exit_code
}

/// Connects within the timeout, naming host, port and database (never the
/// password) when it cannot.
async fn connect(options: &PgConnectOptions, args: &PreflightArgs) -> Result<PgConnection, String> {
    let place = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default)")
    );
    let timeout = Duration::from_secs(args.connect_timeout_secs);
    let options = options
        .clone()
        .application_name("obleth-migrator-preflight");
    let attempt = options.connect();
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("cannot connect to the database at {place}: {e}")),
        Err(_) => Err(format!(
            "cannot connect to the database at {place}: no answer within {timeout:?}"
        )),
    }
}

/// Refuses, as the runner would, a URL that leads to a transaction pooler:
/// the runner's session lock would not hold there, and neither would
/// preflight's view of sessions (see `obleth_config::db::pooler`).
async fn session_of_its_own(
    options: &PgConnectOptions,
    args: &PreflightArgs,
) -> Result<(), String> {
    use obleth_config::db::pooler::{check_session, PoolerError};
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(
            options
                .clone()
                .application_name("obleth-migrator-preflight"),
        );
    let limit = Duration::from_secs(args.connect_timeout_secs)
        + obleth_config::db::pooler::SESSION_CHECK_WAIT;
    let checked = tokio::time::timeout(limit, check_session(&pool)).await;
    pool.close().await;
    match checked {
        Ok(Ok(())) => Ok(()),
        // The connection itself worked a moment ago; a refusal now is not
        // evidence of a pooler, and the checks that follow will say more.
        Ok(Err(PoolerError::Unreachable(_))) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "the migration connection cannot hold the migration lock: {e}; --database-url (DATABASE_URL) must name PostgreSQL, not a transaction pooler such as PgBouncer"
        )),
        Err(_) => Err(format!(
            "cannot tell whether the URL leads to a PostgreSQL session of its own: no answer within {limit:?}"
        )),
    }
}

/// Runs every check on a connected session, recording findings in `report`.
async fn inspect(
    conn: &mut PgConnection,
    set: &MigrationSet,
    args: &PreflightArgs,
    horizon: Duration,
    report: &mut Report,
) {
    // Preflight must never queue behind a migration's lock for long, nor
    // hold anything: reads of a locked table give up and say "unknown".
    if let Err(e) = sqlx::raw_sql("SET lock_timeout = '1s'; SET statement_timeout = '30s'")
        .execute(&mut *conn)
        .await
    {
        report.incomplete("database", "set the session's timeouts", &e);
        return;
    }
    match sqlx::query_as::<_, (String, bool)>(
        "SELECT current_setting('server_version'), pg_is_in_recovery()",
    )
    .fetch_one(&mut *conn)
    .await
    {
        Ok((version, in_recovery)) => {
            if in_recovery {
                report.push(
                    Severity::NoGo,
                    "replication",
                    "the database is a standby (in recovery): migrations must run on the primary; point DATABASE_URL at it",
                );
            }
            report.server = Some(Server {
                version,
                in_recovery,
            });
        }
        Err(e) => {
            report.incomplete("database", "read the server version", &e);
            return;
        }
    }
    let applied = match read_applied(conn).await {
        Ok(Some(applied)) => applied,
        Ok(None) => {
            report.push(
                Severity::Info,
                "schema",
                "the database was never migrated: `up` installs the whole schema",
            );
            Vec::new()
        }
        Err(e) => {
            report.incomplete("schema", "read the applied migrations", &e);
            return;
        }
    };
    let verdict = check(set, &applied);
    if verdict.is_fatal() {
        report.push(Severity::NoGo, "schema", verdict.describe());
    }
    report.schema = Some(verdict);

    let runner = Runner::new(set.clone(), RunnerOptions::default());
    let up = runner.plan(&applied, Mode::Up);
    let finish = runner.plan(&applied, Mode::Finish { force: false });
    report.up = up.iter().map(|d| d.version).collect();
    report.finish = finish.iter().map(|d| d.version).collect();
    if finish.is_empty() {
        report.push(
            Severity::Info,
            "schema",
            "nothing to apply: `up` and `finish` have no work",
        );
    }
    let mut seen = Seen::default();
    for def in &finish {
        let in_up = report.up.contains(&def.version);
        let migration = analyse(conn, def, in_up, &mut seen, args, report).await;
        report.migrations.push(migration);
    }
    judge::sessions(conn, args, report).await;
    judge::replication(conn, args, report).await;
    match live_nodes(conn, horizon).await {
        Ok(nodes) => judge::fleet(&nodes, &finish, args, report),
        Err(e) => report.incomplete("fleet", "read the live nodes", &e),
    }
}

/// What the analysis of earlier statements learnt: the tables they create,
/// and each target's relation, looked up once.
#[derive(Default)]
struct Seen {
    created: HashSet<String>,
    relations: HashMap<Target, Option<Relation>>,
}

/// Classifies every statement of one pending migration and joins each lock
/// with its table in the catalog.
async fn analyse(
    conn: &mut PgConnection,
    def: &MigrationDef,
    in_up: bool,
    seen: &mut Seen,
    args: &PreflightArgs,
    report: &mut Report,
) -> MigrationCheck {
    let batched = def.batched();
    let mut statements = Vec::new();
    for (statement, effects) in classify_sql(&def.sql) {
        let mut locks = Vec::new();
        for mut effect in effects {
            if !effect.rewrite_if_volatile.is_empty() {
                match catalog::any_volatile(conn, &effect.rewrite_if_volatile).await {
                    Ok(Some(true)) => {
                        effect.work = Work::Rewrite;
                        effect.action.push_str(
                            "; but the default calls a volatile function: rewrites the table",
                        );
                    }
                    Ok(_) => {}
                    Err(e) => report.incomplete("locks", "read function volatility", &e),
                }
            }
            let table = match &effect.target {
                Some(target) => match seen.relations.get(target) {
                    Some(known) => known.clone(),
                    None => match catalog::resolve(conn, target).await {
                        Ok(relation) => {
                            seen.relations.insert(target.clone(), relation.clone());
                            relation
                        }
                        Err(e) => {
                            report.incomplete("locks", &format!("look up {target}"), &e);
                            None
                        }
                    },
                },
                None => None,
            };
            if let Some(name) = &effect.creates {
                seen.created.insert(name.clone());
            }
            let new_in_upgrade = table.is_none()
                && matches!(&effect.target, Some(Target::Table(name)) if seen.created.contains(&name.to_string()));
            let needs_window = table.as_ref().is_some_and(|t| {
                let bytes = t.size_bytes.map_or(0, |b| u64::try_from(b).unwrap_or(0));
                effect.needs_window(bytes, args.window_threshold_bytes)
            });
            let check = EffectCheck {
                rewrites: effect.work == Work::Rewrite,
                needs_window,
                table,
                new_in_upgrade,
                effect,
            };
            judge::statement(def, statement.line, batched, &check, args, report);
            locks.push(check);
        }
        statements.push(StatementCheck {
            line: statement.line,
            sql: shorten(&statement.text),
            locks,
        });
    }
    MigrationCheck {
        version: def.version,
        file: def.file.clone(),
        phase: def.phase.as_str().to_owned(),
        requires_release: def.requires_release.as_ref().map(ToString::to_string),
        no_transaction: def.no_tx,
        batched,
        in_up,
        statements,
    }
}

/// The statement on one line, cut at 100 characters.
fn shorten(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(100) {
        Some((cut, _)) => format!("{} ...", &one_line[..cut]),
        None => one_line,
    }
}

/// Bytes as `pg_size_pretty` prints them (1024-based).
pub(crate) fn pretty_bytes(bytes: i64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value.abs() >= 10.0 * 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.0} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_pg_size_pretty() {
        assert_eq!(pretty_bytes(8192), "8192 bytes");
        assert_eq!(pretty_bytes(10 * 1024 * 1024), "10 MB");
        assert_eq!(pretty_bytes(10 * 1024 * 1024 * 1024), "10 GB");
        assert_eq!(pretty_bytes(24 * 1024), "24 kB");
    }

    #[test]
    fn long_statements_are_cut_on_one_line() {
        assert_eq!(
            shorten("ALTER TABLE t\n   ADD COLUMN c int"),
            "ALTER TABLE t ADD COLUMN c int"
        );
        let long = "x".repeat(150);
        assert_eq!(shorten(&long).len(), 104);
    }
}
