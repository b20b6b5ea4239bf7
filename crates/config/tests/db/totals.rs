//! The running usage totals the trigger keeps (per key and team, per period,
//! on UTC boundaries, each row counted once), the reads of the current
//! period, cost in the reports, and the models no price covers.

use chrono::{DateTime, TimeZone, Utc};
use obleth_config::db::keys::{self, NewKey};
use obleth_config::db::prices::{self, NewPrice};
use obleth_config::db::teams::{self, NewTeam};
use obleth_config::db::usage::{self, PeriodTotals, UsageFilter, UsageGroup};
use obleth_config::model::{BudgetPeriod, UsageEvent};
use sqlx::PgPool;
use uuid::Uuid;

use super::{migrated, named, usage_event};

const PERIODS: [BudgetPeriod; 4] = [
    BudgetPeriod::Day,
    BudgetPeriod::Week,
    BudgetPeriod::Month,
    BudgetPeriod::Total,
];

fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap()
}

/// An event of `key` (and `team`, as the gateway records it) at `when`.
fn event(
    key: Uuid,
    team: Option<Uuid>,
    tokens: i32,
    cost: Option<i64>,
    when: DateTime<Utc>,
) -> UsageEvent {
    UsageEvent {
        team_id: team,
        cost_micros: cost,
        created_at: when,
        ..usage_event(Some(key), Some(tokens))
    }
}

/// Every `usage_totals` row of `subject`: (period, period_start, requests, tokens, cost),
/// after folding the rollup queue into them.
async fn rows_of(pool: &PgPool, subject: Uuid) -> Vec<(String, DateTime<Utc>, i64, i64, i64)> {
    obleth_testkit::ledger::fold(pool).await.unwrap();
    sqlx::query_as(
        "SELECT period, period_start, requests, tokens, cost_micros FROM usage_totals \
         WHERE subject_id = $1 ORDER BY period, period_start",
    )
    .bind(subject)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn in_team(pool: &PgPool, name: &str) -> (Uuid, Uuid) {
    let team = teams::create_team(
        pool,
        &NewTeam {
            name: name.to_owned(),
            ..NewTeam::default()
        },
    )
    .await
    .unwrap();
    let key = NewKey {
        team_id: Some(team.id),
        ..named(name)
    };
    let (key, _) = keys::create_key(pool, &key).await.unwrap();
    (key.id, team.id)
}

#[tokio::test]
async fn a_batch_inserted_twice_counts_once_for_the_key_and_its_team() {
    let (_db, pool) = migrated().await;
    let (key, team) = in_team(&pool, "a").await;
    let now = Utc::now();
    let batch = vec![
        event(key, Some(team), 100, Some(250), now),
        event(key, Some(team), 20, None, now),
        event(key, Some(team), 3, Some(5), now),
    ];

    assert_eq!(usage::insert_usage(&pool, &batch).await.unwrap(), 3);
    assert_eq!(usage::insert_usage(&pool, &batch).await.unwrap(), 0);
    assert_eq!(usage::insert_usage(&pool, &batch[1..]).await.unwrap(), 0);

    for subject in [key, team] {
        let rows = rows_of(&pool, subject).await;
        assert_eq!(rows.len(), 4, "one row per period kind: {rows:?}");
        for (period, start, requests, tokens, cost) in rows {
            let p: BudgetPeriod = period.parse().unwrap();
            assert_eq!(start, p.start(now), "{period}");
            assert_eq!((requests, tokens, cost), (3, 123, 255), "{period}");
        }
        for p in PERIODS {
            let totals = usage::period_totals(&pool, subject, p, now).await.unwrap();
            assert_eq!(
                totals,
                PeriodTotals {
                    period_start: p.start(now),
                    requests: 3,
                    tokens: 123,
                    cost_micros: 255
                }
            );
        }
    }
}

#[tokio::test]
async fn rows_without_a_team_count_for_their_key_only() {
    let (_db, pool) = migrated().await;
    let (key, team) = in_team(&pool, "b").await;
    let (loner, _) = keys::create_key(&pool, &named("loner")).await.unwrap();
    let now = Utc::now();
    // As a release before teams writes them: no team_id, no cost.
    let old_release = vec![
        event(key, None, 7, None, now),
        event(key, None, 8, None, now),
    ];
    usage::insert_usage(&pool, &old_release).await.unwrap();
    usage::insert_usage(&pool, &[event(loner.id, None, 1000, None, now)])
        .await
        .unwrap();

    let team_day = usage::period_totals(&pool, team, BudgetPeriod::Day, now)
        .await
        .unwrap();
    // The trigger reads no api_keys (a usage batch costs no key lookups):
    // rows from a release that knows no teams count for their key only.
    assert_eq!((team_day.requests, team_day.tokens), (0, 0));
    let key_total = usage::period_totals(&pool, key, BudgetPeriod::Total, now)
        .await
        .unwrap();
    assert_eq!((key_total.requests, key_total.tokens), (2, 15));
    let loner_rows = rows_of(&pool, loner.id).await;
    assert_eq!(loner_rows.len(), 4, "{loner_rows:?}");
    assert!(loner_rows.iter().all(|r| r.3 == 1000));
}

#[tokio::test]
async fn period_rows_land_on_utc_boundaries_on_both_sides_of_midnight() {
    let (_db, pool) = migrated().await;
    let (key, team) = in_team(&pool, "c").await;
    // Sunday 31 May 2026 ends a day, an ISO week and a month at once.
    let before = at(2026, 5, 31, 23, 59, 59);
    let after = at(2026, 6, 1, 0, 0, 1);
    let events = vec![
        event(key, Some(team), 10, Some(100), before),
        event(key, Some(team), 1, Some(1), after),
        event(key, Some(team), 2, Some(2), after),
    ];
    usage::insert_usage(&pool, &events).await.unwrap();

    let day = |d| at(2026, 5, d, 0, 0, 0);
    let june = at(2026, 6, 1, 0, 0, 0);
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let expected = vec![
        ("day".to_owned(), day(31), 1, 10, 100),
        ("day".to_owned(), june, 2, 3, 3),
        ("month".to_owned(), day(1), 1, 10, 100),
        ("month".to_owned(), june, 2, 3, 3),
        ("total".to_owned(), epoch, 3, 13, 103),
        ("week".to_owned(), day(25), 1, 10, 100),
        ("week".to_owned(), june, 2, 3, 3),
    ];
    assert_eq!(rows_of(&pool, key).await, expected);
    assert_eq!(rows_of(&pool, team).await, expected);
    // The database's boundaries are the ones BudgetPeriod computes.
    for (period, start, ..) in &expected {
        let p: BudgetPeriod = period.parse().unwrap();
        let when = if *start >= june { after } else { before };
        assert_eq!(p.start(when), *start, "{period}");
    }

    let subjects = [
        (key, BudgetPeriod::Day),
        (team, BudgetPeriod::Month),
        (Uuid::new_v4(), BudgetPeriod::Week),
        (key, BudgetPeriod::Total),
    ];
    let late_on_sunday = usage::periods_totals(&pool, &subjects, at(2026, 5, 31, 12, 0, 0))
        .await
        .unwrap();
    let summary: Vec<_> = late_on_sunday
        .iter()
        .map(|t| (t.period_start, t.requests, t.tokens, t.cost_micros))
        .collect();
    assert_eq!(
        summary,
        vec![
            (day(31), 1, 10, 100),
            (day(1), 1, 10, 100),
            (day(25), 0, 0, 0),
            (epoch, 3, 13, 103),
        ],
        "answered in the order asked, zeros for nothing recorded"
    );
    let monday = usage::period_totals(&pool, key, BudgetPeriod::Week, after)
        .await
        .unwrap();
    assert_eq!((monday.period_start, monday.requests), (june, 2));
}

#[tokio::test]
async fn totals_carry_cost_group_by_team_and_records_carry_cost_estimate_and_team() {
    let (_db, pool) = migrated().await;
    let (a, team) = in_team(&pool, "d").await;
    let (b, _) = keys::create_key(&pool, &named("e")).await.unwrap();
    let now = Utc::now();
    let mut estimated = event(a, Some(team), 30, None, now);
    estimated.estimated = true;
    let events = vec![
        event(a, Some(team), 10, Some(1_500_000), now),
        estimated,
        event(b.id, None, 5, Some(250), now),
    ];
    usage::insert_usage(&pool, &events).await.unwrap();
    let filter = UsageFilter {
        from: now - chrono::Duration::hours(1),
        to: now + chrono::Duration::hours(1),
        key_id: None,
        model: None,
        provider: None,
        team_id: None,
    };

    let by_team = usage::usage_totals(&pool, UsageGroup::Team, &filter)
        .await
        .unwrap();
    let summary: Vec<_> = by_team
        .iter()
        .map(|t| (t.group.clone(), t.requests, t.total_tokens, t.cost_micros))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some(team.to_string()), 2, 40, 1_500_000),
            (None, 1, 5, 250)
        ]
    );
    let only_team = UsageFilter {
        team_id: Some(team),
        ..filter.clone()
    };
    let records = usage::list_usage(&pool, &only_team, None, 10)
        .await
        .unwrap();
    let seen: Vec<_> = records
        .iter()
        .map(|r| (r.event.cost_micros, r.event.estimated, r.event.team_id))
        .collect();
    assert_eq!(
        seen,
        vec![
            (Some(1_500_000), false, Some(team)),
            (None, true, Some(team))
        ]
    );
}

