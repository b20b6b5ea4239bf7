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
        Some("create") => create(t),
        Some("alter") if t.seq_at(1, &["table"]) => alter::alter_table(t),
        Some("alter") if t.seq_at(1, &["index"]) => alter::alter_index(t),
        Some("alter") if t.seq_at(1, &["materialized", "view"]) || t.seq_at(1, &["view"]) => {
            Vec::new()
        }
        Some("alter") => match t.get(1).and_then(Token::word) {
            Some(kind) => vec![LockEffect::none(format!("alter {kind} (no table lock)"))],
            None => Vec::new(),
        },
        Some("drop") => drop(t),
        Some("lock") => lock(t),
        Some("insert") => insert(t),
        Some("update") => update_or_delete(t, 1, "update"),
        Some("delete") if t.seq_at(1, &["from"]) => update_or_delete(t, 2, "delete"),
        Some("truncate") => truncate(t),
        Some("with") => with(t),
        Some("do") => vec![LockEffect::runs_code(format!("do block: {RUNS_CODE}"))],
        Some("call") => vec![LockEffect::runs_code(format!("call: {RUNS_CODE}"))],
        Some("select") => select(t),
        Some("vacuum" | "analyze" | "analyse") => maintenance(t),
        Some("reindex") => reindex(t),
        Some("refresh") => refresh(t),
        Some("comment") => comment(t),
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

fn create(t: &[Token]) -> Vec<LockEffect> {
    let mut at = 1;
    if t.seq_at(at, &["or", "replace"]) {
        at += 2;
    }
    while t.get(at).and_then(Token::word).is_some_and(|w| {
        matches!(
            w,
            "global" | "local" | "temp" | "temporary" | "unlogged" | "constraint" | "recursive"
        )
    }) {
        at += 1;
    }
    match t.get(at).and_then(Token::word) {
        Some("table") => create_table(t, at + 1),
        Some("index") => create_index(t, at + 1, false),
        Some("unique") if t.seq_at(at + 1, &["index"]) => create_index(t, at + 2, true),
        Some("trigger") => create_trigger(t),
        Some("function" | "procedure" | "aggregate") => vec![LockEffect::none(
            "create function (no table lock; the body runs only when called)",
        )],
        Some(kind) => vec![LockEffect::none(format!("create {kind} (a new object)"))],
        None => Vec::new(),
    }
}

fn create_table(t: &[Token], at: usize) -> Vec<LockEffect> {
    let at = skip_noise(t, at);
    let Some((created, _)) = t.name_at(at) else {
        return Vec::new();
    };
    let name = created.to_string();
    let mut effects = vec![LockEffect {
        creates: Some(name.clone()),
        ..LockEffect::none(format!("create table {name} (a new table)"))
    }];
    if let Some(i) = t.find_top_seq(&["partition", "of"]) {
        if let Some((parent, _)) = t.name_at(i + 2) {
            effects.push(LockEffect::on(
                &parent,
                LockMode::AccessExclusive,
                Work::Metadata,
                format!("create table {name} as a partition of {parent}"),
            ));
        }
    }
    for parent in referenced(t) {
        effects.push(LockEffect::on(
            &parent,
            LockMode::ShareRowExclusive,
            Work::Metadata,
            format!("foreign key from the new table {name} to {parent}"),
        ));
    }
    if t.find_top_seq(&["as"]).is_some() {
        effects.push(LockEffect::runs_code(format!(
            "create table {name} as a query: {RUNS_CODE}"
        )));
    }
    effects
}

fn create_index(t: &[Token], mut at: usize, unique: bool) -> Vec<LockEffect> {
    let concurrently = t.seq_at(at, &["concurrently"]);
    if concurrently {
        at += 1;
    }
    let Some(on) = (at..t.len()).find(|&i| t.seq_at(i, &["on"])) else {
        return Vec::new();
    };
    let Some((table, _)) = t.name_at(skip_noise(t, on + 1)) else {
        return Vec::new();
    };
    let kind = if unique {
        "create unique index"
    } else {
        "create index"
    };
    vec![if concurrently {
        LockEffect::on(
            &table,
            LockMode::ShareUpdateExclusive,
            Work::Scan,
            format!("{kind} concurrently (reads the table twice; reads and writes go on)"),
        )
    } else {
        LockEffect::on(
            &table,
            LockMode::Share,
            Work::Scan,
            format!("{kind} (builds it while blocking writes)"),
        )
    }]
}

fn create_trigger(t: &[Token]) -> Vec<LockEffect> {
    let Some(on) = t.find_top_seq(&["on"]) else {
        return Vec::new();
    };
    let Some((table, _)) = t.name_at(on + 1) else {
        return Vec::new();
    };
    vec![LockEffect::on(
        &table,
        LockMode::ShareRowExclusive,
        Work::Metadata,
        "create trigger",
    )]
}

