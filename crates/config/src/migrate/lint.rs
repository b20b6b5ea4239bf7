//! Static checks on migration files: what an expand migration may not do, and
//! what any migration outside a transaction must do.
//!
//! An expand migration runs while the previous release is still serving, so it
//! must keep that release working and must not hold long locks on tables that
//! already have rows. Statements on a table created earlier in the same file
//! are exempt from those checks, because a new table is empty and unknown to
//! the previous release. The checks match token sequences from [`super::sql`];
//! they do not look inside `DO` blocks or function bodies.

use std::collections::HashSet;
use std::fmt;

use super::phase::Phase;
use super::sql::{split_statements, ObjectName, Token, TokenSlice};

/// One migration file to check.
#[derive(Debug, Clone, Copy)]
pub struct LintInput<'a> {
    pub version: i64,
    pub file: &'a str,
    pub sql: &'a str,
    pub phase: Phase,
    /// Whether the file runs outside a transaction (`-- no-transaction`).
    pub no_tx: bool,
    /// Whether the file is a down script, which exists to undo its
    /// migration: the rules against removing what the previous release uses
    /// ([`Rule::undoes`]) do not apply to it; the lock rules do.
    pub down: bool,
}

/// A check that a migration statement can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    DropTable,
    DropColumn,
    Rename,
    AlterColumnType,
    NotNullWithoutDefault,
    IndexWithoutConcurrently,
    ForeignKeyWithoutNotValid,
    CheckWithoutNotValid,
    ConcurrentlyInTransaction,
    NoTxNotIdempotent,
    /// Set-level: an expand migration without a down script (see
    /// [`super::lint_set`]); no statement fires it.
    MissingDownScript,
}

impl Rule {
    /// The rule's stable kebab-case name, as printed in findings.
    pub fn code(self) -> &'static str {
        match self {
            Rule::DropTable => "drop-table",
            Rule::DropColumn => "drop-column",
            Rule::Rename => "rename",
            Rule::AlterColumnType => "alter-column-type",
            Rule::NotNullWithoutDefault => "not-null-without-default",
            Rule::IndexWithoutConcurrently => "index-without-concurrently",
            Rule::ForeignKeyWithoutNotValid => "foreign-key-without-not-valid",
            Rule::CheckWithoutNotValid => "check-without-not-valid",
            Rule::ConcurrentlyInTransaction => "concurrently-in-transaction",
            Rule::NoTxNotIdempotent => "no-tx-not-idempotent",
            Rule::MissingDownScript => "missing-down-script",
        }
    }

    pub fn all() -> &'static [Rule] {
        &[
            Rule::DropTable,
            Rule::DropColumn,
            Rule::Rename,
            Rule::AlterColumnType,
            Rule::NotNullWithoutDefault,
            Rule::IndexWithoutConcurrently,
            Rule::ForeignKeyWithoutNotValid,
            Rule::CheckWithoutNotValid,
            Rule::ConcurrentlyInTransaction,
            Rule::NoTxNotIdempotent,
            Rule::MissingDownScript,
        ]
    }

    /// Why the rule exists and what to do instead, in one sentence.
    pub fn why(self) -> &'static str {
        match self {
            Rule::DropTable => {
                "The previous release still reads and writes the table during a rolling deploy, \
                 so drop it in a contract migration once no old node is running."
            }
            Rule::DropColumn => {
                "The previous release still selects and inserts the column, so stop using it in \
                 one release and drop it in a contract migration."
            }
            Rule::Rename => {
                "The previous release still uses the old name, so add the new table or column \
                 alongside the old one, move the data across, and remove the old one in a \
                 contract migration."
            }
            Rule::AlterColumnType => {
                "Changing a column's type usually rewrites the table under an ACCESS EXCLUSIVE \
                 lock and can break the previous release's queries, so add a column of the new \
                 type, backfill it, and drop the old one in a contract migration."
            }
            Rule::NotNullWithoutDefault => {
                "A NOT NULL column without a default fails on existing rows and rejects the \
                 previous release's inserts, and SET NOT NULL scans the table under an ACCESS \
                 EXCLUSIVE lock, so give new columns a default and prove existing ones with a \
                 validated NOT VALID check (col IS NOT NULL) first."
            }
            Rule::IndexWithoutConcurrently => {
                "Building an index without CONCURRENTLY blocks writes to the table for the whole \
                 build, so use CREATE INDEX CONCURRENTLY in a -- no-transaction migration and add \
                 unique or primary key constraints USING INDEX afterwards."
            }
            Rule::ForeignKeyWithoutNotValid => {
                "Adding a foreign key checks every row while it blocks writes to both tables, so \
                 add it NOT VALID and run VALIDATE CONSTRAINT, which takes a weaker lock, in a \
                 later migration."
            }
            Rule::CheckWithoutNotValid => {
                "Adding a check constraint scans the table under an ACCESS EXCLUSIVE lock, so add \
                 it NOT VALID and run VALIDATE CONSTRAINT, which takes a weaker lock, in a later \
                 migration."
            }
            Rule::ConcurrentlyInTransaction => {
                "CONCURRENTLY operations cannot run inside a transaction block, so a migration \
                 that uses them must start with -- no-transaction."
            }
            Rule::NoTxNotIdempotent => {
                "A no-transaction migration is re-run from the top after a failure part-way, so \
                 CREATE INDEX and ADD COLUMN need IF NOT EXISTS and DROP INDEX and DROP TABLE need \
                 IF EXISTS; a failed concurrent build also leaves an invalid index behind, which \
                 DROP INDEX CONCURRENTLY IF EXISTS before the CREATE clears."
            }
            Rule::MissingDownScript => {
                "An expand migration is what a rollback reverts, so it ships with a down script, \
                 <version>_<description>.down.sql beside it, that obleth-migrator down runs."
            }
        }
    }

    /// Whether the rule forbids removing what the previous release uses: a
    /// down script, which exists to remove what its migration added, is
    /// exempt from it.
    pub fn undoes(self) -> bool {
        matches!(self, Rule::DropTable | Rule::DropColumn | Rule::Rename)
    }

    /// Whether the rule judges a whole set rather than a statement.
    pub fn set_level(self) -> bool {
        self == Rule::MissingDownScript
    }

    /// Whether the rule guards the previous release, and so applies only to
    /// expand migrations.
    pub fn expand_only(self) -> bool {
        !matches!(
            self,
            Rule::ConcurrentlyInTransaction | Rule::NoTxNotIdempotent
        )
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One rule broken by one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub version: i64,
    pub file: String,
    /// The 1-based line where the offending statement starts.
    pub line: usize,
    pub rule: Rule,
    /// What is wrong and what to do, lowercase and without a trailing period.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: [{}] {}",
            self.file,
            self.line,
            self.rule.code(),
            self.message
        )
    }
}

