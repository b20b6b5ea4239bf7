//! The schema compatibility check: a pure function of the embedded migrations and
//! the applied rows, run by every binary at start and by `obleth-migrator status`.

use std::fmt::Write as _;

use serde::Serialize;

use super::applied::AppliedMigration;
use super::phase::Phase;
use super::set::MigrationSet;

/// Can this binary run on this database, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Compatibility {
    /// Everything this binary needs is applied. Applied `expand` migrations it
    /// does not know (a newer release ran `up`) are harmless; its own `contract`
    /// migrations may still wait for `finish`, and its `-- batched` ones (copies
    /// of rows into a shape the binary already writes, which take as long as
    /// the table is large) may still be running: a binary never waits for a
    /// backfill.
    Compatible {
        unknown_expand: Vec<MigrationRef>,
        pending_contract: Vec<MigrationRef>,
        pending_backfill: Vec<MigrationRef>,
    },
    /// `expand` migrations this binary needs are not applied yet.
    NeedsMigration { pending: Vec<MigrationRef> },
    /// Applied `contract` migrations this binary does not know: the schema moved
    /// past what this release can live with.
    Incompatible { unknown_contract: Vec<MigrationRef> },
    /// An applied migration's file was edited after it shipped.
    Modified { modified: Vec<ModifiedMigration> },
    /// A migration is recorded as failed part-way (`success = false`).
    Dirty { dirty: Vec<MigrationRef> },
}

/// A migration named in a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationRef {
    pub version: i64,
    pub description: String,
    pub phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requires_release: Option<String>,
}

/// An applied migration whose embedded file no longer has the applied checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModifiedMigration {
    pub version: i64,
    pub file: String,
    /// Hex SHA-384 recorded when the migration was applied.
    pub applied_checksum: String,
    /// Hex SHA-384 of the file in this binary.
    pub embedded_checksum: String,
}

/// Judges `applied` (as read from the database; empty when it was never
/// migrated) against the `embedded` set of this binary.
///
/// The order of verdicts is the order of urgency: an edited migration, then an
/// unknown contract migration, then a dirty one, then pending ones.
pub fn check(embedded: &MigrationSet, applied: &[AppliedMigration]) -> Compatibility {
    let mut modified = Vec::new();
    let mut unknown_contract = Vec::new();
    let mut unknown_expand = Vec::new();
    let mut dirty = Vec::new();
    for row in applied {
        match embedded.get(row.version) {
            Some(def) => {
                if !row.success {
                    dirty.push(def_ref(def));
                } else if def.checksum != row.checksum {
                    modified.push(ModifiedMigration {
                        version: row.version,
                        file: def.file.clone(),
                        applied_checksum: hex(&row.checksum),
                        embedded_checksum: hex(&def.checksum),
                    });
                }
            }
            None => {
                let r = applied_ref(row);
                if !row.success {
                    dirty.push(r);
                } else if row.phase == Phase::Expand {
                    unknown_expand.push(r);
                } else {
                    unknown_contract.push(r);
                }
            }
        }
    }
    let mut pending = Vec::new();
    let mut pending_contract = Vec::new();
    let mut pending_backfill = Vec::new();
    for def in embedded.iter() {
        if applied.iter().any(|row| row.version == def.version) {
            continue;
        }
        match def.phase {
            Phase::Expand if def.batched() => pending_backfill.push(def_ref(def)),
            Phase::Expand => pending.push(def_ref(def)),
            Phase::Contract => pending_contract.push(def_ref(def)),
        }
    }
    if !modified.is_empty() {
        Compatibility::Modified { modified }
    } else if !unknown_contract.is_empty() {
        Compatibility::Incompatible { unknown_contract }
    } else if !dirty.is_empty() {
        Compatibility::Dirty { dirty }
    } else if !pending.is_empty() {
        // The backfills pending with them are named too: `up` runs them all.
        pending.append(&mut pending_backfill);
        pending.sort_by_key(|r| r.version);
        Compatibility::NeedsMigration { pending }
    } else {
        Compatibility::Compatible {
            unknown_expand,
            pending_contract,
            pending_backfill,
        }
    }
}

impl Compatibility {
    pub fn is_compatible(&self) -> bool {
        matches!(self, Compatibility::Compatible { .. })
    }

