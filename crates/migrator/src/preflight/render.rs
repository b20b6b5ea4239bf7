//! How preflight prints for people: the verdict first, then what each check saw.

use super::{pretty_bytes, Report};

pub(super) fn text(r: &Report) {
    out!("preflight: {} (exit {})", r.verdict.label(), r.exit_code);
    let server = match &r.server {
        Some(s) if s.in_recovery => format!(" (PostgreSQL {}, standby)", s.version),
        Some(s) => format!(" (PostgreSQL {}, primary)", s.version),
        None if r.reachable => String::new(),
        None => " (not reached)".to_owned(),
    };
    out!("database: {}{server}", r.database);
    out!(
        "release:  {}; judging `{}`{}",
        r.release,
        r.step,
        if r.step == "up" {
            " (pass --finish to judge `finish`)"
        } else {
            ""
        }
    );
    if let Some(schema) = &r.schema {
        out!("schema:   {}", schema.describe());
    }
    if r.reachable {
        out!("up:       {}", versions(&r.up));
        out!("finish:   {}", versions(&r.finish));
    }

    if !r.migrations.is_empty() {
        out!();
        out!("locks of pending statements:");
    }
    for m in &r.migrations {
        let mut tags = vec![
            m.phase.clone(),
            if m.in_up { "up" } else { "finish" }.to_owned(),
        ];
        if m.no_transaction {
            tags.push("no transaction".to_owned());
        }
        if m.batched {
            tags.push("batched: many short transactions".to_owned());
        }
        out!("  {} {} ({})", m.version, m.file, tags.join(", "));
        for s in &m.statements {
            out!("    line {}: {}", s.line, s.sql);
            for l in &s.locks {
                let on = match (&l.table, &l.effect.target) {
                    (Some(t), _) => {
                        let size = t
                            .size_bytes
                            .map_or_else(|| "size unknown".to_owned(), pretty_bytes);
                        let rows = t.rows_text();
                        format!(" on {} ({size}, {rows})", t.name)
                    }
                    (None, Some(target)) if l.new_in_upgrade => {
                        format!(" on {target} (new in this upgrade)")
                    }
                    (None, Some(target)) => format!(" on {target} (not in the database)"),
                    (None, None) => String::new(),
                };
                let window = if l.needs_window {
                    "  [needs a window]"
                } else {
                    ""
                };
                out!("      {}{on}: {}{window}", l.effect.lock, l.effect.action);
            }
        }
    }

    out!();
    match &r.long_transactions {
        None => out!("transactions: not checked"),
        Some(long) if long.is_empty() => {
            out!("transactions open longer than {} s: none", r.long_xact_secs);
        }
        Some(long) => {
            out!("transactions open longer than {} s:", r.long_xact_secs);
            for s in long {
                out!(
                    "  pid {} ({}, {}, {}) open {:.0} s",
                    s.pid,
                    s.application
                        .as_deref()
                        .filter(|a| !a.is_empty())
                        .unwrap_or("unnamed"),
                    s.backend_type.as_deref().unwrap_or("unknown backend"),
                    s.state.as_deref().unwrap_or("state hidden"),
                    s.xact_age_secs.unwrap_or(0.0)
                );
            }
        }
    }
    let holders = r.lock_holders.as_deref().unwrap_or_default();
    if !holders.is_empty() {
        out!("locks other sessions hold or await on the tables the plan touches:");
        for h in holders {
            out!(
                "  pid {} {} {} on {}{}",
                h.lock.session.pid,
                if h.lock.granted { "holds" } else { "awaits" },
                h.lock.mode,
                h.lock.table,
                h.conflicts_with
                    .as_ref()
                    .map(|m| format!(" (conflicts with the pending {m})"))
                    .unwrap_or_default()
            );
        }
    }
    match &r.standbys {
        None => {}
        Some(standbys) if standbys.is_empty() => {
            out!("standbys: none streaming from this primary");
        }
        Some(standbys) => {
            for s in standbys {
                out!(
                    "standby:  {} ({}) {}, replay lag {}",
                    s.application.as_deref().unwrap_or("unnamed"),
                    s.client_addr.as_deref().unwrap_or("local"),
                    s.state.as_deref().unwrap_or("unknown"),
                    s.replay_lag_secs
                        .map_or_else(|| "none".to_owned(), |l| format!("{l:.1} s"))
                );
            }
        }
    }
    match &r.nodes {
        None => out!("fleet:    not checked"),
        Some(nodes) if nodes.is_empty() => out!("fleet:    no live gateway or admin recorded"),
        Some(nodes) => {
            let nodes: Vec<String> = nodes
                .iter()
                .map(|n| format!("{} {} {}", n.service, n.node_id, n.version))
                .collect();
            out!("fleet:    {}", nodes.join(", "));
        }
    }

    out!();
    if r.findings.is_empty() {
        out!("findings: none");
    } else {
        out!("findings:");
        let mut findings: Vec<_> = r.findings.iter().collect();
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        for f in findings {
            out!("  {:<10} {:<12} {}", f.severity.label(), f.check, f.message);
        }
    }
}

fn versions(v: &[i64]) -> String {
    if v.is_empty() {
        "nothing".to_owned()
    } else {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