/// Checks one migration file and returns its findings in statement order.
pub fn lint(input: &LintInput<'_>) -> Vec<Finding> {
    let mut linter = Linter {
        input,
        created: HashSet::new(),
        findings: Vec::new(),
        line: 0,
    };
    for statement in split_statements(input.sql) {
        linter.line = statement.line;
        linter.statement(&statement.tokens);
    }
    linter.findings
}

/// A table as PostgreSQL resolves it, with an omitted schema read as `public`.
type TableKey = (String, String);

fn table_key(table: &ObjectName) -> TableKey {
    let schema = table.schema.as_deref().unwrap_or("public");
    (schema.to_owned(), table.name.clone())
}

/// The tokens from `at` on, or none when `at` is past the end.
fn rest(tokens: &[Token], at: usize) -> &[Token] {
    tokens.get(at..).unwrap_or_default()
}

fn is_punct(tokens: &[Token], at: usize, c: char) -> bool {
    tokens.get(at) == Some(&Token::Punct(c))
}

/// Reads a comma-separated list of names, as in `DROP TABLE a, b`.
fn name_list(tokens: &[Token], mut at: usize) -> Vec<ObjectName> {
    let mut names = Vec::new();
    while let Some((name, next)) = tokens.name_at(at) {
        names.push(name);
        if !is_punct(tokens, next, ',') {
            break;
        }
        at = next + 1;
    }
    names
}

fn join(names: &[ObjectName]) -> String {
    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
    names.join(", ")
}

struct Linter<'i, 'a> {
    input: &'i LintInput<'a>,
    /// Tables created earlier in this file, which expand rules leave alone.
    created: HashSet<TableKey>,
    findings: Vec<Finding>,
    /// The line of the statement being checked.
    line: usize,
}

impl Linter<'_, '_> {
    fn is_new(&self, table: &ObjectName) -> bool {
        self.created.contains(&table_key(table))
    }

    /// Records a finding unless an expand-only rule does not apply here,
    /// because the migration is a contract one or `table` is new in this file.
    fn report(&mut self, rule: Rule, table: Option<&ObjectName>, message: String) {
        let exempt = self.input.phase != Phase::Expand || table.is_some_and(|t| self.is_new(t));
        if (rule.expand_only() && exempt) || (self.input.down && rule.undoes()) {
            return;
        }
        self.findings.push(Finding {
            version: self.input.version,
            file: self.input.file.to_owned(),
            line: self.line,
            rule,
            message,
        });
    }

