//! How `status` and `plan` print: a table for people, JSON for scripts.

use obleth_config::migrate::compat::{check, hex, Compatibility};
use obleth_config::migrate::{AppliedMigration, MigrationDef, MigrationSet};
use serde::Serialize;

use crate::commands::verdict_exit_code;
use crate::exit;

/// Everything `status` knows, ready to print.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub initialised: bool,
    /// The database's version: its newest applied migration, `null` when
    /// none is applied.
    pub database_version: Option<DatabaseVersion>,
    pub verdict: Option<Compatibility>,
    pub migrations: Vec<MigrationLine>,
    pub exit_code: u8,
}

/// The newest migration a database has applied, as seeds and operators
/// name a schema.
#[derive(Debug, Serialize)]
pub struct DatabaseVersion {
    pub version: i64,
    pub description: String,
}

/// One migration as `status` shows it.
#[derive(Debug, Serialize)]
pub struct MigrationLine {
    pub version: i64,
    pub description: String,
    pub phase: String,
    /// applied, pending, unknown (applied by another release) or dirty.
    pub state: &'static str,
    /// ok, modified, or n/a when there is nothing to compare.
    pub checksum: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_checksum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_checksum: Option<String>,
}

impl StatusReport {
    pub fn new(set: &MigrationSet, applied: Option<&[AppliedMigration]>) -> StatusReport {
        let Some(applied) = applied else {
            let migrations = set.iter().map(|def| line_for_def(def, "pending")).collect();
            return StatusReport {
                initialised: false,
                database_version: None,
                verdict: None,
                migrations,
                exit_code: exit::NOT_INITIALISED,
            };
        };
        let verdict = check(set, applied);
        let mut migrations: Vec<MigrationLine> = Vec::new();
        for def in set.iter() {
            match applied.iter().find(|r| r.version == def.version) {
                Some(row) => {
                    let same = row.checksum == def.checksum;
                    migrations.push(MigrationLine {
                        state: if row.success { "applied" } else { "dirty" },
                        checksum: if same { "ok" } else { "modified" },
                        applied_checksum: (!same).then(|| hex(&row.checksum)),
                        file_checksum: (!same).then(|| hex(&def.checksum)),
                        ..line_for_def(def, "applied")
                    });
                }
                None => migrations.push(line_for_def(def, "pending")),
            }
        }
        for row in applied.iter().filter(|r| set.get(r.version).is_none()) {
            migrations.push(MigrationLine {
                version: row.version,
                description: row.description.clone(),
                phase: row.phase.as_str().to_owned(),
                state: if row.success { "unknown" } else { "dirty" },
                checksum: "n/a",
                applied_checksum: None,
                file_checksum: None,
            });
        }
        migrations.sort_by_key(|m| m.version);
        let exit_code = verdict_exit_code(&verdict);
        let database_version = applied
            .iter()
            .filter(|r| r.success)
            .max_by_key(|r| r.version)
            .map(|r| DatabaseVersion {
                version: r.version,
                description: r.description.clone(),
            });
        StatusReport {
            initialised: true,
            database_version,
            verdict: Some(verdict),
            migrations,
            exit_code,
        }
    }
}

fn line_for_def(def: &MigrationDef, state: &'static str) -> MigrationLine {
    MigrationLine {
        version: def.version,
        description: def.description.clone(),
        phase: def.phase.as_str().to_owned(),
        state,
        checksum: "n/a",
        applied_checksum: None,
        file_checksum: None,
    }
}

pub fn print_status(report: &StatusReport, json: bool, database: &str) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => out!("{text}"),
            Err(err) => eprintln!("error: cannot render JSON: {err}"),
        }
        return;
    }
    out!("database: {database}");
    match &report.verdict {
        None => out!(
            "state:    not initialised: no migration was ever applied; run `obleth-migrator up`"
        ),
        Some(verdict) => out!("state:    {}", verdict.describe()),
    }
    match &report.database_version {
        Some(v) => out!("version:  {} ({})", v.version, v.description),
        None => out!("version:  none: no migration is applied"),
    }
    out!();
    out!(
        "{:<16} {:<9} {:<8} {:<9} DESCRIPTION",
        "VERSION",
        "PHASE",
        "STATE",
        "CHECKSUM"
    );
    for m in &report.migrations {
        out!(
            "{:<16} {:<9} {:<8} {:<9} {}",
            m.version,
            m.phase,
            m.state,
            m.checksum,
            m.description
        );
        if let (Some(applied), Some(file)) = (&m.applied_checksum, &m.file_checksum) {
            out!("{:<16} applied {applied}", "");
            out!("{:<16} file    {file}", "");
        }
    }
}

#[derive(Serialize)]
struct PlanJson<'a> {
    verdict: &'a Compatibility,
    up: Vec<PlanItem>,
    finish: Vec<PlanItem>,
}

#[derive(Serialize)]
struct PlanItem {
    version: i64,
    file: String,
    phase: String,
    no_transaction: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    requires_release: Option<String>,
}

fn item(def: &MigrationDef) -> PlanItem {
    PlanItem {
        version: def.version,
        file: def.file.clone(),
        phase: def.phase.as_str().to_owned(),
        no_transaction: def.no_tx,
        requires_release: def.requires_release.as_ref().map(ToString::to_string),
    }
}

pub fn print_plan(
    verdict: &Compatibility,
    up: &[&MigrationDef],
    finish: &[&MigrationDef],
    json: bool,
) {
    if json {
        let plan = PlanJson {
            verdict,
            up: up.iter().map(|d| item(d)).collect(),
            finish: finish.iter().map(|d| item(d)).collect(),
        };
        match serde_json::to_string_pretty(&plan) {
            Ok(text) => out!("{text}"),
            Err(err) => eprintln!("error: cannot render JSON: {err}"),
        }
        return;
    }
    out!("state: {}", verdict.describe());
    for (title, defs) in [
        ("`obleth-migrator up` would apply", up),
        ("`obleth-migrator finish` would apply", finish),
    ] {
        if defs.is_empty() {
            out!("{title}: nothing");
            continue;
        }
        out!("{title}:");
        for def in defs {
            let requires = def
                .requires_release
                .as_ref()
                .map(|r| format!(", needs every node at {r} or later"))
                .unwrap_or_default();
            out!(
                "  {} {} ({}{requires})",
                def.version,
                def.file,
                def.phase.as_str()
            );
        }
    }
}
