//! Reverting migrations (`obleth-migrator down [N]`): the last N applied
//! migrations, newest first, each by its down script, under the runner's
//! advisory lock, timeouts and retries.
//!
//! Every refusal is decided before anything changes: N larger than what is
//! applied, a contract migration among the N (what it destroyed is gone), a
//! migration without a down script, and a migration a live node's release
//! requires (`--force` overrides only this one).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};
use tracing::{info, warn};

use super::applied::{read_applied, AppliedMigration};
use super::phase::Phase;
use super::runner::{
    bootstrap, live_nodes, refuse_incompatible, set_timeouts, MigrateError, Runner,
};
use super::set::MigrationDef;
use super::sql::split_statements;

/// What `down` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownRequest {
    /// How many applied migrations to revert, newest first.
    pub count: usize,
    /// Revert even migrations a live node's release requires.
    pub force: bool,
}

/// A live node whose release requires a migration `down` would revert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DownBlocker {
    pub node_id: String,
    pub service: String,
    pub version: String,
    /// The newest migration the node's binary embeds; `None` for a binary
    /// older than `20261128000007`, which records none and so may need any.
    pub release_schema: Option<i64>,
    /// The newest of the migrations to revert that the node requires.
    pub migration: i64,
}

/// One migration reverted by a run.
#[derive(Debug, Clone, Serialize)]
pub struct RevertedStep {
    pub version: i64,
    pub description: String,
    /// The down script that ran.
    pub file: String,
    /// 1 unless `lock_timeout` made the runner retry.
    pub attempts: u32,
    #[serde(serialize_with = "super::runner::millis")]
    pub elapsed: Duration,
}

/// The outcome of a `down` run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    pub reverted: Vec<RevertedStep>,
    /// Live nodes that `--force` went past.
    pub forced_past: Vec<DownBlocker>,
}

/// Why `down` reverted nothing, or stopped. The refusals change nothing; a
/// failed down script changes nothing of its own migration (see
/// [`Runner::down`]).
#[derive(Debug, thiserror::Error)]
pub enum DownError {
    #[error("down refused: asked to revert {asked} migration(s) but {applied} are applied")]
    NothingToRevert { asked: usize, applied: usize },
    #[error("down refused: migration {version} ({file}) is a contract migration; what it removed cannot be restored by a script: restore a backup instead")]
    Contract { version: i64, file: String },
    #[error("down refused: migration {version} ({file}) has no down script {expected}; write one or restore a backup")]
    NoDownScript {
        version: i64,
        file: String,
        expected: String,
    },
    #[error("down refused: live nodes run releases that require migrations it would revert: {}; stop or roll back those nodes first, or pass --force", describe_blockers(.0))]
    NodesRequire(Vec<DownBlocker>),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
}

impl From<sqlx::Error> for DownError {
    fn from(err: sqlx::Error) -> Self {
        DownError::Migrate(MigrateError::Database(err))
    }
}

