//! The fleet register: each gateway, admin and migrator records itself, beats, and signs off.
//!
//! `obleth-migrator finish` reads the same table (`migrate::runner::live_nodes`)
//! to refuse contract migrations while old releases are alive.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::model::NodeInfo;

/// A node as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct NodeRow {
    pub node_id: String,
    pub service: String,
    pub version: String,
    pub git_commit: Option<String>,
    pub hostname: Option<String>,
    pub schema_version: Option<i64>,
    pub ready: bool,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
}

/// Records a starting node, not ready yet, with the newest migration the
/// database has (or `node.schema_version` when it has none) and its release
/// schema, the newest migration this binary embeds
/// ([`crate::ops::embedded_schema`]), which `obleth-migrator down` will not
/// revert while the node is alive. A node id seen before (a restarted
/// process that kept its id) starts afresh.
///
/// On a database without `nodes.release_schema` (before `20261128000007`,
/// say an admin waiting for `obleth-migrator up`) the node registers without
/// it, as the previous release does; `down` reads the NULL as "may need
/// every migration".
pub async fn register_node(pool: &PgPool, node: &NodeInfo) -> Result<(), sqlx::Error> {
    match insert_node(pool, node, true).await {
        Err(e) if undefined_column(&e) => insert_node(pool, node, false).await,
        other => other,
    }
}

/// SQLSTATE 42703: a column the statement names does not exist.
fn undefined_column(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "42703")
}

async fn insert_node(
    pool: &PgPool,
    node: &NodeInfo,
    with_release_schema: bool,
) -> Result<(), sqlx::Error> {
    // The release schema is the one column the previous release's schema lacks.
    let (column, value, update) = if with_release_schema {
        (
            ", release_schema",
            ", $7",
            " release_schema = EXCLUDED.release_schema,",
        )
    } else {
        ("", "", "")
    };
    let sql = format!(
        "INSERT INTO nodes (node_id, service, version, git_commit, hostname, schema_version{column}, \
         ready, started_at, last_seen, stopped_at) \
         VALUES ($1, $2, $3, $4, $5, COALESCE((SELECT max(version) FROM _sqlx_migrations WHERE success), $6){value}, \
         FALSE, now(), now(), NULL) \
         ON CONFLICT (node_id) DO UPDATE SET \
         service = EXCLUDED.service, version = EXCLUDED.version, \
         git_commit = EXCLUDED.git_commit, hostname = EXCLUDED.hostname, \
         schema_version = EXCLUDED.schema_version,{update} ready = FALSE, \
         started_at = now(), last_seen = now(), stopped_at = NULL"
    );
    let mut query = sqlx::query(&sql)
        .bind(&node.node_id)
        .bind(&node.service)
        .bind(&node.version)
        .bind(&node.git_commit)
        .bind(&node.hostname)
        .bind(node.schema_version);
    if with_release_schema {
        query = query.bind(crate::ops::embedded_schema().expected);
    }
    query.execute(pool).await?;
    Ok(())
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The row was refreshed; `schema_version` is the newest migration the
    /// database has, read in the same statement (the one recorded before, if
    /// the database has none).
    Recorded { schema_version: Option<i64> },
    /// No row for this node (it was removed): the caller registers again.
    NotRegistered,
}

/// Records that `node_id` is alive and whether it is ready, and refreshes the
/// schema it sees from `_sqlx_migrations` in the same statement, so the fleet
/// view follows `obleth-migrator up` within one heartbeat.
pub async fn heartbeat(pool: &PgPool, node_id: &str, ready: bool) -> Result<Beat, sqlx::Error> {
    let row: Option<(Option<i64>,)> = sqlx::query_as(
        "UPDATE nodes SET last_seen = now(), ready = $2, \
         schema_version = COALESCE((SELECT max(version) FROM _sqlx_migrations WHERE success), schema_version) \
         WHERE node_id = $1 RETURNING schema_version",
    )
    .bind(node_id)
    .bind(ready)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((schema_version,)) => Beat::Recorded { schema_version },
        None => Beat::NotRegistered,
    })
}

/// Usage records a gateway counted as dropped over its life, by reason
/// (`obleth_usage_dropped_total`), as recorded when it signs off.
pub type UsageDropped = BTreeMap<String, u64>;

/// The reasons a gateway with a database drops a usage record for, as
/// `obleth_usage_dropped_total` labels them (`no_database` is embedded
/// mode's, which has no node record).
pub const USAGE_DROP_REASONS: [&str; 3] = ["queue_full", "buffer_full", "shutdown"];

/// Records a clean stop: not ready, stopped now, and for a gateway the
/// usage it dropped over its life (`nodes.usage_dropped`, from
/// `20261129000001`, marked with this life's `started_at` in
/// `usage_dropped_life`). False when not registered.
///
/// On a database without that column (the previous release's schema, or
/// after `obleth-migrator down` reverted it) the stop is recorded without
/// the counts.
pub async fn mark_stopped(
    pool: &PgPool,
    node_id: &str,
    usage_dropped: Option<&UsageDropped>,
) -> Result<bool, sqlx::Error> {
    if let Some(dropped) = usage_dropped {
        let recorded = sqlx::query(
            "UPDATE nodes SET ready = FALSE, last_seen = now(), stopped_at = now(), \
             usage_dropped = $2, usage_dropped_life = started_at WHERE node_id = $1",
        )
        .bind(node_id)
        .bind(sqlx::types::Json(dropped))
        .execute(pool)
        .await;
        match recorded {
            Err(e) if undefined_column(&e) => {}
            other => return Ok(other?.rows_affected() > 0),
        }
    }
    let updated = sqlx::query(
        "UPDATE nodes SET ready = FALSE, last_seen = now(), stopped_at = now() \
         WHERE node_id = $1",
    )
    .bind(node_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// What the gateways that signed off within `within` recorded as dropped
/// usage, summed by reason: only counts their last life wrote (a node id
/// the previous release reused keeps counts of an earlier life). Empty on
/// a database without `nodes.usage_dropped`.
pub async fn usage_dropped_at_stop(
    pool: &PgPool,
    within: Duration,
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows: Result<Vec<(String, i64)>, sqlx::Error> = sqlx::query_as(
        "SELECT d.key, sum(d.value::bigint)::bigint \
         FROM nodes, jsonb_each_text(nodes.usage_dropped) AS d \
         WHERE nodes.service = 'gateway' AND nodes.usage_dropped_life = nodes.started_at \
         AND nodes.stopped_at > now() - make_interval(secs => $1) \
         AND d.value ~ '^[0-9]{1,18}$' \
         GROUP BY d.key",
    )
    .bind(within.as_secs_f64())
    .fetch_all(pool)
    .await;
    match rows {
        Ok(rows) => Ok(rows.into_iter().collect()),
        Err(e) if undefined_column(&e) => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// The live nodes: not stopped and seen within `live_within`, by service then id.
pub async fn list_nodes(pool: &PgPool, live_within: Duration) -> Result<Vec<NodeRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT node_id, service, version, git_commit, hostname, schema_version, ready, \
         started_at, last_seen, stopped_at FROM nodes \
         WHERE stopped_at IS NULL AND last_seen > now() - make_interval(secs => $1) \
         ORDER BY service, node_id",
    )
    .bind(live_within.as_secs_f64())
    .fetch_all(pool)
    .await
}