fn drop(t: &[Token]) -> Vec<LockEffect> {
    let what = t.get(1).and_then(Token::word);
    match what {
        Some("table" | "view") => name_list(t, skip_noise(t, 2))
            .iter()
            .map(|name| {
                LockEffect::on(
                    name,
                    LockMode::AccessExclusive,
                    Work::Metadata,
                    format!("drop {}", what.unwrap_or_default()),
                )
            })
            .collect(),
        Some("materialized") => name_list(t, skip_noise(t, 3))
            .iter()
            .map(|name| {
                LockEffect::on(
                    name,
                    LockMode::AccessExclusive,
                    Work::Metadata,
                    "drop materialized view",
                )
            })
            .collect(),
        Some("index") => {
            let concurrently = t.seq_at(2, &["concurrently"]);
            let at = skip_noise(t, if concurrently { 3 } else { 2 });
            name_list(t, at)
                .into_iter()
                .map(|index| {
                    let (mode, action) = if concurrently {
                        (
                            LockMode::ShareUpdateExclusive,
                            "drop index concurrently (waits for transactions using the table)",
                        )
                    } else {
                        (LockMode::AccessExclusive, "drop index")
                    };
                    LockEffect::new(
                        Some(Target::IndexOf(index)),
                        Lock::Mode(mode),
                        Work::Metadata,
                        action,
                    )
                })
                .collect()
        }
        Some("trigger" | "policy" | "rule") => {
            let Some(on) = t.find_top_seq(&["on"]) else {
                return Vec::new();
            };
            let Some((table, _)) = t.name_at(on + 1) else {
                return Vec::new();
            };
            vec![LockEffect::on(
                &table,
                LockMode::AccessExclusive,
                Work::Metadata,
                format!("drop {}", what.unwrap_or_default()),
            )]
        }
        Some(kind) => vec![LockEffect::none(format!(
            "drop {kind} (no table lock; statements that still use it fail)"
        ))],
        None => Vec::new(),
    }
}

fn lock(t: &[Token]) -> Vec<LockEffect> {
    let at = skip_noise(t, if t.seq_at(1, &["table"]) { 2 } else { 1 });
    let tables = name_list(t, at);
    let mode = match t.find_top_seq(&["in"]) {
        Some(i) => {
            let words: Vec<&str> = rest(t, i + 1)
                .iter()
                .map_while(Token::word)
                .take_while(|w| *w != "mode")
                .collect();
            match LockMode::from_words(&words) {
                Some(mode) => mode,
                None => return Vec::new(),
            }
        }
        None => LockMode::AccessExclusive,
    };
    tables
        .iter()
        .map(|table| LockEffect::on(table, mode, Work::Metadata, "lock table"))
        .collect()
}

fn insert(t: &[Token]) -> Vec<LockEffect> {
    if !t.seq_at(1, &["into"]) {
        return Vec::new();
    }
    let Some((table, _)) = t.name_at(2) else {
        return Vec::new();
    };
    let action = if t.find_top_seq(&["select"]).is_some() {
        "insert from a query (also reads the tables it selects from)"
    } else {
        "insert"
    };
    vec![LockEffect::on(
        &table,
        LockMode::RowExclusive,
        Work::Rows,
        action,
    )]
}

fn update_or_delete(t: &[Token], at: usize, verb: &str) -> Vec<LockEffect> {
    let Some((table, _)) = t.name_at(skip_noise(t, at)) else {
        return Vec::new();
    };
    let (work, action) = if t.find_top_seq(&["where"]).is_some() {
        (Work::Rows, format!("{verb} with where"))
    } else {
        (
            Work::EveryRow,
            format!("{verb} without where: touches every row in one transaction"),
        )
    };
    vec![LockEffect::on(&table, LockMode::RowExclusive, work, action)]
}

fn truncate(t: &[Token]) -> Vec<LockEffect> {
    let at = skip_noise(t, if t.seq_at(1, &["table"]) { 2 } else { 1 });
    name_list(t, at)
        .iter()
        .map(|table| {
            LockEffect::on(
                table,
                LockMode::AccessExclusive,
                Work::Metadata,
                "truncate (removes every row)",
            )
        })
        .collect()
}

/// `WITH ... <statement>`: classifies the main statement after the CTEs, and
/// says so when a CTE itself writes.
fn with(t: &[Token]) -> Vec<LockEffect> {
    let mut depth = 0usize;
    let mut main = None;
    let mut writes_inside = false;
    for (i, token) in t.iter().enumerate() {
        match token {
            Token::Punct('(') => depth += 1,
            Token::Punct(')') => depth = depth.saturating_sub(1),
            Token::Word(w) if matches!(w.as_str(), "insert" | "update" | "delete") => {
                if depth == 0 {
                    main = main.or(Some(i));
                } else {
                    writes_inside = true;
                }
            }
            Token::Word(w) if w == "select" && depth == 0 => main = main.or(Some(i)),
            _ => {}
        }
    }
    let mut effects = main.map(|i| classify(rest(t, i))).unwrap_or_default();
    if writes_inside {
        effects.push(LockEffect::runs_code(format!(
            "a data-modifying with clause: {RUNS_CODE}"
        )));
    }
    effects
}