    /// Whether the database can never become usable by this binary without an
    /// operator's action beyond `obleth-migrator up`: an unknown contract
    /// migration, an edited one, or one recorded as failed by another tool.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Compatibility::Incompatible { .. }
                | Compatibility::Modified { .. }
                | Compatibility::Dirty { .. }
        )
    }

    /// A message for operators: what is wrong and what to do.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        match self {
            Compatibility::Compatible {
                unknown_expand,
                pending_contract,
                pending_backfill,
            } => {
                out.push_str("schema is compatible");
                if !pending_backfill.is_empty() {
                    let _ = write!(
                        out,
                        "; batched backfills not finished (`obleth-migrator up` runs them): {}",
                        list(pending_backfill)
                    );
                }
                if !unknown_expand.is_empty() {
                    let _ = write!(
                        out,
                        "; newer expand migrations applied: {}",
                        list(unknown_expand)
                    );
                }
                if !pending_contract.is_empty() {
                    let _ = write!(
                        out,
                        "; contract migrations await `obleth-migrator finish`: {}",
                        list(pending_contract)
                    );
                }
            }
            Compatibility::NeedsMigration { pending } => {
                let _ = write!(
                    out,
                    "schema needs migration: pending {}; run `obleth-migrator up`",
                    list(pending)
                );
            }
            Compatibility::Incompatible { unknown_contract } => {
                let _ = write!(
                    out,
                    "schema is incompatible: the database has contract migrations this release ({}) does not know: {}; run a release that knows them",
                    crate::version::VERSION,
                    list(unknown_contract)
                );
            }
            Compatibility::Modified { modified } => {
                out.push_str("schema is modified: ");
                let parts: Vec<String> = modified
                    .iter()
                    .map(|m| {
                        format!(
                            "migration {} ({}) was applied with checksum {} but the file now has {}",
                            m.version, m.file, m.applied_checksum, m.embedded_checksum
                        )
                    })
                    .collect();
                out.push_str(&parts.join("; "));
                out.push_str("; a shipped migration must never be edited: restore the file and write a new migration");
            }
            Compatibility::Dirty { dirty } => {
                let _ = write!(
                    out,
                    "schema is dirty: {} is recorded as failed (success = false in _sqlx_migrations); obleth's runner never records a failure, so another tool applied it: repair the schema by hand, then delete that row so `obleth-migrator up` runs it again",
                    list(dirty)
                );
            }
        }
        out
    }
}

fn def_ref(def: &super::set::MigrationDef) -> MigrationRef {
    MigrationRef {
        version: def.version,
        description: def.description.clone(),
        phase: def.phase,
        requires_release: def.requires_release.as_ref().map(ToString::to_string),
    }
}

fn applied_ref(row: &AppliedMigration) -> MigrationRef {
    MigrationRef {
        version: row.version,
        description: row.description.clone(),
        phase: row.phase,
        requires_release: row.requires_release.clone(),
    }
}

