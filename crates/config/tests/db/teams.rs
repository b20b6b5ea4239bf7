//! Teams: their writes with change rows (`setting`, `team:<uuid>`), names
//! kept unique, deletion refused while keys belong to a team, and keys
//! joining and leaving teams.

use obleth_config::db::keys::{self, KeyError, KeyFilter, KeyUpdate, NewKey};
use obleth_config::db::teams::{self, NewTeam, TeamError, TeamFilter, TeamUpdate};
use obleth_config::model::{BudgetPeriod, Entity, Op};
use uuid::Uuid;

use super::{all_changes, migrated, named};

fn team(name: &str) -> NewTeam {
    NewTeam {
        name: name.to_owned(),
        ..NewTeam::default()
    }
}

#[tokio::test]
async fn teams_are_created_updated_and_deleted_each_with_a_setting_change_row() {
    let (_db, pool) = migrated().await;
    let new = NewTeam {
        name: "research".to_owned(),
        rpm_limit: Some(600),
        tpm_limit: Some(100_000),
        token_budget: Some(5_000_000),
        budget_usd_micros: Some(250_000_000),
        budget_period: BudgetPeriod::Month,
    };

    let created = teams::create_team(&pool, &new).await.unwrap();

    assert_eq!(
        (
            created.name.as_str(),
            created.rpm_limit,
            created.tpm_limit,
            created.token_budget,
            created.budget_usd_micros,
            created.budget_period
        ),
        (
            "research",
            Some(600),
            Some(100_000),
            Some(5_000_000),
            Some(250_000_000),
            BudgetPeriod::Month
        )
    );
    assert_eq!(
        teams::team_by_id(&pool, created.id).await.unwrap(),
        Some(created.clone())
    );
    let id = teams::change_id(created.id);
    assert_eq!(id, format!("team:{}", created.id));

    let update = TeamUpdate {
        name: Some("research-eu".to_owned()),
        rpm_limit: Some(None),
        budget_usd_micros: Some(Some(1)),
        budget_period: Some(BudgetPeriod::Day),
        ..TeamUpdate::default()
    };
    let updated = teams::update_team(&pool, created.id, &update)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.name, "research-eu");
    assert_eq!(updated.rpm_limit, None);
    assert_eq!(updated.tpm_limit, Some(100_000), "untouched");
    assert_eq!(updated.budget_usd_micros, Some(1));
    assert_eq!(updated.budget_period, BudgetPeriod::Day);

    // An empty update and an unknown team record nothing.
    let same = teams::update_team(&pool, created.id, &TeamUpdate::default())
        .await
        .unwrap();
    assert_eq!(same, Some(updated));
    assert!(teams::update_team(&pool, Uuid::new_v4(), &update)
        .await
        .unwrap()
        .is_none());

    assert!(teams::delete_team(&pool, created.id).await.unwrap());
    assert!(!teams::delete_team(&pool, created.id).await.unwrap());
    assert_eq!(teams::team_by_id(&pool, created.id).await.unwrap(), None);

    let log: Vec<_> = all_changes(&pool)
        .await
        .into_iter()
        .map(|(_, entity, entity_id, op)| (entity, entity_id, op))
        .collect();
    assert_eq!(
        log,
        vec![
            (Entity::Setting, id.clone(), Op::Insert),
            (Entity::Setting, id.clone(), Op::Update),
            (Entity::Setting, id, Op::Delete),
        ]
    );
}

