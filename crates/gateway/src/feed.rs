//! The change feed: LISTEN/NOTIFY for prompt updates, catch-up from the last
//! applied `changes.seq` after every (re)connect, and a slow poll as a safety
//! net. A revoked, edited or deleted key takes effect without a restart. When
//! the log no longer continues what the feed read (pruned past it, rewound,
//! or another server), it reloads everything instead (`history`). No step
//! waits on the database unbounded, and changes are applied from the query
//! pool even while the LISTEN connection cannot be opened.

use std::time::Duration;

use obleth_config::db::changes::{changes_since, log_bounds, CHANNEL};
use obleth_config::model::{Change, Entity};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::catalog::Catalog;
use crate::history::{FeedMark, ReloadReason};
use crate::state::AppState;

/// Follows the change log from `mark` until `stop`. `listening` is a listener
/// opened before the warm-up (so the cache never misses a change); later
/// connections are opened here, from `session_pool` (`database.direct_url`,
/// which needs a session of its own); the change log is read from `pool`.
pub async fn run(
    state: AppState,
    pool: PgPool,
    session_pool: PgPool,
    mut mark: FeedMark,
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
                // The query pool may answer when the session pool does not
                // (`database.url` may take another route than `direct_url`,
                // and a session that hung keeps its slot in the session
                // pool): a revocation must not wait for the LISTEN
                // connection. Not listening, the store stays incomplete.
                let _ = catch_up(&state, &pool, &mut mark, false).await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // Whatever happened while we were not listening is in the log.
        if catch_up(&state, &pool, &mut mark, true).await.is_err() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        backoff = Duration::from_millis(200);
        info!(seq = mark.seq, "Change feed listening.");
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        debug!(payload = notification.payload(), "Change notified.");
                        if catch_up(&state, &pool, &mut mark, true).await.is_err() {
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
                    if catch_up(&state, &pool, &mut mark, true).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// How long opening the LISTEN connection (the pool's acquire, then the
/// LISTEN) may take: a server that lets a session start and then never
/// answers (a partition, a pooler waiting for a server) must not hold the
/// feed, which catches up from the query pool meanwhile.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the LISTEN connection from `session_pool`, whose connection it
/// keeps: a pool on `database.direct_url`, never the query pool, which may
/// be a transaction pooler. Fails after [`CONNECT_TIMEOUT`].
pub async fn connect(session_pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let open = async {
        let mut listener = PgListener::connect_with(session_pool).await?;
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        Ok(listener)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
        Ok(opened) => opened,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer to LISTEN within {} s", CONNECT_TIMEOUT.as_secs()),
        ))),
    }
}

/// How long one catch-up may take before the database counts as unreachable:
/// a partitioned network hangs queries instead of failing them.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies every change after `mark`, advancing it, each page within
/// [`CATCH_UP_TIMEOUT`]; reloads everything instead when the log does not
/// continue the mark (the reload is a warm-up: no limit on the whole, but
/// each of its steps has one). Only while `listening` does a catch-up make
/// the store complete: otherwise a change made after it would go unheard.
async fn catch_up(
    state: &AppState,
    pool: &PgPool,
    mark: &mut FeedMark,
    listening: bool,
) -> Result<(), ()> {
    loop {
        let step = tokio::time::timeout(
            CATCH_UP_TIMEOUT,
            catch_up_inner(state, pool, mark, listening),
        );
        match step.await {
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(reason))) => *mark = reload(state, pool, mark, reason).await?,
            Ok(Err(())) => return Err(()),
            Err(_) => {
                set_live(state, false);
                warn!("Change feed catch-up timed out; database unreachable?");
                return Err(());
            }
        }
    }
}

/// Changes read a page.
const PAGE: i64 = 1000;

/// Applies the changes after `mark`, page by page. Each page is judged by the
/// log's bounds read *after* it: a prune, a rewind or a failover that
/// happened before or while the page was read shows in them, so no page
/// from a log that does not continue the mark is applied. Answers why a
/// full reload is needed instead, if it is.
async fn catch_up_inner(
    state: &AppState,
    pool: &PgPool,
    mark: &mut FeedMark,
    listening: bool,
) -> Result<Option<ReloadReason>, ()> {
    loop {
        let read = async {
            let changes = changes_since(pool, mark.seq, PAGE).await?;
            let bounds = log_bounds(pool, mark.seq).await?;
            Ok::<_, sqlx::Error>((changes, bounds))
        };
        let (changes, bounds) = match read.await {
            Ok(read) => read,
            Err(e) => {
                set_live(state, false);
                warn!(error = %e, "Change feed cannot read the change log.");
                return Err(());
            }
        };
        if let Some(reason) = mark.judge(&bounds) {
            return Ok(Some(reason));
        }
        let n = changes.len();
        for change in changes {
            if apply(state, pool, &change).await.is_err() {
                set_live(state, false);
                return Err(());
            }
            mark.applied(&change);
            state.metrics.feed_changes_applied.inc();
        }
        if i64::try_from(n).unwrap_or(i64::MAX) < PAGE {
            break;
        }
    }
    if listening {
        set_live(state, true);
        state.health.feed_confirmed();
    }
    Ok(None)
}

/// Reloads every key, the catalog, teams, prices and maintenance (the
/// warm-up's load, with a sweep of keys no longer active) and answers the
/// new mark. Meanwhile the store counts as incomplete, so a key unknown to
/// it is looked up in the database rather than refused.
async fn reload(
    state: &AppState,
    pool: &PgPool,
    mark: &FeedMark,
    reason: ReloadReason,
) -> Result<FeedMark, ()> {
    warn!(
        reason = reason.as_str(),
        last_seq = mark.seq,
        "Change feed cannot catch up from its last change; reloading every key and the catalog."
    );
    state.keys.set_live(false);
    match crate::warmup::reload(state, pool).await {
        Ok(fresh) => {
            state
                .metrics
                .feed_full_reloads
                .with_label_values(&[reason.as_str()])
                .inc();
            Ok(fresh)
        }
        Err(e) => {
            set_live(state, false);
            warn!(error = %e, reason = reason.as_str(), "Full reload failed; will try again.");
            Err(())
        }
    }
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