/// Whether the tokens call a function: a name followed by `(`, other than
/// the few keywords that take parentheses.
fn calls_function(t: &[Token]) -> bool {
    t.windows(2).any(|pair| match pair {
        [Token::Word(w), Token::Punct('(')] => !matches!(
            w.as_str(),
            "in" | "exists" | "any" | "all" | "some" | "values" | "cast" | "row" | "array" | "as"
        ),
        [Token::Ident(_), Token::Punct('(')] => true,
        _ => false,
    })
}

fn select(t: &[Token]) -> Vec<LockEffect> {
    if calls_function(t) {
        vec![LockEffect::runs_code(format!(
            "select of a function: {RUNS_CODE}"
        ))]
    } else {
        vec![LockEffect::new(
            None,
            Lock::Mode(LockMode::AccessShare),
            Work::Rows,
            "select (reads only)",
        )]
    }
}

fn maintenance(t: &[Token]) -> Vec<LockEffect> {
    let verb = t.first().and_then(Token::word).unwrap_or_default();
    let mut at = 1;
    if is_punct(t, at, '(') {
        while at < t.len() && !is_punct(t, at, ')') {
            at += 1;
        }
        at += 1;
    }
    while t
        .get(at)
        .and_then(Token::word)
        .is_some_and(|w| matches!(w, "full" | "freeze" | "verbose" | "analyze" | "analyse"))
    {
        at += 1;
    }
    let full = t.seq_at(1, &["full"]) || t.find_seq(&["full"]).is_some_and(|i| i < at);
    let tables = name_list(t, at);
    if tables.is_empty() {
        return vec![LockEffect::new(
            None,
            Lock::Mode(LockMode::ShareUpdateExclusive),
            Work::Scan,
            format!("{verb} of every table in the database"),
        )];
    }
    tables
        .iter()
        .map(|table| {
            if full {
                LockEffect::on(
                    table,
                    LockMode::AccessExclusive,
                    Work::Rewrite,
                    "vacuum full",
                )
            } else {
                LockEffect::on(table, LockMode::ShareUpdateExclusive, Work::Scan, verb)
            }
        })
        .collect()
}

fn reindex(t: &[Token]) -> Vec<LockEffect> {
    let concurrently = t.find_top_seq(&["concurrently"]).is_some();
    let Some(kind_at) = (1..t.len()).find(|&i| {
        t.get(i)
            .and_then(Token::word)
            .is_some_and(|w| matches!(w, "index" | "table" | "schema" | "database" | "system"))
    }) else {
        return Vec::new();
    };
    let mut at = kind_at + 1;
    if t.seq_at(at, &["concurrently"]) {
        at += 1;
    }
    let Some((name, _)) = t.name_at(at) else {
        return Vec::new();
    };
    let target = match t.get(kind_at).and_then(Token::word) {
        Some("index") => Target::IndexOf(name),
        Some("table") => Target::Table(name),
        _ => return Vec::new(),
    };
    let (mode, action) = if concurrently {
        (
            LockMode::ShareUpdateExclusive,
            "reindex concurrently (reads and writes go on)",
        )
    } else {
        (LockMode::Share, "reindex (blocks writes while it builds)")
    };
    vec![LockEffect::new(
        Some(target),
        Lock::Mode(mode),
        Work::Scan,
        action,
    )]
}

fn refresh(t: &[Token]) -> Vec<LockEffect> {
    if !t.seq_at(1, &["materialized", "view"]) {
        return Vec::new();
    }
    let concurrently = t.seq_at(3, &["concurrently"]);
    let Some((view, _)) = t.name_at(if concurrently { 4 } else { 3 }) else {
        return Vec::new();
    };
    vec![if concurrently {
        LockEffect::on(
            &view,
            LockMode::Exclusive,
            Work::Rewrite,
            "refresh materialized view concurrently (reads go on)",
        )
    } else {
        LockEffect::on(
            &view,
            LockMode::AccessExclusive,
            Work::Rewrite,
            "refresh materialized view",
        )
    }]
}

fn comment(t: &[Token]) -> Vec<LockEffect> {
    if t.seq_at(1, &["on", "table"]) {
        if let Some((table, _)) = t.name_at(3) {
            return vec![LockEffect::on(
                &table,
                LockMode::ShareUpdateExclusive,
                Work::Metadata,
                "comment on table",
            )];
        }
    }
    if t.seq_at(1, &["on", "column"]) {
        if let Some((column, _)) = t.name_at(3) {
            // `table.column` or `schema.table.column`: name_at keeps the last
            // two parts, so the table is the schema part.
            if let Some(table) = column.schema {
                let table = ObjectName {
                    schema: None,
                    name: table,
                };
                return vec![LockEffect::on(
                    &table,
                    LockMode::ShareUpdateExclusive,
                    Work::Metadata,
                    "comment on column",
                )];
            }
        }
    }
    vec![LockEffect::none("comment (no table lock)")]
}

#[cfg(test)]
mod tests;
