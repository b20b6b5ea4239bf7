//! A small PostgreSQL lexer that splits migration files into statements and tokens.
//!
//! It knows just enough of the lexical grammar to find statement boundaries the
//! way `psql` does: comments (nested block comments included), standard and
//! `E''` strings, quoted identifiers and dollar-quoted bodies never end a
//! statement, and neither does a `;` inside parentheses or inside a
//! `BEGIN ATOMIC ... END` function body. It does not parse SQL; the migration
//! lint matches token sequences on top of it.

use std::fmt;

/// One lexical token of a statement.
///
/// Comments are dropped, and the contents of strings and dollar-quoted bodies
/// are not tokenised, so a rule that matches words never sees text that is data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An unquoted keyword or identifier, lowercased as PostgreSQL folds it.
    Word(String),
    /// The content of a `"quoted identifier"`, case kept and `""` unescaped.
    Ident(String),
    /// A string constant of any form, or a dollar-quoted body.
    Str,
    /// A numeric constant.
    Number,
    /// Any other single character, such as `(`, `,`, `.` or `*`.
    Punct(char),
}

impl Token {
    /// The lowercased word, if this token is an unquoted word.
    pub fn word(&self) -> Option<&str> {
        match self {
            Token::Word(w) => Some(w),
            _ => None,
        }
    }

    /// Whether this token is the unquoted word `w`, which must be lowercase.
    pub fn is_word(&self, w: &str) -> bool {
        self.word() == Some(w)
    }

    /// The name this token spells, whether quoted or not.
    pub fn name(&self) -> Option<&str> {
        match self {
            Token::Word(w) | Token::Ident(w) => Some(w),
            _ => None,
        }
    }
}

/// One statement of a migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The original text from the first token to the last, without the
    /// terminating `;` and without comments before or after it.
    pub text: String,
    /// The 1-based line of the statement's first token.
    pub line: usize,
    pub tokens: Vec<Token>,
}

impl Statement {
    /// The unquoted words of the statement, in order.
    pub fn words(&self) -> impl Iterator<Item = &str> + '_ {
        self.tokens.iter().filter_map(Token::word)
    }

    /// Whether the statement opens with the given lowercase words.
    pub fn starts_with(&self, words: &[&str]) -> bool {
        self.tokens.seq_at(0, words)
    }

    /// Whether the given lowercase words occur consecutively anywhere.
    pub fn has_seq(&self, words: &[&str]) -> bool {
        self.tokens.find_seq(words).is_some()
    }
}

/// A possibly schema-qualified object name, such as `public.users`.
///
/// Unquoted parts are lowercased and quoted parts keep their case, so two names
/// compare equal exactly when PostgreSQL would resolve them to the same parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectName {
    pub schema: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write_ident(f, schema)?;
            f.write_str(".")?;
        }
        write_ident(f, &self.name)
    }
}

/// Writes an identifier, quoting it when it would not read back unchanged.
fn write_ident(f: &mut fmt::Formatter<'_>, ident: &str) -> fmt::Result {
    let plain = ident
        .bytes()
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_lowercase())
        && ident
            .bytes()
            .all(|b| b == b'_' || b == b'$' || b.is_ascii_lowercase() || b.is_ascii_digit());
    if plain {
        f.write_str(ident)
    } else {
        write!(f, "\"{}\"", ident.replace('"', "\"\""))
    }
}

/// Matching helpers over a run of tokens, such as a statement or one clause of it.
///
/// Word patterns are lowercase, because unquoted words are stored lowercased.
pub trait TokenSlice {
    /// Whether the tokens at `at` are the given words.
    fn seq_at(&self, at: usize, words: &[&str]) -> bool;
    /// The index where the given words first occur, at any nesting depth.
    fn find_seq(&self, words: &[&str]) -> Option<usize>;
    /// The index where the given words first occur outside parentheses.
    fn find_top_seq(&self, words: &[&str]) -> Option<usize>;
    /// The name at `at` (`name`, `schema.name`, quoted or not) and the index
    /// after it. A three-part `db.schema.name` keeps its last two parts.
    fn name_at(&self, at: usize) -> Option<(ObjectName, usize)>;
    /// The tokens split on `sep` outside parentheses, such as the
    /// comma-separated actions of one `ALTER TABLE`.
    fn split_top_level(&self, sep: char) -> Vec<&[Token]>;
}

