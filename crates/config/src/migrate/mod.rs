//! The schema machinery: the embedded migrations with their phases, the lock-safe
//! runner and its reverse (`down`), the compatibility check every binary runs at
//! start, and the lint.

pub mod applied;
pub mod compat;
pub mod down;
pub mod lint;
pub mod lint_set;
pub mod locks;
pub mod manifest;
pub mod phase;
pub mod runner;
pub mod set;
pub mod skew;
pub mod sql;

pub use applied::{read_applied, AppliedMigration};
pub use compat::{check, Compatibility};
pub use down::{DownError, DownReport, DownRequest};
pub use phase::Phase;
pub use runner::{Mode, RunReport, Runner, RunnerOptions};
pub use set::{DownScript, MigrationDef, MigrationSet};

/// A migration set that cannot be built: the files and the manifest disagree,
/// or a file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("migration manifest {file}: {message}")]
    Manifest { file: String, message: String },
    #[error("migration {file} has no entry in {manifest}; add one with its phase (`expand` or `contract`)")]
    MissingEntry { file: String, manifest: String },
    #[error(
        "{manifest} lists migration {version}, but no file {version}_<description>.sql exists"
    )]
    MissingFile { version: i64, manifest: String },
    #[error("migration {file}: {message}")]
    File { file: String, message: String },
}
