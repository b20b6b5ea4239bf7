//! Which price applies to a model: an exact name first, then the most
//! specific glob. The gateway prices usage with it and the admin lists the
//! models it leaves unpriced, so both judge a model the same way.

use crate::glob::glob_match;
use crate::model::Price;

/// The price table, ready to look models up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    exact: std::collections::HashMap<String, Price>,
    /// Globs, most specific first: more literal characters first, then by
    /// pattern, so the choice never depends on insertion order.
    globs: Vec<Price>,
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

fn literal_chars(pattern: &str) -> usize {
    pattern.chars().filter(|c| *c != '*' && *c != '?').count()
}

impl PriceTable {
    pub fn new(prices: impl IntoIterator<Item = Price>) -> PriceTable {
        let mut table = PriceTable::default();
        for price in prices {
            if is_glob(&price.model) {
                table.globs.push(price);
            } else {
                table.exact.insert(price.model.clone(), price);
            }
        }
        table.globs.sort_by(|a, b| {
            literal_chars(&b.model)
                .cmp(&literal_chars(&a.model))
                .then_with(|| a.model.cmp(&b.model))
        });
        table
    }

    /// The price of `model`: its exact entry, else the most specific glob
    /// that matches, else `None` (the model is unpriced).
    pub fn price_for(&self, model: &str) -> Option<&Price> {
        self.exact
            .get(model)
            .or_else(|| self.globs.iter().find(|p| glob_match(&p.model, model)))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.globs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn price(model: &str, input: i64) -> Price {
        Price {
            id: Uuid::new_v4(),
            model: model.to_owned(),
            input_micros_per_mtok: input,
            output_micros_per_mtok: 0,
        }
    }

    #[test]
    fn exact_beats_globs_and_longer_globs_beat_shorter() {
        let table = PriceTable::new([
            price("*", 1),
            price("gpt-4o*", 2),
            price("gpt-4o-mini", 3),
            price("gpt-4o-m*", 4),
        ]);
        let input = |m: &str| table.price_for(m).map(|p| p.input_micros_per_mtok);
        assert_eq!(input("gpt-4o-mini"), Some(3));
        assert_eq!(input("gpt-4o-max"), Some(4));
        assert_eq!(input("gpt-4o"), Some(2));
        assert_eq!(input("llama"), Some(1));
        let no_catch_all = PriceTable::new([price("gpt-*", 1)]);
        assert_eq!(no_catch_all.price_for("llama"), None);
        assert!(PriceTable::new([]).is_empty());
    }
}
