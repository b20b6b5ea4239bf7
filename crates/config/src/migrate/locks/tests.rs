//! One case a statement kind: the lock, the table it falls on and the work done under it.

use super::*;

/// What a case expects of one effect: target as displayed (or `-` for none),
/// lock as displayed, and the work.
type Expected<'a> = (&'a str, &'a str, Work);

fn check(sql: &str, expected: &[Expected<'_>]) {
    let classified = classify_sql(sql);
    assert_eq!(classified.len(), 1, "{sql}: one statement");
    let effects = &classified[0].1;
    let got: Vec<(String, String, Work)> = effects
        .iter()
        .map(|e| {
            (
                e.target
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                e.lock.to_string(),
                e.work,
            )
        })
        .collect();
    let want: Vec<(String, String, Work)> = expected
        .iter()
        .map(|(t, l, w)| ((*t).to_owned(), (*l).to_owned(), *w))
        .collect();
    assert_eq!(got, want, "{sql}: {effects:#?}");
}

fn only(sql: &str) -> LockEffect {
    let mut classified = classify_sql(sql);
    assert_eq!(classified.len(), 1, "{sql}");
    let (_, mut effects) = classified.remove(0);
    assert_eq!(effects.len(), 1, "{sql}: {effects:#?}");
    effects.remove(0)
}

#[test]
fn create_table_locks_nothing_but_the_tables_it_refers_to() {
    check(
        "CREATE TABLE IF NOT EXISTS notes (id bigint PRIMARY KEY, body text)",
        &[("-", "none", Work::Metadata)],
    );
    assert_eq!(
        only("CREATE TABLE public.\"Notes\" (id int)")
            .creates
            .as_deref(),
        Some("public.\"Notes\"")
    );
    check(
        "CREATE TABLE notes (id bigint, key_id uuid REFERENCES api_keys (id))",
        &[
            ("-", "none", Work::Metadata),
            ("api_keys", "SHARE ROW EXCLUSIVE", Work::Metadata),
        ],
    );
    check(
        "CREATE TABLE usage_2026 PARTITION OF usage_ledger FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        &[
            ("-", "none", Work::Metadata),
            ("usage_ledger", "ACCESS EXCLUSIVE", Work::Metadata),
        ],
    );
}

#[test]
fn create_index_blocks_writes_unless_concurrently() {
    check(
        "CREATE INDEX keys_team ON api_keys (team_id)",
        &[("api_keys", "SHARE", Work::Scan)],
    );
    check(
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS keys_hash ON ONLY public.api_keys USING btree (hash)",
        &[("public.api_keys", "SHARE UPDATE EXCLUSIVE", Work::Scan)],
    );
    assert!(only("CREATE INDEX ON api_keys (team_id)")
        .action
        .contains("blocking writes"));
}

#[test]
fn add_column_rewrites_only_for_a_volatile_or_per_row_default() {
    let plain = only("ALTER TABLE api_keys ADD COLUMN note text");
    assert_eq!(plain.lock, Lock::Mode(LockMode::AccessExclusive));
    assert_eq!(plain.work, Work::Metadata);
    assert!(
        plain.action.contains("without a default"),
        "{}",
        plain.action
    );

    let constant =
        only("ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS tier int NOT NULL DEFAULT 0");
    assert_eq!(constant.work, Work::Metadata);
    assert!(constant.rewrite_if_volatile.is_empty());

    let stable = only("ALTER TABLE api_keys ADD COLUMN seen timestamptz DEFAULT now()");
    assert_eq!(stable.work, Work::Metadata);
    assert!(stable.rewrite_if_volatile.is_empty());

    for volatile in [
        "ALTER TABLE api_keys ADD COLUMN token uuid DEFAULT gen_random_uuid()",
        "ALTER TABLE api_keys ADD COLUMN at timestamptz NOT NULL DEFAULT clock_timestamp()",
        "ALTER TABLE api_keys ADD COLUMN n bigint DEFAULT nextval('s')",
        "ALTER TABLE api_keys ADD COLUMN n bigserial",
        "ALTER TABLE api_keys ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY",
        "ALTER TABLE api_keys ADD COLUMN n bigint GENERATED ALWAYS AS (a + b) STORED",
    ] {
        let e = only(volatile);
        assert_eq!(e.work, Work::Rewrite, "{volatile}");
        assert_eq!(e.lock, Lock::Mode(LockMode::AccessExclusive), "{volatile}");
    }

    let unknown = only("ALTER TABLE api_keys ADD COLUMN code text DEFAULT app.new_code()");
    assert_eq!(unknown.work, Work::Metadata);
    assert_eq!(unknown.rewrite_if_volatile, ["new_code"]);

    let not_null = only("ALTER TABLE api_keys ADD COLUMN owner text NOT NULL");
    assert!(not_null.action.contains("fails if the table has rows"));

    check(
        "ALTER TABLE api_keys ADD COLUMN team uuid REFERENCES teams (id)",
        &[
            ("api_keys", "ACCESS EXCLUSIVE", Work::Metadata),
            ("teams", "SHARE ROW EXCLUSIVE", Work::Metadata),
        ],
    );
    check(
        "ALTER TABLE api_keys ADD COLUMN slug text UNIQUE",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Scan)],
    );
}

