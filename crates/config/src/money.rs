//! Money on the wire and at rest: US dollars as JSON or TOML numbers,
//! integer micro-dollars (1 USD = 1 000 000) everywhere else. The admin API
//! and the gateway's `[[prices]]` read amounts with the same rule.

/// Micro-dollars in a dollar.
pub const MICROS_PER_USD: i64 = 1_000_000;

/// The largest dollar amount accepted: a billion, which keeps every amount
/// with six decimal places within 15 significant digits, so the number sent
/// is read exactly.
pub const MAX_USD: f64 = 1_000_000_000.0;

/// Why a dollar amount was refused; the caller names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be a finite number")]
    NotFinite,
    #[error("must not be negative")]
    Negative,
    #[error("must be at most 1000000000 (US dollars)")]
    TooLarge,
    #[error("must have at most 6 decimal places (a micro-dollar)")]
    TooPrecise,
}

/// A dollar amount as micro-dollars: finite, not negative, at most
/// [`MAX_USD`], at most 6 decimal places.
///
/// The decimal places are those of the shortest text that reads back as the
/// same `f64` (Rust's `Display`), which is the text the client wrote for
/// every amount within the limits, so `0.29` is 290000 micro-dollars, not
/// 289999: the digits are joined, not multiplied.
pub fn usd_to_micros(usd: f64) -> Result<i64, MoneyError> {
    if !usd.is_finite() {
        return Err(MoneyError::NotFinite);
    }
    if usd < 0.0 {
        return Err(MoneyError::Negative);
    }
    if usd > MAX_USD {
        return Err(MoneyError::TooLarge);
    }
    let text = format!("{}", usd.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    if fraction.len() > 6 {
        return Err(MoneyError::TooPrecise);
    }
    format!("{whole}{fraction:0<6}")
        .parse::<i64>()
        .map_err(|_| MoneyError::NotFinite)
}

/// Micro-dollars as dollars, for answers. Exact for every amount below 2^53
/// micro-dollars: the division rounds once, to the double nearest the decimal.
pub fn micros_to_usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_USD as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_amounts_become_exact_micro_dollars_or_are_refused() {
        assert_eq!(usd_to_micros(0.0), Ok(0));
        assert_eq!(usd_to_micros(-0.0), Ok(0));
        assert_eq!(usd_to_micros(12.5), Ok(12_500_000));
        assert_eq!(usd_to_micros(0.29), Ok(290_000));
        assert_eq!(usd_to_micros(0.000001), Ok(1));
        assert_eq!(usd_to_micros(123.456789), Ok(123_456_789));
        assert_eq!(usd_to_micros(999_999_999.999999), Ok(999_999_999_999_999));
        assert_eq!(usd_to_micros(MAX_USD), Ok(1_000_000_000_000_000));
        assert_eq!(usd_to_micros(-0.01), Err(MoneyError::Negative));
        assert_eq!(usd_to_micros(0.0000001), Err(MoneyError::TooPrecise));
        assert_eq!(usd_to_micros(f64::NAN), Err(MoneyError::NotFinite));
        assert_eq!(usd_to_micros(f64::INFINITY), Err(MoneyError::NotFinite));
        assert_eq!(usd_to_micros(MAX_USD + 1.0), Err(MoneyError::TooLarge));
    }

    #[test]
    fn micro_dollars_answer_as_the_decimal_dollars() {
        assert_eq!(micros_to_usd(12_500_000).to_string(), "12.5");
        assert_eq!(micros_to_usd(290_000).to_string(), "0.29");
        assert_eq!(micros_to_usd(1).to_string(), "0.000001");
        assert_eq!(micros_to_usd(123_456_789).to_string(), "123.456789");
    }
}