    fn statement(&mut self, t: &[Token]) {
        if t.seq_at(0, &["create"]) {
            self.create(t);
        } else if t.seq_at(0, &["drop", "table"]) {
            self.drop_table(t);
        } else if t.seq_at(0, &["drop", "index"]) {
            self.drop_index(t);
        } else if t.seq_at(0, &["alter", "table"]) {
            self.alter_table(t);
        } else if t.seq_at(0, &["reindex"]) && t.iter().any(|x| x.is_word("concurrently")) {
            self.in_transaction("reindex concurrently");
        }
    }

    fn in_transaction(&mut self, what: &str) {
        if !self.input.no_tx {
            self.report(
                Rule::ConcurrentlyInTransaction,
                None,
                format!(
                    "{what} cannot run inside a transaction; \
                     start the file with -- no-transaction"
                ),
            );
        }
    }

    fn create(&mut self, t: &[Token]) {
        let mut at = 1;
        if t.seq_at(at, &["or", "replace"]) {
            at += 2;
        }
        while t
            .get(at)
            .and_then(Token::word)
            .is_some_and(|w| matches!(w, "global" | "local" | "temp" | "temporary" | "unlogged"))
        {
            at += 1;
        }
        if t.seq_at(at, &["table"]) {
            at += 1;
            if t.seq_at(at, &["if", "not", "exists"]) {
                at += 3;
            }
            if let Some((table, _)) = t.name_at(at) {
                self.created.insert(table_key(&table));
            }
        } else if t.seq_at(at, &["index"]) {
            self.create_index(t, at + 1);
        } else if t.seq_at(at, &["unique", "index"]) {
            self.create_index(t, at + 2);
        }
    }

    fn create_index(&mut self, t: &[Token], mut at: usize) {
        let concurrently = t.seq_at(at, &["concurrently"]);
        if concurrently {
            at += 1;
        }
        let if_not_exists = t.seq_at(at, &["if", "not", "exists"]);
        if if_not_exists {
            at += 3;
        }
        let mut index = None;
        if !t.seq_at(at, &["on"]) {
            let Some((name, next)) = t.name_at(at) else {
                return;
            };
            index = Some(name);
            at = next;
        }
        if t.seq_at(at, &["on"]) {
            at += 1;
        }
        if t.seq_at(at, &["only"]) {
            at += 1;
        }
        let table = t.name_at(at).map(|(name, _)| name);
        let on = table
            .as_ref()
            .map_or_else(|| "its table".to_owned(), ToString::to_string);
        let index_name = index
            .as_ref()
            .map_or_else(String::new, |name| format!(" {name}"));

        if !concurrently {
            self.report(
                Rule::IndexWithoutConcurrently,
                table.as_ref(),
                format!(
                    "create index{index_name} on {on} without concurrently blocks writes to the \
                     table while it builds; use create index concurrently in a -- no-transaction \
                     migration"
                ),
            );
        }
        if concurrently {
            self.in_transaction(&format!("create index concurrently{index_name}"));
        }
        if self.input.no_tx && !if_not_exists {
            let message = match &index {
                Some(name) => format!(
                    "create index {name} without if not exists fails when this no-transaction \
                     migration is re-run; add if not exists"
                ),
                None => format!(
                    "an unnamed create index on {on} cannot be skipped when this no-transaction \
                     migration is re-run; name the index and add if not exists"
                ),
            };
            self.report(Rule::NoTxNotIdempotent, table.as_ref(), message);
        }
    }

    fn drop_table(&mut self, t: &[Token]) {
        let if_exists = t.seq_at(2, &["if", "exists"]);
        let tables = name_list(t, if if_exists { 4 } else { 2 });
        for table in &tables {
            self.report(
                Rule::DropTable,
                Some(table),
                format!(
                    "drop table {table} breaks the previous release, which still uses it; \
                     move it to a contract migration"
                ),
            );
        }
        if self.input.no_tx && !if_exists {
            self.report(
                Rule::NoTxNotIdempotent,
                None,
                format!(
                    "drop table {} without if exists fails when this no-transaction migration \
                     is re-run; add if exists",
                    join(&tables)
                ),
            );
        }
    }

    fn drop_index(&mut self, t: &[Token]) {
        let mut at = 2;
        let concurrently = t.seq_at(at, &["concurrently"]);
        if concurrently {
            at += 1;
        }
        let if_exists = t.seq_at(at, &["if", "exists"]);
        if if_exists {
            at += 2;
        }
        let indexes = join(&name_list(t, at));
        if concurrently {
            self.in_transaction(&format!("drop index concurrently {indexes}"));
        }
        if self.input.no_tx && !if_exists {
            self.report(
                Rule::NoTxNotIdempotent,
                None,
                format!(
                    "drop index {indexes} without if exists fails when this no-transaction \
                     migration is re-run; add if exists"
                ),
            );
        }
    }

