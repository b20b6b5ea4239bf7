//! Query tests against a real, throwaway PostgreSQL: keys, the change log and its NOTIFY, usage, nodes and the catalog;
//! teams, prices, the change log's pruning, the running usage totals, the usage batch insert, the usage ledger and its rollup fold in their own modules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fold;
mod insert;
mod ledger;
mod pooler;
mod prices;
mod prune;
mod quota;
mod teams;
mod totals;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::TryStreamExt;
use obleth_config::apikey;
use obleth_config::db::catalog::{self, CatalogError, NewProvider};
use obleth_config::db::changes::{self, CHANNEL};
use obleth_config::db::key_store::{self, KeyColumns};
use obleth_config::db::keys::{self, KeyUpdate, NewKey};
use obleth_config::db::{connect_pool, nodes, usage};
use obleth_config::model::{
    BudgetPeriod, Entity, NodeInfo, Op, ProviderKind, RouteTarget, UsageEvent,
};
use obleth_config::{DatabaseSettings, DatabaseUrl};
use obleth_testkit::{fresh_database, TestDb};
use secrecy::ExposeSecret;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

/// A fresh database with the embedded schema applied, and a pool on it.
async fn migrated() -> (TestDb, PgPool) {
    obleth_testkit::db::migrated().await.unwrap()
}

fn named(name: &str) -> NewKey {
    NewKey {
        name: name.to_owned(),
        ..NewKey::default()
    }
}

async fn all_changes(pool: &PgPool) -> Vec<(i64, Entity, String, Op)> {
    changes::changes_since(pool, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.seq, c.entity, c.entity_id, c.op))
        .collect()
}

/// The next change notice on `listener`, or a panic after 10 seconds.
async fn next_notice(listener: &mut PgListener) -> changes::ChangeNotice {
    let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("no notification within 10 s")
        .unwrap();
    assert_eq!(n.channel(), CHANNEL);
    changes::parse_notification(n.payload()).expect("a change notice")
}