#[test]
fn alter_column_type_rewrites_and_set_not_null_scans() {
    check(
        "ALTER TABLE api_keys ALTER COLUMN name TYPE varchar(200)",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Rewrite)],
    );
    check(
        "ALTER TABLE api_keys ALTER name SET DATA TYPE text USING name::text",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Rewrite)],
    );
    check(
        "ALTER TABLE api_keys ALTER COLUMN name SET NOT NULL",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Scan)],
    );
    check(
        "ALTER TABLE api_keys ALTER COLUMN name DROP NOT NULL, ALTER COLUMN tier SET DEFAULT 1",
        &[
            ("api_keys", "ACCESS EXCLUSIVE", Work::Metadata),
            ("api_keys", "ACCESS EXCLUSIVE", Work::Metadata),
        ],
    );
    check(
        "ALTER TABLE api_keys ALTER COLUMN name SET STATISTICS 500",
        &[("api_keys", "SHARE UPDATE EXCLUSIVE", Work::Metadata)],
    );
}

#[test]
fn constraints_scan_unless_not_valid_and_validate_takes_a_weak_lock() {
    check(
        "ALTER TABLE api_keys ADD CONSTRAINT keys_team_fk FOREIGN KEY (team_id) REFERENCES teams (id)",
        &[
            ("api_keys", "SHARE ROW EXCLUSIVE", Work::Scan),
            ("teams", "SHARE ROW EXCLUSIVE", Work::Metadata),
        ],
    );
    check(
        "ALTER TABLE api_keys ADD CONSTRAINT keys_team_fk FOREIGN KEY (team_id) REFERENCES teams (id) NOT VALID",
        &[
            ("api_keys", "SHARE ROW EXCLUSIVE", Work::Metadata),
            ("teams", "SHARE ROW EXCLUSIVE", Work::Metadata),
        ],
    );
    check(
        "ALTER TABLE api_keys ADD CONSTRAINT name_len CHECK (length(name) < 200)",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Scan)],
    );
    check(
        "ALTER TABLE api_keys ADD CONSTRAINT name_len CHECK (length(name) < 200) NOT VALID",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Metadata)],
    );
    check(
        "ALTER TABLE api_keys ADD CONSTRAINT keys_hash_key UNIQUE USING INDEX keys_hash",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Metadata)],
    );
    check(
        "ALTER TABLE api_keys ADD PRIMARY KEY (id)",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Scan)],
    );
    check(
        "ALTER TABLE api_keys VALIDATE CONSTRAINT name_len",
        &[("api_keys", "SHARE UPDATE EXCLUSIVE", Work::Scan)],
    );
    check(
        "ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS name_len",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Metadata)],
    );
}

#[test]
fn partitions_attach_under_a_weak_parent_lock_and_detach_under_a_strong_one() {
    check(
        "ALTER TABLE usage_ledger ATTACH PARTITION usage_old FOR VALUES FROM (MINVALUE) TO ('2026-01-01')",
        &[
            ("usage_ledger", "SHARE UPDATE EXCLUSIVE", Work::Metadata),
            ("usage_old", "ACCESS EXCLUSIVE", Work::Scan),
        ],
    );
    check(
        "ALTER TABLE usage_ledger DETACH PARTITION usage_old",
        &[
            ("usage_ledger", "ACCESS EXCLUSIVE", Work::Metadata),
            ("usage_old", "ACCESS EXCLUSIVE", Work::Metadata),
        ],
    );
    check(
        "ALTER TABLE usage_ledger DETACH PARTITION usage_old CONCURRENTLY",
        &[
            ("usage_ledger", "SHARE UPDATE EXCLUSIVE", Work::Metadata),
            ("usage_old", "ACCESS EXCLUSIVE", Work::Metadata),
        ],
    );
}

