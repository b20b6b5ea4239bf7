//! Fuzzes the migration statement splitter with arbitrary text (invalid UTF-8
//! is replaced, so every input reaches the lexer).
//!
//! Checks: no panic; every statement has tokens, a line within the file, and a
//! text taken from the file; a statement's text splits again into one
//! statement (a `;` the splitter kept inside a statement stays inside it).

#![no_main]

use libfuzzer_sys::fuzz_target;
use obleth_config::migrate::sql::split_statements;

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data);
    let lines = 1 + sql.matches('\n').count();
    for statement in split_statements(&sql) {
        assert!(!statement.tokens.is_empty(), "a statement without tokens");
        assert!(
            (1..=lines).contains(&statement.line),
            "line {} of {lines}",
            statement.line
        );
        assert!(
            sql.contains(&statement.text),
            "a text that is not in the file"
        );
        let again = split_statements(&statement.text);
        assert!(
            again.len() <= 1,
            "a statement's text split into {} statements",
            again.len()
        );
    }
});
