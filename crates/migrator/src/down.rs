//! `obleth-migrator down [N]`: reverts the last N applied migrations with
//! their down scripts, or refuses with the exit code of its reason.

use obleth_config::migrate::down::{describe_blockers, DownError, DownRequest};
use obleth_config::migrate::Runner;
use sqlx::postgres::PgConnectOptions;

use crate::commands::Failure;
use crate::exit;

impl From<DownError> for Failure {
    fn from(err: DownError) -> Self {
        match err {
            // The runner's own failures keep the codes `up` gives them.
            DownError::Migrate(inner) => Failure::from(inner),
            refusal => Failure::new(refusal_code(&refusal), refusal.to_string()),
        }
    }
}

/// The documented exit code of each refusal.
fn refusal_code(err: &DownError) -> u8 {
    match err {
        DownError::NothingToRevert { .. } => exit::DOWN_NOTHING,
        DownError::Contract { .. } => exit::DOWN_CONTRACT,
        DownError::NoDownScript { .. } => exit::DOWN_NO_SCRIPT,
        DownError::NodesRequire(_) => exit::DOWN_NODES,
        DownError::Migrate(_) => exit::ERROR,
    }
}

/// Runs `down`, or with `dry_run` prints what it would run (each down script
/// whole) after the same refusals, changing nothing.
pub(crate) async fn down(
    runner: &Runner,
    options: &PgConnectOptions,
    count: u32,
    force: bool,
    dry_run: bool,
) -> Result<u8, Failure> {
    let request = DownRequest {
        count: count as usize,
        force,
    };
    if dry_run {
        let (plan, blockers) = runner.down_dry_run(options, request).await?;
        if !blockers.is_empty() {
            eprintln!(
                "warning: --force would go past live nodes: {}",
                describe_blockers(&blockers)
            );
        }
        for def in plan {
            let Some(script) = &def.down else { continue };
            out!(
                "-- dry run: would revert {} ({}) with {}{}",
                def.version,
                def.file,
                script.file,
                if script.no_tx { ", no transaction" } else { "" }
            );
            out!("{}", script.sql.trim_end());
            out!();
        }
        return Ok(exit::OK);
    }
    let report = runner.down(options, request).await?;
    if !report.forced_past.is_empty() {
        eprintln!(
            "warning: forced past live nodes: {}",
            describe_blockers(&report.forced_past)
        );
    }
    for step in &report.reverted {
        out!(
            "reverted {} ({}) with {} in {:.1} ms",
            step.version,
            step.description,
            step.file,
            step.elapsed.as_secs_f64() * 1000.0
        );
    }
    Ok(exit::OK)
}
