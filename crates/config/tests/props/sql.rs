//! Properties of `migrate::sql::split_statements`: it never panics, statements
//! joined with `;` split back into exactly those statements whatever strings,
//! quoted identifiers, comments and dollar quotes hold, and what it leaves out
//! of the statements is only whitespace, `;` and comments.

use obleth_config::migrate::sql::{split_statements, Statement};
use proptest::prelude::*;

/// One token-bearing piece of a statement. None of them contains a bare `;`
/// outside quotes, and none is a word that starts a `BEGIN ATOMIC` body.
fn piece() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        // Words, some of them the prefixes of special strings when a quote follows.
        "(select|insert|alter|table|from|where|e|x|u|n|b|t_1|Foo\\$bar|é)",
        "[0-9]{1,4}(\\.[0-9]{1,2})?",
        "[,.*=+<>]",
        // A standard string: `''` is a quote, a backslash is just a character.
        "'([a-z ;\"$\\\\]|'')*'",
        // An escape string: a backslash escapes the next character.
        "[eE]'([a-z ;\"$]|''|\\\\'|\\\\\\\\)*'",
        // A quoted identifier, `""` unescaped.
        "\"([a-z ;'$]|\"\")+\"",
        // A positional parameter, which is not a dollar quote.
        "\\$[1-9]",
        // A dollar-quoted body, tagged or not; the body has no `$`, so it
        // cannot hold the closing delimiter early.
        ("(fn|a_1)?", "[a-z ;'\"()\n-]*").prop_map(|(tag, body)| format!("${tag}${body}${tag}$")),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        // Parentheses: a `;` inside them does not end the statement.
        prop::collection::vec(inner, 1..4).prop_map(|parts| format!("({})", parts.join("; ")))
    })
}

/// A comment that may stand between two pieces of a statement, with the
/// separator it needs after it.
fn comment() -> impl Strategy<Value = String> {
    prop_oneof![
        "/\\*[a-z ;'\"$]*(/\\*[a-z ;'\"]*\\*/)?[a-z ;]*\\*/ ",
        "--[a-z ;'\"$/*]*\n",
    ]
}

/// A statement as the text `split_statements` should return for it.
fn statement() -> impl Strategy<Value = String> {
    (
        piece(),
        prop::collection::vec(
            (
                prop::option::weighted(0.2, comment()),
                "[ \n\t]{1,2}",
                piece(),
            ),
            0..6,
        ),
    )
        .prop_map(|(first, rest)| {
            let mut text = first;
            for (comment, space, piece) in rest {
                text.push_str(&space);
                if let Some(comment) = comment {
                    text.push_str(&comment);
                }
                text.push_str(&piece);
            }
            text
        })
}

/// What may stand between statements: whitespace, comments and empty statements.
fn between() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just(" ".to_owned()),
            Just("\n".to_owned()),
            Just(";".to_owned()),
            comment(),
        ],
        0..4,
    )
    .prop_map(|parts| parts.concat())
}

/// Joins statements into a file: each is followed by `;` except, sometimes,
/// the last, and surrounded by what `between` makes.
fn file() -> impl Strategy<Value = (String, Vec<String>, Vec<usize>)> {
    (
        between(),
        prop::collection::vec((statement(), between()), 0..6),
        any::<bool>(),
    )
        .prop_map(|(lead, statements, final_semicolon)| {
            let mut sql = lead;
            let mut texts = Vec::new();
            let mut lines = Vec::new();
            let count = statements.len();
            for (i, (text, after)) in statements.into_iter().enumerate() {
                lines.push(1 + sql.matches('\n').count());
                sql.push_str(&text);
                if i + 1 < count || final_semicolon {
                    sql.push(';');
                } else {
                    // Without its `;`, a trailing line comment would run into
                    // the next statement; a newline keeps the file well formed.
                    sql.push('\n');
                }
                sql.push_str(&after);
                texts.push(text);
            }
            (sql, texts, lines)
        })
}

/// Characters that mean something to the lexer, so arbitrary input reaches
/// every branch rather than mostly words.
const SQL_ISH: &str = "[a-zA-Z0-9_ \n\t;'\"$()/*\\-eEuUxX&\\\\.,\u{a0}é]{0,160}";

/// Whether `gap`, text outside every statement, holds nothing but whitespace,
/// `;` and comments.
fn is_trivia(gap: &str) -> bool {
    split_statements(gap).is_empty()
}

/// Finds each statement's text in `sql`, in order and without overlap, such
/// that everything between them is trivia, backtracking over repeated texts.
fn account_for(sql: &str, statements: &[Statement], from: usize) -> bool {
    let Some((first, rest)) = statements.split_first() else {
        return is_trivia(&sql[from..]);
    };
    let mut search = from;
    while let Some(found) = sql[search..].find(&first.text) {
        let at = search + found;
        if is_trivia(&sql[from..at]) && account_for(sql, rest, at + first.text.len()) {
            return true;
        }
        match sql[at..].chars().next() {
            Some(c) => search = at + c.len_utf8(),
            None => break,
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn joined_statements_split_back_into_exactly_those_statements(
        (sql, texts, lines) in file(),
    ) {
        let statements = split_statements(&sql);
        let got: Vec<&str> = statements.iter().map(|s| s.text.as_str()).collect();
        prop_assert_eq!(&got, &texts, "splitting {:?}", sql);
        let got_lines: Vec<usize> = statements.iter().map(|s| s.line).collect();
        prop_assert_eq!(got_lines, lines, "lines of {:?}", sql);
        for statement in &statements {
            // A statement's own text is one statement with the same tokens.
            let again = split_statements(&statement.text);
            prop_assert_eq!(again.len(), 1, "re-splitting {:?}", statement.text);
            prop_assert_eq!(&again[0].tokens, &statement.tokens);
            prop_assert_eq!(&again[0].text, &statement.text);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_text_never_panics_and_nothing_but_trivia_is_left_out(
        sql in prop_oneof![any::<String>(), SQL_ISH],
    ) {
        let statements = split_statements(&sql);
        for statement in &statements {
            prop_assert!(!statement.tokens.is_empty());
            prop_assert!(statement.line >= 1 && statement.line <= 1 + sql.matches('\n').count());
        }
        prop_assert!(account_for(&sql, &statements, 0), "{:?} split into {:?}", sql, statements);
        for statement in &statements {
            // A `;` kept inside a statement stays inside it on its own.
            prop_assert!(split_statements(&statement.text).len() <= 1, "{:?}", statement.text);
        }
    }
}

/// Found by the `sql_split` fuzz target: `str::trim` stripped the leading
/// U+00A0 that the lexer had read as part of the word `\u{a0}$$`, so the text
/// began with a dollar quote the splitter never saw, and split again in two.
#[test]
fn non_ascii_white_space_is_part_of_a_word_and_kept_in_the_text() {
    let sql = "\u{a0}$$\u{1}$$;5";
    let statements = split_statements(sql);
    let texts: Vec<&str> = statements.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, [sql]);
    assert_eq!(split_statements(&statements[0].text), statements);

    let texts: Vec<String> = split_statements("SELECT 1\u{a0};\u{2003}SELECT 2")
        .into_iter()
        .map(|s| s.text)
        .collect();
    assert_eq!(texts, ["SELECT 1\u{a0}", "\u{2003}SELECT 2"]);
}
