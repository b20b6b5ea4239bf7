//! The price table's writes: each with a change row (`setting`, `prices`),
//! one price per model pattern, and the schema's guard against negative prices.

use obleth_config::db::prices::{self, NewPrice, PriceError, PriceUpdate, CHANGE_ID};
use obleth_config::model::{Entity, Op};
use uuid::Uuid;

use super::{all_changes, migrated};

fn price(model: &str, input: i64, output: i64) -> NewPrice {
    NewPrice {
        model: model.to_owned(),
        input_micros_per_mtok: input,
        output_micros_per_mtok: output,
    }
}

#[tokio::test]
async fn prices_are_created_updated_and_deleted_each_with_a_setting_change_row() {
    let (_db, pool) = migrated().await;
    let created = prices::create_price(&pool, &price("gpt-4o", 2_500_000, 10_000_000))
        .await
        .unwrap();
    prices::create_price(&pool, &price("claude-*", 3_000_000, 15_000_000))
        .await
        .unwrap();
    assert_eq!(
        prices::price_by_id(&pool, created.id).await.unwrap(),
        Some(created.clone())
    );

    let update = PriceUpdate {
        output_micros_per_mtok: Some(8_000_000),
        ..PriceUpdate::default()
    };
    let updated = prices::update_price(&pool, created.id, &update)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            updated.model.as_str(),
            updated.input_micros_per_mtok,
            updated.output_micros_per_mtok
        ),
        ("gpt-4o", 2_500_000, 8_000_000)
    );
    // An empty update and an unknown price record nothing.
    assert_eq!(
        prices::update_price(&pool, created.id, &PriceUpdate::default())
            .await
            .unwrap(),
        Some(updated)
    );
    assert!(prices::update_price(&pool, Uuid::new_v4(), &update)
        .await
        .unwrap()
        .is_none());

    let models: Vec<String> = prices::list_prices(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.model)
        .collect();
    assert_eq!(models, vec!["claude-*", "gpt-4o"], "by model");

    assert!(prices::delete_price(&pool, created.id).await.unwrap());
    assert!(!prices::delete_price(&pool, created.id).await.unwrap());
    assert_eq!(prices::price_by_id(&pool, created.id).await.unwrap(), None);

    let log: Vec<_> = all_changes(&pool)
        .await
        .into_iter()
        .map(|(_, entity, entity_id, op)| (entity, entity_id, op))
        .collect();
    let row = |op| (Entity::Setting, CHANGE_ID.to_owned(), op);
    assert_eq!(
        log,
        vec![
            row(Op::Insert),
            row(Op::Insert),
            row(Op::Update),
            row(Op::Delete)
        ]
    );
    assert_eq!(CHANGE_ID, "prices");
}

#[tokio::test]
async fn a_model_priced_twice_is_a_typed_error_and_negative_prices_never_store() {
    let (_db, pool) = migrated().await;
    prices::create_price(&pool, &price("gpt-4o", 1, 1))
        .await
        .unwrap();
    let other = prices::create_price(&pool, &price("gpt-4o-mini", 1, 1))
        .await
        .unwrap();
    let before = all_changes(&pool).await.len();

    let again = prices::create_price(&pool, &price("gpt-4o", 2, 2)).await;
    assert!(
        matches!(&again, Err(PriceError::ModelTaken(m)) if m == "gpt-4o"),
        "{again:?}"
    );
    let rename = PriceUpdate {
        model: Some("gpt-4o".to_owned()),
        ..PriceUpdate::default()
    };
    let renamed = prices::update_price(&pool, other.id, &rename).await;
    assert!(
        matches!(&renamed, Err(PriceError::ModelTaken(m)) if m == "gpt-4o"),
        "{renamed:?}"
    );
    let negative = prices::create_price(&pool, &price("llama", -1, 0)).await;
    assert!(
        matches!(negative, Err(PriceError::Database(_))),
        "{negative:?}"
    );

    assert_eq!(all_changes(&pool).await.len(), before);
    assert_eq!(prices::list_prices(&pool).await.unwrap().len(), 2);
}
