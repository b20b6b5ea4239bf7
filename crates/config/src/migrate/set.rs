//! A migration set: SQL files joined with their manifest entries, embedded or read from a directory.
//!
//! A migration may have a down script beside it, `<version>_<description>.down.sql`,
//! which `obleth-migrator down` runs to revert it. `sqlx::migrate!` embeds
//! both: it names the up script `Simple` and the down script `ReversibleDown`
//! with the same version, computes each one's checksum from its own text, and
//! refuses neither. The set joins the two into one [`MigrationDef`] (the down
//! script in [`MigrationDef::down`]), so nothing that walks the set sees a down
//! script as a migration of its own, and the up script's checksum, the one
//! `_sqlx_migrations` records, is the up file's alone. sqlx's own
//! `Migrator::run` skips down scripts too, so sqlx tooling pointed at the
//! directory applies the same migrations.

use std::borrow::Cow;
use std::path::Path;

use sqlx::migrate::{Migration, MigrationType};

use super::manifest::Manifest;
use super::phase::Phase;
use super::SetError;

/// The migrations compiled into every obleth binary.
static EMBEDDED: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
const EMBEDDED_MANIFEST: &str = include_str!("../../migrations/manifest.toml");

/// The name of the manifest inside a migrations directory.
pub const MANIFEST_FILE: &str = "manifest.toml";

/// One migration with everything the runner, the check and the lint need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationDef {
    pub version: i64,
    pub description: String,
    /// The file name, `<version>_<description>.sql`.
    pub file: String,
    pub sql: String,
    /// SHA-384 of the SQL, as sqlx computes and records it.
    pub checksum: Vec<u8>,
    /// The file starts with `-- no-transaction`.
    pub no_tx: bool,
    pub phase: Phase,
    pub requires_release: Option<semver::Version>,
    /// The down script that reverts this migration, when it has one.
    pub down: Option<DownScript>,
}

/// A migration's down script, `<version>_<description>.down.sql`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownScript {
    /// The file name, `<version>_<description>.down.sql`.
    pub file: String,
    pub sql: String,
    /// The file starts with `-- no-transaction`: its statements run one by
    /// one, and only the bookkeeping is a transaction of its own.
    pub no_tx: bool,
}

impl MigrationDef {
    /// The file's opening comments include `-- batched`: the runner repeats
    /// each statement, each time in its own transaction, until it answers 0
    /// (or no row). Only `-- no-transaction` files may be batched.
    pub fn batched(&self) -> bool {
        self.no_tx && header_says(&self.sql, "-- batched")
    }
}

/// Whether one of the comment lines that open `sql` is exactly `directive`.
fn header_says(sql: &str, directive: &str) -> bool {
    sql.lines()
        .map(str::trim_end)
        .take_while(|line| line.starts_with("--"))
        .any(|line| line == directive)
}

/// An ordered set of migrations that agrees with its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSet {
    migrations: Vec<MigrationDef>,
}

impl MigrationSet {
    /// The set embedded in this binary.
    pub fn embedded() -> Result<MigrationSet, SetError> {
        let manifest = Manifest::parse(EMBEDDED_MANIFEST, "migrations/manifest.toml")?;
        Self::join(EMBEDDED.iter(), &manifest, "migrations/manifest.toml")
    }