#[tokio::test]
async fn a_taken_team_name_is_a_typed_error_and_writes_nothing() {
    let (_db, pool) = migrated().await;
    teams::create_team(&pool, &team("ops")).await.unwrap();
    let other = teams::create_team(&pool, &team("dev")).await.unwrap();
    let before = all_changes(&pool).await.len();

    let again = teams::create_team(&pool, &team("ops")).await;
    assert!(
        matches!(&again, Err(TeamError::NameTaken(n)) if n == "ops"),
        "{again:?}"
    );
    let rename = TeamUpdate {
        name: Some("ops".to_owned()),
        ..TeamUpdate::default()
    };
    let renamed = teams::update_team(&pool, other.id, &rename).await;
    assert!(
        matches!(&renamed, Err(TeamError::NameTaken(n)) if n == "ops"),
        "{renamed:?}"
    );

    assert_eq!(all_changes(&pool).await.len(), before);
    assert_eq!(teams::list_teams(&pool).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_team_that_keys_belong_to_is_not_deleted_until_they_leave() {
    let (_db, pool) = migrated().await;
    let t = teams::create_team(&pool, &team("ml")).await.unwrap();
    let in_team = NewKey {
        team_id: Some(t.id),
        ..named("a")
    };
    let (a, _) = keys::create_key(&pool, &in_team).await.unwrap();
    let (b, _) = keys::create_key(&pool, &in_team).await.unwrap();
    assert_eq!((a.team_id, b.team_id), (Some(t.id), Some(t.id)));

    let refused = teams::delete_team(&pool, t.id).await;
    assert!(
        matches!(refused, Err(TeamError::InUse { team, keys: 2 }) if team == t.id),
        "{refused:?}"
    );
    assert!(teams::team_by_id(&pool, t.id).await.unwrap().is_some());

    // Leaving the team (team_id null) and deleting the other key frees it.
    let leave = KeyUpdate {
        team_id: Some(None),
        ..KeyUpdate::default()
    };
    let left = keys::update_key(&pool, a.id, &leave)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left.team_id, None);
    keys::delete_key(&pool, b.id).await.unwrap();
    assert!(teams::delete_team(&pool, t.id).await.unwrap());
}

#[tokio::test]
async fn a_key_naming_an_unknown_team_is_a_typed_error_and_writes_nothing() {
    let (_db, pool) = migrated().await;
    let ghost = Uuid::new_v4();
    let (key, _) = keys::create_key(&pool, &named("k")).await.unwrap();
    let before = all_changes(&pool).await.len();

    let created = keys::create_key(
        &pool,
        &NewKey {
            team_id: Some(ghost),
            ..named("orphan")
        },
    )
    .await;
    assert!(
        matches!(created, Err(KeyError::UnknownTeam(id)) if id == ghost),
        "{created:?}"
    );
    let join = KeyUpdate {
        team_id: Some(Some(ghost)),
        ..KeyUpdate::default()
    };
    let updated = keys::update_key(&pool, key.id, &join).await;
    assert!(
        matches!(updated, Err(KeyError::UnknownTeam(id)) if id == ghost),
        "{updated:?}"
    );

    assert_eq!(all_changes(&pool).await.len(), before);
    assert_eq!(
        keys::key_by_id(&pool, key.id)
            .await
            .unwrap()
            .unwrap()
            .team_id,
        None
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn keys_carry_spend_budgets_and_periods_and_list_by_team() {
    let (_db, pool) = migrated().await;
    let (t, u) = (
        teams::create_team(&pool, &team("t")).await.unwrap(),
        teams::create_team(&pool, &team("u")).await.unwrap(),
    );
    let new = NewKey {
        team_id: Some(t.id),
        budget_usd_micros: Some(12_500_000),
        budget_period: BudgetPeriod::Week,
        ..named("budgeted")
    };
    let (k, _) = keys::create_key(&pool, &new).await.unwrap();
    assert_eq!(
        (k.team_id, k.budget_usd_micros, k.budget_period),
        (Some(t.id), Some(12_500_000), BudgetPeriod::Week)
    );
    keys::create_key(&pool, &named("loner")).await.unwrap();
    let moved = KeyUpdate {
        team_id: Some(Some(u.id)),
        budget_usd_micros: Some(None),
        budget_period: Some(BudgetPeriod::Day),
        ..KeyUpdate::default()
    };
    let k = keys::update_key(&pool, k.id, &moved)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (k.team_id, k.budget_usd_micros, k.budget_period),
        (Some(u.id), None, BudgetPeriod::Day)
    );

    let of = |team_id| KeyFilter {
        team_id: Some(team_id),
        ..KeyFilter::default()
    };
    let in_u = keys::list_keys(&pool, &of(u.id)).await.unwrap();
    assert_eq!(in_u.iter().map(|k| k.id).collect::<Vec<_>>(), vec![k.id]);
    assert!(keys::list_keys(&pool, &of(t.id)).await.unwrap().is_empty());
    assert_eq!(
        keys::list_keys(&pool, &KeyFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn teams_page_by_id() {
    let (_db, pool) = migrated().await;
    for i in 0..5 {
        teams::create_team(&pool, &team(&format!("team-{i}")))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = teams::page_teams(&pool, &TeamFilter { after, limit: 2 })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().map(|t| t.id);
        seen.extend(page.into_iter().map(|t| t.id));
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered, no repeats");
}
