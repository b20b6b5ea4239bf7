//! What a migration statement locks and how long it holds the lock, read from
//! its tokens: the table-level lock mode PostgreSQL takes, on which existing
//! table, and whether the statement rewrites or scans that table while it
//! holds the lock.
//!
//! The classifier reads the text only; `obleth-migrator preflight` joins its
//! answers with the catalog (sizes, row estimates, who holds locks now). Where
//! the text cannot tell, such as a `DO` block or a function call, it says so
//! instead of guessing. The lock levels follow the PostgreSQL manual's
//! "Explicit Locking" chapter and the reference pages of each command
//! (PostgreSQL 12 and later).

mod alter;
mod commands;
mod ddl;
mod mode;

use serde::{Serialize, Serializer};

pub use mode::LockMode;

use super::sql::{split_statements, ObjectName, Statement, Token, TokenSlice};

/// Which existing relation a lock falls on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A table (or view) by name.
    Table(ObjectName),
    /// The table an index belongs to, for statements that name the index.
    IndexOf(ObjectName),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Table(name) => write!(f, "{name}"),
            Target::IndexOf(index) => write!(f, "the table of index {index}"),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The lock a statement takes on its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// No lock on an existing table: the statement makes a new object or
    /// changes only a function or a setting.
    None,
    /// A lock in this mode, held until the transaction ends.
    Mode(LockMode),
    /// The text does not show it: the statement runs code (a `DO` block, a
    /// function call) or is a kind the classifier does not know.
    Unknown,
}

impl Lock {
    pub fn mode(self) -> Option<LockMode> {
        match self {
            Lock::Mode(m) => Some(m),
            Lock::None | Lock::Unknown => None,
        }
    }
}

impl std::fmt::Display for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lock::None => f.write_str("none"),
            Lock::Mode(m) => f.write_str(m.as_str()),
            Lock::Unknown => f.write_str("unknown"),
        }
    }
}

impl Serialize for Lock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How much of the table the statement goes through while it holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// A catalog change: quick once the lock is granted.
    Metadata,
    /// Only the rows it names (DML with a `WHERE`).
    Rows,
    /// Reads every row: a validation, `SET NOT NULL`, an index build.
    Scan,
    /// Writes a new copy of the table and its indexes.
    Rewrite,
    /// Updates or deletes every row (DML without `WHERE`).
    EveryRow,
    /// Runs code the text does not show.
    Unknown,
}

impl Work {
    /// Whether the time the statement takes grows with the table.
    pub fn grows_with_table(self) -> bool {
        matches!(self, Work::Scan | Work::Rewrite | Work::EveryRow)
    }
}

/// One lock one statement takes, with what it does under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockEffect {
    /// The existing relation locked; `None` for a new object or when unknown.
    pub target: Option<Target>,
    pub lock: Lock,
    pub work: Work,
    /// What the statement does, lowercase, such as `add column with a volatile default`.
    pub action: String,
    /// Functions called by a new column's `DEFAULT` whose volatility the text
    /// does not show: the table is rewritten if any of them is volatile.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewrite_if_volatile: Vec<String>,
    /// The table a `CREATE TABLE` makes, so later statements on it can be
    /// told apart from statements on a table that is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
}

impl LockEffect {
    fn new(target: Option<Target>, lock: Lock, work: Work, action: impl Into<String>) -> Self {
        LockEffect {
            target,
            lock,
            work,
            action: action.into(),
            rewrite_if_volatile: Vec::new(),
            creates: None,
        }
    }

    fn on(table: &ObjectName, mode: LockMode, work: Work, action: impl Into<String>) -> Self {
        Self::new(
            Some(Target::Table(table.clone())),
            Lock::Mode(mode),
            work,
            action,
        )
    }

    fn none(action: impl Into<String>) -> Self {
        Self::new(None, Lock::None, Work::Metadata, action)
    }

    fn runs_code(action: impl Into<String>) -> Self {
        Self::new(None, Lock::Unknown, Work::Unknown, action)
    }

    /// Whether the statement's locks or work are not visible in its text.
    pub fn is_opaque(&self) -> bool {
        self.lock == Lock::Unknown
    }

    /// Whether this lock on a table of `bytes` needs a maintenance window by
    /// the upgrade guides' rule: a lock that blocks writes, or a rewrite or
    /// scan, on a table larger than `threshold`.
    pub fn needs_window(&self, bytes: u64, threshold: u64) -> bool {
        let blocks = self.lock.mode().is_some_and(LockMode::blocks_writes);
        bytes > threshold && (blocks || self.work.grows_with_table())
    }
}

