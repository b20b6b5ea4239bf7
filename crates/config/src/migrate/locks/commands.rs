//! The locks of DML, `LOCK`, code (`SELECT f()`, `WITH`) and maintenance
//! commands (`VACUUM`, `ANALYZE`, `REINDEX`, `REFRESH MATERIALIZED VIEW`).

use super::{
    classify, is_punct, name_list, rest, skip_noise, Lock, LockEffect, LockMode, Target, Work,
    RUNS_CODE,
};
use crate::migrate::sql::{Token, TokenSlice};

pub(super) fn lock(t: &[Token]) -> Vec<LockEffect> {
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

pub(super) fn insert(t: &[Token]) -> Vec<LockEffect> {
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

pub(super) fn update_or_delete(t: &[Token], at: usize, verb: &str) -> Vec<LockEffect> {
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

pub(super) fn truncate(t: &[Token]) -> Vec<LockEffect> {
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
pub(super) fn with(t: &[Token]) -> Vec<LockEffect> {
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

pub(super) fn select(t: &[Token]) -> Vec<LockEffect> {
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

pub(super) fn maintenance(t: &[Token]) -> Vec<LockEffect> {
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

pub(super) fn reindex(t: &[Token]) -> Vec<LockEffect> {
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

pub(super) fn refresh(t: &[Token]) -> Vec<LockEffect> {
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
