//! The SQL tenantfusion adds to DataFusion's, parsed by peeking at the first
//! tokens and handing everything else to DataFusion's parser.
//!
//! ```text
//! CREATE NAMESPACE [IF NOT EXISTS] ns          DROP NAMESPACE [IF EXISTS] ns
//! CREATE [USER|SHARED|STREAM] TABLE ns.t (...) [WITH (ACCESS_LEVEL = 'public')]
//! CREATE USER [IF NOT EXISTS] 'name' [WITH ROLE user|service|dba|system|anonymous]
//! DROP USER [IF EXISTS] 'name'
//! GRANT SELECT|INSERT|UPDATE|DELETE [, ...] | ALL [PRIVILEGES] ON [TABLE] ns.t TO 'name'
//! REVOKE SELECT|INSERT|UPDATE|DELETE [, ...] | ALL [PRIVILEGES] ON [TABLE] ns.t FROM 'name'
//! EXECUTE AS USER 'name' ( statement )
//! CREATE SOURCE name TYPE generator|websocket|stomp|rest [WITH (URL = '...', ...)]
//! DROP SOURCE [IF EXISTS] name
//! ALTER STREAM TABLE ns.t ADD|DROP TOPICS ('A', 'B', ...)
//! SUBSCRIBE TO ns.t [WHERE predicate] [OPTIONS (LAST_ROWS = n)]
//! FLUSH TABLE ns.t                            COMPACT TABLE ns.t
//! VERIFY TABLE ns.t                           VERIFY DATABASE
//! ```

use datafusion::sql::parser::{DFParser, DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, Expr as SqlExpr, ObjectName, SqlOption, Statement as SqlStatement, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Location, Token};
use tenantfusion_core::{Access, Result, Role, TableType, TenantError};

/// One parsed statement.
#[derive(Debug)]
pub(crate) enum TenantStatement {
    CreateNamespace {
        name: String,
        if_not_exists: bool,
    },
    DropNamespace {
        name: String,
        if_exists: bool,
    },
    CreateUser {
        name: String,
        role: Role,
        if_not_exists: bool,
    },
    DropUser {
        name: String,
        if_exists: bool,
    },
    Grant {
        privileges: Vec<Access>,
        table: ObjectName,
        user: String,
    },
    Revoke {
        privileges: Vec<Access>,
        table: ObjectName,
        user: String,
    },
    ExecuteAs {
        user: String,
        sql: String,
    },
    /// `CREATE [kind] TABLE`, with its `WITH (...)` options taken out of the
    /// AST (DataFusion refuses table options) and kept here.
    CreateTable {
        kind: Option<TableType>,
        options: Vec<(String, String)>,
        statement: DFStatement,
    },
    CreateSource {
        name: String,
        kind: String,
        options: Vec<(String, String)>,
    },
    DropSource {
        name: String,
        if_exists: bool,
    },
    /// `ALTER STREAM TABLE t ADD|DROP TOPICS (...)`.
    AlterTopics {
        table: ObjectName,
        add: bool,
        topics: Vec<String>,
    },
    /// `SUBSCRIBE TO t [WHERE ...] [OPTIONS (...)]`; the predicate is kept
    /// as text and planned against the table's columns.
    Subscribe {
        table: ObjectName,
        predicate: Option<String>,
        options: Vec<(String, String)>,
    },
    /// `FLUSH TABLE t`: the table's rows in memory to Parquet segments;
    /// `COMPACT TABLE t` (`compact`): each partition's rows to one segment.
    FlushTable {
        table: ObjectName,
        compact: bool,
    },
    /// `VERIFY TABLE t` (`Some`) or `VERIFY DATABASE` (`None`): reads
    /// every log record, manifest and segment and reports damage.
    Verify {
        table: Option<ObjectName>,
    },
    /// Anything else: DataFusion plans it.
    Sql(DFStatement),
}

fn syntax(err: impl std::fmt::Display) -> TenantError {
    TenantError::Syntax(err.to_string())
}