#[test]
fn set_storage_parameters_is_weak_and_set_logged_rewrites() {
    check(
        "ALTER TABLE usage_ledger SET (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.01)",
        &[("usage_ledger", "SHARE UPDATE EXCLUSIVE", Work::Metadata)],
    );
    check(
        "ALTER TABLE usage_ledger RESET (fillfactor)",
        &[("usage_ledger", "SHARE UPDATE EXCLUSIVE", Work::Metadata)],
    );
    check(
        "ALTER TABLE usage_ledger SET LOGGED",
        &[("usage_ledger", "ACCESS EXCLUSIVE", Work::Rewrite)],
    );
    check(
        "ALTER TABLE usage_ledger SET TABLESPACE fast",
        &[("usage_ledger", "ACCESS EXCLUSIVE", Work::Rewrite)],
    );
}

#[test]
fn drops_take_access_exclusive_and_drop_column_does_not_rewrite() {
    check(
        "ALTER TABLE api_keys DROP COLUMN IF EXISTS owner",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Metadata)],
    );
    check(
        "DROP TABLE IF EXISTS usage_events, old_notes CASCADE",
        &[
            ("usage_events", "ACCESS EXCLUSIVE", Work::Metadata),
            ("old_notes", "ACCESS EXCLUSIVE", Work::Metadata),
        ],
    );
    check(
        "DROP INDEX IF EXISTS keys_team",
        &[(
            "the table of index keys_team",
            "ACCESS EXCLUSIVE",
            Work::Metadata,
        )],
    );
    check(
        "DROP INDEX CONCURRENTLY IF EXISTS public.keys_team",
        &[(
            "the table of index public.keys_team",
            "SHARE UPDATE EXCLUSIVE",
            Work::Metadata,
        )],
    );
    check(
        "DROP TRIGGER IF EXISTS usage_forward ON usage_events",
        &[("usage_events", "ACCESS EXCLUSIVE", Work::Metadata)],
    );
    check(
        "DROP FUNCTION IF EXISTS obleth_copy(int)",
        &[("-", "none", Work::Metadata)],
    );
}

#[test]
fn create_trigger_takes_share_row_exclusive() {
    check(
        "CREATE OR REPLACE TRIGGER usage_forward AFTER INSERT ON usage_events FOR EACH ROW EXECUTE FUNCTION forward()",
        &[("usage_events", "SHARE ROW EXCLUSIVE", Work::Metadata)],
    );
    check(
        "CREATE CONSTRAINT TRIGGER t AFTER INSERT ON public.nodes DEFERRABLE FOR EACH ROW EXECUTE FUNCTION f()",
        &[("public.nodes", "SHARE ROW EXCLUSIVE", Work::Metadata)],
    );
}

#[test]
fn lock_table_takes_the_mode_it_names_or_access_exclusive() {
    check(
        "LOCK TABLE api_keys, teams IN SHARE ROW EXCLUSIVE MODE NOWAIT",
        &[
            ("api_keys", "SHARE ROW EXCLUSIVE", Work::Metadata),
            ("teams", "SHARE ROW EXCLUSIVE", Work::Metadata),
        ],
    );
    check(
        "LOCK api_keys",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Metadata)],
    );
    check(
        "LOCK TABLE ONLY api_keys IN ACCESS SHARE MODE",
        &[("api_keys", "ACCESS SHARE", Work::Metadata)],
    );
}

#[test]
fn dml_takes_row_exclusive_and_without_where_touches_every_row() {
    check(
        "INSERT INTO settings (key, value) VALUES ('a', '1') ON CONFLICT DO NOTHING",
        &[("settings", "ROW EXCLUSIVE", Work::Rows)],
    );
    check(
        "UPDATE api_keys SET tier = 0 WHERE tier IS NULL",
        &[("api_keys", "ROW EXCLUSIVE", Work::Rows)],
    );
    check(
        "UPDATE ONLY api_keys AS k SET tier = (SELECT 1 WHERE true)",
        &[("api_keys", "ROW EXCLUSIVE", Work::EveryRow)],
    );
    check(
        "DELETE FROM usage_events",
        &[("usage_events", "ROW EXCLUSIVE", Work::EveryRow)],
    );
    check(
        "DELETE FROM usage_events WHERE at < now() - interval '90 days'",
        &[("usage_events", "ROW EXCLUSIVE", Work::Rows)],
    );
    check(
        "WITH old AS (SELECT id FROM usage_events) DELETE FROM usage_events USING old",
        &[("usage_events", "ROW EXCLUSIVE", Work::EveryRow)],
    );
    check(
        "TRUNCATE usage_events",
        &[("usage_events", "ACCESS EXCLUSIVE", Work::Metadata)],
    );
    assert!(only("DELETE FROM usage_events")
        .action
        .contains("every row"));
}