    fn alter_table(&mut self, t: &[Token]) {
        let mut at = 2;
        if t.seq_at(at, &["if", "exists"]) {
            at += 2;
        }
        if t.seq_at(at, &["only"]) {
            at += 1;
        }
        if t.seq_at(at, &["all", "in", "tablespace"]) {
            return;
        }
        let Some((table, mut at)) = t.name_at(at) else {
            return;
        };
        if is_punct(t, at, '*') {
            at += 1;
        }
        for action in rest(t, at).split_top_level(',') {
            self.alter_action(&table, action);
        }
    }

    /// Checks one comma-separated action of an `ALTER TABLE`.
    fn alter_action(&mut self, table: &ObjectName, c: &[Token]) {
        if c.seq_at(0, &["add"]) {
            let body = rest(c, 1);
            match body.first().and_then(Token::word) {
                Some("column") => self.add_column(table, rest(body, 1)),
                Some("constraint" | "check" | "unique" | "primary" | "foreign" | "exclude") => {
                    self.add_constraint(table, body);
                }
                _ => self.add_column(table, body),
            }
        } else if c.seq_at(0, &["drop"]) {
            self.drop_column(table, c);
        } else if c.seq_at(0, &["rename"]) {
            self.rename(table, c);
        } else if c.seq_at(0, &["alter"]) {
            self.alter_column(table, c);
        } else if c.seq_at(0, &["detach", "partition"])
            && c.find_top_seq(&["concurrently"]).is_some()
        {
            self.in_transaction(&format!("detach partition concurrently on {table}"));
        }
    }

    /// Checks `ADD [COLUMN]`, given the tokens after `COLUMN`.
    fn add_column(&mut self, table: &ObjectName, c: &[Token]) {
        let if_not_exists = c.seq_at(0, &["if", "not", "exists"]);
        let Some((column, next)) = c.name_at(if if_not_exists { 3 } else { 0 }) else {
            return;
        };
        // Constraint words count only outside parentheses, so a type such as
        // numeric(10, 2) or a CHECK (x IS NOT NULL) body is not misread.
        let definition = rest(c, next);
        let has = |words: &[&str]| definition.find_top_seq(words).is_some();
        let column = format!("{table}.{column}");

        if has(&["not", "null"]) && !has(&["default"]) && !has(&["generated"]) {
            self.report(
                Rule::NotNullWithoutDefault,
                Some(table),
                format!(
                    "adding column {column} as not null without a default fails on existing rows \
                     and breaks inserts from the previous release; give it a default, or add it \
                     nullable and backfill"
                ),
            );
        }
        if has(&["references"]) {
            self.report(
                Rule::ForeignKeyWithoutNotValid,
                Some(table),
                format!(
                    "adding column {column} with references checks every row under a lock and \
                     cannot be not valid; add the column, then a not valid foreign key \
                     constraint, then validate it in a later migration"
                ),
            );
        }
        if has(&["check"]) {
            self.report(
                Rule::CheckWithoutNotValid,
                Some(table),
                format!(
                    "adding column {column} with a check constraint scans the table under an \
                     exclusive lock; add the column, then a not valid check constraint, then \
                     validate it in a later migration"
                ),
            );
        }
        if has(&["unique"]) || has(&["primary", "key"]) {
            self.report(
                Rule::IndexWithoutConcurrently,
                Some(table),
                format!(
                    "adding column {column} as unique or primary key builds its index under an \
                     exclusive lock; add the column, create a unique index concurrently, then \
                     add the constraint using index"
                ),
            );
        }
        if self.input.no_tx && !if_not_exists {
            self.report(
                Rule::NoTxNotIdempotent,
                Some(table),
                format!(
                    "add column {column} without if not exists fails when this no-transaction \
                     migration is re-run; write add column if not exists"
                ),
            );
        }
    }

