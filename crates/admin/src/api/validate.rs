//! Checks shared by the resources: text fields, names, limits and page sizes.
//! Each failure is a 422 naming the field.

use uuid::Uuid;

use crate::error::AdminError;

/// The page size when a list request names none.
pub const DEFAULT_PAGE: i64 = 100;
/// The largest page a list request may ask for.
pub const MAX_PAGE: i64 = 1000;

/// A free-text value: not blank, at most `max` characters, no control or
/// invisible characters ([`obleth_config::text::check_visible`]).
pub fn text(field: &str, value: &str, max: usize) -> Result<(), AdminError> {
    if value.trim().is_empty() {
        return Err(AdminError::validation(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(AdminError::validation(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    visible(field, value)
}

/// No control or invisible characters (bidi overrides, zero-width, format,
/// line separators): the one check the gateway's settings use too.
pub fn visible(field: &str, value: &str) -> Result<(), AdminError> {
    obleth_config::text::check_visible(value)
        .map_err(|e| AdminError::validation(field, e.to_string()))
}

/// A name that appears in URLs and config: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn slug(field: &str, value: &str) -> Result<(), AdminError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::validation(
            field,
            "must be 1 to 64 characters of letters, digits, `.`, `_` and `-`",
        ))
    }
}

/// A model name or glob: 1 to 200 characters without spaces, control or
/// invisible characters.
pub fn model_name(field: &str, value: &str) -> Result<(), AdminError> {
    let ok = !value.is_empty()
        && value.chars().count() <= 200
        && !value.chars().any(char::is_whitespace);
    if !ok {
        return Err(AdminError::validation(
            field,
            "must be 1 to 200 characters without spaces",
        ));
    }
    visible(field, value)
}

/// A per-minute limit, when set, is at least 1.
pub fn positive(field: &str, value: Option<i64>) -> Result<(), AdminError> {
    match value {
        Some(v) if v < 1 => Err(AdminError::validation(field, "must be at least 1")),
        _ => Ok(()),
    }
}

/// A budget, when set, is not negative.
pub fn not_negative(field: &str, value: Option<i64>) -> Result<(), AdminError> {
    match value {
        Some(v) if v < 0 => Err(AdminError::validation(field, "must not be negative")),
        _ => Ok(()),
    }
}

/// A key's or team's `rpm_limit` and `tpm_limit` (at least 1) and
/// `token_budget` (not negative), when set.
pub fn limits(rpm: Option<i32>, tpm: Option<i32>, budget: Option<i64>) -> Result<(), AdminError> {
    positive("rpm_limit", rpm.map(i64::from))?;
    positive("tpm_limit", tpm.map(i64::from))?;
    not_negative("token_budget", budget)
}

/// The page size asked for, within `1..=MAX_PAGE`; [`DEFAULT_PAGE`] when unset.
pub fn page_limit(limit: Option<i64>) -> Result<i64, AdminError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(AdminError::validation(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        )),
    }
}

/// A resource id from the path.
pub fn uuid(field: &str, value: &str) -> Result<Uuid, AdminError> {
    value
        .parse()
        .map_err(|_| AdminError::validation(field, "must be a UUID"))
}

/// Whether `e` is a unique violation of `constraint`.
pub fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<impl Sized, AdminError>) -> Option<String> {
        r.err().and_then(|e| e.field().map(str::to_owned))
    }

    #[test]
    fn checks_accept_good_values_and_name_the_field_otherwise() {
        assert_eq!(field(text("name", "ci key", 10)), None);
        assert_eq!(field(text("name", "  ", 10)), Some("name".into()));
        assert_eq!(field(text("name", "eleven char", 10)), Some("name".into()));
        assert_eq!(field(text("name", "a\nb", 10)), Some("name".into()));
        assert_eq!(field(slug("name", "openai-eu.1")), None);
        assert_eq!(field(slug("name", "open ai")), Some("name".into()));
        assert_eq!(field(slug("name", "")), Some("name".into()));
        assert_eq!(field(model_name("model", "openai/gpt-4o*")), None);
        assert_eq!(field(model_name("model", "gpt 4")), Some("model".into()));
        assert_eq!(
            field(text("owner", "team\u{202E}a", 50)),
            Some("owner".into())
        );
        assert_eq!(field(text("name", "a\u{200B}b", 50)), Some("name".into()));
        assert_eq!(
            field(model_name("model", "gpt\u{2066}4")),
            Some("model".into())
        );
        assert_eq!(
            field(model_name("model", "gpt\u{FEFF}")),
            Some("model".into())
        );
        assert_eq!(
            field(positive("rpm_limit", Some(0))),
            Some("rpm_limit".into())
        );
        assert_eq!(field(positive("rpm_limit", None)), None);
        assert_eq!(field(not_negative("token_budget", Some(0))), None);
        assert_eq!(
            field(not_negative("token_budget", Some(-1))),
            Some("token_budget".into())
        );
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(Some(MAX_PAGE)).unwrap(), MAX_PAGE);
        assert_eq!(field(page_limit(Some(0))), Some("limit".into()));
        assert_eq!(field(page_limit(Some(MAX_PAGE + 1))), Some("limit".into()));
        assert_eq!(field(uuid("id", "nope")), Some("id".into()));
    }
}
