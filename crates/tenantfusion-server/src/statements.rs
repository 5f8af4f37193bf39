//! The statements of one simple-protocol `Query` message, and what kind
//! each is.
//!
//! A `Query` may carry several statements separated by `;`; PostgreSQL runs
//! them one after another, each to its end before the next starts (so
//! `INSERT ...; SELECT ...` sees the insert, and an error stops the rest).
//! The engine takes one statement at a time, so the text is cut here, at the
//! semicolons the SQL tokenizer sees (not those inside strings, quoted
//! names or comments). The wire protocol is PostgreSQL's, so the text is
//! read as PostgreSQL SQL; a cut in the wrong place can only give the
//! engine a piece it refuses as a syntax error.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

/// One statement of a `Query` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece<'a> {
    /// Its text, without the `;`.
    pub(crate) sql: &'a str,
    /// What kind of statement it is, from its leading keywords.
    pub(crate) kind: Kind,
}

/// What a statement is, as far as the wire protocol cares: what its
/// `CommandComplete` tag says and whether it counts changed rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Returns rows; the tag is `<tag> <rows>` (`SELECT 3`).
    Rows(&'static str),
    /// `INSERT`, `UPDATE` or `DELETE`: the engine answers with a count,
    /// sent as the tag (`INSERT 0 3`, `UPDATE 2`).
    Change(&'static str),
    /// `BEGIN`/`START TRANSACTION`.
    Begin,
    /// `COMMIT`/`END`.
    Commit,
    /// `ROLLBACK`/`ABORT`.
    Rollback,
    /// Anything else; the tag is its leading keywords (`CREATE TABLE`).
    Other(String),
}

impl Kind {
    /// The kind of a statement whose first keywords are `first`, `second`.
    fn of(first: &str, second: Option<&str>) -> Kind {
        match first {
            "SELECT" | "WITH" | "VALUES" | "TABLE" => Kind::Rows("SELECT"),
            "SHOW" => Kind::Rows("SHOW"),
            "EXPLAIN" | "DESCRIBE" => Kind::Rows("EXPLAIN"),
            "INSERT" => Kind::Change("INSERT"),
            "UPDATE" => Kind::Change("UPDATE"),
            "DELETE" => Kind::Change("DELETE"),
            "BEGIN" | "START" => Kind::Begin,
            "COMMIT" | "END" => Kind::Commit,
            "ROLLBACK" | "ABORT" => Kind::Rollback,
            "CREATE" | "DROP" | "ALTER" => match second {
                Some(second) => Kind::Other(format!("{first} {second}")),
                None => Kind::Other(first.to_string()),
            },
            other => Kind::Other(other.to_string()),
        }
    }

    /// A word for the kind, from a fixed set (for metrics labels): `select`,
    /// `show`, `explain`, `insert`, `update`, `delete`, `transaction`,
    /// `ddl` (CREATE, DROP, ALTER) or `other`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Kind::Rows("SHOW") => "show",
            Kind::Rows("EXPLAIN") => "explain",
            Kind::Rows(_) => "select",
            Kind::Change("INSERT") => "insert",
            Kind::Change("UPDATE") => "update",
            Kind::Change("DELETE") => "delete",
            Kind::Change(_) => "other",
            Kind::Begin | Kind::Commit | Kind::Rollback => "transaction",
            Kind::Other(tag)
                if ["CREATE", "DROP", "ALTER"]
                    .iter()
                    .any(|word| tag.split(' ').next() == Some(*word)) =>
            {
                "ddl"
            }
            Kind::Other(_) => "other",
        }
    }

    /// Whether the statement is one the engine can prepare (plan once, run
    /// with parameters): queries and changes.
    pub(crate) fn is_preparable(&self) -> bool {
        matches!(self, Kind::Rows("SELECT") | Kind::Change(_))
    }
}

/// The statements of `sql`, empty ones left out. Text the tokenizer cannot
/// read (an unterminated string, say) is one statement, for the engine to
/// refuse with its own error.
pub(crate) fn split(sql: &str) -> Vec<Piece<'_>> {
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        // Its first two words name it well enough for the error's answer.
        let words: Vec<String> = sql
            .split_whitespace()
            .take(2)
            .map(str::to_ascii_uppercase)
            .collect();
        return vec![piece(sql, &words)];
    };
    let offsets = Offsets::new(sql);
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut words: Vec<String> = Vec::with_capacity(2);
    let mut nonblank = false;
    for token in &tokens {
        match &token.token {
            Token::SemiColon => {
                let end = offsets.byte(token.span.start);
                if nonblank {
                    pieces.push(piece(&sql[start..end], &words));
                }
                start = end + 1;
                words.clear();
                nonblank = false;
            }
            Token::Whitespace(_) | Token::EOF => {}
            Token::Word(word) => {
                nonblank = true;
                if words.len() < 2 {
                    words.push(word.value.to_ascii_uppercase());
                }
            }
            other => {
                // Only leading keywords name the statement; `(SELECT ...)`
                // is a query.
                if !nonblank && *other == Token::LParen {
                    words.push("SELECT".to_string());
                }
                nonblank = true;
                if words.len() < 2 {
                    words.push(String::new());
                }
            }
        }
    }
    if nonblank {
        pieces.push(piece(&sql[start..], &words));
    }
    pieces
}

