//! What each subcommand does, returning the process exit code.

use std::str::FromStr;
use std::time::Duration;

use obleth_config::migrate::compat::{check, Compatibility};
use obleth_config::migrate::lint_set::lint_set;
use obleth_config::migrate::runner::MigrateError;
use obleth_config::migrate::{read_applied, MigrationSet, Mode, Runner, RunnerOptions};
use obleth_config::settings::redact_url;
use obleth_config::version::VERSION;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::report::{print_plan, print_status, StatusReport};
use crate::{exit, Cli, Command};

/// Runs the parsed command line and answers the exit code. Errors are printed
/// here, as `error: ...` on stderr, so `main` stays a thin shell.
pub async fn run(cli: Cli) -> u8 {
    match dispatch(&cli).await {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.code
        }
    }
}

/// A failure with the exit code it maps to.
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<MigrateError> for Failure {
    fn from(err: MigrateError) -> Self {
        let code = match &err {
            MigrateError::Incompatible(_) => exit::INCOMPATIBLE,
            MigrateError::LockHeld { .. } => exit::LOCK_HELD,
            MigrateError::OldNodesAlive(_) => exit::OLD_NODES,
            _ => exit::ERROR,
        };
        if let MigrateError::Pooled(_) = &err {
            // The runner cannot know which flag named the URL; the CLI does.
            return Failure::new(
                code,
                format!("{err}: --database-url (DATABASE_URL) must name PostgreSQL, not a transaction pooler such as PgBouncer"),
            );
        }
        Failure::new(code, err.to_string())
    }
}

impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        Failure::new(exit::ERROR, format!("database error: {err}"))
    }
}