#[tokio::test]
async fn connect_pool_connects_lazily_with_its_application_name() {
    let db = fresh_database().await.unwrap();
    let settings = DatabaseSettings {
        url: Some(DatabaseUrl::new(db.url.clone())),
        ..DatabaseSettings::default()
    };
    let pool = connect_pool(&settings, "obleth-test").await.unwrap();
    assert_eq!(pool.size(), 0, "nothing connected before first use");
    let app: String = sqlx::query_scalar("SELECT current_setting('application_name')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(app, "obleth-test");
}

#[tokio::test]
async fn a_created_key_is_found_by_hash_and_its_secret_is_stored_nowhere() {
    let (_db, pool) = migrated().await;
    let new = NewKey {
        name: "ci".to_owned(),
        owner: Some("team-a".to_owned()),
        allowed_models: vec!["gpt-4o*".to_owned(), "mock-1".to_owned()],
        rpm_limit: Some(60),
        tpm_limit: Some(10_000),
        token_budget: Some(1_000_000),
        expires_at: Some(Utc::now() + chrono::Duration::days(30)),
        ..NewKey::default()
    };

    let (key, generated) = keys::create_key(&pool, &new).await.unwrap();

    let full = generated.secret.expose_secret().to_owned();
    let presented = apikey::parse(&full).unwrap();
    assert_eq!(presented.public_id, key.public_id);
    let found = keys::key_by_hash(&pool, &presented.hash())
        .await
        .unwrap()
        .expect("found by hash");
    assert_eq!(found, key);
    assert_eq!(found.allowed_models, new.allowed_models);
    assert_eq!(found.token_budget, Some(1_000_000));
    assert!(apikey::hashes_equal(
        &found.secret_hash,
        &generated.secret_hash
    ));
    assert_eq!(
        keys::key_by_id(&pool, key.id).await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(keys::key_by_hash(&pool, &[0; 32]).await.unwrap(), None);

    let rows: Vec<String> = sqlx::query_scalar("SELECT row_to_json(k)::text FROM api_keys k")
        .fetch_all(&pool)
        .await
        .unwrap();
    let changes: Vec<String> = sqlx::query_scalar("SELECT row_to_json(c)::text FROM changes c")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    for row in rows.iter().chain(&changes) {
        assert!(!row.contains(presented.secret), "secret stored: {row}");
    }
    assert_eq!(
        all_changes(&pool).await,
        vec![(1, Entity::ApiKey, key.id.to_string(), Op::Insert)]
    );
}

#[tokio::test]
async fn revoking_a_key_records_an_update_and_notifies_listeners() {
    let (db, pool) = migrated().await;
    let (key, _) = keys::create_key(&pool, &named("doomed")).await.unwrap();
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen(CHANNEL).await.unwrap();

    let revoked = keys::revoke_key(&pool, key.id).await.unwrap().unwrap();

    let revoked_at = revoked.revoked_at.expect("revoked");
    assert!(!revoked.is_active(Utc::now()));
    let notice = next_notice(&mut listener).await;
    assert_eq!(notice.entity, Entity::ApiKey);
    assert_eq!(notice.entity_id, key.id.to_string());
    assert_eq!(notice.op, Op::Update);
    let log = all_changes(&pool).await;
    assert_eq!(
        log.last().unwrap(),
        &(notice.seq, Entity::ApiKey, key.id.to_string(), Op::Update)
    );

    // Revoking again keeps the first revocation and records nothing.
    let again = keys::revoke_key(&pool, key.id).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(revoked_at));
    assert_eq!(all_changes(&pool).await, log);
    assert_eq!(keys::revoke_key(&pool, Uuid::new_v4()).await.unwrap(), None);
}

#[tokio::test]
async fn the_key_store_reads_count_and_stream_unrevoked_keys_expired_ones_included() {
    let (_db, pool) = migrated().await;
    let live_new = NewKey {
        allowed_models: vec!["gpt-4o*".to_owned()],
        rpm_limit: Some(7),
        token_budget: Some(100),
        budget_usd_micros: Some(5),
        budget_period: BudgetPeriod::Week,
        ..named("live")
    };
    let (live, _) = keys::create_key(&pool, &live_new).await.unwrap();
    let expired_new = NewKey {
        expires_at: Some(Utc::now() - chrono::Duration::hours(1)),
        ..named("expired")
    };
    let (expired, _) = keys::create_key(&pool, &expired_new).await.unwrap();
    let (revoked, _) = keys::create_key(&pool, &named("revoked")).await.unwrap();
    keys::revoke_key(&pool, revoked.id).await.unwrap();
    let keys::RotateOutcome::Rotated(rotated, _) =
        keys::rotate_key(&pool, live.id, Duration::from_secs(60))
            .await
            .unwrap()
    else {
        panic!("rotated");
    };

    assert_eq!(key_store::count_active_keys(&pool).await.unwrap(), 2);
    let blocks = key_store::key_table_blocks(&pool).await.unwrap();
    let mut rows = Vec::new();
    for range in key_store::BlockRange::split(3, blocks) {
        let part: Vec<_> = key_store::active_key_rows(&pool, range)
            .try_collect()
            .await
            .unwrap();
        rows.extend(part);
    }
    let read: Vec<KeyColumns<'_>> = rows
        .iter()
        .map(|r| KeyColumns::from_row(r).unwrap())
        .collect();

    let ids: HashSet<Uuid> = read.iter().map(|k| k.id).collect();
    assert_eq!(ids, HashSet::from([live.id, expired.id]));
    let l = read.iter().find(|k| k.id == live.id).unwrap();
    let whole = KeyColumns::of_key(&rotated);
    assert_eq!(
        (l.public_id, l.secret_hash, l.allowed_models.clone()),
        (
            whole.public_id,
            whole.secret_hash,
            whole.allowed_models.clone()
        )
    );
    assert_eq!(
        (
            l.rpm_limit,
            l.tpm_limit,
            l.token_budget,
            l.budget_usd_micros
        ),
        (Some(7), None, Some(100), Some(5))
    );
    assert_eq!(l.budget_period, BudgetPeriod::Week);
    assert_eq!(l.previous_secret_hash, whole.previous_secret_hash);
    assert!(l.previous_secret_hash.is_some() && l.previous_expires_at.is_some());
    assert!(!l.revoked && l.team_id.is_none());
    let e = read.iter().find(|k| k.id == expired.id).unwrap();
    assert_eq!(e.expires_at, expired.expires_at);
}

#[tokio::test]
async fn update_key_changes_only_the_given_fields_and_delete_removes_the_key() {
    let (_db, pool) = migrated().await;
    let new = NewKey {
        owner: Some("team-a".to_owned()),
        rpm_limit: Some(10),
        token_budget: Some(500),
        ..named("before")
    };
    let (key, _) = keys::create_key(&pool, &new).await.unwrap();

    let update = KeyUpdate {
        name: Some("after".to_owned()),
        owner: Some(None),
        rpm_limit: Some(Some(20)),
        allowed_models: Some(vec!["mock-*".to_owned()]),
        ..KeyUpdate::default()
    };
    let updated = keys::update_key(&pool, key.id, &update)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(updated.name, "after");
    assert_eq!(updated.owner, None);
    assert_eq!(updated.rpm_limit, Some(20));
    assert_eq!(updated.allowed_models, vec!["mock-*".to_owned()]);
    assert_eq!(updated.token_budget, Some(500), "untouched");
    assert_eq!(updated.secret_hash, key.secret_hash);
    assert!(updated.updated_at >= key.updated_at);
    let ops: Vec<Op> = all_changes(&pool).await.into_iter().map(|c| c.3).collect();
    assert_eq!(ops, vec![Op::Insert, Op::Update]);

    // An empty update and an unknown key change nothing.
    let same = keys::update_key(&pool, key.id, &KeyUpdate::default())
        .await
        .unwrap();
    assert_eq!(same, Some(updated));
    assert_eq!(
        keys::update_key(&pool, Uuid::new_v4(), &update)
            .await
            .unwrap(),
        None
    );
    assert_eq!(all_changes(&pool).await.len(), 2);

    // The CHECK constraints guard the limits.
    let bad = KeyUpdate {
        rpm_limit: Some(Some(0)),
        ..KeyUpdate::default()
    };
    assert!(keys::update_key(&pool, key.id, &bad).await.is_err());
    assert_eq!(
        all_changes(&pool).await.len(),
        2,
        "a failed update logs nothing"
    );

    assert!(keys::delete_key(&pool, key.id).await.unwrap());
    assert!(!keys::delete_key(&pool, key.id).await.unwrap());
    assert_eq!(keys::key_by_id(&pool, key.id).await.unwrap(), None);
    let last = all_changes(&pool).await.pop().unwrap();
    assert_eq!(
        (last.1, last.2, last.3),
        (Entity::ApiKey, key.id.to_string(), Op::Delete)
    );
}

#[tokio::test]
async fn changes_since_returns_later_changes_oldest_first_up_to_the_limit() {
    let (_db, pool) = migrated().await;
    assert_eq!(changes::latest_seq(&pool).await.unwrap(), 0);
    assert!(changes::changes_since(&pool, 0, 100)
        .await
        .unwrap()
        .is_empty());
    let mut ids = Vec::new();
    for i in 0..5 {
        let (key, _) = keys::create_key(&pool, &named(&format!("k{i}")))
            .await
            .unwrap();
        ids.push(key.id.to_string());
    }
    let latest = changes::latest_seq(&pool).await.unwrap();

    let all = changes::changes_since(&pool, 0, 100).await.unwrap();
    let after_two = changes::changes_since(&pool, all[1].seq, 2).await.unwrap();
    let after_latest = changes::changes_since(&pool, latest, 100).await.unwrap();

    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        all.iter().map(|c| c.entity_id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert_eq!(latest, all[4].seq);
    assert_eq!(after_two, all[2..4].to_vec());
    assert!(after_latest.is_empty());
}

#[tokio::test]
async fn ten_concurrent_writers_commit_changes_in_seq_order() {
    let (db, pool) = migrated().await;
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen(CHANNEL).await.unwrap();

    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                keys::create_key(&pool, &named(&format!("w{i}")))
                    .await
                    .unwrap()
                    .0
            })
        })
        .collect();
    let mut created = HashSet::new();
    for task in tasks {
        created.insert(task.await.unwrap().id.to_string());
    }

    // PostgreSQL delivers notifications in commit order, so these seqs are in
    // commit order; the change lock makes that the seq order too.
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(next_notice(&mut listener).await);
    }
    let seqs: Vec<i64> = seen.iter().map(|n| n.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "commit order {seqs:?}"
    );
    let notified: HashSet<String> = seen.into_iter().map(|n| n.entity_id).collect();
    assert_eq!(notified, created);
    let logged = changes::changes_since(&pool, 0, 100).await.unwrap();
    assert_eq!(logged.iter().map(|c| c.seq).collect::<Vec<_>>(), seqs);
}

