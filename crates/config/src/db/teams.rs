//! Teams: the gateway's reads (warm-up, one team after a change) and the admin's writes.
//!
//! Team changes travel through the change log as entity `setting` with the
//! id `team:<uuid>` ([`change_id`]): releases before teams existed decode
//! the entity column strictly and ignore settings they do not know, so this
//! spelling keeps their feed working on the new schema.

use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::changes::record_change;
use crate::model::{BudgetPeriod, Entity, Op, Team};

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

/// The unique constraint on team names.
const NAME_KEY: &str = "teams_name_key";

/// A team write that the stored data does not allow.
#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    #[error("a team named `{0}` already exists")]
    NameTaken(String),
    /// Keys still name the team; move or delete them first.
    #[error("team `{team}` still has {keys} key(s); move or delete them first")]
    InUse { team: Uuid, keys: i64 },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Whether `e` is a violation of `constraint` with SQLSTATE `code`.
pub(crate) fn violates(e: &sqlx::Error, code: &str, constraint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some(code) && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}

fn name_taken(e: sqlx::Error, name: &str) -> TeamError {
    if violates(&e, "23505", NAME_KEY) {
        TeamError::NameTaken(name.to_owned())
    } else {
        TeamError::Database(e)
    }
}

/// The attributes of a team to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTeam {
    pub name: String,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i32>,
    pub token_budget: Option<i64>,
    /// Spend budget in micro-dollars per `budget_period`.
    pub budget_usd_micros: Option<i64>,
    pub budget_period: BudgetPeriod,
}

/// Creates a team; a taken name is [`TeamError::NameTaken`].
pub async fn create_team(pool: &PgPool, new: &NewTeam) -> Result<Team, TeamError> {
    let mut tx = pool.begin().await?;
    let team: Team = sqlx::query_as(concat!(
        "INSERT INTO teams (id, name, rpm_limit, tpm_limit, token_budget, budget_usd_micros, \
         budget_period) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
        team_columns!()
    ))
    .bind(Uuid::new_v4())
    .bind(&new.name)
    .bind(new.rpm_limit)
    .bind(new.tpm_limit)
    .bind(new.token_budget)
    .bind(new.budget_usd_micros)
    .bind(new.budget_period.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| name_taken(e, &new.name))?;
    record_change(&mut tx, Entity::Setting, &change_id(team.id), Op::Insert).await?;
    tx.commit().await?;
    Ok(team)
}

/// A partial team update: `None` leaves a field alone; for nullable fields
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamUpdate {
    pub name: Option<String>,
    pub rpm_limit: Option<Option<i32>>,
    pub tpm_limit: Option<Option<i32>>,
    pub token_budget: Option<Option<i64>>,
    pub budget_usd_micros: Option<Option<i64>>,
    pub budget_period: Option<BudgetPeriod>,
}

impl TeamUpdate {
    /// True when the update would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == TeamUpdate::default()
    }
}

/// Applies `update` to team `id`; `None` when no such team exists. An empty
/// update changes nothing and records no change; a taken name is
/// [`TeamError::NameTaken`].
pub async fn update_team(
    pool: &PgPool,
    id: Uuid,
    update: &TeamUpdate,
) -> Result<Option<Team>, TeamError> {
    if update.is_empty() {
        return Ok(team_by_id(pool, id).await?);
    }
    let mut query: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("UPDATE teams SET updated_at = now()");
    if let Some(name) = &update.name {
        query.push(", name = ").push_bind(name);
    }
    if let Some(rpm) = update.rpm_limit {
        query.push(", rpm_limit = ").push_bind(rpm);
    }
    if let Some(tpm) = update.tpm_limit {
        query.push(", tpm_limit = ").push_bind(tpm);
    }
    if let Some(budget) = update.token_budget {
        query.push(", token_budget = ").push_bind(budget);
    }
    if let Some(budget) = update.budget_usd_micros {
        query.push(", budget_usd_micros = ").push_bind(budget);
    }
    if let Some(period) = update.budget_period {
        query.push(", budget_period = ").push_bind(period.as_str());
    }
    query
        .push(" WHERE id = ")
        .push_bind(id)
        .push(" RETURNING ")
        .push(team_columns!());

    let mut tx = pool.begin().await?;
    let team: Option<Team> = query
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| name_taken(e, update.name.as_deref().unwrap_or_default()))?;
    if let Some(team) = &team {
        record_change(&mut tx, Entity::Setting, &change_id(team.id), Op::Update).await?;
    }
    tx.commit().await?;
    Ok(team)
}

/// Deletes team `id`; false when there was none. Refused with
/// [`TeamError::InUse`] while keys still name it.
pub async fn delete_team(pool: &PgPool, id: Uuid) -> Result<bool, TeamError> {
    let mut tx = pool.begin().await?;
    // The row lock makes a concurrent key write naming this team wait on its
    // foreign key check, so the count cannot go stale before the delete; that
    // write then fails as naming an unknown team.
    let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM teams WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if found.is_none() {
        return Ok(false);
    }
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE team_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if keys > 0 {
        return Err(TeamError::InUse { team: id, keys });
    }
    let deleted = sqlx::query("DELETE FROM teams WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await;
    if let Err(e) = deleted {
        // The foreign key is the last word should a key slip in anyway.
        return Err(if violates(&e, "23503", super::keys::TEAM_FKEY) {
            TeamError::InUse { team: id, keys: 1 }
        } else {
            TeamError::Database(e)
        });
    }
    record_change(&mut tx, Entity::Setting, &change_id(id), Op::Delete).await?;
    tx.commit().await?;
    Ok(true)
}

/// Which teams [`page_teams`] returns: a keyset page by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamFilter {
    /// The last id of the previous page.
    pub after: Option<Uuid>,
    pub limit: i64,
}

impl Default for TeamFilter {
    fn default() -> Self {
        TeamFilter {
            after: None,
            limit: 100,
        }
    }
}

/// Up to `filter.limit` teams after `filter.after`, ordered by id.
pub async fn page_teams(pool: &PgPool, filter: &TeamFilter) -> Result<Vec<Team>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
        "SELECT ",
        team_columns!(),
        " FROM teams WHERE TRUE"
    ));
    if let Some(after) = filter.after {
        q.push(" AND id > ").push_bind(after);
    }
    q.push(" ORDER BY id LIMIT ").push_bind(filter.limit.max(0));
    q.build_query_as().fetch_all(pool).await
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