impl TokenSlice for [Token] {
    fn seq_at(&self, at: usize, words: &[&str]) -> bool {
        self.get(at..at.saturating_add(words.len()))
            .is_some_and(|run| run.iter().zip(words).all(|(t, w)| t.is_word(w)))
    }

    fn find_seq(&self, words: &[&str]) -> Option<usize> {
        (0..self.len()).find(|&i| self.seq_at(i, words))
    }

    fn find_top_seq(&self, words: &[&str]) -> Option<usize> {
        let mut depth = 0usize;
        for (i, token) in self.iter().enumerate() {
            match token {
                Token::Punct('(') => depth += 1,
                Token::Punct(')') => depth = depth.saturating_sub(1),
                _ if depth == 0 && self.seq_at(i, words) => return Some(i),
                _ => {}
            }
        }
        None
    }

    fn name_at(&self, at: usize) -> Option<(ObjectName, usize)> {
        let mut parts = vec![self.get(at)?.name()?.to_owned()];
        let mut next = at + 1;
        while let (Some(Token::Punct('.')), Some(part)) =
            (self.get(next), self.get(next + 1).and_then(Token::name))
        {
            parts.push(part.to_owned());
            next += 2;
        }
        let name = parts.pop()?;
        let schema = parts.pop();
        Some((ObjectName { schema, name }, next))
    }