fn list(refs: &[MigrationRef]) -> String {
    refs.iter()
        .map(|r| format!("{} ({}, {})", r.version, r.description, r.phase))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lowercase hex of a checksum.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::super::set::MigrationDef;
    use super::*;

    fn def(version: i64, phase: Phase) -> MigrationDef {
        MigrationDef::for_test(version, phase)
    }

    fn row(version: i64, phase: Option<Phase>) -> AppliedMigration {
        AppliedMigration::for_test(version, phase)
    }

    fn set(defs: Vec<MigrationDef>) -> MigrationSet {
        MigrationSet::from_defs(defs)
    }

    #[test]
    fn everything_applied_is_compatible() {
        let s = set(vec![def(1, Phase::Expand), def(2, Phase::Expand)]);
        let verdict = check(
            &s,
            &[row(1, Some(Phase::Expand)), row(2, Some(Phase::Expand))],
        );
        assert!(verdict.is_compatible(), "{verdict:?}");
    }

    #[test]
    fn unknown_applied_expand_is_compatible() {
        let s = set(vec![def(1, Phase::Expand)]);
        let verdict = check(
            &s,
            &[row(1, Some(Phase::Expand)), row(2, Some(Phase::Expand))],
        );
        match verdict {
            Compatibility::Compatible { unknown_expand, .. } => {
                assert_eq!(unknown_expand.len(), 1);
                assert_eq!(unknown_expand[0].version, 2);
            }
            other => panic!("expected compatible, got {other:?}"),
        }
    }

    /// An expand migration whose file is a `-- batched` backfill.
    fn backfill(version: i64) -> MigrationDef {
        MigrationDef {
            sql: format!("-- no-transaction\n-- batched\nSELECT {version};"),
            no_tx: true,
            ..def(version, Phase::Expand)
        }
    }

    #[test]
    fn a_pending_backfill_does_not_hold_a_binary_back_but_other_pending_expand_does() {
        let s = set(vec![def(1, Phase::Expand), backfill(2)]);
        let verdict = check(&s, &[row(1, Some(Phase::Expand))]);
        let Compatibility::Compatible {
            pending_backfill, ..
        } = &verdict
        else {
            panic!("expected compatible, got {verdict:?}");
        };
        assert_eq!(pending_backfill[0].version, 2);
        assert!(
            verdict.describe().contains("backfills not finished"),
            "{}",
            verdict.describe()
        );
        assert_eq!(s.oldest_compatible(), Some(1));

        let s = set(vec![
            def(1, Phase::Expand),
            backfill(2),
            def(3, Phase::Expand),
        ]);
        let verdict = check(&s, &[row(1, Some(Phase::Expand))]);
        let Compatibility::NeedsMigration { pending } = &verdict else {
            panic!("expected needs migration, got {verdict:?}");
        };
        let versions: Vec<i64> = pending.iter().map(|r| r.version).collect();
        assert_eq!(versions, [2, 3]);
        assert_eq!(s.oldest_compatible(), Some(3));
    }

    #[test]
    fn unknown_applied_contract_is_incompatible_and_named() {
        let s = set(vec![def(1, Phase::Expand)]);
        let verdict = check(
            &s,
            &[row(1, Some(Phase::Expand)), row(5, Some(Phase::Contract))],
        );
        let Compatibility::Incompatible { unknown_contract } = &verdict else {
            panic!("expected incompatible, got {verdict:?}");
        };
        assert_eq!(unknown_contract[0].version, 5);
        assert!(
            verdict.describe().contains("5 (m5, contract)"),
            "{}",
            verdict.describe()
        );
        assert!(verdict.is_fatal());
    }

    #[test]
    fn unknown_applied_without_recorded_phase_counts_as_contract() {
        let s = set(vec![def(1, Phase::Expand)]);
        let verdict = check(&s, &[row(1, Some(Phase::Expand)), row(9, None)]);
        assert!(
            matches!(verdict, Compatibility::Incompatible { .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn edited_file_is_modified_with_both_checksums() {
        let s = set(vec![def(1, Phase::Expand)]);
        let mut applied = row(1, Some(Phase::Expand));
        applied.checksum = vec![0xab; 48];
        let verdict = check(&s, &[applied]);
        let Compatibility::Modified { modified } = &verdict else {
            panic!("expected modified, got {verdict:?}");
        };
        assert_eq!(modified[0].file, "1_m1.sql");
        assert_eq!(modified[0].applied_checksum, "ab".repeat(48));
        assert_eq!(modified[0].embedded_checksum, "01".repeat(48));
        let text = verdict.describe();
        assert!(
            text.contains("1_m1.sql")
                && text.contains(&"ab".repeat(48))
                && text.contains(&"01".repeat(48)),
            "{text}"
        );
    }

    #[test]
    fn pending_expand_needs_migration_and_names_it() {
        let s = set(vec![def(1, Phase::Expand), def(2, Phase::Expand)]);
        let verdict = check(&s, &[row(1, Some(Phase::Expand))]);
        let Compatibility::NeedsMigration { pending } = &verdict else {
            panic!("expected needs migration, got {verdict:?}");
        };
        assert_eq!(pending[0].version, 2);
        assert!(verdict.describe().contains("obleth-migrator up"));
        assert!(!verdict.is_fatal());
    }

    #[test]
    fn never_migrated_database_needs_migration() {
        let s = set(vec![def(1, Phase::Expand)]);
        assert!(matches!(
            check(&s, &[]),
            Compatibility::NeedsMigration { .. }
        ));
    }

    #[test]
    fn pending_contract_alone_is_compatible() {
        let s = set(vec![def(1, Phase::Expand), def(2, Phase::Contract)]);
        let verdict = check(&s, &[row(1, Some(Phase::Expand))]);
        match verdict {
            Compatibility::Compatible {
                pending_contract, ..
            } => assert_eq!(pending_contract[0].version, 2),
            other => panic!("expected compatible, got {other:?}"),
        }
    }

    #[test]
    fn failed_row_is_dirty() {
        let s = set(vec![def(1, Phase::Expand)]);
        let mut r = row(1, Some(Phase::Expand));
        r.success = false;
        assert!(matches!(check(&s, &[r]), Compatibility::Dirty { .. }));
    }

    #[test]
    fn modified_wins_over_incompatible() {
        let s = set(vec![def(1, Phase::Expand)]);
        let mut edited = row(1, Some(Phase::Expand));
        edited.checksum = vec![0; 48];
        let verdict = check(&s, &[edited, row(2, Some(Phase::Contract))]);
        assert!(matches!(verdict, Compatibility::Modified { .. }));
    }
}