/// Parses exactly one statement (a trailing `;` is allowed).
pub(crate) fn parse(sql: &str) -> Result<TenantStatement> {
    let dialect = GenericDialect {};
    let mut p = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .build()
        .map_err(TenantError::from_datafusion)?;
    let statement = match (word(&p, 0), word(&p, 1), word(&p, 2)) {
        (Some(a), Some(b), _) if a == "CREATE" && b == "NAMESPACE" => {
            skip(&mut p, 2);
            let if_not_exists =
                p.parser
                    .parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = identifier(&mut p)?;
            TenantStatement::CreateNamespace {
                name,
                if_not_exists,
            }
        }
        (Some(a), Some(b), _) if a == "DROP" && b == "NAMESPACE" => {
            skip(&mut p, 2);
            let if_exists = p.parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = identifier(&mut p)?;
            TenantStatement::DropNamespace { name, if_exists }
        }
        (Some(a), Some(b), Some(c))
            if a == "CREATE"
                && matches!(b.as_str(), "USER" | "SHARED" | "STREAM")
                && c == "TABLE" =>
        {
            let kind = match b.as_str() {
                "USER" => TableType::User,
                "SHARED" => TableType::Shared,
                _ => TableType::Stream,
            };
            skip(&mut p, 3);
            let create = p
                .parser
                .parse_create_table(false, false, None, false)
                .map_err(syntax)?;
            let statement = DFStatement::Statement(Box::new(SqlStatement::CreateTable(create)));
            create_table(Some(kind), statement)?
        }
        (Some(a), Some(b), _) if a == "CREATE" && b == "SOURCE" => {
            skip(&mut p, 2);
            let name = identifier(&mut p)?;
            p.parser.expect_keyword_is(Keyword::TYPE).map_err(syntax)?;
            let kind = identifier(&mut p)?;
            let options = options_after(&mut p, Keyword::WITH)?;
            TenantStatement::CreateSource {
                name,
                kind,
                options,
            }
        }
        (Some(a), Some(b), _) if a == "DROP" && b == "SOURCE" => {
            skip(&mut p, 2);
            let if_exists = p.parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = identifier(&mut p)?;
            TenantStatement::DropSource { name, if_exists }
        }
        (Some(a), Some(b), _) if (a == "FLUSH" || a == "COMPACT") && b == "TABLE" => {
            skip(&mut p, 2);
            let table = p.parser.parse_object_name(false).map_err(syntax)?;
            TenantStatement::FlushTable {
                table,
                compact: a == "COMPACT",
            }
        }
        (Some(a), Some(b), _) if a == "VERIFY" && b == "TABLE" => {
            skip(&mut p, 2);
            let table = p.parser.parse_object_name(false).map_err(syntax)?;
            TenantStatement::Verify { table: Some(table) }
        }
        (Some(a), Some(b), _) if a == "VERIFY" && b == "DATABASE" => {
            skip(&mut p, 2);
            TenantStatement::Verify { table: None }
        }
        (Some(a), Some(b), Some(c)) if a == "ALTER" && b == "STREAM" && c == "TABLE" => {
            skip(&mut p, 3);
            let table = p.parser.parse_object_name(false).map_err(syntax)?;
            let add = match p.parser.next_token().token {
                Token::Word(w) if w.keyword == Keyword::ADD => true,
                Token::Word(w) if w.keyword == Keyword::DROP => false,
                other => {
                    return Err(TenantError::Syntax(format!(
                        "expected ADD TOPICS or DROP TOPICS, found {other}"
                    )));
                }
            };
            if word(&p, 0).as_deref() != Some("TOPICS") {
                return Err(TenantError::Syntax(format!(
                    "expected TOPICS, found {}",
                    p.parser.peek_token().token
                )));
            }
            skip(&mut p, 1);
            p.parser.expect_token(&Token::LParen).map_err(syntax)?;
            let topics = p
                .parser
                .parse_comma_separated(|parser| match parser.next_token().token {
                    // Topics are case-sensitive: quoted, never identifiers.
                    Token::SingleQuotedString(topic) => Ok(topic),
                    other => Err(ParserError::ParserError(format!(
                        "expected a topic as a quoted string, found {other}"
                    ))),
                })
                .map_err(syntax)?;
            p.parser.expect_token(&Token::RParen).map_err(syntax)?;
            TenantStatement::AlterTopics { table, add, topics }
        }
        (Some(a), _, _) if a == "SUBSCRIBE" => {
            skip(&mut p, 1);
            p.parser.expect_keyword_is(Keyword::TO).map_err(syntax)?;
            let table = p.parser.parse_object_name(false).map_err(syntax)?;
            let predicate = if p.parser.parse_keyword(Keyword::WHERE) {
                Some(p.parser.parse_expr().map_err(syntax)?.to_string())
            } else {
                None
            };
            let options = options_after(&mut p, Keyword::OPTIONS)?;
            TenantStatement::Subscribe {
                table,
                predicate,
                options,
            }
        }
        (Some(a), Some(b), _) if a == "CREATE" && b == "USER" => {
            skip(&mut p, 2);
            let if_not_exists =
                p.parser
                    .parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = user_name(&mut p)?;
            let role = if p.parser.parse_keywords(&[Keyword::WITH, Keyword::ROLE]) {
                identifier(&mut p)?.parse()?
            } else {
                Role::User
            };
            TenantStatement::CreateUser {
                name,
                role,
                if_not_exists,
            }
        }
        (Some(a), Some(b), _) if a == "DROP" && b == "USER" => {
            skip(&mut p, 2);
            let if_exists = p.parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = user_name(&mut p)?;
            TenantStatement::DropUser { name, if_exists }
        }
        (Some(a), _, _) if a == "GRANT" || a == "REVOKE" => {
            skip(&mut p, 1);
            let privileges = if p.parser.parse_keyword(Keyword::ALL) {
                let _ = p.parser.parse_keyword(Keyword::PRIVILEGES);
                Access::ALL.to_vec()
            } else {
                p.parser
                    .parse_comma_separated(|parser| match parser.next_token().token {
                        Token::Word(w) if w.keyword == Keyword::SELECT => Ok(Access::Select),
                        Token::Word(w) if w.keyword == Keyword::INSERT => Ok(Access::Insert),
                        Token::Word(w) if w.keyword == Keyword::UPDATE => Ok(Access::Update),
                        Token::Word(w) if w.keyword == Keyword::DELETE => Ok(Access::Delete),
                        other => Err(ParserError::ParserError(format!(
                            "expected a privilege (SELECT, INSERT, UPDATE, DELETE or ALL), \
                             found {other}"
                        ))),
                    })
                    .map_err(syntax)?
            };
            p.parser.expect_keyword_is(Keyword::ON).map_err(syntax)?;
            // `ON TABLE t` and `ON t` mean the same.
            let _ = p.parser.parse_keyword(Keyword::TABLE);
            let table = p.parser.parse_object_name(false).map_err(syntax)?;
            let direction = if a == "GRANT" {
                Keyword::TO
            } else {
                Keyword::FROM
            };
            p.parser.expect_keyword_is(direction).map_err(syntax)?;
            let user = user_name(&mut p)?;
            if a == "GRANT" {
                TenantStatement::Grant {
                    privileges,
                    table,
                    user,
                }
            } else {
                TenantStatement::Revoke {
                    privileges,
                    table,
                    user,
                }
            }
        }
        (Some(a), Some(b), Some(c)) if a == "EXECUTE" && b == "AS" && c == "USER" => {
            skip(&mut p, 3);
            let user = user_name(&mut p)?;
            return execute_as(sql, &mut p, user);
        }
        _ => {
            let statement = p.parse_statement().map_err(TenantError::from_datafusion)?;
            expect_end(&mut p)?;
            return match statement {
                DFStatement::Statement(s) if matches!(*s, SqlStatement::CreateTable(_)) => {
                    create_table(None, DFStatement::Statement(s))
                }
                other => Ok(TenantStatement::Sql(other)),
            };
        }
    };
    expect_end(&mut p)?;
    Ok(statement)
}

