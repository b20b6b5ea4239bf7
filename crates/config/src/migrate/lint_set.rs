//! Linting a whole migration set: every up script and down script with
//! [`lint`], and the set-level rule that every expand migration has a down
//! script.

use super::lint::{lint, Finding, LintInput, Rule};
use super::phase::Phase;
use super::set::MigrationSet;

/// The findings of a set, and whether `missing-down-script` was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetLint {
    pub findings: Vec<Finding>,
    /// False for a set without a single down script (a directory from before
    /// `obleth-migrator down` existed), where the rule would flag every
    /// expand migration it ever shipped and so is skipped. The embedded set
    /// always has down scripts (a unit test in `set` holds every shipped
    /// expand migration to one), so the rule always applies to it.
    pub down_scripts_judged: bool,
}

/// Lints each migration and its down script, then, when the set has down
/// scripts at all, names each expand migration without one.
pub fn lint_set(set: &MigrationSet) -> SetLint {
    let mut findings = Vec::new();
    for def in set.iter() {
        findings.extend(lint(&LintInput {
            version: def.version,
            file: &def.file,
            sql: &def.sql,
            phase: def.phase,
            no_tx: def.no_tx,
            down: false,
        }));
        if let Some(down) = &def.down {
            findings.extend(lint(&LintInput {
                version: def.version,
                file: &down.file,
                sql: &down.sql,
                phase: def.phase,
                no_tx: down.no_tx,
                down: true,
            }));
        }
    }
    let down_scripts_judged = set.iter().any(|def| def.down.is_some());
    if down_scripts_judged {
        for def in set
            .iter()
            .filter(|d| d.phase == Phase::Expand && d.down.is_none())
        {
            let expected = format!(
                "{}.down.sql",
                def.file.strip_suffix(".sql").unwrap_or(&def.file)
            );
            findings.push(Finding {
                version: def.version,
                file: def.file.clone(),
                line: 1,
                rule: Rule::MissingDownScript,
                message: format!(
                    "expand migration {} has no down script; add {expected} so obleth-migrator down can revert it",
                    def.file
                ),
            });
        }
    }
    SetLint {
        findings,
        down_scripts_judged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::set::{DownScript, MigrationDef};

    fn def(version: i64, phase: Phase, sql: &str, down: Option<&str>) -> MigrationDef {
        MigrationDef {
            version,
            description: format!("m{version}"),
            file: format!("{version}_m{version}.sql"),
            sql: sql.to_owned(),
            checksum: vec![0; 48],
            no_tx: false,
            phase,
            requires_release: (phase == Phase::Contract).then(|| semver::Version::new(0, 2, 0)),
            down: down.map(|sql| DownScript {
                file: format!("{version}_m{version}.down.sql"),
                sql: sql.to_owned(),
                no_tx: false,
            }),
        }
    }

    #[test]
    fn an_expand_migration_without_a_down_script_is_named_once_the_set_has_any() {
        let set = MigrationSet::from_defs(vec![
            def(
                1,
                Phase::Expand,
                "CREATE TABLE a (id int);",
                Some("DROP TABLE a;"),
            ),
            def(2, Phase::Expand, "CREATE TABLE b (id int);", None),
            def(3, Phase::Contract, "DROP TABLE a;", None),
        ]);
        let result = lint_set(&set);
        assert!(result.down_scripts_judged);
        let text: Vec<String> = result.findings.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["2_m2.sql:1: [missing-down-script] expand migration 2_m2.sql has no down script; add 2_m2.down.sql so obleth-migrator down can revert it"]
        );
    }

    #[test]
    fn a_set_without_down_scripts_is_linted_as_before() {
        let set = MigrationSet::from_defs(vec![def(
            1,
            Phase::Expand,
            "CREATE TABLE a (id int);",
            None,
        )]);
        let result = lint_set(&set);
        assert!(!result.down_scripts_judged);
        assert!(result.findings.is_empty(), "{:?}", result.findings);
    }

    #[test]
    fn down_scripts_keep_the_lock_rules() {
        let set = MigrationSet::from_defs(vec![def(
            1,
            Phase::Expand,
            "CREATE TABLE a (id int);",
            Some("CREATE INDEX a_id ON api_keys (id);\nDROP TABLE a;"),
        )]);
        let findings = lint_set(&set).findings;
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].rule, Rule::IndexWithoutConcurrently);
        assert_eq!(findings[0].file, "1_m1.down.sql");
    }

    #[test]
    fn the_shipped_migrations_and_their_down_scripts_have_no_findings() {
        let result = lint_set(&MigrationSet::embedded().unwrap());
        assert!(result.down_scripts_judged);
        let text: Vec<String> = result.findings.iter().map(ToString::to_string).collect();
        assert!(text.is_empty(), "{text:#?}");
    }
}