#[tokio::test]
async fn a_change_writer_waits_until_an_earlier_one_commits() {
    let (_db, pool) = migrated().await;
    let mut first = pool.begin().await.unwrap();
    let first_seq = changes::record_change(&mut first, Entity::Setting, "a", Op::Update)
        .await
        .unwrap();

    let second = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let seq = changes::record_change(&mut tx, Entity::Setting, "b", Op::Update)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            seq
        }
    });
    // Wait (bounded) until the second writer is queued on the change lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "second writer never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!second.is_finished());
    assert!(changes::changes_since(&pool, 0, 10)
        .await
        .unwrap()
        .is_empty());

    first.commit().await.unwrap();
    let second_seq = second.await.unwrap();

    assert!(second_seq > first_seq);
    let ids: Vec<String> = changes::changes_since(&pool, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.entity_id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
}

fn usage_event(key_id: Option<Uuid>, total: Option<i32>) -> UsageEvent {
    UsageEvent {
        request_id: Uuid::new_v4(),
        key_id,
        model: "mock-1".to_owned(),
        provider: Some("mock".to_owned()),
        prompt_tokens: total.map(|t| t / 2),
        completion_tokens: total.map(|t| t - t / 2),
        total_tokens: total,
        status: 200,
        latency_ms: 12,
        streamed: false,
        node_id: Some("gw-1".to_owned()),
        created_at: Utc::now(),
        cost_micros: None,
        estimated: false,
        team_id: None,
    }
}