/// The sentence every statement that runs code carries.
pub const RUNS_CODE: &str = "runs code; its locks are not visible in the text";

/// Splits `sql` and classifies each statement.
pub fn classify_sql(sql: &str) -> Vec<(Statement, Vec<LockEffect>)> {
    split_statements(sql)
        .into_iter()
        .map(|s| {
            let effects = classify(&s.tokens);
            (s, effects)
        })
        .collect()
}

/// The locks one statement takes, in the order it takes them. Never empty.
pub fn classify(t: &[Token]) -> Vec<LockEffect> {
    let effects = match t.first().and_then(Token::word) {
        Some("create") => ddl::create(t),
        Some("alter") if t.seq_at(1, &["table"]) => alter::alter_table(t),
        Some("alter") if t.seq_at(1, &["index"]) => alter::alter_index(t),
        Some("alter") if t.seq_at(1, &["materialized", "view"]) || t.seq_at(1, &["view"]) => {
            Vec::new()
        }
        Some("alter") => match t.get(1).and_then(Token::word) {
            Some(kind) => vec![LockEffect::none(format!("alter {kind} (no table lock)"))],
            None => Vec::new(),
        },
        Some("drop") => ddl::drop(t),
        Some("lock") => commands::lock(t),
        Some("insert") => commands::insert(t),
        Some("update") => commands::update_or_delete(t, 1, "update"),
        Some("delete") if t.seq_at(1, &["from"]) => commands::update_or_delete(t, 2, "delete"),
        Some("truncate") => commands::truncate(t),
        Some("with") => commands::with(t),
        Some("do") => vec![LockEffect::runs_code(format!("do block: {RUNS_CODE}"))],
        Some("call") => vec![LockEffect::runs_code(format!("call: {RUNS_CODE}"))],
        Some("select") => commands::select(t),
        Some("vacuum" | "analyze" | "analyse") => commands::maintenance(t),
        Some("reindex") => commands::reindex(t),
        Some("refresh") => commands::refresh(t),
        Some("comment") => ddl::comment(t),
        Some(
            "set" | "reset" | "begin" | "start" | "commit" | "end" | "rollback" | "grant"
            | "revoke" | "notify" | "listen" | "savepoint" | "release",
        ) => vec![LockEffect::none(
            "session or privilege statement (no table lock)",
        )],
        _ => Vec::new(),
    };
    if effects.is_empty() {
        let head: Vec<&str> = t.iter().filter_map(Token::word).take(3).collect();
        return vec![LockEffect::new(
            None,
            Lock::Unknown,
            Work::Unknown,
            format!(
                "{} statement: preflight does not know its locks",
                head.join(" ")
            ),
        )];
    }
    effects
}

/// The tokens from `at` on, or none when `at` is past the end.
fn rest(t: &[Token], at: usize) -> &[Token] {
    t.get(at..).unwrap_or_default()
}

fn is_punct(t: &[Token], at: usize, c: char) -> bool {
    t.get(at) == Some(&Token::Punct(c))
}

/// Skips `IF EXISTS` / `IF NOT EXISTS` and `ONLY` at `at`.
fn skip_noise(t: &[Token], mut at: usize) -> usize {
    loop {
        if t.seq_at(at, &["if", "not", "exists"]) {
            at += 3;
        } else if t.seq_at(at, &["if", "exists"]) {
            at += 2;
        } else if t.seq_at(at, &["only"]) {
            at += 1;
        } else {
            return at;
        }
    }
}

/// Reads a comma-separated list of names, as in `DROP TABLE a, b`.
fn name_list(t: &[Token], mut at: usize) -> Vec<ObjectName> {
    let mut names = Vec::new();
    while let Some((name, mut next)) = t.name_at(at) {
        names.push(name);
        if is_punct(t, next, '*') {
            next += 1;
        }
        if !is_punct(t, next, ',') {
            break;
        }
        at = skip_noise(t, next + 1);
    }
    names
}

/// Every name after a top-level or nested `REFERENCES`.
fn referenced(t: &[Token]) -> Vec<ObjectName> {
    (0..t.len())
        .filter(|&i| t.seq_at(i, &["references"]))
        .filter_map(|i| t.name_at(i + 1).map(|(name, _)| name))
        .collect()
}

#[cfg(test)]
mod tests;