async fn dispatch(cli: &Cli) -> Result<u8, Failure> {
    if let Command::Probe { timeout_ms, url } = &cli.command {
        return crate::probe::probe(url, std::time::Duration::from_millis(*timeout_ms))
            .await
            .map(|()| exit::OK)
            .map_err(|e| Failure::new(exit::ERROR, e.to_string()));
    }
    let set = migration_set(cli)?;
    match &cli.command {
        Command::Probe { .. } => Ok(exit::OK),
        Command::Lint { dir } => {
            let set = match dir {
                Some(dir) => MigrationSet::from_dir(dir)
                    .map_err(|e| Failure::new(exit::ERROR, e.to_string()))?,
                None => set,
            };
            Ok(run_lint(&set))
        }
        Command::Up { dry_run, verbose } => {
            let options = connect_options(cli)?;
            let runner = Runner::new(set, runner_options(cli));
            if *dry_run {
                return print_dry_run(&runner, &options, Mode::Up).await;
            }
            let report = runner.run(&options, Mode::Up).await?;
            if report.applied.is_empty() {
                out!("up to date: no pending expand migrations");
            } else {
                out!("applied {} migration(s)", report.applied.len());
            }
            if *verbose {
                for step in &report.applied {
                    out!(
                        "  {} {:<8} {:>9.1} ms  attempts {}  {}",
                        step.version,
                        step.phase.as_str(),
                        step.elapsed.as_secs_f64() * 1000.0,
                        step.attempts,
                        step.description
                    );
                }
            }
            if !report.awaiting_finish.is_empty() {
                out!(
                    "contract migrations waiting for `obleth-migrator finish`: {}",
                    join(&report.awaiting_finish)
                );
            }
            Ok(exit::OK)
        }
        Command::Finish { force, dry_run } => {
            let options = connect_options(cli)?;
            let runner = Runner::new(set, runner_options(cli));
            let mode = Mode::Finish { force: *force };
            if *dry_run {
                return print_dry_run(&runner, &options, mode).await;
            }
            let report = runner.run(&options, mode).await?;
            for blocker in &report.forced_past {
                eprintln!(
                    "warning: forced past {} {} running {} (migration {} requires {})",
                    blocker.service,
                    blocker.node_id,
                    blocker.version,
                    blocker.migration,
                    blocker.requires_release
                );
            }
            if report.applied.is_empty() {
                out!("up to date: nothing to finish");
            } else {
                for step in &report.applied {
                    out!(
                        "applied {} ({}, {}) in {:.1} ms",
                        step.version,
                        step.description,
                        step.phase.as_str(),
                        step.elapsed.as_secs_f64() * 1000.0
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Status { json } => {
            let options = connect_options(cli)?;
            let report = status(&set, &options).await?;
            print_status(
                &report,
                *json,
                &redact_url(cli.database_url.as_deref().unwrap_or("")),
            );
            Ok(report.exit_code)
        }
        Command::Plan { json } => {
            let options = connect_options(cli)?;
            let runner = Runner::new(set, runner_options(cli));
            let mut conn = connect(&options).await?;
            let applied = read_applied(&mut conn).await?.unwrap_or_default();
            let _ = conn.close().await;
            let verdict = check(runner.set(), &applied);
            let up = runner.plan(&applied, Mode::Up);
            let finish = runner.plan(&applied, Mode::Finish { force: false });
            print_plan(&verdict, &up, &finish, *json);
            Ok(if verdict.is_fatal() {
                exit::INCOMPATIBLE
            } else {
                exit::OK
            })
        }
        Command::Preflight(args) => {
            let options = connect_options(cli).map_err(|f| f.message);
            let horizon = runner_options(cli).node_liveness;
            Ok(
                crate::preflight::run(set, args, cli.database_url.as_deref(), options, horizon)
                    .await,
            )
        }
        Command::Down {
            count,
            force,
            dry_run,
        } => {
            let options = connect_options(cli)?;
            let runner = Runner::new(set, runner_options(cli));
            crate::down::down(&runner, &options, *count, *force, *dry_run).await
        }
        Command::Check => {
            let options = connect_options(cli)?;
            let mut conn = connect(&options).await?;
            let applied = read_applied(&mut conn).await?;
            let _ = conn.close().await;
            let Some(applied) = applied else {
                out!("the database was never migrated: run `obleth-migrator up`");
                return Ok(exit::NOT_INITIALISED);
            };
            let verdict = check(&set, &applied);
            out!("{}", verdict.describe());
            Ok(match verdict {
                Compatibility::Compatible { .. } => {
                    out!("release {VERSION} can run on this database");
                    exit::OK
                }
                Compatibility::NeedsMigration { .. } => {
                    out!("release {VERSION} needs `obleth-migrator up` first");
                    exit::PENDING
                }
                _ => {
                    out!("release {VERSION} cannot run on this database");
                    exit::INCOMPATIBLE
                }
            })
        }
        Command::Verify => {
            let options = connect_options(cli)?;
            let mut conn = connect(&options).await?;
            let applied = read_applied(&mut conn).await?;
            let _ = conn.close().await;
            let Some(applied) = applied else {
                out!("nothing to verify: the database was never migrated");
                return Ok(exit::NOT_INITIALISED);
            };
            let mut bad = 0;
            for row in &applied {
                match set.get(row.version) {
                    Some(def) if def.checksum == row.checksum => {
                        out!("ok        {} {}", row.version, def.file);
                    }
                    Some(def) => {
                        bad += 1;
                        out!(
                            "MODIFIED  {} {}: applied checksum {}, file checksum {}",
                            row.version,
                            def.file,
                            obleth_config::migrate::compat::hex(&row.checksum),
                            obleth_config::migrate::compat::hex(&def.checksum)
                        );
                    }
                    None => out!(
                        "unknown   {} {} (applied by another release; not verified)",
                        row.version,
                        row.description
                    ),
                }
            }
            if bad > 0 {
                eprintln!("error: {bad} applied migration(s) differ from their files; a shipped migration must never be edited: restore the file and write a new migration");
                return Ok(exit::INCOMPATIBLE);
            }
            Ok(exit::OK)
        }
    }
}

fn migration_set(cli: &Cli) -> Result<MigrationSet, Failure> {
    match &cli.source {
        Some(dir) => MigrationSet::from_dir(dir),
        None => MigrationSet::embedded(),
    }
    .map_err(|e| Failure::new(exit::ERROR, e.to_string()))
}

fn runner_options(cli: &Cli) -> RunnerOptions {
    RunnerOptions {
        lock_wait: Duration::from_secs(cli.lock_wait_secs),
        lock_timeout: Duration::from_millis(cli.lock_timeout_ms),
        statement_timeout: Duration::from_secs(cli.statement_timeout_secs),
        max_retries: cli.max_retries,
        retry_backoff: Duration::from_millis(cli.retry_backoff_ms),
        node_liveness: Duration::from_secs(cli.node_horizon_secs),
        ..RunnerOptions::default()
    }
}

fn connect_options(cli: &Cli) -> Result<PgConnectOptions, Failure> {
    let url = cli.database_url.as_deref().ok_or_else(|| {
        Failure::new(
            exit::ERROR,
            "no database given: pass --database-url or set DATABASE_URL",
        )
    })?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Failure::new(
            exit::ERROR,
            format!(
                "invalid database URL {}: it must start with postgres:// or postgresql://",
                redact_url(url)
            ),
        ));
    }
    PgConnectOptions::from_str(url).map_err(|e| {
        Failure::new(
            exit::ERROR,
            format!("invalid database URL {}: {e}", redact_url(url)),
        )
    })
}

async fn connect(options: &PgConnectOptions) -> Result<sqlx::PgConnection, Failure> {
    options
        .clone()
        .application_name("obleth-migrator")
        .connect()
        .await
        .map_err(|e| {
            Failure::new(
                exit::ERROR,
                format!(
                    "cannot connect to the database at {}:{}/{}: {e}",
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or("(default)")
                ),
            )
        })
}

async fn status(set: &MigrationSet, options: &PgConnectOptions) -> Result<StatusReport, Failure> {
    let mut conn = connect(options).await?;
    let applied = read_applied(&mut conn).await?;
    let _ = conn.close().await;
    Ok(StatusReport::new(set, applied.as_deref()))
}

async fn print_dry_run(
    runner: &Runner,
    options: &PgConnectOptions,
    mode: Mode,
) -> Result<u8, Failure> {
    let plan = runner.dry_run(options, mode).await?;
    if plan.is_empty() {
        out!("-- dry run: nothing to apply");
    }
    for def in plan {
        out!(
            "-- dry run: would apply {} ({}, {}{})",
            def.version,
            def.file,
            def.phase.as_str(),
            if def.no_tx { ", no transaction" } else { "" }
        );
        out!("{}", def.sql.trim_end());
        out!();
    }
    Ok(exit::OK)
}

fn run_lint(set: &MigrationSet) -> u8 {
    let result = lint_set(set);
    for finding in &result.findings {
        out!("{finding}");
    }
    if !result.down_scripts_judged {
        out!("lint: no down scripts in this set, so missing-down-script was not judged");
    }
    if result.findings.is_empty() {
        out!("lint: {} migration(s), no findings", set.len());
        exit::OK
    } else {
        eprintln!(
            "error: lint found {} problem(s); see docs/migrations.md for each rule",
            result.findings.len()
        );
        exit::ERROR
    }
}

fn join(versions: &[i64]) -> String {
    versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a verdict blocks the binary from running.
pub(crate) fn verdict_exit_code(verdict: &Compatibility) -> u8 {
    match verdict {
        Compatibility::Compatible {
            pending_contract,
            pending_backfill,
            ..
        } if pending_contract.is_empty() && pending_backfill.is_empty() => exit::OK,
        Compatibility::Compatible { .. } | Compatibility::NeedsMigration { .. } => exit::PENDING,
        Compatibility::Incompatible { .. }
        | Compatibility::Modified { .. }
        | Compatibility::Dirty { .. } => exit::INCOMPATIBLE,
    }
}