    /// Reads `<version>_<description>.sql` files and `manifest.toml` from `dir`,
    /// with the same naming and checksum rules as sqlx.
    pub fn from_dir(dir: &Path) -> Result<MigrationSet, SetError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_name = manifest_path.display().to_string();
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| SetError::Manifest {
            file: manifest_name.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        let manifest = Manifest::parse(&text, &manifest_name)?;
        let entries = std::fs::read_dir(dir).map_err(|e| SetError::File {
            file: dir.display().to_string(),
            message: format!("cannot read the directory: {e}"),
        })?;
        let mut migrations = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SetError::File {
                file: dir.display().to_string(),
                message: format!("cannot read the directory: {e}"),
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((version, rest)) = name.split_once('_') else {
                continue;
            };
            if !rest.ends_with(".sql") || !entry.path().is_file() {
                continue;
            }
            let version: i64 = version.parse().map_err(|_| SetError::File {
                file: name.clone(),
                message: "the name must start with an integer version, as in `20261122000001_create_keys.sql`".to_owned(),
            })?;
            let migration_type = MigrationType::from_filename(rest);
            let description = rest
                .trim_end_matches(migration_type.suffix())
                .replace('_', " ");
            let sql = std::fs::read_to_string(entry.path()).map_err(|e| SetError::File {
                file: name.clone(),
                message: format!("cannot read it: {e}"),
            })?;
            let no_tx = sql.starts_with("-- no-transaction");
            migrations.push(Migration::new(
                version,
                Cow::Owned(description),
                migration_type,
                Cow::Owned(sql),
                no_tx,
            ));
        }
        migrations.sort_by_key(|m| m.version);
        Self::join(migrations.iter(), &manifest, &manifest_name)
    }

    /// Builds a set from definitions directly (tests and tools).
    pub fn from_defs(mut migrations: Vec<MigrationDef>) -> MigrationSet {
        migrations.sort_by_key(|m| m.version);
        MigrationSet { migrations }
    }

    fn join<'a>(
        files: impl Iterator<Item = &'a Migration>,
        manifest: &Manifest,
        manifest_name: &str,
    ) -> Result<MigrationSet, SetError> {
        let mut migrations = Vec::new();
        let mut downs: Vec<(i64, DownScript)> = Vec::new();
        for m in files {
            let stem = format!("{}_{}", m.version, m.description.replace(' ', "_"));
            match m.migration_type {
                MigrationType::Simple => {}
                MigrationType::ReversibleDown => {
                    let file = format!("{stem}.down.sql");
                    if downs.iter().any(|(v, _)| *v == m.version) {
                        return Err(SetError::File {
                            file,
                            message: format!(
                                "migration {} has two down scripts; keep one",
                                m.version
                            ),
                        });
                    }
                    if header_says(&m.sql, "-- batched") {
                        return Err(SetError::File {
                            file,
                            message: "a down script cannot be -- batched; write it as one transaction or as idempotent -- no-transaction statements".to_owned(),
                        });
                    }
                    downs.push((
                        m.version,
                        DownScript {
                            file,
                            sql: m.sql.to_string(),
                            no_tx: m.no_tx,
                        },
                    ));
                    continue;
                }
                MigrationType::ReversibleUp => {
                    return Err(SetError::File {
                        file: format!("{stem}.up.sql"),
                        message: "an up script is a plain <version>_<description>.sql; remove the .up suffix (a down script beside it is <version>_<description>.down.sql)".to_owned(),
                    });
                }
            }
            let file = format!("{stem}.sql");
            let entry = manifest
                .entries
                .get(&m.version)
                .ok_or_else(|| SetError::MissingEntry {
                    file: file.clone(),
                    manifest: manifest_name.to_owned(),
                })?;
            if !m.no_tx && header_says(&m.sql, "-- batched") {
                return Err(SetError::File {
                    file,
                    message: "a -- batched migration repeats each statement in its own transaction, so it must start with -- no-transaction".to_owned(),
                });
            }
            migrations.push(MigrationDef {
                version: m.version,
                description: m.description.to_string(),
                file,
                sql: m.sql.to_string(),
                checksum: m.checksum.to_vec(),
                no_tx: m.no_tx,
                phase: entry.phase,
                requires_release: entry.requires_release.clone(),
                down: None,
            });
        }
        for (version, down) in downs {
            let Some(def) = migrations.iter_mut().find(|m| m.version == version) else {
                return Err(SetError::File {
                    file: down.file,
                    message: format!(
                        "a down script needs its migration beside it, {version}_<description>.sql, and there is none"
                    ),
                });
            };
            let expected = format!(
                "{}.down.sql",
                def.file.strip_suffix(".sql").unwrap_or(&def.file)
            );
            if down.file != expected {
                return Err(SetError::File {
                    file: down.file,
                    message: format!("a down script is named after its migration: {expected}"),
                });
            }
            def.down = Some(down);
        }
        for version in manifest.entries.keys() {
            if !migrations.iter().any(|m| m.version == *version) {
                return Err(SetError::MissingFile {
                    version: *version,
                    manifest: manifest_name.to_owned(),
                });
            }
        }
        migrations.sort_by_key(|m| m.version);
        Ok(MigrationSet { migrations })
    }

    pub fn iter(&self) -> impl Iterator<Item = &MigrationDef> {
        self.migrations.iter()
    }

    pub fn get(&self, version: i64) -> Option<&MigrationDef> {
        self.migrations.iter().find(|m| m.version == version)
    }

    /// The newest migration of this set, the schema version the binary expects.
    pub fn latest_version(&self) -> Option<i64> {
        self.migrations.last().map(|m| m.version)
    }

    /// The newest expand migration, batched ones included: where `up`
    /// leaves the schema.
    pub fn newest_expand(&self) -> Option<i64> {
        self.migrations
            .iter()
            .filter(|m| m.phase == Phase::Expand)
            .map(|m| m.version)
            .max()
    }

    /// The newest expand migration that is not a `-- batched` backfill: a
    /// binary with this set needs the schema at least this far (it runs while
    /// a backfill is still copying).
    pub fn oldest_compatible(&self) -> Option<i64> {
        self.migrations
            .iter()
            .filter(|m| m.phase == Phase::Expand && !m.batched())
            .map(|m| m.version)
            .max()
    }

    pub fn len(&self) -> usize {
        self.migrations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.migrations.is_empty()
    }
}