async fn usage_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM usage_ledger")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retried_usage_batch_is_counted_once() {
    let (_db, pool) = migrated().await;
    let mut batch: Vec<UsageEvent> = (0..5).map(|_| usage_event(None, Some(10))).collect();
    assert_eq!(usage::insert_usage(&pool, &[]).await.unwrap(), 0);

    assert_eq!(usage::insert_usage(&pool, &batch).await.unwrap(), 5);
    assert_eq!(usage::insert_usage(&pool, &batch).await.unwrap(), 0);
    // A retry that carries new events along with old ones, and a duplicate
    // within the batch, stores only what is new.
    batch.push(usage_event(None, None));
    batch.push(batch[5].clone());
    assert_eq!(usage::insert_usage(&pool, &batch).await.unwrap(), 1);

    assert_eq!(usage_rows(&pool).await, 6);
    let stored: Vec<UsageEvent> = sqlx::query_as(
        "SELECT request_id, key_id, model, provider, prompt_tokens, completion_tokens, \
         total_tokens, status, latency_ms, streamed, node_id, created_at \
         FROM usage_ledger ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // PostgreSQL keeps microseconds; compare everything else exactly.
    for (s, b) in stored.iter().zip(&batch) {
        assert_eq!(s.request_id, b.request_id);
        assert_eq!(
            (s.total_tokens, s.status, s.streamed),
            (b.total_tokens, b.status, b.streamed)
        );
        assert!((s.created_at - b.created_at).num_milliseconds().abs() < 1);
    }
}

