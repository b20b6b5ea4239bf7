//! What the database says was applied: `_sqlx_migrations` joined with the recorded phases.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::phase::Phase;

/// One row of `_sqlx_migrations` with the phase recorded beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
    pub success: bool,
    pub checksum: Vec<u8>,
    pub execution_time_ns: i64,
    pub installed_on: DateTime<Utc>,
    /// The recorded phase; `contract` when none was recorded (for example a
    /// migration applied by another tool), the safe reading for older binaries.
    pub phase: Phase,
    pub phase_recorded: bool,
    pub requires_release: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    version: i64,
    description: String,
    success: bool,
    checksum: Vec<u8>,
    execution_time: i64,
    installed_on: DateTime<Utc>,
    phase: Option<String>,
    requires_release: Option<String>,
}

/// Reads the applied migrations in version order; `None` when the database has
/// never been migrated (`_sqlx_migrations` does not exist).
pub async fn read_applied(
    conn: &mut PgConnection,
) -> Result<Option<Vec<AppliedMigration>>, sqlx::Error> {
    let (has_sqlx, has_phases): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass('_sqlx_migrations') IS NOT NULL, \
                to_regclass('obleth_migration_phases') IS NOT NULL",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !has_sqlx {
        return Ok(None);
    }
    let sql = if has_phases {
        "SELECT m.version, m.description, m.success, m.checksum, m.execution_time, \
                m.installed_on, p.phase, p.requires_release \
         FROM _sqlx_migrations m LEFT JOIN obleth_migration_phases p USING (version) \
         ORDER BY m.version"
    } else {
        "SELECT version, description, success, checksum, execution_time, installed_on, \
                NULL::text AS phase, NULL::text AS requires_release \
         FROM _sqlx_migrations ORDER BY version"
    };
    let rows: Vec<Row> = sqlx::query_as(sql).fetch_all(&mut *conn).await?;
    Ok(Some(
        rows.into_iter()
            .map(|r| AppliedMigration {
                version: r.version,
                description: r.description,
                success: r.success,
                checksum: r.checksum,
                execution_time_ns: r.execution_time,
                installed_on: r.installed_on,
                phase: Phase::from_recorded(r.phase.as_deref()),
                phase_recorded: r.phase.is_some(),
                requires_release: r.requires_release,
            })
            .collect(),
    ))
}

#[cfg(test)]
impl AppliedMigration {
    /// A successful row for `<version>_m<version>.sql` as
    /// [`MigrationDef::for_test`](super::MigrationDef::for_test) makes it,
    /// with `phase` recorded (`None`: applied before phases were recorded).
    pub(crate) fn for_test(version: i64, phase: Option<Phase>) -> AppliedMigration {
        AppliedMigration {
            version,
            description: format!("m{version}"),
            success: true,
            checksum: vec![version as u8; 48],
            execution_time_ns: 1,
            installed_on: Utc::now(),
            phase: phase.unwrap_or(Phase::Contract),
            phase_recorded: phase.is_some(),
            requires_release: None,
        }
    }
}