    /// Checks `ADD [CONSTRAINT name] ...`, given the tokens after `ADD`.
    fn add_constraint(&mut self, table: &ObjectName, c: &[Token]) {
        let (name, at) = if c.seq_at(0, &["constraint"]) {
            match c.name_at(1) {
                Some((name, next)) => (Some(name), next),
                None => return,
            }
        } else {
            (None, 0)
        };
        let describe = |kind: &str| match &name {
            Some(name) => format!("{kind} {name}"),
            None => format!("a {kind}"),
        };
        let not_valid = c.find_top_seq(&["not", "valid"]).is_some();

        if c.seq_at(at, &["foreign", "key"]) && !not_valid {
            let what = describe("foreign key");
            self.report(
                Rule::ForeignKeyWithoutNotValid,
                Some(table),
                format!(
                    "adding {what} on {table} without not valid checks every row while blocking \
                     writes to both tables; add it not valid and validate constraint in a later \
                     migration"
                ),
            );
        } else if c.seq_at(at, &["check"]) && !not_valid {
            let what = describe("check constraint");
            self.report(
                Rule::CheckWithoutNotValid,
                Some(table),
                format!(
                    "adding {what} on {table} without not valid scans the table under an \
                     exclusive lock; add it not valid and validate constraint in a later migration"
                ),
            );
        } else if (c.seq_at(at, &["unique"]) || c.seq_at(at, &["primary", "key"]))
            && c.find_top_seq(&["using", "index"]).is_none()
        {
            let what = describe(if c.seq_at(at, &["unique"]) {
                "unique constraint"
            } else {
                "primary key"
            });
            self.report(
                Rule::IndexWithoutConcurrently,
                Some(table),
                format!(
                    "adding {what} on {table} builds its index under an exclusive lock; create \
                     a unique index concurrently, then add the constraint using index"
                ),
            );
        }
    }

    /// Checks `DROP [COLUMN] [IF EXISTS] name`; `DROP CONSTRAINT` is fine.
    fn drop_column(&mut self, table: &ObjectName, c: &[Token]) {
        // DEFAULT, NOT NULL and the like belong to ALTER COLUMN; they are
        // skipped here too, so a malformed action is not read as a column.
        let not_a_column = c.get(1).and_then(Token::word).is_some_and(|w| {
            matches!(
                w,
                "constraint" | "default" | "not" | "identity" | "expression"
            )
        });
        if not_a_column {
            return;
        }
        let mut at = 1;
        if c.seq_at(at, &["column"]) {
            at += 1;
        }
        if c.seq_at(at, &["if", "exists"]) {
            at += 2;
        }
        if let Some((column, _)) = c.name_at(at) {
            self.report(
                Rule::DropColumn,
                Some(table),
                format!(
                    "dropping column {table}.{column} breaks the previous release, which still \
                     uses it; stop using it in one release and drop it in a contract migration"
                ),
            );
        }
    }

    /// Checks `RENAME TO`, `RENAME [COLUMN] a TO b`; `RENAME CONSTRAINT` is fine.
    fn rename(&mut self, table: &ObjectName, c: &[Token]) {
        if c.seq_at(1, &["constraint"]) {
            return;
        }
        if c.seq_at(1, &["to"]) {
            let Some((new, _)) = c.name_at(2) else {
                return;
            };
            // A renamed new table stays new, and stays in its schema.
            let renamed = ObjectName {
                schema: table.schema.clone(),
                name: new.name,
            };
            if self.is_new(table) {
                self.created.insert(table_key(&renamed));
            }
            self.report(
                Rule::Rename,
                Some(table),
                format!(
                    "renaming table {table} to {renamed} breaks the previous release, which still \
                     uses the old name; add the new table alongside the old one and remove the \
                     old one in a contract migration"
                ),
            );
            return;
        }
        let at = if c.seq_at(1, &["column"]) { 2 } else { 1 };
        let Some((old, next)) = c.name_at(at) else {
            return;
        };
        let new = c
            .seq_at(next, &["to"])
            .then(|| c.name_at(next + 1))
            .flatten()
            .map_or_else(|| "a new name".to_owned(), |(name, _)| name.to_string());
        self.report(
            Rule::Rename,
            Some(table),
            format!(
                "renaming column {table}.{old} to {new} breaks the previous release, which still \
                 uses the old name; add the new column, write both, backfill, and drop the old \
                 one in a contract migration"
            ),
        );
    }