#[test]
fn code_is_reported_as_opaque_not_guessed() {
    for sql in [
        "DO $$ BEGIN PERFORM 1; END $$",
        "SELECT obleth_usage_copy_step(10000)",
        "SELECT \"MyFn\"()",
        "CALL refresh_rollups()",
    ] {
        let e = only(sql);
        assert!(e.is_opaque(), "{sql}");
        assert_eq!(e.target, None, "{sql}");
        assert!(e.action.contains(RUNS_CODE), "{sql}: {}", e.action);
    }
    check(
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
        &[("-", "none", Work::Metadata)],
    );
    check("SELECT 1", &[("-", "ACCESS SHARE", Work::Rows)]);
    check(
        "CREATE OR REPLACE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
        &[("-", "none", Work::Metadata)],
    );
}

#[test]
fn unknown_statements_say_so() {
    let e = only("SECURITY LABEL ON TABLE api_keys IS 'x'");
    assert_eq!(e.lock, Lock::Unknown);
    assert!(e.action.contains("does not know"), "{}", e.action);
}

#[test]
fn maintenance_and_reindex() {
    check(
        "VACUUM (ANALYZE) api_keys",
        &[("api_keys", "SHARE UPDATE EXCLUSIVE", Work::Scan)],
    );
    check(
        "VACUUM FULL api_keys",
        &[("api_keys", "ACCESS EXCLUSIVE", Work::Rewrite)],
    );
    check(
        "REINDEX INDEX CONCURRENTLY keys_team",
        &[(
            "the table of index keys_team",
            "SHARE UPDATE EXCLUSIVE",
            Work::Scan,
        )],
    );
    check(
        "REINDEX TABLE api_keys",
        &[("api_keys", "SHARE", Work::Scan)],
    );
    check(
        "ALTER INDEX keys_team RENAME TO keys_by_team",
        &[(
            "the table of index keys_team",
            "SHARE UPDATE EXCLUSIVE",
            Work::Metadata,
        )],
    );
}

#[test]
fn the_window_rule_needs_a_big_table_and_a_blocking_lock_or_long_work() {
    let threshold = 10 * 1024 * 1024 * 1024;
    let big = threshold + 1;
    let add = only("ALTER TABLE t ADD COLUMN c int");
    assert!(add.needs_window(big, threshold));
    assert!(!add.needs_window(threshold, threshold));
    let concurrent = only("CREATE INDEX CONCURRENTLY i ON t (c)");
    assert!(concurrent.needs_window(big, threshold), "long build");
    let storage = only("ALTER TABLE t SET (fillfactor = 90)");
    assert!(!storage.needs_window(big, threshold));
    let insert = only("INSERT INTO t VALUES (1)");
    assert!(!insert.needs_window(big, threshold));
    let every = only("UPDATE t SET c = 1");
    assert!(every.needs_window(big, threshold));
}

#[test]
fn every_shipped_migration_statement_is_classified() {
    let set = crate::migrate::MigrationSet::embedded().unwrap();
    for def in set.iter() {
        for (statement, effects) in classify_sql(&def.sql) {
            assert!(!effects.is_empty(), "{}:{}", def.file, statement.line);
            for e in &effects {
                assert!(
                    !e.action.contains("does not know"),
                    "{}:{}: {}",
                    def.file,
                    statement.line,
                    e.action
                );
            }
        }
    }
}