#[tokio::test]
async fn a_usage_batch_larger_than_one_chunk_is_stored_whole() {
    let (_db, pool) = migrated().await;
    let rows = 2 * usage::CHUNK_ROWS + 500;
    let batch: Vec<UsageEvent> = (0..rows).map(|_| usage_event(None, Some(1))).collect();

    assert_eq!(
        usage::insert_usage(&pool, &batch).await.unwrap(),
        rows as u64
    );
    assert_eq!(usage::insert_usage(&pool, &batch).await.unwrap(), 0);

    assert_eq!(usage_rows(&pool).await, rows as i64);
}

fn node(id: &str, service: &str, version: &str) -> NodeInfo {
    NodeInfo {
        node_id: id.to_owned(),
        service: service.to_owned(),
        version: version.to_owned(),
        git_commit: Some("abc123".to_owned()),
        hostname: Some("host-1".to_owned()),
        schema_version: Some(20261122000001),
    }
}

#[tokio::test]
async fn nodes_register_beat_stop_and_only_live_ones_are_listed() {
    let (_db, pool) = migrated().await;
    let window = Duration::from_secs(30);
    nodes::register_node(&pool, &node("gw-1", "gateway", "0.1.0"))
        .await
        .unwrap();
    nodes::register_node(&pool, &node("gw-2", "gateway", "0.1.0"))
        .await
        .unwrap();
    nodes::register_node(&pool, &node("adm-1", "admin", "0.1.0"))
        .await
        .unwrap();

    let listed = nodes::list_nodes(&pool, window).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, ["adm-1", "gw-1", "gw-2"]);
    // Each records its release schema, the newest migration its binary
    // embeds, which `obleth-migrator down` will not revert under it.
    let release: Vec<Option<i64>> =
        sqlx::query_scalar("SELECT release_schema FROM nodes ORDER BY node_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let embedded = obleth_config::migrate::MigrationSet::embedded()
        .unwrap()
        .latest_version();
    assert!(embedded.is_some());
    assert_eq!(release, [embedded; 3]);
    assert!(listed.iter().all(|n| !n.ready && n.stopped_at.is_none()));

    // Every beat reads the newest applied migration in the same statement.
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(newest.is_some());
    let beat = nodes::Beat::Recorded {
        schema_version: newest,
    };
    assert_eq!(nodes::heartbeat(&pool, "gw-1", true).await.unwrap(), beat);
    assert_eq!(nodes::heartbeat(&pool, "gw-2", true).await.unwrap(), beat);
    assert_eq!(
        nodes::heartbeat(&pool, "nobody", true).await.unwrap(),
        nodes::Beat::NotRegistered
    );
    // A migration applied since is seen by the next beat.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (20261201000001, 'later', TRUE, '\\x00', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        nodes::heartbeat(&pool, "gw-2", true).await.unwrap(),
        nodes::Beat::Recorded {
            schema_version: Some(20261201000001)
        }
    );
    assert!(nodes::mark_stopped(&pool, "adm-1", None).await.unwrap());
    // gw-2 went silent a minute ago.
    sqlx::query("UPDATE nodes SET last_seen = now() - interval '1 minute' WHERE node_id = 'gw-2'")
        .execute(&pool)
        .await
        .unwrap();

    let listed = nodes::list_nodes(&pool, window).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let gw1 = &listed[0];
    assert_eq!(gw1.node_id, "gw-1");
    assert!(gw1.ready);
    assert_eq!(gw1.schema_version, newest, "read from _sqlx_migrations");
    let gw2_schema: Option<i64> =
        sqlx::query_scalar("SELECT schema_version FROM nodes WHERE node_id = 'gw-2'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(gw2_schema, Some(20261201000001));

    // Registering again (a restart with the same id, a newer release) starts afresh.
    nodes::register_node(&pool, &node("adm-1", "admin", "0.2.0"))
        .await
        .unwrap();
    let listed = nodes::list_nodes(&pool, window).await.unwrap();
    let adm = listed.iter().find(|n| n.node_id == "adm-1").unwrap();
    assert_eq!(
        (adm.version.as_str(), adm.ready, adm.stopped_at),
        ("0.2.0", false, None)
    );

    let bad = node("x", "proxy", "0.1.0");
    assert!(
        nodes::register_node(&pool, &bad).await.is_err(),
        "unknown service refused"
    );
}

