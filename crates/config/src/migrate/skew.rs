//! The version-skew rule of `docs/upgrading.md` as a pure function: which live
//! nodes an upgrade to this release may run beside, and which of them hold a
//! pending contract migration back.
//!
//! The rule: a node one minor release behind works with the current schema
//! (upgrade one minor release at a time), patch releases of one minor are
//! interchangeable, a major release has its own procedure, and a contract
//! migration runs only once every live node is at its `requires_release`.

use serde::Serialize;

use super::phase::Phase;
use super::runner::LiveNode;
use super::set::MigrationDef;

/// Why a live node matters to this upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "issue", rename_all = "snake_case")]
pub enum SkewIssue {
    /// The recorded version is not a semantic version; refusing is the safe answer.
    Unreadable,
    /// The node runs a newer release than this binary: the upgrade is run
    /// with the wrong (older) migrator.
    NewerThanBinary,
    /// Another major release: its release notes give the procedure.
    OtherMajor,
    /// More than one minor release behind this binary, past what the schema
    /// promises to keep working for.
    TooFarBehind,
    /// Older than a pending contract migration requires: `finish` refuses
    /// until the node is upgraded or gone.
    BlocksContract {
        migration: i64,
        requires_release: String,
    },
}

impl SkewIssue {
    /// Whether the node breaks the skew rule itself, as opposed to only
    /// holding back `finish` (the usual state before a rollout).
    pub fn breaks_skew_rule(&self) -> bool {
        !matches!(self, SkewIssue::BlocksContract { .. })
    }
}

/// One live node with one issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkewFinding {
    pub node_id: String,
    pub service: String,
    pub version: String,
    #[serde(flatten)]
    pub issue: SkewIssue,
}

impl SkewFinding {
    /// A sentence for operators, lowercase.
    pub fn describe(&self, binary: &semver::Version) -> String {
        let who = format!("{} {} runs {}", self.service, self.node_id, self.version);
        match &self.issue {
            SkewIssue::Unreadable => {
                format!("{who}, which is not a semantic version; cannot tell whether it may run beside {binary}")
            }
            SkewIssue::NewerThanBinary => format!(
                "{who}, newer than this migrator ({binary}); run the preflight of the newest release"
            ),
            SkewIssue::OtherMajor => format!(
                "{who}, another major release than {binary}; follow that release's upgrade notes"
            ),
            SkewIssue::TooFarBehind => format!(
                "{who}, more than one minor release behind {binary}; upgrade one minor release at a time"
            ),
            SkewIssue::BlocksContract {
                migration,
                requires_release,
            } => format!(
                "{who} but contract migration {migration} requires {requires_release}; finish refuses until it is upgraded"
            ),
        }
    }
}

/// Judges the live `nodes` against this `binary` and the contract migrations
/// among `pending`.
pub fn judge(
    binary: &semver::Version,
    nodes: &[LiveNode],
    pending: &[&MigrationDef],
) -> Vec<SkewFinding> {
    let mut findings = Vec::new();
    for node in nodes {
        let finding = |issue| SkewFinding {
            node_id: node.node_id.clone(),
            service: node.service.clone(),
            version: node.version.clone(),
            issue,
        };
        let Ok(version) = semver::Version::parse(&node.version) else {
            findings.push(finding(SkewIssue::Unreadable));
            continue;
        };
        if version.major != binary.major {
            findings.push(finding(SkewIssue::OtherMajor));
        } else if version.minor > binary.minor {
            findings.push(finding(SkewIssue::NewerThanBinary));
        } else if version.minor + 1 < binary.minor {
            findings.push(finding(SkewIssue::TooFarBehind));
        }
        for def in pending.iter().filter(|d| d.phase == Phase::Contract) {
            if let Some(required) = &def.requires_release {
                if version < *required {
                    findings.push(finding(SkewIssue::BlocksContract {
                        migration: def.version,
                        requires_release: required.to_string(),
                    }));
                }
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, version: &str) -> LiveNode {
        LiveNode {
            node_id: id.to_owned(),
            service: "gateway".to_owned(),
            version: version.to_owned(),
            silent_secs: 0,
            release_schema: None,
        }
    }

    fn contract(version: i64, requires: &str) -> MigrationDef {
        MigrationDef {
            version,
            description: "c".to_owned(),
            file: format!("{version}_c.sql"),
            sql: "SELECT 1;".to_owned(),
            checksum: vec![0; 48],
            no_tx: false,
            phase: Phase::Contract,
            requires_release: Some(semver::Version::parse(requires).unwrap()),
            down: None,
        }
    }

    fn issues(binary: &str, version: &str, pending: &[&MigrationDef]) -> Vec<SkewIssue> {
        let binary = semver::Version::parse(binary).unwrap();
        judge(&binary, &[node("n", version)], pending)
            .into_iter()
            .map(|f| f.issue)
            .collect()
    }

    #[test]
    fn one_minor_behind_and_patch_differences_are_fine() {
        assert_eq!(issues("0.3.0", "0.2.7", &[]), []);
        assert_eq!(issues("0.3.0", "0.3.4", &[]), []);
        assert_eq!(issues("0.3.2", "0.3.0", &[]), []);
    }

    #[test]
    fn the_rule_is_broken_two_minors_behind_ahead_across_majors_and_by_garbage() {
        assert_eq!(issues("0.3.0", "0.1.9", &[]), [SkewIssue::TooFarBehind]);
        assert_eq!(issues("0.3.0", "0.4.0", &[]), [SkewIssue::NewerThanBinary]);
        assert_eq!(issues("2.0.0", "1.9.0", &[]), [SkewIssue::OtherMajor]);
        assert_eq!(issues("0.3.0", "dev", &[]), [SkewIssue::Unreadable]);
        assert!(SkewIssue::TooFarBehind.breaks_skew_rule());
    }

    #[test]
    fn a_node_older_than_a_contract_requires_blocks_it_only() {
        let c = contract(9, "0.3.0");
        let got = issues("0.3.0", "0.2.1", &[&c]);
        assert_eq!(
            got,
            [SkewIssue::BlocksContract {
                migration: 9,
                requires_release: "0.3.0".to_owned()
            }]
        );
        assert!(!got[0].breaks_skew_rule());
        assert_eq!(issues("0.3.0", "0.3.0", &[&c]), []);
        let binary = semver::Version::new(0, 3, 0);
        let text = judge(&binary, &[node("gw-1", "0.2.1")], &[&c])[0].describe(&binary);
        assert_eq!(
            text,
            "gateway gw-1 runs 0.2.1 but contract migration 9 requires 0.3.0; finish refuses until it is upgraded"
        );
    }
}