/// `keyword (NAME = value, ...)` if the keyword comes next, else nothing.
fn options_after(p: &mut DFParser<'_>, keyword: Keyword) -> Result<Vec<(String, String)>> {
    if !matches!(p.parser.peek_token().token, Token::Word(ref w) if w.keyword == keyword) {
        return Ok(Vec::new());
    }
    p.parser
        .parse_options(keyword)
        .map_err(syntax)?
        .into_iter()
        .map(table_option)
        .collect()
}

/// The n-th token ahead, upper-cased, if it is an unquoted word.
fn word(p: &DFParser<'_>, n: usize) -> Option<String> {
    match p.parser.peek_nth_token(n).token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

fn skip(p: &mut DFParser<'_>, n: usize) {
    for _ in 0..n {
        p.parser.next_token();
    }
}

fn expect_end(p: &mut DFParser<'_>) -> Result<()> {
    while p.parser.consume_token(&Token::SemiColon) {}
    match p.parser.peek_token().token {
        Token::EOF => Ok(()),
        other => Err(TenantError::Syntax(format!(
            "expected end of statement, found {other} (one statement per call)"
        ))),
    }
}

/// An identifier, lower-cased unless quoted (as DataFusion normalises names).
fn identifier(p: &mut DFParser<'_>) -> Result<String> {
    let ident = p.parser.parse_identifier().map_err(syntax)?;
    Ok(match ident.quote_style {
        Some(_) => ident.value,
        None => ident.value.to_ascii_lowercase(),
    })
}

/// A user name: a string literal (kept as written) or an identifier.
fn user_name(p: &mut DFParser<'_>) -> Result<String> {
    if let Token::SingleQuotedString(name) = p.parser.peek_token().token {
        p.parser.next_token();
        return Ok(name);
    }
    identifier(p)
}

/// `EXECUTE AS USER 'name' ( inner )`: the inner statement is the text
/// between the parentheses, found by tokens (so parentheses in strings,
/// quoted names and comments do not count), and parsed exactly as if it
/// had been sent on its own.
fn execute_as(sql: &str, p: &mut DFParser<'_>, user: String) -> Result<TenantStatement> {
    let open = p.parser.expect_token(&Token::LParen).map_err(syntax)?;
    let mut depth = 1usize;
    let close = loop {
        let token = p.parser.next_token();
        match token.token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 1 => break token,
            Token::RParen => depth -= 1,
            Token::EOF => {
                return Err(TenantError::Syntax(
                    "EXECUTE AS USER needs ( statement ): the ')' is missing".into(),
                ));
            }
            _ => {}
        }
    };
    expect_end(p)?;
    let inner = byte_offset(sql, open.span.end)
        .zip(byte_offset(sql, close.span.start))
        .and_then(|(start, end)| sql.get(start..end))
        .ok_or_else(|| TenantError::Syntax("EXECUTE AS USER needs ( statement )".into()))?;
    if inner.trim().is_empty() {
        return Err(TenantError::Syntax(
            "EXECUTE AS USER has an empty statement".into(),
        ));
    }
    Ok(TenantStatement::ExecuteAs {
        user,
        sql: inner.to_string(),
    })
}

