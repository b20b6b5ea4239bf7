//! The locks of `ALTER TABLE` (each comma-separated subcommand on its own)
//! and `ALTER INDEX`.
//!
//! PostgreSQL takes `ACCESS EXCLUSIVE` for an `ALTER TABLE` subcommand unless
//! its reference page names a weaker lock; a statement with several
//! subcommands takes the strongest of them, which the list of effects shows.

use super::{is_punct, referenced, rest, skip_noise, LockEffect, LockMode, Target, Work};
use crate::migrate::sql::{ObjectName, Token, TokenSlice};

use LockMode::{AccessExclusive, ShareRowExclusive, ShareUpdateExclusive};

/// Built-in functions that are volatile: a new column whose default calls
/// one gets a value per row, so PostgreSQL rewrites the table.
const VOLATILE: &[&str] = &[
    "random",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "nextval",
    "txid_current",
    "setseed",
];

/// Built-in functions that are not volatile, so a default calling them is
/// evaluated once and stored in the catalog.
const STABLE: &[&str] = &[
    "now",
    "current_date",
    "current_timestamp",
    "localtimestamp",
    "transaction_timestamp",
    "statement_timestamp",
    "current_setting",
    "lower",
    "upper",
    "coalesce",
    "jsonb_build_object",
    "json_build_object",
    "array",
    "interval",
    "make_interval",
    "to_jsonb",
];

pub(super) fn alter_table(t: &[Token]) -> Vec<LockEffect> {
    let at = skip_noise(t, 2);
    if t.seq_at(at, &["all", "in", "tablespace"]) {
        return Vec::new();
    }
    let Some((table, mut at)) = t.name_at(at) else {
        return Vec::new();
    };
    if is_punct(t, at, '*') {
        at += 1;
    }
    rest(t, at)
        .split_top_level(',')
        .into_iter()
        .flat_map(|action| subcommand(&table, action))
        .collect()
}

pub(super) fn alter_index(t: &[Token]) -> Vec<LockEffect> {
    let at = skip_noise(t, 2);
    let Some((index, at)) = t.name_at(at) else {
        return Vec::new();
    };
    let c = rest(t, at);
    let (mode, work, action) = if c.seq_at(0, &["rename"]) {
        (ShareUpdateExclusive, Work::Metadata, "alter index rename")
    } else if c.seq_at(0, &["set", "tablespace"]) {
        (AccessExclusive, Work::Rewrite, "alter index set tablespace")
    } else if c.seq_at(0, &["set"]) || c.seq_at(0, &["reset"]) {
        (
            ShareUpdateExclusive,
            Work::Metadata,
            "alter index storage parameters",
        )
    } else if c.seq_at(0, &["attach", "partition"]) {
        (
            ShareUpdateExclusive,
            Work::Metadata,
            "alter index attach partition",
        )
    } else {
        (AccessExclusive, Work::Metadata, "alter index")
    };
    vec![LockEffect::new(
        Some(Target::IndexOf(index)),
        super::Lock::Mode(mode),
        work,
        action,
    )]
}

/// One subcommand of `ALTER TABLE table`.
fn subcommand(table: &ObjectName, c: &[Token]) -> Vec<LockEffect> {
    let one = |mode, work, action: &str| vec![LockEffect::on(table, mode, work, action)];
    let first = c.first().and_then(Token::word).unwrap_or_default();
    match first {
        "add" => {
            let body = rest(c, 1);
            match body.first().and_then(Token::word) {
                Some("column") => add_column(table, rest(body, 1)),
                Some("constraint" | "check" | "unique" | "primary" | "foreign" | "exclude") => {
                    add_constraint(table, body)
                }
                _ => add_column(table, body),
            }
        }
        "validate" => one(
            ShareUpdateExclusive,
            Work::Scan,
            "validate constraint (reads every row; reads and writes go on)",
        ),
        "drop" if c.seq_at(1, &["constraint"]) => {
            one(AccessExclusive, Work::Metadata, "drop constraint")
        }
        "drop" => one(
            AccessExclusive,
            Work::Metadata,
            "drop column (marks it dropped; no rewrite)",
        ),
        "alter" => alter_column(table, c),
        "attach" if c.seq_at(1, &["partition"]) => attach(table, c),
        "detach" if c.seq_at(1, &["partition"]) => detach(table, c),
        "set" | "reset" => set(table, c),
        "cluster" => one(ShareUpdateExclusive, Work::Metadata, "cluster on"),
        "enable" | "disable" if c.seq_at(1, &["trigger"]) || c.seq_at(2, &["trigger"]) => one(
            ShareRowExclusive,
            Work::Metadata,
            "enable or disable trigger",
        ),
        "rename" => one(AccessExclusive, Work::Metadata, "rename"),
        _ => {
            let words: Vec<&str> = c.iter().filter_map(Token::word).take(3).collect();
            vec![LockEffect::on(
                table,
                AccessExclusive,
                Work::Metadata,
                format!("alter table {}", words.join(" ")),
            )]
        }
    }
}