#[tokio::test]
async fn a_node_registers_on_a_schema_from_before_release_schema_leaving_it_unknown() {
    let db = fresh_database().await.unwrap();
    obleth_testkit::ledger::run_through(
        &db.url,
        obleth_testkit::ledger::DAILY,
        obleth_config::migrate::Mode::Up,
        obleth_config::migrate::RunnerOptions::default(),
    )
    .await
    .unwrap();
    let pool = PgPool::connect(&db.url).await.unwrap();
    nodes::register_node(&pool, &node("adm-1", "admin", "0.3.0"))
        .await
        .unwrap();
    let listed = nodes::list_nodes(&pool, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");

    // Once the column exists, the same node registering again records it.
    obleth_testkit::db::migrate(&db.url).await.unwrap();
    let unknown: Option<i64> =
        sqlx::query_scalar("SELECT release_schema FROM nodes WHERE node_id = 'adm-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unknown, None);
    nodes::register_node(&pool, &node("adm-1", "admin", "0.3.0"))
        .await
        .unwrap();
    let known: Option<i64> =
        sqlx::query_scalar("SELECT release_schema FROM nodes WHERE node_id = 'adm-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        known,
        obleth_config::migrate::MigrationSet::embedded()
            .unwrap()
            .latest_version()
    );
}

fn provider(name: &str, kind: ProviderKind) -> NewProvider {
    NewProvider {
        name: name.to_owned(),
        kind,
        base_url: format!("https://{name}.invalid/v1"),
        credential_ref: Some(format!("env:{}_KEY", name.to_uppercase())),
        timeout_ms: 30_000,
        options: Default::default(),
    }
}

fn target(provider: &str, upstream_model: Option<&str>) -> RouteTarget {
    RouteTarget::new(provider, upstream_model.map(str::to_owned))
}

#[tokio::test]
async fn the_catalog_loads_routes_with_targets_in_order() {
    let (_db, pool) = migrated().await;
    let openai = catalog::create_provider(&pool, &provider("openai", ProviderKind::OpenAi))
        .await
        .unwrap();
    let mock = catalog::create_provider(&pool, &provider("mock", ProviderKind::Mock))
        .await
        .unwrap();
    // Targets deliberately not in name order, and one provider twice.
    let targets = vec![
        target("openai", Some("gpt-4o-2024-08-06")),
        target("mock", None),
        target("openai", Some("gpt-4o-mini")),
    ];
    let gpt = catalog::create_route(&pool, "gpt-4o", &targets)
        .await
        .unwrap();
    let solo = catalog::create_route(&pool, "mock-1", &[target("mock", None)])
        .await
        .unwrap();

    let loaded = catalog::load_catalog(&pool).await.unwrap();

    assert_eq!(loaded.providers, vec![mock.clone(), openai.clone()]);
    assert_eq!(loaded.routes, vec![gpt.clone(), solo.clone()]);
    assert_eq!(loaded.routes[0].targets, targets);
    assert_eq!(openai.kind, ProviderKind::OpenAi);
    assert_eq!(openai.credential_ref.as_deref(), Some("env:OPENAI_KEY"));
    let entities: Vec<(Entity, Op)> = all_changes(&pool)
        .await
        .into_iter()
        .map(|c| (c.1, c.3))
        .collect();
    assert_eq!(
        entities,
        [
            (Entity::Provider, Op::Insert),
            (Entity::Provider, Op::Insert),
            (Entity::Route, Op::Insert),
            (Entity::Route, Op::Insert),
        ]
    );

    // A provider in use cannot go; once its routes are gone it can.
    let err = catalog::delete_provider(&pool, "mock").await.unwrap_err();
    assert!(
        matches!(&err, CatalogError::ProviderInUse { routes, .. } if routes == &["gpt-4o", "mock-1"]),
        "{err}"
    );
    assert!(catalog::delete_route(&pool, gpt.id).await.unwrap());
    assert!(catalog::delete_route(&pool, solo.id).await.unwrap());
    assert!(!catalog::delete_route(&pool, solo.id).await.unwrap());
    assert!(catalog::delete_provider(&pool, "mock").await.unwrap());
    assert!(!catalog::delete_provider(&pool, "mock").await.unwrap());
    let loaded = catalog::load_catalog(&pool).await.unwrap();
    assert_eq!(loaded.providers, vec![openai]);
    assert!(loaded.routes.is_empty());
    let target_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM route_targets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(target_rows, 0);
}

#[tokio::test]
async fn provider_options_and_target_weights_round_trip_and_a_newer_option_is_ignored() {
    let (_db, pool) = migrated().await;
    let options = obleth_config::model::ProviderOptions {
        credential_pool: vec!["env:KEY_2".into(), "env:KEY_3".into()],
        connect_timeout_ms: Some(750),
        idle_timeout_ms: Some(20_000),
        ca_file: Some("/etc/obleth/ca.pem".into()),
        ..Default::default()
    };
    let pooled = catalog::create_provider(
        &pool,
        &NewProvider {
            options: options.clone(),
            ..provider("pooled", ProviderKind::OpenAi)
        },
    )
    .await
    .unwrap();
    assert_eq!(pooled.options, options);
    catalog::create_provider(&pool, &provider("mock", ProviderKind::Mock))
        .await
        .unwrap();
    let targets = vec![
        RouteTarget {
            weight: 3,
            priority: Some(0),
            ..target("pooled", None)
        },
        RouteTarget {
            weight: 0,
            priority: Some(0),
            ..target("mock", None)
        },
    ];
    let route = catalog::create_route(&pool, "gpt-4o", &targets)
        .await
        .unwrap();
    let loaded = catalog::load_catalog(&pool).await.unwrap();
    assert_eq!(loaded.routes[0].targets, targets);
    assert_eq!(loaded.providers[1].options, options);
    assert_eq!(
        catalog::get_route(&pool, route.id)
            .await
            .unwrap()
            .unwrap()
            .targets,
        targets
    );

    // A patch replaces, clears or keeps each option.
    let patch = serde_json::json!({"connect_timeout_ms": 900, "ca_file": null});
    let update = catalog::ProviderUpdate {
        options: Some(patch.as_object().unwrap().clone()),
        ..Default::default()
    };
    let updated = catalog::update_provider(&pool, "pooled", &update, |_| Ok(()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.options.connect_timeout_ms, Some(900));
    assert_eq!(updated.options.ca_file, None);
    assert_eq!(updated.options.credential_pool, options.credential_pool);
    assert_eq!(updated.options.idle_timeout_ms, Some(20_000));

    // A member a newer release wrote is ignored when read, not an error.
    sqlx::query(
        "UPDATE providers SET options = options || '{\"from_the_future\": {\"x\": 1}}' \
         WHERE name = 'pooled'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let read = catalog::get_provider(&pool, "pooled")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.options, updated.options);
    // The schema refuses options that are not an object, and weights out of range.
    let refused = sqlx::query("UPDATE providers SET options = '[1]' WHERE name = 'pooled'")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("providers_options_object"),
        "{refused}"
    );
    let refused = sqlx::query("UPDATE route_targets SET weight = -1")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("route_targets_weight_range"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_route_naming_an_unknown_provider_or_none_is_refused_and_nothing_is_written() {
    let (_db, pool) = migrated().await;
    catalog::create_provider(&pool, &provider("mock", ProviderKind::Mock))
        .await
        .unwrap();
    let before = changes::latest_seq(&pool).await.unwrap();

    let unknown = catalog::create_route(
        &pool,
        "gpt-4o",
        &[target("mock", None), target("nope", None)],
    )
    .await
    .unwrap_err();
    let empty = catalog::create_route(&pool, "gpt-4o", &[])
        .await
        .unwrap_err();

    assert!(matches!(&unknown, CatalogError::UnknownProvider(name) if name == "nope"));
    assert_eq!(unknown.to_string(), "unknown provider `nope`");
    assert!(matches!(empty, CatalogError::NoTargets(_)));
    assert!(catalog::load_catalog(&pool)
        .await
        .unwrap()
        .routes
        .is_empty());
    assert_eq!(changes::latest_seq(&pool).await.unwrap(), before);
}

#[tokio::test]
async fn rotation_keeps_the_previous_secret_for_the_overlap_and_the_public_id() {
    let (_db, pool) = migrated().await;
    let (key, first) = keys::create_key(&pool, &NewKey::default()).await.unwrap();
    let outcome = keys::rotate_key(&pool, key.id, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let keys::RotateOutcome::Rotated(rotated, second) = outcome else {
        panic!("expected a rotation, got {outcome:?}");
    };
    assert_eq!(rotated.public_id, key.public_id);
    assert_eq!(second.public_id, key.public_id);
    assert!(second
        .secret
        .expose_secret()
        .starts_with(&format!("obk_{}_", key.public_id)));
    assert_eq!(
        rotated.previous_secret_hash.as_deref(),
        Some(first.secret_hash.as_slice())
    );
    let now = chrono::Utc::now();
    assert!(rotated.previous_secret_valid(&first.secret_hash, now));
    // Both secrets find the key on a cache miss.
    for hash in [first.secret_hash, second.secret_hash] {
        let found = keys::key_by_hash(&pool, &hash).await.unwrap().unwrap();
        assert_eq!(found.id, key.id);
    }
    // A revoked key is not rotated; an unknown one is not found.
    keys::revoke_key(&pool, key.id).await.unwrap();
    let revoked = keys::rotate_key(&pool, key.id, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(revoked, keys::RotateOutcome::Revoked));
    let missing = keys::rotate_key(&pool, uuid::Uuid::new_v4(), std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(missing, keys::RotateOutcome::NotFound));
}

#[tokio::test]
async fn list_keys_filters_and_pages_by_id() {
    let (_db, pool) = migrated().await;
    for i in 0..5 {
        let new = NewKey {
            name: format!("team-{i}"),
            owner: Some(if i % 2 == 0 { "alice" } else { "bob" }.to_owned()),
            ..NewKey::default()
        };
        keys::create_key(&pool, &new).await.unwrap();
    }
    use keys::{list_keys, KeyFilter};
    let alice = list_keys(
        &pool,
        &KeyFilter {
            owner: Some("alice".to_owned()),
            ..KeyFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(alice.len(), 3);
    let named = list_keys(
        &pool,
        &KeyFilter {
            name_contains: Some("TEAM-3".to_owned()),
            ..KeyFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(named.len(), 1);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = list_keys(
            &pool,
            &KeyFilter {
                after,
                limit: 2,
                ..KeyFilter::default()
            },
        )
        .await
        .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|k| k.id);
        seen.extend(page.into_iter().map(|k| k.id));
    }
    assert_eq!(seen.len(), 5);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ordered by id, no repeats"
    );
    keys::revoke_key(&pool, seen[0]).await.unwrap();
    let revoked = list_keys(
        &pool,
        &KeyFilter {
            revoked: Some(true),
            ..KeyFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        revoked.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![seen[0]]
    );
}

#[tokio::test]
async fn maintenance_is_stored_with_a_change_row() {
    let (_db, pool) = migrated().await;
    use obleth_config::db::settings::{get_maintenance, set_maintenance, Maintenance};
    assert_eq!(
        get_maintenance(&pool).await.unwrap(),
        Maintenance::default()
    );
    let before = obleth_config::db::changes::latest_seq(&pool).await.unwrap();
    let m = Maintenance {
        enabled: true,
        message: "upgrading".to_owned(),
        retry_after_secs: 30,
    };
    set_maintenance(&pool, &m).await.unwrap();
    assert_eq!(get_maintenance(&pool).await.unwrap(), m);
    let changes = obleth_config::db::changes::changes_since(&pool, before, 10)
        .await
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].entity, Entity::Setting);
    assert_eq!(changes[0].entity_id, "maintenance");
}