/// Names each blocker with why it blocks.
pub fn describe_blockers(blockers: &[DownBlocker]) -> String {
    blockers
        .iter()
        .map(|b| match b.release_schema {
            Some(schema) => format!(
                "{} {} runs {} whose release requires migrations through {schema}, including {}",
                b.service, b.node_id, b.version, b.migration
            ),
            None => format!(
                "{} {} runs {}, which records no release schema (a release older than down), so it may require {}",
                b.service, b.node_id, b.version, b.migration
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Runner {
    /// The migrations `down` reverts on a database with `applied`, newest
    /// first, or the refusal: fewer than `count` applied, then a contract
    /// migration among them, then one without a down script (an applied
    /// migration this binary does not know has none). Pure: nodes are judged
    /// apart, by [`Runner::down_blockers`].
    pub fn down_plan(
        &self,
        applied: &[AppliedMigration],
        count: usize,
    ) -> Result<Vec<MigrationDef>, DownError> {
        let done: Vec<&AppliedMigration> = applied.iter().filter(|r| r.success).collect();
        if count == 0 || count > done.len() {
            return Err(DownError::NothingToRevert {
                asked: count,
                applied: done.len(),
            });
        }
        let mut newest: Vec<&AppliedMigration> = done.into_iter().rev().take(count).collect();
        newest.sort_by_key(|r| std::cmp::Reverse(r.version));
        let file_of = |row: &AppliedMigration| {
            self.set().get(row.version).map_or_else(
                || {
                    format!(
                        "{}_{}.sql, applied by another release",
                        row.version,
                        row.description.replace(' ', "_")
                    )
                },
                |def| def.file.clone(),
            )
        };
        for row in &newest {
            let phase = self.set().get(row.version).map_or(row.phase, |d| d.phase);
            if phase == Phase::Contract {
                return Err(DownError::Contract {
                    version: row.version,
                    file: file_of(row),
                });
            }
        }
        let mut plan = Vec::with_capacity(newest.len());
        for row in &newest {
            match self.set().get(row.version) {
                Some(def) if def.down.is_some() => plan.push(def.clone()),
                _ => {
                    return Err(DownError::NoDownScript {
                        version: row.version,
                        file: file_of(row),
                        expected: format!(
                            "{}_{}.down.sql",
                            row.version,
                            row.description.replace(' ', "_")
                        ),
                    })
                }
            }
        }
        Ok(plan)
    }

    /// The live nodes (seen within the node liveness window, not stopped)
    /// whose release requires a migration of `plan`: one that recorded a
    /// release schema at or past it, or one that recorded none.
    pub async fn down_blockers(
        &self,
        conn: &mut PgConnection,
        plan: &[MigrationDef],
    ) -> Result<Vec<DownBlocker>, sqlx::Error> {
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        let nodes = live_nodes(conn, self.options().node_liveness).await?;
        let mut blockers = Vec::new();
        for node in nodes {
            let required = plan
                .iter()
                .map(|d| d.version)
                .filter(|v| node.release_schema.is_none_or(|schema| schema >= *v))
                .max();
            if let Some(migration) = required {
                blockers.push(DownBlocker {
                    node_id: node.node_id,
                    service: node.service,
                    version: node.version,
                    release_schema: node.release_schema,
                    migration,
                });
            }
        }
        Ok(blockers)
    }

    /// Reads the database and answers what `down` would revert, changing
    /// nothing and taking no lock, with the nodes `--force` would go past.
    /// Refuses as a run would.
    pub async fn down_dry_run(
        &self,
        options: &PgConnectOptions,
        request: DownRequest,
    ) -> Result<(Vec<MigrationDef>, Vec<DownBlocker>), DownError> {
        let mut conn = self.connect(options).await?;
        let judged = self.judge(&mut conn, request).await;
        let _ = conn.close().await;
        judged
    }

    /// Every refusal, in order, on what the database says now.
    async fn judge(
        &self,
        conn: &mut PgConnection,
        request: DownRequest,
    ) -> Result<(Vec<MigrationDef>, Vec<DownBlocker>), DownError> {
        let applied = read_applied(conn).await?.unwrap_or_default();
        let plan = self.down_plan(&applied, request.count)?;
        refuse_incompatible(self.set(), &applied)?;
        let blockers = self.down_blockers(conn, &plan).await?;
        if !blockers.is_empty() && !request.force {
            return Err(DownError::NodesRequire(blockers));
        }
        Ok((plan, blockers))
    }

    /// Reverts the last `request.count` applied migrations, newest first,
    /// under the advisory lock, after every refusal has been judged.
    ///
    /// A transactional down script runs with the deletion of its
    /// `_sqlx_migrations` and `obleth_migration_phases` rows in one
    /// transaction: reverted and forgotten, or neither. A `-- no-transaction`
    /// one runs statement by statement (its statements are idempotent, the
    /// lint insists), then its rows are deleted in a transaction of their
    /// own: a failure part-way leaves the migration recorded as applied, and
    /// the next `down` repeats the script from the top. A run that fails
    /// keeps what earlier steps reverted.
    pub fn down<'a>(
        &'a self,
        options: &'a PgConnectOptions,
        request: DownRequest,
    ) -> Pin<Box<dyn Future<Output = Result<DownReport, DownError>> + Send + 'a>> {
        Box::pin(async move {
            self.check_session(options).await?;
            let mut conn = self.connect(options).await?;
            let result = match self.acquire_lock(&mut conn).await {
                Ok(()) => {
                    let result = self.down_locked(&mut conn, request).await;
                    let unlocked: Result<bool, sqlx::Error> =
                        sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
                            .bind(self.options().lock_key)
                            .fetch_one(&mut conn)
                            .await;
                    if let Err(err) = unlocked {
                        warn!(error = %err, "Could not unlock the migration lock; closing the connection releases it.");
                    }
                    result
                }
                Err(err) => Err(err.into()),
            };
            let _ = conn.close().await;
            result
        })
    }

    async fn down_locked(
        &self,
        conn: &mut PgConnection,
        request: DownRequest,
    ) -> Result<DownReport, DownError> {
        let (plan, blockers) = self.judge(conn, request).await?;
        let mut report = DownReport::default();
        if !blockers.is_empty() {
            warn!(blockers = %describe_blockers(&blockers), "Forcing down past live nodes whose release requires the migrations.");
            report.forced_past = blockers;
        }
        bootstrap(conn).await?;
        for def in &plan {
            let step = self.revert(conn, def).await?;
            info!(
                version = step.version,
                attempts = step.attempts,
                elapsed_ms = step.elapsed.as_millis() as u64,
                "Reverted migration {} with {}.",
                def.file,
                step.file
            );
            report.reverted.push(step);
        }
        Ok(report)
    }

    async fn revert(
        &self,
        conn: &mut PgConnection,
        def: &MigrationDef,
    ) -> Result<RevertedStep, MigrateError> {
        // The script as the runner's retry and error paths expect it, so
        // they name the down file.
        let script = match &def.down {
            Some(down) => MigrationDef {
                file: down.file.clone(),
                sql: down.sql.clone(),
                no_tx: down.no_tx,
                down: None,
                ..def.clone()
            },
            None => {
                return Err(MigrateError::Failed {
                    version: def.version,
                    file: def.file.clone(),
                    message: "it has no down script".to_owned(),
                })
            }
        };
        let started = Instant::now();
        let mut attempts = 0;
        if script.no_tx {
            set_timeouts(&mut *conn, self.options(), false).await?;
            let result = self.revert_no_tx(conn, &script, &mut attempts).await;
            let reset = conn
                .execute("RESET lock_timeout; RESET statement_timeout")
                .await;
            result?;
            reset?;
        } else {
            loop {
                attempts += 1;
                match revert_once(conn, &script, self).await {
                    Ok(()) => break,
                    Err(err) => self.retry_or_fail(&script, attempts, err).await?,
                }
            }
        }
        Ok(RevertedStep {
            version: def.version,
            description: def.description.clone(),
            file: script.file,
            attempts,
            elapsed: started.elapsed(),
        })
    }

    /// Runs a `-- no-transaction` down script until it succeeds, from its
    /// first statement after each lock timeout, then forgets the migration.
    async fn revert_no_tx(
        &self,
        conn: &mut PgConnection,
        script: &MigrationDef,
        attempts: &mut u32,
    ) -> Result<(), MigrateError> {
        'attempt: loop {
            *attempts += 1;
            for statement in split_statements(&script.sql) {
                if let Err(err) = conn.execute(statement.text.as_str()).await {
                    self.retry_or_fail(script, *attempts, err).await?;
                    continue 'attempt;
                }
            }
            break;
        }
        let mut tx = conn.begin().await?;
        forget(&mut tx, script.version).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// One attempt at a transactional down script: the script and the deletion
/// of its bookkeeping commit together or not at all.
async fn revert_once(
    conn: &mut PgConnection,
    script: &MigrationDef,
    runner: &Runner,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    set_timeouts(&mut tx, runner.options(), true).await?;
    tx.execute(script.sql.as_str()).await?;
    forget(&mut tx, script.version).await?;
    tx.commit().await
}

/// Deletes a migration's bookkeeping (inside the caller's transaction).
async fn forget(conn: &mut PgConnection, version: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(version)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM obleth_migration_phases WHERE version = $1")
        .bind(version)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::set::{DownScript, MigrationSet};
    use crate::migrate::RunnerOptions;

    fn def(version: i64, phase: Phase, down: bool) -> MigrationDef {
        MigrationDef {
            down: down.then(|| DownScript {
                file: format!("{version}_m{version}.down.sql"),
                sql: format!("SELECT -{version};"),
                no_tx: false,
            }),
            ..MigrationDef::for_test(version, phase)
        }
    }

    fn row(version: i64, phase: Phase) -> AppliedMigration {
        AppliedMigration::for_test(version, Some(phase))
    }

    fn runner() -> Runner {
        Runner::new(
            MigrationSet::from_defs(vec![
                def(1, Phase::Expand, true),
                def(2, Phase::Contract, false),
                def(3, Phase::Expand, false),
                def(4, Phase::Expand, true),
                def(5, Phase::Expand, true),
            ]),
            RunnerOptions::default(),
        )
    }

    fn versions(plan: &[MigrationDef]) -> Vec<i64> {
        plan.iter().map(|d| d.version).collect()
    }

    #[test]
    fn plans_the_newest_applied_first_by_version() {
        let r = runner();
        let applied = [
            row(1, Phase::Expand),
            row(4, Phase::Expand),
            row(5, Phase::Expand),
        ];
        assert_eq!(versions(&r.down_plan(&applied, 1).unwrap()), [5]);
        assert_eq!(versions(&r.down_plan(&applied, 2).unwrap()), [5, 4]);
        // 3 is pending and 2 too: the third newest applied is 1.
        assert_eq!(versions(&r.down_plan(&applied, 3).unwrap()), [5, 4, 1]);
    }

    #[test]
    fn refuses_in_order_too_many_then_contract_then_no_down_script() {
        let r = runner();
        let all = [
            row(1, Phase::Expand),
            row(2, Phase::Contract),
            row(3, Phase::Expand),
            row(4, Phase::Expand),
            row(5, Phase::Expand),
        ];
        let err = r.down_plan(&all, 6).unwrap_err();
        assert!(
            matches!(
                err,
                DownError::NothingToRevert {
                    asked: 6,
                    applied: 5
                }
            ),
            "{err}"
        );
        assert!(matches!(
            r.down_plan(&[], 1),
            Err(DownError::NothingToRevert { .. })
        ));

        // 3 has no down script and 2 is a contract: the contract is named.
        let err = r.down_plan(&all, 4).unwrap_err().to_string();
        assert!(
            err.contains("migration 2 (2_m2.sql) is a contract"),
            "{err}"
        );
        let err = r.down_plan(&all, 3).unwrap_err().to_string();
        assert!(
            err.contains("migration 3 (3_m3.sql) has no down script 3_m3.down.sql"),
            "{err}"
        );

        // An applied migration this binary does not know has no down script here.
        let mut newer = row(9, Phase::Expand);
        newer.description = "from the future".to_owned();
        let err = r
            .down_plan(&[row(1, Phase::Expand), newer], 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("9_from_the_future.sql, applied by another release"),
            "{err}"
        );
    }

    #[test]
    fn blockers_name_the_node_and_why() {
        let text = describe_blockers(&[
            DownBlocker {
                node_id: "gw-1".to_owned(),
                service: "gateway".to_owned(),
                version: "0.3.0".to_owned(),
                release_schema: Some(7),
                migration: 7,
            },
            DownBlocker {
                node_id: "gw-0".to_owned(),
                service: "gateway".to_owned(),
                version: "0.1.0".to_owned(),
                release_schema: None,
                migration: 7,
            },
        ]);
        assert!(
            text.contains(
                "gateway gw-1 runs 0.3.0 whose release requires migrations through 7, including 7"
            ),
            "{text}"
        );
        assert!(
            text.contains("gateway gw-0 runs 0.1.0, which records no release schema"),
            "{text}"
        );
    }
}