#[test]
fn the_remaining_kinds_take_what_the_manual_says() {
    let cases: &[(&str, &[Expected<'_>])] = &[
        (
            "ALTER TABLE api_keys ADD COLUMN n int DEFAULT 0 CHECK (n >= 0)",
            &[("api_keys", "ACCESS EXCLUSIVE", Work::Scan)],
        ),
        (
            "ALTER TABLE usage_events DISABLE TRIGGER usage_events_add_totals",
            &[("usage_events", "SHARE ROW EXCLUSIVE", Work::Metadata)],
        ),
        (
            "ALTER TABLE usage_events ENABLE ALWAYS TRIGGER t",
            &[("usage_events", "SHARE ROW EXCLUSIVE", Work::Metadata)],
        ),
        (
            "ALTER TABLE api_keys OWNER TO obleth",
            &[("api_keys", "ACCESS EXCLUSIVE", Work::Metadata)],
        ),
        (
            "ALTER TABLE api_keys RENAME COLUMN name TO label",
            &[("api_keys", "ACCESS EXCLUSIVE", Work::Metadata)],
        ),
        (
            "ALTER TABLE IF EXISTS ONLY api_keys CLUSTER ON keys_team",
            &[("api_keys", "SHARE UPDATE EXCLUSIVE", Work::Metadata)],
        ),
        (
            "CREATE TABLE copy AS SELECT * FROM api_keys",
            &[
                ("-", "none", Work::Metadata),
                ("-", "unknown", Work::Unknown),
            ],
        ),
        (
            "COMMENT ON TABLE api_keys IS 'keys'",
            &[("api_keys", "SHARE UPDATE EXCLUSIVE", Work::Metadata)],
        ),
        (
            "COMMENT ON COLUMN api_keys.name IS 'shown'",
            &[("api_keys", "SHARE UPDATE EXCLUSIVE", Work::Metadata)],
        ),
        (
            "COMMENT ON FUNCTION f() IS 'x'",
            &[("-", "none", Work::Metadata)],
        ),
        (
            "REFRESH MATERIALIZED VIEW CONCURRENTLY daily",
            &[("daily", "EXCLUSIVE", Work::Rewrite)],
        ),
        (
            "REFRESH MATERIALIZED VIEW daily",
            &[("daily", "ACCESS EXCLUSIVE", Work::Rewrite)],
        ),
        (
            "WITH moved AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM moved",
            &[
                ("b", "ROW EXCLUSIVE", Work::Rows),
                ("-", "unknown", Work::Unknown),
            ],
        ),
        ("ANALYZE", &[("-", "SHARE UPDATE EXCLUSIVE", Work::Scan)]),
        ("SET lock_timeout = '5s'", &[("-", "none", Work::Metadata)]),
        (
            "ALTER SEQUENCE s OWNED BY t.id",
            &[("-", "none", Work::Metadata)],
        ),
        (
            "DROP MATERIALIZED VIEW IF EXISTS daily",
            &[("daily", "ACCESS EXCLUSIVE", Work::Metadata)],
        ),
        (
            "CREATE UNLOGGED TABLE IF NOT EXISTS scratch (id int)",
            &[("-", "none", Work::Metadata)],
        ),
    ];
    for (sql, expected) in cases {
        check(sql, expected);
    }
}

mod properties {
    use proptest::prelude::*;

    use super::super::*;

    /// Words and punctuation statements are made of, so random sequences
    /// reach deep into the classifier's branches.
    const VOCABULARY: &[&str] = &[
        "create",
        "alter",
        "drop",
        "table",
        "index",
        "unique",
        "concurrently",
        "if",
        "not",
        "exists",
        "only",
        "on",
        "add",
        "column",
        "constraint",
        "foreign",
        "key",
        "references",
        "check",
        "valid",
        "validate",
        "type",
        "set",
        "reset",
        "default",
        "null",
        "attach",
        "detach",
        "partition",
        "of",
        "for",
        "lock",
        "in",
        "mode",
        "share",
        "row",
        "exclusive",
        "access",
        "update",
        "insert",
        "into",
        "delete",
        "from",
        "where",
        "with",
        "as",
        "select",
        "do",
        "call",
        "trigger",
        "truncate",
        "vacuum",
        "full",
        "reindex",
        "refresh",
        "materialized",
        "view",
        "comment",
        "rename",
        "to",
        "t",
        "u",
        "i",
        "random",
        "(",
        ")",
        ",",
        ".",
        "*",
        ";",
        "'x'",
        "1",
        "$$ x $$",
        "\"Q\"",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_statement_gets_an_answer_and_every_table_a_mode(
            words in proptest::collection::vec(proptest::sample::select(VOCABULARY), 0..24)
        ) {
            let sql = words.join(" ");
            for (_, effects) in classify_sql(&sql) {
                prop_assert!(!effects.is_empty(), "{sql}");
                for e in effects {
                    if e.target.is_some() {
                        prop_assert!(e.lock.mode().is_some(), "{sql}: {e:?}");
                    }
                    if e.is_opaque() {
                        prop_assert_eq!(e.work, Work::Unknown, "{}", sql);
                    }
                }
            }
        }
    }
}