#[cfg(test)]
impl MigrationDef {
    /// A migration `<version>_m<version>.sql` running `SELECT <version>;`
    /// with no down script; a contract one requires 0.2.0.
    pub(crate) fn for_test(version: i64, phase: Phase) -> MigrationDef {
        MigrationDef {
            version,
            description: format!("m{version}"),
            file: format!("{version}_m{version}.sql"),
            sql: format!("SELECT {version};"),
            checksum: vec![version as u8; 48],
            no_tx: false,
            phase,
            requires_release: (phase == Phase::Contract).then(|| semver::Version::new(0, 2, 0)),
            down: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn embedded_set_agrees_with_its_manifest() {
        let set = MigrationSet::embedded()
            .expect("every migration file has a manifest entry and the other way round");
        assert!(!set.is_empty());
        // The embedded set and the directory on disk are the same migrations.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        assert_eq!(MigrationSet::from_dir(&dir).unwrap(), set);
    }

    #[test]
    fn a_file_without_a_manifest_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "1_first.sql", "CREATE TABLE a (id int);");
        write(dir.path(), "2_second.sql", "CREATE TABLE b (id int);");
        write(
            dir.path(),
            MANIFEST_FILE,
            "[[migration]]\nversion = 1\nphase = \"expand\"\n",
        );
        let err = MigrationSet::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("2_second.sql"), "{err}");
        assert!(err.contains("no entry"), "{err}");
    }

    #[test]
    fn a_manifest_entry_without_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "1_first.sql", "CREATE TABLE a (id int);");
        write(
            dir.path(),
            MANIFEST_FILE,
            "[[migration]]\nversion = 1\nphase = \"expand\"\n[[migration]]\nversion = 3\nphase = \"expand\"\n",
        );
        let err = MigrationSet::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("lists migration 3"), "{err}");
    }

    #[test]
    fn reads_phase_no_tx_and_sqlx_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let sql = "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON a (id);\n";
        write(dir.path(), "7_add_index.sql", sql);
        write(dir.path(), "README.txt", "ignored");
        write(
            dir.path(),
            MANIFEST_FILE,
            "[[migration]]\nversion = 7\nphase = \"contract\"\nrequires_release = \"0.2.0\"\n",
        );
        let set = MigrationSet::from_dir(dir.path()).unwrap();
        let m = set.get(7).unwrap();
        assert!(m.no_tx);
        assert_eq!(m.phase, Phase::Contract);
        assert_eq!(m.file, "7_add_index.sql");
        assert_eq!(m.description, "add index");
        let expected = Migration::new(7, "x".into(), MigrationType::Simple, sql.into(), true);
        assert_eq!(m.checksum, expected.checksum.to_vec());
        assert_eq!(m.down, None);
    }

    const TWO_EXPAND: &str =
        "[[migration]]\nversion = 1\nphase = \"expand\"\n[[migration]]\nversion = 2\nphase = \"expand\"\n";

    #[test]
    fn a_down_script_joins_its_migration_and_leaves_its_checksum_alone() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "1_first.sql", "CREATE TABLE a (id int);");
        write(dir.path(), "2_second.sql", "CREATE TABLE b (id int);");
        write(dir.path(), MANIFEST_FILE, TWO_EXPAND);
        let without = MigrationSet::from_dir(dir.path()).unwrap();
        write(
            dir.path(),
            "2_second.down.sql",
            "-- no-transaction\nDROP TABLE IF EXISTS b;",
        );
        let with = MigrationSet::from_dir(dir.path()).unwrap();

        // Still two migrations: the down script is not one of its own.
        assert_eq!(with.len(), 2);
        let second = with.get(2).unwrap();
        let down = second.down.as_ref().expect("the down script is attached");
        assert_eq!(down.file, "2_second.down.sql");
        assert!(down.sql.contains("DROP TABLE IF EXISTS b"));
        assert!(down.no_tx);
        assert_eq!(second.file, "2_second.sql");
        assert_eq!(second.sql, "CREATE TABLE b (id int);");
        assert_eq!(second.checksum, without.get(2).unwrap().checksum);
        assert_eq!(with.get(1).unwrap().down, None);
        assert_eq!(with.latest_version(), Some(2));
    }

    #[test]
    fn down_scripts_that_do_not_fit_are_refused_naming_the_file() {
        // (extra files, the file the error names, what it says)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case; 4] = [
            (
                &[("3_third.down.sql", "DROP TABLE c;")],
                "3_third.down.sql",
                "needs its migration beside it",
            ),
            (
                &[("2_other.down.sql", "DROP TABLE b;")],
                "2_other.down.sql",
                "2_second.down.sql",
            ),
            (
                &[(
                    "2_second.down.sql",
                    "-- no-transaction\n-- batched\nSELECT 0;",
                )],
                "2_second.down.sql",
                "cannot be -- batched",
            ),
            (
                &[("2_second.up.sql", "SELECT 1;")],
                "2_second.up.sql",
                "remove the .up suffix",
            ),
        ];
        for (files, file, needle) in cases {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "1_first.sql", "CREATE TABLE a (id int);");
            write(dir.path(), "2_second.sql", "CREATE TABLE b (id int);");
            write(dir.path(), MANIFEST_FILE, TWO_EXPAND);
            for (name, text) in files {
                write(dir.path(), name, text);
            }
            let err = MigrationSet::from_dir(dir.path()).unwrap_err().to_string();
            assert!(err.contains(file), "{err} should name {file}");
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
    }

    #[test]
    fn embedded_down_scripts_are_attached_to_every_expand_migration() {
        let set = MigrationSet::embedded().unwrap();
        for def in set.iter() {
            match (def.phase, &def.down) {
                (Phase::Expand, Some(down)) => {
                    assert_eq!(down.file, def.file.replace(".sql", ".down.sql"));
                }
                (Phase::Expand, None) => panic!("{} has no down script", def.file),
                (Phase::Contract, _) => {}
            }
        }
    }
}