    /// Checks `ALTER [COLUMN] x TYPE ...` and `ALTER [COLUMN] x SET NOT NULL`.
    fn alter_column(&mut self, table: &ObjectName, c: &[Token]) {
        if c.seq_at(1, &["constraint"]) {
            return;
        }
        let at = if c.seq_at(1, &["column"]) { 2 } else { 1 };
        let Some((column, next)) = c.name_at(at) else {
            return;
        };
        if c.seq_at(next, &["type"]) || c.seq_at(next, &["set", "data", "type"]) {
            self.report(
                Rule::AlterColumnType,
                Some(table),
                format!(
                    "changing the type of {table}.{column} can rewrite the table under an \
                     exclusive lock and break the previous release; add a column of the new \
                     type, backfill it, and drop the old one in a contract migration"
                ),
            );
        } else if c.seq_at(next, &["set", "not", "null"]) {
            self.report(
                Rule::NotNullWithoutDefault,
                Some(table),
                format!(
                    "set not null on {table}.{column} scans the table under an exclusive lock; \
                     add a not valid check ({column} is not null) constraint, validate it in a \
                     later migration, then set not null"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture file, how it is linted, and the one rule it must fire.
    struct Fixture {
        file: &'static str,
        sql: &'static str,
        phase: Phase,
        no_tx: bool,
        fires: Option<Rule>,
    }

    macro_rules! fixture {
        ($file:literal, $phase:expr, $no_tx:expr, $fires:expr) => {
            Fixture {
                file: $file,
                sql: include_str!(concat!("../../tests/fixtures/lint/", $file)),
                phase: $phase,
                no_tx: $no_tx,
                fires: $fires,
            }
        };
    }

    const FIXTURES: &[Fixture] = &[
        fixture!(
            "drop-table.sql",
            Phase::Expand,
            false,
            Some(Rule::DropTable)
        ),
        fixture!(
            "drop-column.sql",
            Phase::Expand,
            false,
            Some(Rule::DropColumn)
        ),
        fixture!("rename.sql", Phase::Expand, false, Some(Rule::Rename)),
        fixture!(
            "alter-column-type.sql",
            Phase::Expand,
            false,
            Some(Rule::AlterColumnType)
        ),
        fixture!(
            "not-null-without-default.sql",
            Phase::Expand,
            false,
            Some(Rule::NotNullWithoutDefault)
        ),
        fixture!(
            "index-without-concurrently.sql",
            Phase::Expand,
            false,
            Some(Rule::IndexWithoutConcurrently)
        ),
        fixture!(
            "foreign-key-without-not-valid.sql",
            Phase::Expand,
            false,
            Some(Rule::ForeignKeyWithoutNotValid)
        ),
        fixture!(
            "check-without-not-valid.sql",
            Phase::Expand,
            false,
            Some(Rule::CheckWithoutNotValid)
        ),
        fixture!(
            "concurrently-in-transaction.sql",
            Phase::Expand,
            false,
            Some(Rule::ConcurrentlyInTransaction)
        ),
        fixture!(
            "no-tx-not-idempotent.sql",
            Phase::Expand,
            true,
            Some(Rule::NoTxNotIdempotent)
        ),
        fixture!("good_expand.sql", Phase::Expand, false, None),
        fixture!("good_no_tx.sql", Phase::Expand, true, None),
    ];

    fn run(sql: &str, phase: Phase, no_tx: bool) -> Vec<Finding> {
        lint(&LintInput {
            version: 7,
            file: "0007_test.sql",
            sql,
            phase,
            no_tx,
            down: false,
        })
    }

    fn rules(findings: &[Finding]) -> Vec<Rule> {
        findings.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn each_fixture_fires_exactly_its_rule() {
        for fixture in FIXTURES {
            let findings = run(fixture.sql, fixture.phase, fixture.no_tx);
            let fired: HashSet<Rule> = findings.iter().map(|f| f.rule).collect();
            let expected: HashSet<Rule> = fixture.fires.into_iter().collect();
            assert_eq!(fired, expected, "{}: {findings:#?}", fixture.file);
            if let Some(rule) = fixture.fires {
                assert_eq!(fixture.file, format!("{}.sql", rule.code()));
            }
            assert_eq!(
                fixture.sql.starts_with("-- no-transaction\n"),
                fixture.no_tx,
                "{}: the header and the no_tx flag disagree",
                fixture.file
            );
        }
    }

    #[test]
    fn every_rule_has_a_fixture() {
        for rule in Rule::all().iter().filter(|r| !r.set_level()) {
            assert!(
                FIXTURES.iter().any(|f| f.fires == Some(*rule)),
                "rule {rule} has no fixture under tests/fixtures/lint"
            );
        }
    }

    #[test]
    fn contract_phase_allows_expand_only_rules() {
        for fixture in FIXTURES {
            let Some(rule) = fixture.fires else { continue };
            let findings = run(fixture.sql, Phase::Contract, fixture.no_tx);
            let fired: HashSet<Rule> = findings.iter().map(|f| f.rule).collect();
            let expected: HashSet<Rule> = Some(rule)
                .filter(|r| !r.expand_only())
                .into_iter()
                .collect();
            assert_eq!(fired, expected, "{}", fixture.file);
        }
    }

    #[test]
    fn a_down_script_may_undo_but_keeps_the_lock_rules() {
        for fixture in FIXTURES {
            let Some(rule) = fixture.fires else { continue };
            let findings = lint(&LintInput {
                version: 7,
                file: "0007_test.down.sql",
                sql: fixture.sql,
                phase: fixture.phase,
                no_tx: fixture.no_tx,
                down: true,
            });
            let fired: HashSet<Rule> = findings.iter().map(|f| f.rule).collect();
            let expected: HashSet<Rule> = Some(rule).filter(|r| !r.undoes()).into_iter().collect();
            assert_eq!(fired, expected, "{}", fixture.file);
        }
    }

    #[test]
    fn findings_read_as_operator_instructions() {
        for fixture in FIXTURES {
            for finding in run(fixture.sql, fixture.phase, fixture.no_tx) {
                let message = &finding.message;
                assert_eq!(*message, message.to_lowercase(), "{message}");
                assert!(!message.ends_with('.'), "{message}");
                assert!(message.contains("; "), "says what to do: {message}");
            }
        }
        for rule in Rule::all() {
            assert!(rule.why().ends_with('.'), "{rule}");
        }
    }

    #[test]
    fn rule_codes_are_unique_kebab_case() {
        let codes: HashSet<&str> = Rule::all().iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Rule::all().len());
        for code in codes {
            assert!(
                code.bytes().all(|b| b == b'-' || b.is_ascii_lowercase()),
                "{code}"
            );
        }
    }

    #[test]
    fn display_names_file_line_and_code() {
        let findings = run(
            "SELECT 1;\n\nDROP TABLE IF EXISTS Public.Keys;",
            Phase::Expand,
            false,
        );
        let lines: Vec<String> = findings.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            ["0007_test.sql:3: [drop-table] drop table public.keys breaks the previous release, \
              which still uses it; move it to a contract migration"]
        );
        assert_eq!(findings[0].version, 7);
    }

    #[test]
    fn edge_cases() {
        use Rule::*;
        let cases: &[(&str, &str, Phase, bool, &[Rule])] = &[
            (
                "drop constraint is fine",
                "ALTER TABLE api_keys DROP CONSTRAINT api_keys_name_key",
                Phase::Expand,
                false,
                &[],
            ),
            (
                "drop default and drop not null are fine",
                "ALTER TABLE api_keys ALTER COLUMN rpm DROP DEFAULT, ALTER rpm DROP NOT NULL",
                Phase::Expand,
                false,
                &[],
            ),
            (
                "drop without column",
                "ALTER TABLE api_keys DROP IF EXISTS label CASCADE",
                Phase::Expand,
                false,
                &[DropColumn],
            ),
            (
                "numeric(10,2) with a default",
                "ALTER TABLE usage ADD COLUMN cost numeric(10,2) NOT NULL DEFAULT 0",
                Phase::Expand,
                false,
                &[],
            ),
            (
                "each add clause is judged alone",
                "ALTER TABLE usage ADD cost numeric(10,2) NOT NULL, ADD note text DEFAULT ''",
                Phase::Expand,
                false,
                &[NotNullWithoutDefault],
            ),
            (
                "a later clause without a default",
                "ALTER TABLE usage ADD note text NOT NULL DEFAULT '', ADD cost numeric(10,2) NOT NULL",
                Phase::Expand,
                false,
                &[NotNullWithoutDefault],
            ),
            (
                "not null inside a column check is not the column's",
                "ALTER TABLE usage ADD COLUMN tier text CHECK (tier IS NOT NULL)",
                Phase::Expand,
                false,
                &[CheckWithoutNotValid],
            ),
            (
                "set not null",
                "ALTER TABLE usage ALTER COLUMN tier SET NOT NULL",
                Phase::Expand,
                false,
                &[NotNullWithoutDefault],
            ),
            (
                "set default is fine",
                "ALTER TABLE usage ALTER COLUMN tier SET DEFAULT 'free'",
                Phase::Expand,
                false,
                &[],
            ),
            (
                "set data type",
                "ALTER TABLE usage ALTER tokens SET DATA TYPE bigint",
                Phase::Expand,
                false,
                &[AlterColumnType],
            ),
            (
                "rename table",
                "ALTER TABLE keys RENAME TO api_keys",
                Phase::Expand,
                false,
                &[Rename],
            ),
            (
                "rename without column",
                "ALTER TABLE api_keys RENAME label TO name",
                Phase::Expand,
                false,
                &[Rename],
            ),
            (
                "rename constraint is fine",
                "ALTER TABLE api_keys RENAME CONSTRAINT a TO b",
                Phase::Expand,
                false,
                &[],
            ),
            (
                "not valid constraints and validation are fine",
                "ALTER TABLE usage ADD CONSTRAINT fk FOREIGN KEY (key_id) REFERENCES api_keys \
                 NOT VALID, ADD CHECK (tokens >= 0) NOT VALID; \
                 ALTER TABLE usage VALIDATE CONSTRAINT fk",
                Phase::Expand,
                false,
                &[],
            ),
            (
                "column references on an existing table",
                "ALTER TABLE usage ADD COLUMN key_id uuid REFERENCES api_keys (id)",
                Phase::Expand,
                false,
                &[ForeignKeyWithoutNotValid],
            ),
            (
                "unique constraint builds an index",
                "ALTER TABLE api_keys ADD CONSTRAINT api_keys_hash_key UNIQUE (hash)",
                Phase::Expand,
                false,
                &[IndexWithoutConcurrently],
            ),
            (
                "unique constraint using an index is fine",
                "ALTER TABLE api_keys ADD CONSTRAINT api_keys_hash_key UNIQUE USING INDEX h",
                Phase::Expand,
                false,
                &[],
            ),
            (
                "a table created earlier in the file is exempt",
                "CREATE TABLE IF NOT EXISTS Public.Widgets (id bigint PRIMARY KEY);\n\
                 CREATE INDEX widgets_name_idx ON widgets (name);\n\
                 ALTER TABLE public.widgets ADD COLUMN owner uuid NOT NULL REFERENCES users, \
                 ADD CONSTRAINT widgets_id_check CHECK (id > 0), ALTER id TYPE int8, \
                 ALTER name SET NOT NULL, RENAME name TO label;\n\
                 ALTER TABLE widgets RENAME TO gadgets;\n\
                 CREATE UNIQUE INDEX gadgets_label_key ON ONLY gadgets (label);\n\
                 DROP TABLE gadgets",
                Phase::Expand,
                false,
                &[],
            ),
            (
                "a quoted name differs from the folded one",
                "CREATE TABLE \"Widgets\" (id int); CREATE INDEX w_idx ON widgets (id)",
                Phase::Expand,
                false,
                &[IndexWithoutConcurrently],
            ),
            (
                "another schema is another table",
                "CREATE TABLE app.widgets (id int); CREATE INDEX w_idx ON widgets (id)",
                Phase::Expand,
                false,
                &[IndexWithoutConcurrently],
            ),
            (
                "a table created later is not exempt",
                "CREATE INDEX w_idx ON widgets (id); CREATE TABLE widgets (id int)",
                Phase::Expand,
                false,
                &[IndexWithoutConcurrently],
            ),
            (
                "each dropped table is named",
                "DROP TABLE a, public.b CASCADE",
                Phase::Expand,
                false,
                &[DropTable, DropTable],
            ),
            (
                "sql inside strings, comments and bodies is data",
                "COMMENT ON TABLE t IS 'drop table t; alter table t rename to u';\n\
                 /* DROP TABLE t; */ -- ALTER TABLE t DROP COLUMN c;\n\
                 CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DROP TABLE t $$",
                Phase::Expand,
                false,
                &[],
            ),
            (
                "reindex concurrently in a transaction",
                "REINDEX (VERBOSE) INDEX CONCURRENTLY usage_key_idx",
                Phase::Contract,
                false,
                &[ConcurrentlyInTransaction],
            ),
            (
                "detach partition concurrently in a transaction",
                "ALTER TABLE usage DETACH PARTITION usage_2024 CONCURRENTLY",
                Phase::Contract,
                false,
                &[ConcurrentlyInTransaction],
            ),
            (
                "drop index concurrently in a transaction",
                "DROP INDEX CONCURRENTLY IF EXISTS usage_key_idx",
                Phase::Expand,
                false,
                &[ConcurrentlyInTransaction],
            ),
            (
                "no-transaction statements must be repeatable",
                "DROP INDEX CONCURRENTLY usage_key_idx; DROP TABLE old_usage; \
                 CREATE INDEX CONCURRENTLY ON usage (key_id); \
                 ALTER TABLE usage ADD COLUMN cached integer, ADD COLUMN IF NOT EXISTS x int; \
                 UPDATE usage SET cached = 0",
                Phase::Contract,
                true,
                &[
                    NoTxNotIdempotent,
                    NoTxNotIdempotent,
                    NoTxNotIdempotent,
                    NoTxNotIdempotent,
                ],
            ),
        ];
        for (name, sql, phase, no_tx, expected) in cases {
            let findings = run(sql, *phase, *no_tx);
            assert_eq!(rules(&findings), *expected, "case: {name}: {findings:#?}");
        }
    }

    #[test]
    fn findings_carry_the_statement_line_and_name_objects() {
        let sql = "-- Add the key's team.\nALTER TABLE api_keys\n    ADD COLUMN team_id uuid;\n\n\
                   ALTER TABLE api_keys\n    ADD COLUMN tier text NOT NULL;\n";
        let findings = run(sql, Phase::Expand, false);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].line, 5);
        assert!(
            findings[0].message.contains("api_keys.tier"),
            "{}",
            findings[0].message
        );
    }
}
