//! The locks of `CREATE`, `DROP` and `COMMENT` statements: new objects lock
//! nothing but the tables they refer to; drops take `ACCESS EXCLUSIVE`.

use super::{
    name_list, referenced, skip_noise, Lock, LockEffect, LockMode, Target, Work, RUNS_CODE,
};
use crate::migrate::sql::{ObjectName, Token, TokenSlice};

pub(super) fn create(t: &[Token]) -> Vec<LockEffect> {
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
    on_table(t, LockMode::ShareRowExclusive, "create trigger".to_owned())
}

/// The lock a statement of the form `... ON table ...` (a trigger, policy or
/// rule) takes on that table; nothing when the text names none.
fn on_table(t: &[Token], mode: LockMode, action: String) -> Vec<LockEffect> {
    let Some(on) = t.find_top_seq(&["on"]) else {
        return Vec::new();
    };
    let Some((table, _)) = t.name_at(on + 1) else {
        return Vec::new();
    };
    vec![LockEffect::on(&table, mode, Work::Metadata, action)]
}

pub(super) fn drop(t: &[Token]) -> Vec<LockEffect> {
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
        Some("trigger" | "policy" | "rule") => on_table(
            t,
            LockMode::AccessExclusive,
            format!("drop {}", what.unwrap_or_default()),
        ),
        Some(kind) => vec![LockEffect::none(format!(
            "drop {kind} (no table lock; statements that still use it fail)"
        ))],
        None => Vec::new(),
    }
}

pub(super) fn comment(t: &[Token]) -> Vec<LockEffect> {
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