#[tokio::test]
async fn unpriced_models_are_those_in_range_that_no_exact_price_or_glob_covers() {
    let (_db, pool) = migrated().await;
    let (key, _) = keys::create_key(&pool, &named("k")).await.unwrap();
    for (model, input) in [("gpt-4o", 2_500_000), ("claude-*", 3_000_000)] {
        let new = NewPrice {
            model: model.to_owned(),
            input_micros_per_mtok: input,
            output_micros_per_mtok: 0,
        };
        prices::create_price(&pool, &new).await.unwrap();
    }
    let now = Utc::now();
    let on = |model: &str, tokens: i32, hours_ago: i64| UsageEvent {
        model: model.to_owned(),
        ..event(
            key.id,
            None,
            tokens,
            None,
            now - chrono::Duration::hours(hours_ago),
        )
    };
    let events = vec![
        on("gpt-4o", 1, 1),
        on("gpt-4o-mini", 2, 1),
        on("claude-3-haiku", 4, 1),
        on("llama-3", 8, 2),
        on("llama-3", 16, 1),
        on("mistral", 32, 72),
    ];
    usage::insert_usage(&pool, &events).await.unwrap();

    let found = usage::unpriced_models(&pool, now - chrono::Duration::hours(24), now)
        .await
        .unwrap();

    let summary: Vec<_> = found
        .iter()
        .map(|m| (m.model.as_str(), m.requests, m.total_tokens))
        .collect();
    assert_eq!(
        summary,
        vec![("gpt-4o-mini", 1, 2), ("llama-3", 2, 24)],
        "priced exactly or by glob, or outside the range: left out"
    );
    let llama = &found[1];
    assert!(
        (llama.last_seen - (now - chrono::Duration::hours(1)))
            .num_milliseconds()
            .abs()
            < 1
    );
}
