//! The severity of each preflight finding: what is a no-go, what a warning,
//! what only information. The table in `docs/migrations.md#preflight` says
//! the same; keep them together.

use obleth_config::migrate::locks::{LockMode, RUNS_CODE};
use obleth_config::migrate::runner::{LiveNode, LOCK_KEY};
use obleth_config::migrate::skew;
use obleth_config::migrate::MigrationDef;
use sqlx::PgConnection;

use super::catalog::{self, HeldLock};
use super::{pretty_bytes, EffectCheck, LockHolder, Node, PreflightArgs, Report, Severity};

const BATCHED: &str =
    "batched: it repeats in many short transactions until it answers 0, so each lock is brief";

/// Findings of one lock of one pending statement: code whose locks the text
/// does not show, and a big table under a blocking lock or long work
/// (warnings: the operator decides on a window, preflight cannot).
pub(super) fn statement(
    def: &MigrationDef,
    line: usize,
    batched: bool,
    check: &EffectCheck,
    args: &PreflightArgs,
    report: &mut Report,
) {
    let at = format!("migration {} ({}) line {line}", def.version, def.file);
    let batched_note = if batched {
        format!("; {BATCHED}")
    } else {
        String::new()
    };
    let effect = &check.effect;
    if effect.is_opaque() {
        let action = if effect.action.contains(RUNS_CODE) {
            effect.action.clone()
        } else {
            format!("{}; its locks are not derived", effect.action)
        };
        report.push(
            Severity::Warning,
            "locks",
            format!("{at}: {action}{batched_note}"),
        );
    }
    let Some(table) = &check.table else {
        if let (Some(target), false) = (&effect.target, check.new_in_upgrade) {
            report.push(
                Severity::Info,
                "locks",
                format!(
                    "{at}: {target} is not in the database and no earlier pending statement creates it: the statement fails unless it says IF EXISTS or code creates it first"
                ),
            );
        }
        return;
    };
    if table.size_bytes.is_none() {
        report.push(
            Severity::Warning,
            "locks",
            format!(
                "{at}: the size of {} could not be read within 1 s: another session holds or awaits an exclusive lock on it (see the lock holders)",
                table.name
            ),
        );
    }
    if check.needs_window {
        let size = table
            .size_bytes
            .map_or_else(|| "unknown size".to_owned(), pretty_bytes);
        let rows = table.rows_text();
        let how = if effect.work.grows_with_table() {
            "it holds the lock for as long as it goes through every row"
        } else {
            "brief once granted, but it waits for every transaction using the table, and every query on the table queues behind it"
        };
        report.push(
            Severity::Warning,
            "window",
            format!(
                "{at}: {} on {} ({size}, {rows}), over {}: {}; {how}; a table this size needs a maintenance window{batched_note}",
                effect.lock,
                table.name,
                pretty_bytes(i64::try_from(args.window_threshold_bytes).unwrap_or(i64::MAX)),
                effect.action,
            ),
        );
    }
}

/// A pending lock on one table: its mode and whether the judged step takes it.
struct Needed {
    oid: i64,
    mode: LockMode,
    judged: bool,
}

fn needed_locks(report: &Report, finish: bool) -> Vec<Needed> {
    let mut needed = Vec::new();
    for m in &report.migrations {
        for s in &m.statements {
            for l in &s.locks {
                if let (Some(table), Some(mode)) = (&l.table, l.effect.lock.mode()) {
                    needed.push(Needed {
                        oid: table.oid,
                        mode,
                        judged: finish || m.in_up,
                    });
                }
            }
        }
    }
    needed
}

fn describe_session(lock: &HeldLock) -> String {
    let s = &lock.session;
    let app = s
        .application
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("unnamed");
    let state = s.state.as_deref().unwrap_or("state hidden");
    format!("pid {} ({app}, {state})", s.pid)
}

fn age(secs: Option<f64>) -> String {
    secs.map_or_else(
        || "for an unknown time".to_owned(),
        |a| format!("for {a:.0} s"),
    )
}

