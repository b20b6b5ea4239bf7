//! The change feed: LISTEN/NOTIFY for prompt updates, catch-up from the last
//! applied `changes.seq` after every (re)connect, and a slow poll as a safety
//! net. A revoked, edited or deleted key takes effect without a restart.

use std::time::Duration;

use obleth_config::db::changes::{changes_since, CHANNEL};
use obleth_config::model::{Change, Entity};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::catalog::Catalog;
use crate::state::AppState;

/// Follows the change log from `seq` until `stop`. `listening` is a listener
/// opened before the warm-up (so the cache never misses a change); later
/// connections are opened here, from `session_pool` (`database.direct_url`,
/// which needs a session of its own); the change log is read from `pool`.
pub async fn run(
    state: AppState,
    pool: PgPool,
    session_pool: PgPool,
    mut seq: i64,
    poll: Duration,
    stop: CancellationToken,
    mut listening: Option<PgListener>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let connected = match listening.take() {
            Some(l) => Ok(l),
            None => connect(&session_pool).await,
        };
        let mut listener = match connected {
            Ok(l) => l,
            Err(e) => {
                set_live(&state, false);
                warn!(error = %e, "Change feed cannot listen; serving from the cache.");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // Whatever happened while we were not listening is in the log.
        if catch_up(&state, &pool, &mut seq).await.is_err() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        backoff = Duration::from_millis(200);
        info!(seq, "Change feed listening.");
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        debug!(payload = notification.payload(), "Change notified.");
                        if catch_up(&state, &pool, &mut seq).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) | Err(_) => {
                        // The connection was lost; notifications may be missed
                        // until we listen again, so reconnect and catch up.
                        set_live(&state, false);
                        warn!("Change feed lost its connection; reconnecting.");
                        break;
                    }
                },
                _ = tokio::time::sleep(poll) => {
                    if catch_up(&state, &pool, &mut seq).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// Opens the LISTEN connection from `session_pool`, whose connection it
/// detaches: a pool on `database.direct_url`, never the query pool, which may
/// be a transaction pooler.
pub async fn connect(session_pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(session_pool).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// How long one catch-up may take before the database counts as unreachable:
/// a partitioned network hangs queries instead of failing them.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies every change after `seq`, advancing it, within [`CATCH_UP_TIMEOUT`].
async fn catch_up(state: &AppState, pool: &PgPool, seq: &mut i64) -> Result<(), ()> {
    match tokio::time::timeout(CATCH_UP_TIMEOUT, catch_up_inner(state, pool, seq)).await {
        Ok(result) => result,
        Err(_) => {
            set_live(state, false);
            warn!("Change feed catch-up timed out; database unreachable?");
            Err(())
        }
    }
}

async fn catch_up_inner(state: &AppState, pool: &PgPool, seq: &mut i64) -> Result<(), ()> {
    loop {
        let changes = match changes_since(pool, *seq, 1000).await {
            Ok(changes) => changes,
            Err(e) => {
                set_live(state, false);
                warn!(error = %e, "Change feed cannot read the change log.");
                return Err(());
            }
        };
        let n = changes.len();
        for change in changes {
            if apply(state, pool, &change).await.is_err() {
                set_live(state, false);
                return Err(());
            }
            *seq = change.seq;
            state.metrics.feed_changes_applied.inc();
        }
        if n < 1000 {
            break;
        }
    }
    set_live(state, true);
    state.health.feed_confirmed();
    Ok(())
}

/// The feed is caught up and listening, or not. While it is, the key store
/// is complete and unknown keys cost no query.
fn set_live(state: &AppState, live: bool) {
    state.health.set_database_ok(live);
    state.keys.set_live(live);
}

async fn apply(state: &AppState, pool: &PgPool, change: &Change) -> Result<(), sqlx::Error> {
    match change.entity {
        Entity::ApiKey => {
            let Ok(id) = change.entity_id.parse::<uuid::Uuid>() else {
                warn!(id = %change.entity_id, "Change names a key id that is not a UUID; skipped.");
                return Ok(());
            };
            match obleth_config::db::keys::key_by_id(pool, id).await? {
                Some(key) => state.keys.insert(key),
                None => state.keys.remove_id(&id),
            }
        }
        Entity::Provider | Entity::Route => {
            let catalog = obleth_config::db::catalog::load_catalog(pool).await?;
            state
                .catalog
                .set(Catalog::from_db(&catalog, &state.settings.egress));
        }
        Entity::Setting => {
            if change.entity_id == obleth_config::db::settings::MAINTENANCE {
                let m = obleth_config::db::settings::get_maintenance(pool).await?;
                crate::warmup::apply_maintenance(state, &m);
            } else if let Some(id) = obleth_config::db::teams::parse_change_id(&change.entity_id) {
                match obleth_config::db::teams::team_by_id(pool, id).await? {
                    Some(team) => state.keys.set_team(team),
                    None => state.keys.remove_team(id),
                }
            } else if change.entity_id == obleth_config::db::prices::CHANGE_ID {
                state.prices.load_from_db(pool).await?;
            } else {
                debug!(id = %change.entity_id, "Unknown setting changed; ignored.");
            }
        }
    }
    Ok(())
}