/// Byte offset of a 1-based line/column location (columns count characters).
fn byte_offset(sql: &str, at: Location) -> Option<usize> {
    let mut line = 1;
    let mut column = 1;
    for (offset, ch) in sql.char_indices() {
        if line == at.line && column == at.column {
            return Some(offset);
        }
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line == at.line && column == at.column).then_some(sql.len())
}

fn create_table(kind: Option<TableType>, statement: DFStatement) -> Result<TenantStatement> {
    let DFStatement::Statement(mut boxed) = statement else {
        return Err(TenantError::Internal("CREATE TABLE expected".into()));
    };
    let SqlStatement::CreateTable(create) = boxed.as_mut() else {
        return Err(TenantError::Internal("CREATE TABLE expected".into()));
    };
    let options = match std::mem::take(&mut create.table_options) {
        CreateTableOptions::None => Vec::new(),
        CreateTableOptions::With(options) => options
            .into_iter()
            .map(table_option)
            .collect::<Result<Vec<_>>>()?,
        other => {
            return Err(TenantError::NotSupported(format!(
                "table options '{other}'; use WITH (NAME = value, ...)"
            )));
        }
    };
    Ok(TenantStatement::CreateTable {
        kind,
        options,
        statement: DFStatement::Statement(boxed),
    })
}