/// `ADD [COLUMN]`, given the tokens after `COLUMN`.
fn add_column(table: &ObjectName, c: &[Token]) -> Vec<LockEffect> {
    let at = skip_noise(c, 0);
    let Some((column, next)) = c.name_at(at) else {
        return Vec::new();
    };
    let definition = rest(c, next);
    let has = |words: &[&str]| definition.find_top_seq(words).is_some();
    let serial = definition.first().and_then(Token::word).is_some_and(|w| {
        matches!(
            w,
            "serial" | "serial2" | "serial4" | "serial8" | "smallserial" | "bigserial"
        )
    });
    let mut effect = LockEffect::on(
        table,
        AccessExclusive,
        Work::Metadata,
        format!("add column {column}"),
    );
    if serial || has(&["generated"]) && (has(&["identity"]) || has(&["stored"])) {
        effect.work = Work::Rewrite;
        effect.action = format!("add column {column} filled per row (serial, identity or generated): rewrites the table");
    } else if let Some(default_at) = definition.find_top_seq(&["default"]) {
        let calls = function_calls(rest(definition, default_at + 1));
        if calls.iter().any(|f| VOLATILE.contains(&f.as_str())) {
            effect.work = Work::Rewrite;
            effect.action =
                format!("add column {column} with a volatile default: rewrites the table");
        } else {
            effect.rewrite_if_volatile = calls
                .into_iter()
                .filter(|f| !STABLE.contains(&f.as_str()))
                .collect();
            effect.action = format!(
                "add column {column} with a default (stored once in the catalog; no rewrite)"
            );
        }
    } else if has(&["not", "null"]) {
        effect.action =
            format!("add column {column} not null without a default (fails if the table has rows)");
    } else {
        effect.action = format!("add column {column} without a default (no rewrite)");
    }
    if has(&["check"]) && effect.work == Work::Metadata {
        effect.work = Work::Scan;
        effect
            .action
            .push_str("; its check constraint reads every row");
    }
    if has(&["unique"]) || has(&["primary", "key"]) {
        if effect.work == Work::Metadata {
            effect.work = Work::Scan;
        }
        effect.action.push_str("; builds a unique index");
    }
    let mut effects = vec![effect];
    for parent in referenced(definition) {
        effects.push(LockEffect::on(
            &parent,
            ShareRowExclusive,
            Work::Metadata,
            format!("foreign key from {table}.{column} to {parent}"),
        ));
    }
    effects
}

/// Functions called in the tokens, lowercased, without their schema.
fn function_calls(t: &[Token]) -> Vec<String> {
    t.windows(2)
        .filter_map(|pair| match pair {
            [Token::Word(w) | Token::Ident(w), Token::Punct('(')] => Some(w.to_lowercase()),
            _ => None,
        })
        .collect()
}

/// `ADD [CONSTRAINT name] ...`, given the tokens after `ADD`.
fn add_constraint(table: &ObjectName, c: &[Token]) -> Vec<LockEffect> {
    let at = if c.seq_at(0, &["constraint"]) {
        c.name_at(1).map_or(2, |(_, next)| next)
    } else {
        0
    };
    let not_valid = c.find_top_seq(&["not", "valid"]).is_some();
    let checked = if not_valid {
        Work::Metadata
    } else {
        Work::Scan
    };
    if c.seq_at(at, &["foreign", "key"]) {
        let (how, why) = if not_valid {
            ("not valid", "existing rows are not checked")
        } else {
            ("", "checks every row")
        };
        let mut effects = vec![LockEffect::on(
            table,
            ShareRowExclusive,
            checked,
            format!("add foreign key {how} ({why}; blocks writes to both tables)")
                .replace("  ", " "),
        )];
        for parent in referenced(c) {
            effects.push(LockEffect::on(
                &parent,
                ShareRowExclusive,
                Work::Metadata,
                format!("referenced by a new foreign key of {table}"),
            ));
        }
        return effects;
    }
    let (work, action) = if c.seq_at(at, &["check"]) {
        if not_valid {
            (
                checked,
                "add check constraint not valid (existing rows are not checked)",
            )
        } else {
            (checked, "add check constraint (reads every row)")
        }
    } else if c.find_top_seq(&["using", "index"]).is_some() {
        (
            Work::Metadata,
            "add constraint using an existing index (a primary key also checks not null)",
        )
    } else if c.seq_at(at, &["unique"]) || c.seq_at(at, &["primary", "key"]) {
        (
            Work::Scan,
            "add unique or primary key constraint (builds its index)",
        )
    } else if c.seq_at(at, &["exclude"]) {
        (Work::Scan, "add exclusion constraint (builds its index)")
    } else if c.seq_at(at, &["not", "null"]) {
        (Work::Scan, "add not null constraint (reads every row)")
    } else {
        (Work::Metadata, "add constraint")
    };
    vec![LockEffect::on(table, AccessExclusive, work, action)]
}

