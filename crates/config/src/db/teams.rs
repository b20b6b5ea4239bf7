//! Teams: the gateway's reads (warm-up, one team after a change) and the admin's writes.
//!
//! Team changes travel through the change log as entity `setting` with the
//! id `team:<uuid>` ([`change_id`]): releases before teams existed decode
//! the entity column strictly and ignore settings they do not know, so this
//! spelling keeps their feed working on the new schema.

use sqlx::PgPool;
use uuid::Uuid;

use crate::model::Team;

/// The prefix of a team's change-log id.
pub const CHANGE_PREFIX: &str = "team:";

/// The `teams` columns in [`Team`]'s order, as a literal for `concat!`.
macro_rules! team_columns {
    () => {
        "id, name, rpm_limit, tpm_limit, token_budget, budget_usd_micros, budget_period, \
         created_at, updated_at"
    };
}

/// The change-log id of team `id`.
pub fn change_id(id: Uuid) -> String {
    format!("{CHANGE_PREFIX}{id}")
}

/// The team a change-log id names, if it names one.
pub fn parse_change_id(entity_id: &str) -> Option<Uuid> {
    entity_id.strip_prefix(CHANGE_PREFIX)?.parse().ok()
}

/// Every team, by name.
pub async fn list_teams(pool: &PgPool) -> Result<Vec<Team>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        team_columns!(),
        " FROM teams ORDER BY name"
    ))
    .fetch_all(pool)
    .await
}

/// The team with id `id`.
pub async fn team_by_id(pool: &PgPool, id: Uuid) -> Result<Option<Team>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        team_columns!(),
        " FROM teams WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_ids_round_trip() {
        let id = Uuid::new_v4();
        assert_eq!(parse_change_id(&change_id(id)), Some(id));
        assert_eq!(parse_change_id("maintenance"), None);
        assert_eq!(parse_change_id("team:not-a-uuid"), None);
    }
}