fn table_option(option: SqlOption) -> Result<(String, String)> {
    let SqlOption::KeyValue { key, value } = option else {
        return Err(TenantError::InvalidArgument(format!(
            "table option '{option}' must be NAME = value"
        )));
    };
    let value = match value {
        SqlExpr::Value(v) => match v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) | Value::Number(s, _) => s,
            Value::Boolean(b) => b.to_string(),
            other => {
                return Err(TenantError::InvalidArgument(format!(
                    "table option {key} has an unsupported value {other}"
                )));
            }
        },
        SqlExpr::Identifier(ident) => ident.value,
        other => {
            return Err(TenantError::InvalidArgument(format!(
                "table option {key} has an unsupported value {other}"
            )));
        }
    };
    Ok((key.value.to_ascii_uppercase(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_custom_statements() {
        assert!(matches!(
            parse("CREATE NAMESPACE IF NOT EXISTS App").unwrap(),
            TenantStatement::CreateNamespace { name, if_not_exists: true } if name == "app"
        ));
        assert!(matches!(
            parse("create user 'Alice' with role service;").unwrap(),
            TenantStatement::CreateUser { name, role: Role::Service, .. } if name == "Alice"
        ));
        assert!(matches!(
            parse("GRANT SELECT, INSERT ON app.t TO bob").unwrap(),
            TenantStatement::Grant { privileges, user, .. } if privileges.len() == 2 && user == "bob"
        ));
        match parse("CREATE SHARED TABLE app.t (id INT) WITH (ACCESS_LEVEL = 'restricted')")
            .unwrap()
        {
            TenantStatement::CreateTable { kind, options, .. } => {
                assert_eq!(kind, Some(TableType::Shared));
                assert_eq!(
                    options,
                    vec![("ACCESS_LEVEL".to_string(), "restricted".to_string())]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse("CREATE TABLE t (a INT)").unwrap(),
            TenantStatement::CreateTable { kind: None, .. }
        ));
    }

    #[test]
    fn parses_live_statements() {
        match parse("CREATE SOURCE Feed TYPE websocket WITH (URL = 'ws://x', WEIGHT = 2)").unwrap()
        {
            TenantStatement::CreateSource {
                name,
                kind,
                options,
            } => {
                assert_eq!((name.as_str(), kind.as_str()), ("feed", "websocket"));
                assert_eq!(options[1], ("WEIGHT".to_string(), "2".to_string()));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse("DROP SOURCE IF EXISTS feed").unwrap(),
            TenantStatement::DropSource {
                if_exists: true,
                ..
            }
        ));
        assert!(matches!(
            parse("flush table app.notes;").unwrap(),
            TenantStatement::FlushTable { table, compact: false } if table.to_string() == "app.notes"
        ));
        assert!(matches!(
            parse("COMPACT TABLE t").unwrap(),
            TenantStatement::FlushTable { compact: true, .. }
        ));
        assert!(matches!(
            parse("verify table app.notes").unwrap(),
            TenantStatement::Verify { table: Some(table) } if table.to_string() == "app.notes"
        ));
        assert!(matches!(
            parse("VERIFY DATABASE;").unwrap(),
            TenantStatement::Verify { table: None }
        ));
        match parse("ALTER STREAM TABLE m.ticks DROP TOPICS ('A', 'B')").unwrap() {
            TenantStatement::AlterTopics { add, topics, .. } => {
                assert!(!add);
                assert_eq!(topics, ["A", "B"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse("SUBSCRIBE TO m.ticks WHERE symbol = 'A' AND price > 1 OPTIONS (LAST_ROWS = 5)")
            .unwrap()
        {
            TenantStatement::Subscribe {
                predicate, options, ..
            } => {
                assert_eq!(predicate.as_deref(), Some("symbol = 'A' AND price > 1"));
                assert_eq!(options, [("LAST_ROWS".to_string(), "5".to_string())]);
            }
            other => panic!("unexpected {other:?}"),
        }
        for sql in [
            "CREATE SOURCE x",
            "ALTER STREAM TABLE t ADD ('A')",
            "ALTER STREAM TABLE t ADD TOPICS (A)",
            "SUBSCRIBE m.ticks",
            "FLUSH TABLE",
            "FLUSH TABLE a.b c",
            "VERIFY TABLE",
            "VERIFY DATABASE now",
            "SUBSCRIBE TO m.ticks WHERE",
        ] {
            assert_eq!(parse(sql).unwrap_err().code(), "SYNTAX_ERROR", "{sql}");
        }
    }

    #[test]
    fn execute_as_keeps_the_inner_text() {
        match parse("EXECUTE AS USER 'bob' (SELECT ')' , \"x(\" FROM t);").unwrap() {
            TenantStatement::ExecuteAs { user, sql } => {
                assert_eq!(user, "bob");
                assert_eq!(sql, "SELECT ')' , \"x(\" FROM t");
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse("EXECUTE AS USER 'bob'\n  (\n SELECT 1\n)").unwrap() {
            TenantStatement::ExecuteAs { sql, .. } => assert_eq!(sql.trim(), "SELECT 1"),
            other => panic!("unexpected {other:?}"),
        }
        // Comments after the statement, and parentheses inside it.
        for (sql, inner) in [
            ("EXECUTE AS USER 'b' (SELECT 1) -- note", "SELECT 1"),
            ("EXECUTE AS USER 'b' (SELECT (1)) /* ) */ ;", "SELECT (1)"),
            (
                "EXECUTE AS USER 'b' (SELECT f((2), ')') -- )\n)",
                "SELECT f((2), ')') -- )\n",
            ),
        ] {
            match parse(sql).unwrap() {
                TenantStatement::ExecuteAs { sql, .. } => assert_eq!(sql, inner),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn grant_takes_each_privilege_and_all() {
        match parse("GRANT UPDATE, DELETE ON t TO 'bob'").unwrap() {
            TenantStatement::Grant { privileges, .. } => {
                assert_eq!(privileges, [Access::Update, Access::Delete]);
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse("REVOKE ALL PRIVILEGES ON t FROM 'bob'").unwrap() {
            TenantStatement::Revoke { privileges, .. } => assert_eq!(privileges, Access::ALL),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_input_is_a_syntax_error() {
        for sql in [
            "SELEC 1",
            "CREATE NAMESPACE",
            "GRANT DROP ON t TO bob",
            "EXECUTE AS USER 'bob' (SELECT 1",
            "EXECUTE AS USER 'bob' (SELECT 1) SELECT 2",
            "EXECUTE AS USER 'bob' SELECT 1",
            "EXECUTE AS USER 'bob' ()",
            "SELECT 1; SELECT 2",
        ] {
            let err = parse(sql).unwrap_err();
            assert_eq!(err.code(), "SYNTAX_ERROR", "{sql}: {err}");
        }
        assert_eq!(
            parse("CREATE USER x WITH ROLE root").unwrap_err().code(),
            "INVALID_ARGUMENT"
        );
    }
}