/// `ALTER [COLUMN] c ...`.
fn alter_column(table: &ObjectName, c: &[Token]) -> Vec<LockEffect> {
    let at = if c.seq_at(1, &["column"]) { 2 } else { 1 };
    let Some((column, at)) = c.name_at(at) else {
        return Vec::new();
    };
    let a = rest(c, at);
    let (mode, work, action) = if a.seq_at(0, &["type"]) || a.seq_at(0, &["set", "data", "type"]) {
        (
            AccessExclusive,
            Work::Rewrite,
            format!(
                "alter column {column} type: rewrites the table and its indexes (unless the new type is binary-coercible, such as varchar(n) to text)"
            ),
        )
    } else if a.seq_at(0, &["set", "not", "null"]) {
        (
            AccessExclusive,
            Work::Scan,
            format!(
                "alter column {column} set not null: reads every row (skipped when a valid check constraint proves it)"
            ),
        )
    } else if a.seq_at(0, &["set", "statistics"]) {
        (
            ShareUpdateExclusive,
            Work::Metadata,
            format!("alter column {column} statistics or options"),
        )
    } else if is_set_options(a) {
        (
            ShareUpdateExclusive,
            Work::Metadata,
            format!("alter column {column} options"),
        )
    } else {
        let words: Vec<&str> = a.iter().filter_map(Token::word).take(3).collect();
        (
            AccessExclusive,
            Work::Metadata,
            format!("alter column {column} {}", words.join(" ")),
        )
    };
    vec![LockEffect::on(table, mode, work, action)]
}

/// `SET (...)` or `RESET (...)`.
fn is_set_options(a: &[Token]) -> bool {
    (a.seq_at(0, &["set"]) || a.seq_at(0, &["reset"])) && is_punct(a, 1, '(')
}

/// `SET ...` and `RESET ...` on the table itself.
fn set(table: &ObjectName, c: &[Token]) -> Vec<LockEffect> {
    let one = |mode, work, action: &str| vec![LockEffect::on(table, mode, work, action)];
    if is_set_options(c) {
        one(
            ShareUpdateExclusive,
            Work::Metadata,
            "set storage parameters",
        )
    } else if c.seq_at(1, &["logged"]) || c.seq_at(1, &["unlogged"]) {
        one(
            AccessExclusive,
            Work::Rewrite,
            "set logged or unlogged: rewrites the table",
        )
    } else if c.seq_at(1, &["tablespace"]) {
        one(
            AccessExclusive,
            Work::Rewrite,
            "set tablespace: copies the table",
        )
    } else if c.seq_at(1, &["access", "method"]) {
        one(
            AccessExclusive,
            Work::Rewrite,
            "set access method: rewrites the table",
        )
    } else if c.seq_at(1, &["without", "cluster"]) {
        one(ShareUpdateExclusive, Work::Metadata, "set without cluster")
    } else {
        one(AccessExclusive, Work::Metadata, "set")
    }
}

fn attach(parent: &ObjectName, c: &[Token]) -> Vec<LockEffect> {
    let mut effects = vec![LockEffect::on(
        parent,
        ShareUpdateExclusive,
        Work::Metadata,
        "attach partition (on the parent)",
    )];
    if let Some((partition, _)) = c.name_at(2) {
        effects.push(LockEffect::on(
            &partition,
            AccessExclusive,
            Work::Scan,
            format!(
                "attached as a partition of {parent}: reads every row to check the bound (skipped when a valid check constraint proves it)"
            ),
        ));
    }
    effects
}

fn detach(parent: &ObjectName, c: &[Token]) -> Vec<LockEffect> {
    let concurrently = c.find_top_seq(&["concurrently"]).is_some();
    let (mode, action) = if concurrently {
        (
            ShareUpdateExclusive,
            "detach partition concurrently (on the parent; waits for the transactions using it, and cannot run in a transaction)",
        )
    } else {
        (AccessExclusive, "detach partition (on the parent)")
    };
    let mut effects = vec![LockEffect::on(parent, mode, Work::Metadata, action)];
    if let Some((partition, _)) = c.name_at(2) {
        effects.push(LockEffect::on(
            &partition,
            AccessExclusive,
            Work::Metadata,
            format!("detached from {parent}"),
        ));
    }
    effects
}