    fn split_top_level(&self, sep: char) -> Vec<&[Token]> {
        let mut parts = Vec::new();
        let mut depth = 0usize;
        let mut start = 0;
        for (i, token) in self.iter().enumerate() {
            match token {
                Token::Punct('(') => depth += 1,
                Token::Punct(')') => depth = depth.saturating_sub(1),
                Token::Punct(c) if *c == sep && depth == 0 => {
                    parts.push(&self[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&self[start..]);
        parts
    }
}

/// Splits a migration file into its statements, dropping empty ones.
///
/// A `;` ends a statement only outside strings, comments, quoted identifiers,
/// dollar quotes, parentheses and the `BEGIN ... END` body of a
/// `CREATE FUNCTION` or `CREATE PROCEDURE`, which is where `psql` splits too.
/// Unterminated strings and comments run to the end of the file; the server
/// reports those, so the lexer does not.
pub fn split_statements(sql: &str) -> Vec<Statement> {
    let mut lexer = Lexer::new(sql);
    let mut pending = Pending::default();
    let mut statements = Vec::new();
    while let Some(lexeme) = lexer.next_lexeme() {
        if lexeme.token == Token::Punct(';') && pending.at_top_level() {
            statements.extend(pending.finish(sql));
        } else {
            pending.push(lexeme);
        }
    }
    statements.extend(pending.finish(sql));
    statements
}

/// A token with where it came from.
struct Lexeme {
    token: Token,
    start: usize,
    end: usize,
    line: usize,
}

/// The statement being collected, with the nesting that decides whether a `;`
/// ends it.
#[derive(Default)]
struct Pending {
    tokens: Vec<Token>,
    start: usize,
    end: usize,
    line: usize,
    paren_depth: usize,
    begin_depth: usize,
    /// The first letters of the statement's first four words when they are
    /// `create`, `or`, `replace`, `function` or `procedure`, else 0; this is
    /// psql's heuristic for spotting a routine with a SQL-standard body.
    head: [u8; 4],
    word_count: usize,
}

impl Pending {
    fn at_top_level(&self) -> bool {
        self.paren_depth == 0 && self.begin_depth == 0
    }

    fn push(&mut self, lexeme: Lexeme) {
        if self.tokens.is_empty() {
            self.start = lexeme.start;
            self.line = lexeme.line;
        }
        self.end = lexeme.end;
        match &lexeme.token {
            Token::Punct('(') => self.paren_depth += 1,
            Token::Punct(')') => self.paren_depth = self.paren_depth.saturating_sub(1),
            Token::Word(w) => self.track_begin(w),
            _ => {}
        }
        self.tokens.push(lexeme.token);
    }

    /// Follows `BEGIN ... END` nesting inside `CREATE [OR REPLACE] FUNCTION` and
    /// `PROCEDURE`, whose `BEGIN ATOMIC` bodies hold `;`-terminated statements.
    fn track_begin(&mut self, word: &str) {
        if matches!(word, "create" | "or" | "replace" | "function" | "procedure") {
            if let Some(slot) = self.head.get_mut(self.word_count) {
                *slot = word.as_bytes()[0];
            }
        }
        self.word_count += 1;
        let routine = matches!(
            self.head,
            [b'c', b'f' | b'p', ..] | [b'c', b'o', b'r', b'f' | b'p']
        );
        if !routine || self.paren_depth > 0 {
            return;
        }
        match word {
            "begin" => self.begin_depth += 1,
            // CASE also closes with END, which matters only inside a body.
            "case" if self.begin_depth > 0 => self.begin_depth += 1,
            "end" => self.begin_depth = self.begin_depth.saturating_sub(1),
            _ => {}
        }
    }

    /// Returns the collected statement, if it has any tokens, and starts afresh.
    fn finish(&mut self, sql: &str) -> Option<Statement> {
        let pending = std::mem::take(self);
        if pending.tokens.is_empty() {
            return None;
        }
        let text = sql.get(pending.start..pending.end).unwrap_or_default();
        Some(Statement {
            // Only the white space the lexer skips: `str::trim` would also
            // strip U+00A0 and the like, which are identifier characters.
            text: text.trim_matches(is_space).to_owned(),
            line: pending.line,
            tokens: pending.tokens,
        })
    }
}

/// A cursor over the source bytes.
///
/// Every byte with a special meaning is ASCII, and all bytes of a multi-byte
/// UTF-8 character count as identifier characters (as in PostgreSQL), so token
/// boundaries always fall on character boundaries.
struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// The line at `line_pos`, advanced lazily as tokens are found.
    line: usize,
    line_pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src,
            bytes: src.as_bytes(),
            pos: 0,
            line: 1,
            line_pos: 0,
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.src.get(start..end).unwrap_or_default()
    }

    fn line_at(&mut self, pos: usize) -> usize {
        let newlines = self
            .bytes
            .get(self.line_pos..pos)
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line += newlines;
        self.line_pos = pos;
        self.line
    }

    fn next_lexeme(&mut self) -> Option<Lexeme> {
        self.skip_trivia();
        let start = self.pos;
        let first = self.peek(0)?;
        let token = match first {
            b'\'' => {
                self.pos += 1;
                self.skip_string(false);
                Token::Str
            }
            b'"' => Token::Ident(self.quoted_ident()),
            b'$' => match self.dollar_delimiter_len() {
                Some(len) => {
                    self.skip_dollar_body(len);
                    Token::Str
                }
                None => {
                    self.pos += 1;
                    Token::Punct('$')
                }
            },
            b'0'..=b'9' => self.number(),
            b'.' if self.peek(1).is_some_and(|b| b.is_ascii_digit()) => self.number(),
            b if is_ident_start(b) => self.word(),
            b => {
                self.pos += 1;
                Token::Punct(char::from(b))
            }
        };
        let line = self.line_at(start);
        Some(Lexeme {
            token,
            start,
            end: self.pos,
            line,
        })
    }

    /// Skips whitespace, `--` comments and nested `/* */` comments.
    fn skip_trivia(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b), _) if is_space(char::from(b)) => self.pos += 1,
                (Some(b'-'), Some(b'-')) => {
                    while self.peek(0).is_some_and(|b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => self.skip_block_comment(),
                _ => return,
            }
        }
    }

    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        loop {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return,
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                    if depth == 0 {
                        return;
                    }
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Skips a string's body and closing quote; the opening quote is consumed.
    /// `''` is a quote in every form, and `backslash` (an `E''` string) makes
    /// `\` escape the next byte.
    fn skip_string(&mut self, backslash: bool) {
        loop {
            match self.peek(0) {
                None => return,
                Some(b'\\') if backslash => self.pos = (self.pos + 2).min(self.bytes.len()),
                Some(b'\'') if self.peek(1) == Some(b'\'') => self.pos += 2,
                Some(b'\'') => {
                    self.pos += 1;
                    return;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Reads a quoted identifier from its opening quote and returns its content.
    fn quoted_ident(&mut self) -> String {
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek(0) {
                None => break,
                Some(b'"') if self.peek(1) == Some(b'"') => self.pos += 2,
                Some(b'"') => break,
                Some(_) => self.pos += 1,
            }
        }
        let content = self.slice(start, self.pos).replace("\"\"", "\"");
        if self.peek(0).is_some() {
            self.pos += 1;
        }
        content
    }

    /// The length of the `$tag$` opening delimiter at the cursor, if it is one.
    fn dollar_delimiter_len(&self) -> Option<usize> {
        let mut len = 1;
        if self.peek(len).is_some_and(is_ident_start) {
            while self
                .peek(len)
                .is_some_and(|b| is_ident_start(b) || b.is_ascii_digit())
            {
                len += 1;
            }
        }
        (self.peek(len) == Some(b'$')).then_some(len + 1)
    }

    fn skip_dollar_body(&mut self, delimiter_len: usize) {
        let delimiter = self.slice(self.pos, self.pos + delimiter_len);
        let body = self.pos + delimiter_len;
        self.pos = match self.src.get(body..).and_then(|rest| rest.find(delimiter)) {
            Some(at) => body + at + delimiter_len,
            None => self.bytes.len(),
        };
    }

    /// Reads a numeric constant: digits, a fraction, an exponent, `_`
    /// separators and `0x`-style prefixes. Anything odd still stays one token,
    /// which is all splitting needs.
    fn number(&mut self) -> Token {
        while let Some(b) = self.peek(0) {
            let exponent_sign = matches!(b, b'+' | b'-')
                && matches!(self.bytes.get(self.pos.wrapping_sub(1)), Some(b'e' | b'E'))
                && self.peek(1).is_some_and(|d| d.is_ascii_digit());
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || exponent_sign {
                self.pos += 1;
            } else {
                break;
            }
        }
        Token::Number
    }

    /// Reads an unquoted word, or a string or identifier behind a prefix such
    /// as `E'..'`, `X'..'` or `U&".."`.
    fn word(&mut self) -> Token {
        let start = self.pos;
        while self
            .peek(0)
            .is_some_and(|b| is_ident_start(b) || b.is_ascii_digit() || b == b'$')
        {
            self.pos += 1;
        }
        let word = self.slice(start, self.pos).to_ascii_lowercase();
        match (word.as_str(), self.peek(0), self.peek(1)) {
            ("e", Some(b'\''), _) => {
                self.pos += 1;
                self.skip_string(true);
                Token::Str
            }
            ("b" | "x" | "n", Some(b'\''), _) => {
                self.pos += 1;
                self.skip_string(false);
                Token::Str
            }
            ("u", Some(b'&'), Some(b'\'')) => {
                self.pos += 2;
                self.skip_string(false);
                Token::Str
            }
            ("u", Some(b'&'), Some(b'"')) => {
                self.pos += 1;
                Token::Ident(self.quoted_ident())
            }
            _ => Token::Word(word),
        }
    }
}

/// White space between tokens, as PostgreSQL's lexer has it.
fn is_space(c: char) -> bool {
    c.is_ascii_whitespace() || c == '\x0b'
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        split_statements(sql).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_only_on_top_level_semicolons() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("plain", "SELECT 1; SELECT 2;", &["SELECT 1", "SELECT 2"]),
            (
                "no trailing semicolon",
                "SELECT 1;\nSELECT 2",
                &["SELECT 1", "SELECT 2"],
            ),
            (
                "string",
                "SELECT 'a;b'; SELECT 2",
                &["SELECT 'a;b'", "SELECT 2"],
            ),
            (
                "doubled quote",
                "SELECT 'it''s; ok';",
                &["SELECT 'it''s; ok'"],
            ),
            (
                "backslash is literal in a standard string",
                r"SELECT 'a\'; SELECT 2",
                &[r"SELECT 'a\'", "SELECT 2"],
            ),
            (
                "escape string",
                r"SELECT E'a\'; b'; SELECT 2",
                &[r"SELECT E'a\'; b'", "SELECT 2"],
            ),
            ("line comment", "SELECT 1 -- x; y\n;", &["SELECT 1"]),
            ("block comment", "SELECT /* ; */ 1;", &["SELECT /* ; */ 1"]),
            (
                "nested block comment",
                "SELECT /* a /* ; */ still ; */ 1; SELECT 2",
                &["SELECT /* a /* ; */ still ; */ 1", "SELECT 2"],
            ),
            (
                "quoted identifier",
                "SELECT \"a;b\" FROM t;",
                &["SELECT \"a;b\" FROM t"],
            ),
            (
                "dollar quote",
                "DO $$ BEGIN PERFORM 1; END $$; SELECT 2",
                &["DO $$ BEGIN PERFORM 1; END $$", "SELECT 2"],
            ),
            (
                "tagged dollar quote holding $$",
                "DO $fn$ SELECT '$$'; $$ ; $fn$; SELECT 2",
                &["DO $fn$ SELECT '$$'; $$ ; $fn$", "SELECT 2"],
            ),
            (
                "positional parameter is not a dollar quote",
                "PREPARE p AS SELECT $1; SELECT 2",
                &["PREPARE p AS SELECT $1", "SELECT 2"],
            ),
            (
                "dollar inside an identifier",
                "SELECT a$$b; SELECT 2",
                &["SELECT a$$b", "SELECT 2"],
            ),
            (
                "parentheses",
                "CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2); SELECT 3",
                &[
                    "CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2)",
                    "SELECT 3",
                ],
            ),
            (
                "begin atomic body",
                "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC \
                 SELECT CASE WHEN true THEN 1 END; SELECT 2; END; SELECT 3",
                &[
                    "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC \
                     SELECT CASE WHEN true THEN 1 END; SELECT 2; END",
                    "SELECT 3",
                ],
            ),
            (
                "transaction begin is not a body",
                "BEGIN; SELECT 1; END;",
                &["BEGIN", "SELECT 1", "END"],
            ),
            (
                "empty statements",
                ";; \n -- only a comment\n ; /* x */ ;",
                &[],
            ),
            ("unterminated string", "SELECT 'a; b", &["SELECT 'a; b"]),
            ("unterminated comment", "SELECT 1; /* ; ", &["SELECT 1"]),
        ];
        for (name, sql, expected) in cases {
            assert_eq!(texts(sql), *expected, "case: {name}");
        }
    }

    #[test]
    fn statements_start_at_the_line_of_their_first_token() {
        let sql = "-- header\n\nCREATE TABLE a (\n  id int\n);\n/* a\n comment */ ALTER TABLE a\n  ADD b text;\n\n\nSELECT 'x\ny'; SELECT 2;";
        let lines: Vec<usize> = split_statements(sql).iter().map(|s| s.line).collect();
        assert_eq!(lines, [3, 7, 11, 12]);
    }

    #[test]
    fn tokens_fold_words_and_keep_quoted_names() {
        let cases: &[(&str, Vec<Token>)] = &[
            (
                "ALTER TABLE Public.\"Users\" ADD x numeric(10, 2) DEFAULT 1.5e-3",
                vec![
                    Token::Word("alter".into()),
                    Token::Word("table".into()),
                    Token::Word("public".into()),
                    Token::Punct('.'),
                    Token::Ident("Users".into()),
                    Token::Word("add".into()),
                    Token::Word("x".into()),
                    Token::Word("numeric".into()),
                    Token::Punct('('),
                    Token::Number,
                    Token::Punct(','),
                    Token::Number,
                    Token::Punct(')'),
                    Token::Word("default".into()),
                    Token::Number,
                ],
            ),
            (
                "SELECT E'\\'', x'ff', U&\"d\\0061\", \"a\"\"b\", $$ body $$, $1",
                vec![
                    Token::Word("select".into()),
                    Token::Str,
                    Token::Punct(','),
                    Token::Str,
                    Token::Punct(','),
                    Token::Ident("d\\0061".into()),
                    Token::Punct(','),
                    Token::Ident("a\"b".into()),
                    Token::Punct(','),
                    Token::Str,
                    Token::Punct(','),
                    Token::Punct('$'),
                    Token::Number,
                ],
            ),
        ];
        for (sql, expected) in cases {
            let statements = split_statements(sql);
            assert_eq!(statements.len(), 1, "{sql}");
            assert_eq!(statements[0].tokens, *expected, "{sql}");
        }
    }

    #[test]
    fn matchers_find_words_names_and_clauses() {
        let stmt = &split_statements(
            "ALTER TABLE IF EXISTS app.\"Orders\" ADD a numeric(10,2), ADD CHECK (a IS NOT NULL)",
        )[0];
        assert!(stmt.starts_with(&["alter", "table", "if", "exists"]));
        assert!(stmt.has_seq(&["not", "null"]));
        assert_eq!(stmt.tokens.find_top_seq(&["not", "null"]), None);
        assert_eq!(stmt.words().next(), Some("alter"));

        let (name, next) = stmt.tokens.name_at(4).expect("a name");
        assert_eq!(
            name,
            ObjectName {
                schema: Some("app".into()),
                name: "Orders".into()
            }
        );
        assert_eq!(name.to_string(), "app.\"Orders\"");

        let clauses = stmt.tokens[next..].split_top_level(',');
        assert_eq!(clauses.len(), 2);
        assert!(clauses[0].seq_at(0, &["add", "a", "numeric"]));
        assert!(clauses[1].seq_at(0, &["add", "check"]));
    }
}
