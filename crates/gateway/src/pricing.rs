//! Model prices in the gateway: the table in use (from `[[prices]]` in
//! embedded mode, from the `prices` table with a database), swapped whole on
//! reload, and the cost of a request's tokens at its model's price.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use obleth_config::model::Price;
use obleth_config::pricing::PriceTable;
use obleth_config::InvalidSetting;
use sqlx::PgPool;
use uuid::Uuid;

use crate::relay::Tokens;
use crate::settings::PriceConfig;

/// The price table in use, swapped whole on reload.
#[derive(Debug, Default, Clone)]
pub struct SharedPrices(Arc<RwLock<Arc<PriceTable>>>);

impl SharedPrices {
    pub fn new(table: PriceTable) -> Self {
        SharedPrices(Arc::new(RwLock::new(Arc::new(table))))
    }

    pub fn get(&self) -> Arc<PriceTable> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set(&self, table: PriceTable) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    /// Replaces the table with the database's `prices` (at warm-up, and when
    /// the change feed reports the `prices` setting); answers how many.
    pub async fn load_from_db(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let prices = obleth_config::db::prices::list_prices(pool).await?;
        let count = prices.len();
        self.set(PriceTable::new(prices));
        Ok(count)
    }
}

/// The cost in micro-dollars of `tokens` of `model` (the public name the
/// client asked for), rounded up; `None` when the model has no price.
/// Tokens reported only as a total count as output.
pub fn cost_micros(table: &PriceTable, model: &str, tokens: &Tokens) -> Option<i64> {
    let price = table.price_for(model)?;
    let prompt = i64::from(tokens.prompt.unwrap_or(0).max(0));
    let completion = match tokens.completion {
        Some(n) => i64::from(n.max(0)),
        None => (i64::from(tokens.total.unwrap_or(0)) - prompt).max(0),
    };
    Some(price.cost_micros(prompt, completion))
}

/// Checks the `[[prices]]` entries and builds their table. Errors name the
/// entry's field: `prices[1].input_per_mtok_usd`.
pub fn table_from_settings(prices: &[PriceConfig]) -> Result<PriceTable, InvalidSetting> {
    let mut seen = HashSet::new();
    let mut table = Vec::with_capacity(prices.len());
    for (i, p) in prices.iter().enumerate() {
        let field = |name: &str| format!("prices[{i}].{name}");
        if p.model.is_empty() {
            return Err(InvalidSetting::new(field("model"), "must not be empty"));
        }
        obleth_config::text::check_visible(&p.model)
            .map_err(|e| InvalidSetting::new(field("model"), e.to_string()))?;
        if !seen.insert(p.model.as_str()) {
            return Err(InvalidSetting::new(
                field("model"),
                format!("`{}` is priced twice", p.model),
            ));
        }
        table.push(Price {
            id: Uuid::nil(),
            model: p.model.clone(),
            input_micros_per_mtok: usd_to_micros(
                &field("input_per_mtok_usd"),
                p.input_per_mtok_usd,
            )?,
            output_micros_per_mtok: usd_to_micros(
                &field("output_per_mtok_usd"),
                p.output_per_mtok_usd,
            )?,
        });
    }
    Ok(PriceTable::new(table))
}

/// A price from the settings as micro-dollars
/// ([`obleth_config::money::usd_to_micros`]), refused naming `field`.
pub fn usd_to_micros(field: &str, usd: f64) -> Result<i64, InvalidSetting> {
    obleth_config::money::usd_to_micros(usd).map_err(|e| InvalidSetting::new(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(model: &str, input: f64, output: f64) -> PriceConfig {
        PriceConfig {
            model: model.to_owned(),
            input_per_mtok_usd: input,
            output_per_mtok_usd: output,
        }
    }

    #[test]
    fn dollars_become_micro_dollars_and_bad_amounts_name_the_field() {
        let ok = |usd: f64| usd_to_micros("f", usd).unwrap();
        assert_eq!(ok(2.5), 2_500_000);
        assert_eq!(ok(0.000001), 1);
        assert_eq!(ok(0.0), 0);
        assert_eq!(ok(0.15), 150_000);
        assert_eq!(ok(3.0), 3_000_000);
        assert_eq!(ok(1e9), 1_000_000_000_000_000);
        for (usd, message) in [
            (-0.5, "must not be negative"),
            (f64::NAN, "must be a finite number"),
            (f64::INFINITY, "must be a finite number"),
            (
                0.0000001,
                "must have at most 6 decimal places (a micro-dollar)",
            ),
            (
                1.2345678,
                "must have at most 6 decimal places (a micro-dollar)",
            ),
            (2e9, "must be at most 1000000000 (US dollars)"),
        ] {
            let e = usd_to_micros("prices[0].input_per_mtok_usd", usd).unwrap_err();
            assert_eq!(e.field, "prices[0].input_per_mtok_usd", "{usd}");
            assert_eq!(e.message, message, "{usd}");
        }
    }

    #[test]
    fn the_settings_table_is_checked_entry_by_entry() {
        let table =
            table_from_settings(&[entry("gpt-4o", 2.5, 10.0), entry("gpt-4o*", 1.0, 1.0)]).unwrap();
        assert_eq!(
            table.price_for("gpt-4o").map(|p| p.output_micros_per_mtok),
            Some(10_000_000)
        );
        assert_eq!(
            table
                .price_for("gpt-4o-mini")
                .map(|p| p.input_micros_per_mtok),
            Some(1_000_000)
        );
        let cases = [
            (
                vec![entry("a", 1.0, 1.0), entry("b", 1.0, -1.0)],
                "prices[1].output_per_mtok_usd",
                "must not be negative",
            ),
            (
                vec![entry("a", 1.0, 1.0), entry("a", 2.0, 2.0)],
                "prices[1].model",
                "`a` is priced twice",
            ),
            (
                vec![entry("", 1.0, 1.0)],
                "prices[0].model",
                "must not be empty",
            ),
        ];
        for (entries, field, message) in cases {
            let e = table_from_settings(&entries).unwrap_err();
            assert_eq!((e.field.as_str(), e.message.as_str()), (field, message));
        }
        let e = table_from_settings(&[entry("gpt\u{202e}4o", 1.0, 1.0)]).unwrap_err();
        assert_eq!(e.field, "prices[0].model");
    }

    #[test]
    fn cost_uses_the_models_price_and_is_none_without_one() {
        let table = table_from_settings(&[entry("m", 2.5, 10.0)]).unwrap();
        let tokens = Tokens {
            prompt: Some(100),
            completion: Some(50),
            total: Some(150),
            estimated: false,
        };
        assert_eq!(cost_micros(&table, "m", &tokens), Some(750));
        assert_eq!(cost_micros(&table, "other", &tokens), None);
        let total_only = Tokens {
            total: Some(100),
            ..Tokens::default()
        };
        assert_eq!(cost_micros(&table, "m", &total_only), Some(1000));
        assert_eq!(cost_micros(&table, "m", &Tokens::default()), Some(0));
    }
}