/// Open transactions and lock holders on the tables the plan touches.
///
/// A transaction older than `--long-xact-secs` that holds a lock conflicting
/// with one the judged step needs is a no-go: the migration would queue
/// behind it, and every query on that table behind the migration. The same
/// for a step not judged, and any other long transaction, is a warning. A
/// younger conflicting holder is information: ordinary traffic comes and
/// goes, and the runner's `lock_timeout` retries cover it.
pub(super) async fn sessions(conn: &mut PgConnection, args: &PreflightArgs, report: &mut Report) {
    let needed = needed_locks(report, args.finish);
    let long = match catalog::long_transactions(conn, args.long_xact_secs).await {
        Ok(long) => Some(long),
        Err(e) => {
            report.incomplete("transactions", "read pg_stat_activity", &e);
            None
        }
    };
    let mut oids: Vec<i64> = needed.iter().map(|n| n.oid).collect();
    oids.sort_unstable();
    oids.dedup();
    let held = if oids.is_empty() {
        Some(Vec::new())
    } else {
        match catalog::locks_on(conn, &oids).await {
            Ok(held) => Some(held),
            Err(e) => {
                report.incomplete("transactions", "read pg_locks", &e);
                None
            }
        }
    };
    let mut holders = Vec::new();
    let long_secs = args.long_xact_secs as f64;
    let mut reported_pids = Vec::new();
    for lock in held.iter().flatten().cloned() {
        let conflict = lock.mode().and_then(|mode| {
            needed
                .iter()
                .filter(|n| n.oid == lock.oid && n.mode.conflicts_with(mode))
                .max_by_key(|n| (n.judged, n.mode))
        });
        let who = describe_session(&lock);
        let is_long = lock.session.xact_age_secs.is_some_and(|a| a > long_secs);
        let held_for = age(lock.session.xact_age_secs);
        let verb = if lock.granted { "holds" } else { "awaits" };
        // Autovacuum cancels itself when a conflicting lock is requested,
        // unless it is preventing transaction-ID wraparound.
        let autovacuum = lock.session.backend_type.as_deref() == Some("autovacuum worker");
        match conflict {
            Some(n) if lock.granted && is_long && autovacuum => report.push(
                Severity::Warning,
                "transactions",
                format!(
                    "{who} (autovacuum) has held {} on {} {held_for}; it yields to the pending {} unless it is preventing wraparound (pg_stat_progress_vacuum)",
                    lock.mode, lock.table, n.mode
                ),
            ),
            Some(n) if lock.granted && is_long => {
                let severity = if n.judged {
                    Severity::NoGo
                } else {
                    Severity::Warning
                };
                report.push(
                    severity,
                    "transactions",
                    format!(
                        "{who} has held {} on {} in a transaction open {held_for}; the pending {} lock on it would queue behind it, and every query on {} behind that: end that transaction (pg_terminate_backend({})) or wait for it",
                        lock.mode, lock.table, n.mode, lock.table, lock.session.pid
                    ),
                );
                reported_pids.push(lock.session.pid);
            }
            Some(n) => report.push(
                Severity::Info,
                "transactions",
                format!(
                    "{who} {verb} {} on {} (transaction open {held_for}), which conflicts with the pending {}",
                    lock.mode, lock.table, n.mode
                ),
            ),
            None => {}
        }
        holders.push(LockHolder {
            conflicts_with: conflict.map(|n| n.mode.as_str().to_owned()),
            lock,
        });
    }
    report.lock_holders = held.map(|_| holders);
    for session in long.iter().flatten() {
        if reported_pids.contains(&session.pid) {
            continue;
        }
        let app = session
            .application
            .as_deref()
            .filter(|a| !a.is_empty())
            .unwrap_or("unnamed");
        report.push(
            Severity::Warning,
            "transactions",
            format!(
                "pid {} ({app}, {}) has had a transaction open {}: a lock it takes later would hold a migration up, and it holds back vacuum",
                session.pid,
                session.state.as_deref().unwrap_or("state hidden"),
                age(session.xact_age_secs)
            ),
        );
    }
    report.long_transactions = long;
    match catalog::migration_lock_holder(conn, LOCK_KEY).await {
        Ok(Some(holder)) => report.push(
            Severity::NoGo,
            "transactions",
            format!(
                "the migration lock is held by pid {} ({}, {}): a migration run is in progress; let it finish first",
                holder.pid,
                holder
                    .application
                    .as_deref()
                    .filter(|a| !a.is_empty())
                    .unwrap_or("unnamed"),
                holder.xact_age_secs.map_or_else(
                    || "no transaction open".to_owned(),
                    |a| format!("transaction open {a:.0} s")
                )
            ),
        ),
        Ok(None) => {}
        Err(e) => report.incomplete("transactions", "read the migration lock", &e),
    }
    match catalog::hidden_sessions(conn).await {
        Ok(0) => {}
        Ok(n) => report.push(
            Severity::Warning,
            "transactions",
            format!(
                "{n} session(s) of other roles are hidden from this role, so their transactions were not checked; run preflight as a role with pg_read_all_stats (pg_monitor)"
            ),
        ),
        Err(e) => report.incomplete("transactions", "count hidden sessions", &e),
    }
}

/// Standbys of a primary: a replay lag above `--max-replay-lag-secs` is a
/// warning (a rewrite makes it grow). Running on a standby was already
/// judged a no-go.
pub(super) async fn replication(
    conn: &mut PgConnection,
    args: &PreflightArgs,
    report: &mut Report,
) {
    if report.server.as_ref().is_some_and(|s| s.in_recovery) {
        return;
    }
    match catalog::standbys(conn).await {
        Ok(standbys) => {
            for s in &standbys {
                if let Some(lag) = s
                    .replay_lag_secs
                    .filter(|l| *l > args.max_replay_lag_secs as f64)
                {
                    report.push(
                        Severity::Warning,
                        "replication",
                        format!(
                            "standby {} ({}) replays {lag:.1} s behind, over {} s; a table rewrite adds to it",
                            s.application.as_deref().unwrap_or("unnamed"),
                            s.client_addr.as_deref().unwrap_or("local"),
                            args.max_replay_lag_secs
                        ),
                    );
                }
            }
            report.standbys = Some(standbys);
        }
        Err(e) => report.incomplete("replication", "read pg_stat_replication", &e),
    }
}

/// The live fleet against the version-skew rule: a node the rule does not
/// allow beside this release is a no-go. A node older than a pending
/// contract migration requires is a no-go when judging `finish`, and
/// information otherwise (before the rollout that is the usual state).
pub(super) fn fleet(
    nodes: &[LiveNode],
    finish: &[&MigrationDef],
    args: &PreflightArgs,
    report: &mut Report,
) {
    let binary = obleth_config::version::release();
    let findings = skew::judge(&binary, nodes, finish);
    for f in &findings {
        let severity = if f.issue.breaks_skew_rule() || args.finish {
            Severity::NoGo
        } else {
            Severity::Info
        };
        report.push(severity, "fleet", f.describe(&binary));
    }
    report.nodes = Some(
        nodes
            .iter()
            .map(|n| Node {
                node_id: n.node_id.clone(),
                service: n.service.clone(),
                version: n.version.clone(),
                silent_secs: n.silent_secs,
            })
            .collect(),
    );
    report.skew = Some(findings);
}