fn piece<'a>(sql: &'a str, words: &[String]) -> Piece<'a> {
    let first = words.first().map(String::as_str).unwrap_or_default();
    let second = words.get(1).map(String::as_str).filter(|w| !w.is_empty());
    Piece {
        sql,
        kind: Kind::of(first, second),
    }
}

/// Whether `text` starts with `keyword` (any case) as a whole word.
pub(crate) fn starts_with_keyword(text: &str, keyword: &str) -> bool {
    text.get(..keyword.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(keyword))
        && text[keyword.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_')
}

/// `text` after a leading `keyword` (a whole word, any case) and the
/// whitespace after it.
pub(crate) fn strip_keyword<'a>(text: &'a str, keyword: &str) -> Option<&'a str> {
    starts_with_keyword(text, keyword).then(|| text[keyword.len()..].trim_start())
}

/// Byte offsets of the tokenizer's (line, column) locations; columns count
/// characters, not bytes.
struct Offsets<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(sql: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(at, _)| at + 1));
        Self { sql, line_starts }
    }

    fn byte(&self, location: Location) -> usize {
        let line = (location.line.max(1) - 1) as usize;
        let start = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.sql.len());
        let column = (location.column.max(1) - 1) as usize;
        self.sql[start..]
            .char_indices()
            .nth(column)
            .map_or(self.sql.len(), |(at, _)| start + at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql).into_iter().map(|p| p.sql.trim()).collect()
    }

    #[test]
    fn cuts_at_semicolons_outside_strings_names_and_comments() {
        assert_eq!(texts("SELECT 1; SELECT 2"), ["SELECT 1", "SELECT 2"]);
        assert_eq!(
            texts("SELECT ';' AS \"a;b\"; -- x;y\nSELECT 'é;ü' /* ; */;"),
            ["SELECT ';' AS \"a;b\"", "-- x;y\nSELECT 'é;ü' /* ; */"]
        );
        assert_eq!(
            texts("SELECT $$a;b$$; SELECT 2"),
            ["SELECT $$a;b$$", "SELECT 2"]
        );
        assert_eq!(texts(";; ;\n"), Vec::<&str>::new());
        assert_eq!(texts("SELECT 1;\n  "), ["SELECT 1"]);
    }

    #[test]
    fn multibyte_text_before_a_cut() {
        let sql = "SELECT 'ü€😀'; SELECT\n'€';SELECT 3";
        assert_eq!(texts(sql), ["SELECT 'ü€😀'", "SELECT\n'€'", "SELECT 3"]);
    }

    #[test]
    fn unreadable_text_is_one_statement() {
        assert_eq!(texts("SELECT 'open; SELECT 2"), ["SELECT 'open; SELECT 2"]);
    }

    #[test]
    fn keywords_are_whole_words() {
        assert_eq!(strip_keyword("set  x = 1", "SET"), Some("x = 1"));
        assert_eq!(strip_keyword("SET", "SET"), Some(""));
        assert_eq!(strip_keyword("SETTINGS", "SET"), None);
        assert_eq!(strip_keyword("set_x", "SET"), None);
        assert!(starts_with_keyword("COPY(", "COPY"));
        assert!(!starts_with_keyword("CO", "COPY"));
        assert!(!starts_with_keyword("é", "COPY"));
    }

    #[test]
    fn kinds_from_leading_keywords() {
        let kinds: Vec<Kind> = split(
            "select 1; insert into t values (1); Update t set a = 1; delete from t; \
             create user table t (a int); begin; commit; rollback; explain select 1; \
             show all; grant select on t to u; (select 1)",
        )
        .into_iter()
        .map(|p| p.kind)
        .collect();
        assert_eq!(
            kinds,
            [
                Kind::Rows("SELECT"),
                Kind::Change("INSERT"),
                Kind::Change("UPDATE"),
                Kind::Change("DELETE"),
                Kind::Other("CREATE USER".into()),
                Kind::Begin,
                Kind::Commit,
                Kind::Rollback,
                Kind::Rows("EXPLAIN"),
                Kind::Rows("SHOW"),
                Kind::Other("GRANT".into()),
                Kind::Rows("SELECT"),
            ]
        );
        let kind = |sql| split(sql).pop().unwrap().kind;
        assert_eq!(kind("  SELECT $1"), Kind::Rows("SELECT"));
        assert_eq!(
            kind("-- c\nINSERT INTO t VALUES ($1)"),
            Kind::Change("INSERT")
        );
    }
}
