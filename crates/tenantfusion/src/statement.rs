//! The SQL tenantfusion adds to DataFusion's:
//!
//! ```text
//! CREATE NAMESPACE [IF NOT EXISTS] ns          DROP NAMESPACE [IF EXISTS] ns
//! CREATE [USER|SHARED|STREAM] TABLE ns.t (...) [WITH (ACCESS_LEVEL = 'public')]
//! CREATE USER [IF NOT EXISTS] 'name' [WITH] [ROLE user|service|dba|system|anonymous] [PASSWORD 'p']
//! ALTER USER 'name' [WITH] PASSWORD 'p'       DROP USER [IF EXISTS] 'name'
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
//!
//! [`TenantParser`] wraps DataFusion's [`DFParser`] the way `DFParser`
//! wraps sqlparser's: it looks at the first words, parses each of the
//! statements above with a `parse_*` of its own, and hands every other
//! statement to `DFParser`. Every statement is a struct whose `Display`
//! prints SQL that parses back to an equal statement (a test checks it over
//! every statement of the sqllogictest files), so a statement can be logged,
//! shown in an error, or sent on without its original text.

use std::fmt;
use std::ops::ControlFlow;

use datafusion::sql::parser::{
    CopyToStatement, DFParser, DFParserBuilder, ParserInput, Statement as DFStatement,
};
use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, Expr as SqlExpr, Ident, ObjectName, SqlOption, Statement as SqlStatement,
    Value, visit_statements,
};
use datafusion::sql::sqlparser::dialect::Dialect;
#[cfg(test)]
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::Token;
use tenantfusion_core::{Access, Result, Role, ScramVerifier, TableType, TenantError};

/// One parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TenantStatement {
    CreateNamespace(CreateNamespace),
    DropNamespace(DropNamespace),
    CreateUser(CreateUser),
    AlterUser(AlterUser),
    DropUser(DropUser),
    Grant(Grant),
    ExecuteAs(ExecuteAs),
    CreateTable(CreateTable),
    CreateSource(CreateSource),
    DropSource(DropSource),
    AlterTopics(AlterTopics),
    Subscribe(Subscribe),
    FlushTable(FlushTable),
    Verify(Verify),
    /// Anything else: DataFusion plans it.
    Sql(DFStatement),
}

/// `CREATE NAMESPACE [IF NOT EXISTS] name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreateNamespace {
    pub(crate) name: String,
    pub(crate) if_not_exists: bool,
}

/// `DROP NAMESPACE [IF EXISTS] name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DropNamespace {
    pub(crate) name: String,
    pub(crate) if_exists: bool,
}

/// `CREATE USER [IF NOT EXISTS] 'name' [WITH] [ROLE role] [PASSWORD 'p']`.
///
/// The password is turned into its verifier as it is parsed: no statement
/// holds one, and one printed shows the verifier, which parses back to
/// itself (as in PostgreSQL, a password already in SCRAM form is kept as
/// given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreateUser {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) if_not_exists: bool,
    pub(crate) verifier: Option<ScramVerifier>,
}

/// `ALTER USER 'name' [WITH] PASSWORD 'p'` (the password as in
/// [`CreateUser`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlterUser {
    pub(crate) name: String,
    pub(crate) verifier: ScramVerifier,
}

/// `DROP USER [IF EXISTS] 'name'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DropUser {
    pub(crate) name: String,
    pub(crate) if_exists: bool,
}

/// `GRANT privileges ON t TO 'user'`, or `REVOKE ... FROM 'user'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    /// `REVOKE` rather than `GRANT`.
    pub(crate) revoke: bool,
    pub(crate) privileges: Vec<Access>,
    pub(crate) table: ObjectName,
    pub(crate) user: String,
}

/// `EXECUTE AS USER 'name' ( statement )`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExecuteAs {
    pub(crate) user: String,
    pub(crate) statement: Box<TenantStatement>,
}

/// `CREATE [kind] TABLE`, with its `WITH (...)` options taken out of the
/// AST (DataFusion refuses table options) and kept here.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CreateTable {
    pub(crate) kind: Option<TableType>,
    /// `(NAME, value)`, names upper-cased.
    pub(crate) options: Vec<(String, String)>,
    pub(crate) statement: DFStatement,
}

/// `CREATE SOURCE name TYPE kind [WITH (...)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreateSource {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) options: Vec<(String, String)>,
}

/// `DROP SOURCE [IF EXISTS] name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DropSource {
    pub(crate) name: String,
    pub(crate) if_exists: bool,
}

/// `ALTER STREAM TABLE t ADD|DROP TOPICS (...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlterTopics {
    pub(crate) table: ObjectName,
    pub(crate) add: bool,
    pub(crate) topics: Vec<String>,
}

/// `SUBSCRIBE TO t [WHERE ...] [OPTIONS (...)]`; the predicate is planned
/// against the table's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscribe {
    pub(crate) table: ObjectName,
    pub(crate) predicate: Option<SqlExpr>,
    pub(crate) options: Vec<(String, String)>,
}

/// `FLUSH TABLE t`: the table's rows in memory to Parquet segments;
/// `COMPACT TABLE t` (`compact`): each partition's rows to one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlushTable {
    pub(crate) table: ObjectName,
    pub(crate) compact: bool,
}

/// `VERIFY TABLE t` (`Some`) or `VERIFY DATABASE` (`None`): reads every
/// log record, manifest and segment and reports damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verify {
    pub(crate) table: Option<ObjectName>,
}

/// Parses exactly one statement (a trailing `;` is allowed), in
/// DataFusion's default dialect.
#[cfg(test)]
pub(crate) fn parse(sql: &str) -> Result<TenantStatement> {
    parse_in(sql, &GenericDialect {})
}

/// Parses exactly one statement (a trailing `;` is allowed) in `dialect`,
/// the session's `datafusion.sql_parser.dialect`: the one reading that both
/// the access checks and DataFusion's planner work from.
pub(crate) fn parse_in(sql: &str, dialect: &dyn Dialect) -> Result<TenantStatement> {
    parse_nested(sql.into(), 0, dialect)
}

/// How deep `EXECUTE AS` may nest: each level parses its inner statement
/// on a parser of its own, so without a bound one statement of nested
/// `EXECUTE AS` would exhaust the stack before any permission is checked.
const MAX_EXECUTE_AS_DEPTH: usize = 16;

/// [`parse`] of `input` inside `depth` levels of `EXECUTE AS`.
fn parse_nested(
    input: ParserInput<'_>,
    depth: usize,
    dialect: &dyn Dialect,
) -> Result<TenantStatement> {
    let parser = DFParserBuilder::new(input)
        .with_dialect(dialect)
        .build()
        .map_err(TenantError::from_datafusion)?;
    let mut parser = TenantParser {
        parser,
        depth,
        dialect,
    };
    let statement = parser.parse_statement()?;
    parser.expect_end()?;
    Ok(statement)
}

/// The words of our statements that are not sqlparser keywords.
const NAMESPACE: &str = "NAMESPACE";
const COMPACT: &str = "COMPACT";
const VERIFY: &str = "VERIFY";
const SUBSCRIBE: &str = "SUBSCRIBE";
const TOPICS: &str = "TOPICS";

/// A parser of our statements over DataFusion's.
pub(crate) struct TenantParser<'a> {
    parser: DFParser<'a>,
    /// The `EXECUTE AS` levels this statement is inside.
    depth: usize,
    /// What an `EXECUTE AS` statement's inner statement is parsed in.
    dialect: &'a dyn Dialect,
}

impl TenantParser<'_> {
    /// One statement, from the next token.
    pub(crate) fn parse_statement(&mut self) -> Result<TenantStatement> {
        if self.word_is(0, SUBSCRIBE) {
            return self.parse_subscribe().map(TenantStatement::Subscribe);
        }
        if self.word_is(0, VERIFY) {
            return self.parse_verify().map(TenantStatement::Verify);
        }
        if self.word_is(0, COMPACT) && self.keyword_is(1, Keyword::TABLE) {
            return self.parse_flush_table().map(TenantStatement::FlushTable);
        }
        match (self.keyword(0), self.keyword(1), self.keyword(2)) {
            (Some(Keyword::CREATE), _, _) if self.word_is(1, NAMESPACE) => self
                .parse_create_namespace()
                .map(TenantStatement::CreateNamespace),
            (Some(Keyword::DROP), _, _) if self.word_is(1, NAMESPACE) => self
                .parse_drop_namespace()
                .map(TenantStatement::DropNamespace),
            (
                Some(Keyword::CREATE),
                Some(Keyword::USER | Keyword::SHARED | Keyword::STREAM),
                Some(Keyword::TABLE),
            ) => self.parse_create_table().map(TenantStatement::CreateTable),
            (Some(Keyword::CREATE), Some(Keyword::USER), _) => {
                self.parse_create_user().map(TenantStatement::CreateUser)
            }
            (Some(Keyword::ALTER), Some(Keyword::USER), _) => {
                self.parse_alter_user().map(TenantStatement::AlterUser)
            }
            (Some(Keyword::DROP), Some(Keyword::USER), _) => {
                self.parse_drop_user().map(TenantStatement::DropUser)
            }
            (Some(Keyword::CREATE), Some(Keyword::SOURCE), _) => self
                .parse_create_source()
                .map(TenantStatement::CreateSource),
            (Some(Keyword::DROP), Some(Keyword::SOURCE), _) => {
                self.parse_drop_source().map(TenantStatement::DropSource)
            }
            (Some(Keyword::FLUSH), Some(Keyword::TABLE), _) => {
                self.parse_flush_table().map(TenantStatement::FlushTable)
            }
            (Some(Keyword::ALTER), Some(Keyword::STREAM), Some(Keyword::TABLE)) => {
                self.parse_alter_topics().map(TenantStatement::AlterTopics)
            }
            (Some(Keyword::GRANT | Keyword::REVOKE), _, _) => {
                self.parse_grant().map(TenantStatement::Grant)
            }
            (Some(Keyword::EXECUTE), Some(Keyword::AS), Some(Keyword::USER)) => {
                self.parse_execute_as().map(TenantStatement::ExecuteAs)
            }
            _ => self.parse_datafusion(),
        }
    }

    /// `CREATE NAMESPACE [IF NOT EXISTS] name`.
    fn parse_create_namespace(&mut self) -> Result<CreateNamespace> {
        self.skip(2);
        let if_not_exists = self.parse_if_not_exists();
        let name = self.parse_name()?;
        Ok(CreateNamespace {
            name,
            if_not_exists,
        })
    }

    /// `DROP NAMESPACE [IF EXISTS] name`.
    fn parse_drop_namespace(&mut self) -> Result<DropNamespace> {
        self.skip(2);
        let if_exists = self.parse_if_exists();
        let name = self.parse_name()?;
        Ok(DropNamespace { name, if_exists })
    }

    /// `CREATE USER|SHARED|STREAM TABLE ...`: DataFusion's `CREATE TABLE`
    /// after the kind.
    fn parse_create_table(&mut self) -> Result<CreateTable> {
        let kind = match self.keyword(1) {
            Some(Keyword::USER) => TableType::User,
            Some(Keyword::SHARED) => TableType::Shared,
            _ => TableType::Stream,
        };
        self.skip(3);
        let create = self
            .parser
            .parser
            .parse_create_table(false, false, None, false)
            .map_err(syntax)?;
        let statement = DFStatement::Statement(Box::new(SqlStatement::CreateTable(create)));
        CreateTable::new(Some(kind), statement)
    }

    /// `CREATE USER [IF NOT EXISTS] 'name' [WITH] [ROLE role] [PASSWORD 'p']`
    /// (the two options in either order).
    fn parse_create_user(&mut self) -> Result<CreateUser> {
        self.skip(2);
        let if_not_exists = self.parse_if_not_exists();
        let name = self.parse_user_name()?;
        // `WITH` may be left out, as in PostgreSQL.
        let _ = self.parser.parser.parse_keyword(Keyword::WITH);
        let (mut role, mut verifier) = (None, None);
        loop {
            if role.is_none() && self.parser.parser.parse_keyword(Keyword::ROLE) {
                role = Some(self.parse_name()?.parse()?);
            } else if verifier.is_none() && self.parser.parser.parse_keyword(Keyword::PASSWORD) {
                verifier = Some(self.parse_password()?);
            } else {
                break;
            }
        }
        Ok(CreateUser {
            name,
            role: role.unwrap_or(Role::User),
            if_not_exists,
            verifier,
        })
    }

    /// `ALTER USER 'name' [WITH] PASSWORD 'p'`.
    fn parse_alter_user(&mut self) -> Result<AlterUser> {
        self.skip(2);
        let name = self.parse_user_name()?;
        // `WITH` may be left out, as in PostgreSQL.
        let _ = self.parser.parser.parse_keyword(Keyword::WITH);
        self.parser
            .parser
            .expect_keyword(Keyword::PASSWORD)
            .map_err(syntax)?;
        let verifier = self.parse_password()?;
        Ok(AlterUser { name, verifier })
    }

    /// A password's string, as its verifier: one already in SCRAM form is
    /// taken as it is, any other is made into one (an empty one is
    /// refused: it could not be typed at a login prompt).
    fn parse_password(&mut self) -> Result<ScramVerifier> {
        let password = self.parser.parser.parse_literal_string().map_err(syntax)?;
        if password.starts_with("SCRAM-SHA-256$") {
            return password.parse();
        }
        if password.is_empty() {
            return Err(TenantError::InvalidArgument(
                "a password must not be empty".into(),
            ));
        }
        ScramVerifier::new(&password)
    }

    /// `DROP USER [IF EXISTS] 'name'`.
    fn parse_drop_user(&mut self) -> Result<DropUser> {
        self.skip(2);
        let if_exists = self.parse_if_exists();
        let name = self.parse_user_name()?;
        Ok(DropUser { name, if_exists })
    }

    /// `GRANT privileges ON [TABLE] t TO 'user'`, `REVOKE ... FROM 'user'`.
    fn parse_grant(&mut self) -> Result<Grant> {
        let revoke = self.keyword(0) == Some(Keyword::REVOKE);
        self.skip(1);
        let parser = &mut self.parser.parser;
        let privileges = if parser.parse_keyword(Keyword::ALL) {
            let _ = parser.parse_keyword(Keyword::PRIVILEGES);
            Access::ALL.to_vec()
        } else {
            parser
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
        parser.expect_keyword_is(Keyword::ON).map_err(syntax)?;
        // `ON TABLE t` and `ON t` mean the same.
        let _ = parser.parse_keyword(Keyword::TABLE);
        let table = parser.parse_object_name(false).map_err(syntax)?;
        let direction = if revoke { Keyword::FROM } else { Keyword::TO };
        parser.expect_keyword_is(direction).map_err(syntax)?;
        let user = self.parse_user_name()?;
        Ok(Grant {
            revoke,
            privileges,
            table,
            user,
        })
    }

    /// `EXECUTE AS USER 'name' ( statement )`: the inner statement is the
    /// tokens between the parentheses, found by depth (so parentheses in
    /// strings, quoted names and comments do not count), parsed exactly as
    /// if it had been sent on its own.
    fn parse_execute_as(&mut self) -> Result<ExecuteAs> {
        self.skip(3);
        let user = self.parse_user_name()?;
        let parser = &mut self.parser.parser;
        parser
            .expect_token(&Token::LParen)
            .map_err(|_| TenantError::Syntax("EXECUTE AS USER needs ( statement )".into()))?;
        let mut inner = Vec::new();
        let mut depth = 0usize;
        loop {
            let token = parser.next_token();
            match token.token {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => break,
                Token::RParen => depth -= 1,
                Token::EOF => {
                    return Err(TenantError::Syntax(
                        "EXECUTE AS USER needs ( statement ): the ')' is missing".into(),
                    ));
                }
                _ => {}
            }
            inner.push(token);
        }
        if inner.iter().all(|t| t.token == Token::SemiColon) {
            return Err(TenantError::Syntax(
                "EXECUTE AS USER has an empty statement".into(),
            ));
        }
        if self.depth >= MAX_EXECUTE_AS_DEPTH {
            return Err(TenantError::Syntax(format!(
                "EXECUTE AS USER nests at most {MAX_EXECUTE_AS_DEPTH} deep"
            )));
        }
        let statement = Box::new(parse_nested(inner.into(), self.depth + 1, self.dialect)?);
        Ok(ExecuteAs { user, statement })
    }

    /// `CREATE SOURCE name TYPE kind [WITH (...)]`.
    fn parse_create_source(&mut self) -> Result<CreateSource> {
        self.skip(2);
        let name = self.parse_name()?;
        self.parser
            .parser
            .expect_keyword_is(Keyword::TYPE)
            .map_err(syntax)?;
        let kind = self.parse_name()?;
        let options = self.parse_options_after(Keyword::WITH)?;
        Ok(CreateSource {
            name,
            kind,
            options,
        })
    }

    /// `DROP SOURCE [IF EXISTS] name`.
    fn parse_drop_source(&mut self) -> Result<DropSource> {
        self.skip(2);
        let if_exists = self.parse_if_exists();
        let name = self.parse_name()?;
        Ok(DropSource { name, if_exists })
    }

    /// `FLUSH TABLE t` or `COMPACT TABLE t`.
    fn parse_flush_table(&mut self) -> Result<FlushTable> {
        let compact = self.word_is(0, COMPACT);
        self.skip(2);
        let table = self.parse_table()?;
        Ok(FlushTable { table, compact })
    }

    /// `VERIFY TABLE t` or `VERIFY DATABASE`.
    fn parse_verify(&mut self) -> Result<Verify> {
        self.skip(1);
        let parser = &mut self.parser.parser;
        if parser.parse_keyword(Keyword::DATABASE) {
            return Ok(Verify { table: None });
        }
        parser.expect_keyword_is(Keyword::TABLE).map_err(syntax)?;
        let table = self.parse_table()?;
        Ok(Verify { table: Some(table) })
    }

    /// `ALTER STREAM TABLE t ADD|DROP TOPICS ('A', ...)`.
    fn parse_alter_topics(&mut self) -> Result<AlterTopics> {
        self.skip(3);
        let table = self.parse_table()?;
        let add = match self.parser.parser.next_token().token {
            Token::Word(w) if w.keyword == Keyword::ADD => true,
            Token::Word(w) if w.keyword == Keyword::DROP => false,
            other => {
                return Err(TenantError::Syntax(format!(
                    "expected ADD TOPICS or DROP TOPICS, found {other}"
                )));
            }
        };
        if !self.word_is(0, TOPICS) {
            return Err(TenantError::Syntax(format!(
                "expected TOPICS, found {}",
                self.parser.parser.peek_token().token
            )));
        }
        self.skip(1);
        let parser = &mut self.parser.parser;
        parser.expect_token(&Token::LParen).map_err(syntax)?;
        let topics = parser
            .parse_comma_separated(|parser| match parser.next_token().token {
                // Topics are case-sensitive: quoted, never identifiers.
                Token::SingleQuotedString(topic) => Ok(topic),
                other => Err(ParserError::ParserError(format!(
                    "expected a topic as a quoted string, found {other}"
                ))),
            })
            .map_err(syntax)?;
        parser.expect_token(&Token::RParen).map_err(syntax)?;
        Ok(AlterTopics { table, add, topics })
    }

    /// `SUBSCRIBE TO t [WHERE predicate] [OPTIONS (...)]`.
    fn parse_subscribe(&mut self) -> Result<Subscribe> {
        self.skip(1);
        self.parser
            .parser
            .expect_keyword_is(Keyword::TO)
            .map_err(syntax)?;
        let table = self.parse_table()?;
        let predicate = if self.parser.parser.parse_keyword(Keyword::WHERE) {
            Some(self.parser.parser.parse_expr().map_err(syntax)?)
        } else {
            None
        };
        let options = self.parse_options_after(Keyword::OPTIONS)?;
        Ok(Subscribe {
            table,
            predicate,
            options,
        })
    }

    /// A statement of DataFusion's; its `CREATE TABLE` keeps its options
    /// apart, as ours do.
    fn parse_datafusion(&mut self) -> Result<TenantStatement> {
        let statement = self
            .parser
            .parse_statement()
            .map_err(TenantError::from_datafusion)?;
        // DataFusion's planner quotes a statement it cannot plan in its
        // error, which would show the password of `EXPLAIN ALTER USER ...
        // PASSWORD '...'` (or of sqlparser's `CREATE ROLE ... PASSWORD`).
        if sets_a_password(&statement) {
            return Err(TenantError::NotSupported(
                "a statement that sets a password runs only on its own \
                 (CREATE USER or ALTER USER), not inside another"
                    .into(),
            ));
        }
        match statement {
            DFStatement::Statement(s) if matches!(*s, SqlStatement::CreateTable(_)) => {
                CreateTable::new(None, DFStatement::Statement(s)).map(TenantStatement::CreateTable)
            }
            other => Ok(TenantStatement::Sql(other)),
        }
    }

    /// `IF NOT EXISTS`, if it comes next.
    fn parse_if_not_exists(&mut self) -> bool {
        self.parser
            .parser
            .parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS])
    }

    /// `IF EXISTS`, if it comes next.
    fn parse_if_exists(&mut self) -> bool {
        self.parser
            .parser
            .parse_keywords(&[Keyword::IF, Keyword::EXISTS])
    }

    fn parse_table(&mut self) -> Result<ObjectName> {
        self.parser.parser.parse_object_name(false).map_err(syntax)
    }

    /// A name, lower-cased unless quoted (as DataFusion normalises names).
    fn parse_name(&mut self) -> Result<String> {
        let ident = self.parser.parser.parse_identifier().map_err(syntax)?;
        Ok(match ident.quote_style {
            Some(_) => ident.value,
            None => ident.value.to_ascii_lowercase(),
        })
    }

    /// A user name: a string literal (kept as written) or a name.
    fn parse_user_name(&mut self) -> Result<String> {
        if let Token::SingleQuotedString(name) = self.parser.parser.peek_token().token {
            self.parser.parser.next_token();
            return Ok(name);
        }
        self.parse_name()
    }

    /// `keyword (NAME = value, ...)` if the keyword comes next, else nothing.
    fn parse_options_after(&mut self, keyword: Keyword) -> Result<Vec<(String, String)>> {
        if self.keyword(0) != Some(keyword) {
            return Ok(Vec::new());
        }
        self.parser
            .parser
            .parse_options(keyword)
            .map_err(syntax)?
            .into_iter()
            .map(option)
            .collect()
    }

    /// The keyword `n` tokens ahead, if it is an unquoted keyword.
    fn keyword(&self, n: usize) -> Option<Keyword> {
        match self.parser.parser.peek_nth_token_ref(n).token {
            Token::Word(ref w) if w.quote_style.is_none() && w.keyword != Keyword::NoKeyword => {
                Some(w.keyword)
            }
            _ => None,
        }
    }

    fn keyword_is(&self, n: usize, keyword: Keyword) -> bool {
        self.keyword(n) == Some(keyword)
    }

    /// Whether the token `n` ahead is the unquoted word `word` (one of ours
    /// that sqlparser does not know as a keyword).
    fn word_is(&self, n: usize, word: &str) -> bool {
        matches!(
            self.parser.parser.peek_nth_token_ref(n).token,
            Token::Word(ref w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word)
        )
    }

    fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.parser.parser.next_token();
        }
    }

    fn expect_end(&mut self) -> Result<()> {
        while self.parser.parser.consume_token(&Token::SemiColon) {}
        match self.parser.parser.peek_token().token {
            Token::EOF => Ok(()),
            other => Err(TenantError::Syntax(format!(
                "expected end of statement, found {other} (one statement per call)"
            ))),
        }
    }
}

/// Whether `statement` holds, anywhere, a statement that may carry a
/// password (`CREATE|ALTER USER`, `CREATE|ALTER ROLE`).
fn sets_a_password(statement: &DFStatement) -> bool {
    match statement {
        DFStatement::Statement(statement) => visit_statements(statement.as_ref(), |s| match s {
            SqlStatement::CreateUser(_)
            | SqlStatement::AlterUser(_)
            | SqlStatement::CreateRole(_)
            | SqlStatement::AlterRole { .. } => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .is_break(),
        DFStatement::Explain(explain) => sets_a_password(&explain.statement),
        _ => false,
    }
}

fn syntax(err: impl fmt::Display) -> TenantError {
    TenantError::Syntax(err.to_string())
}

impl CreateTable {
    /// `statement` (a `CREATE TABLE`) with its options taken out.
    fn new(kind: Option<TableType>, mut statement: DFStatement) -> Result<Self> {
        let DFStatement::Statement(boxed) = &mut statement else {
            return Err(TenantError::Internal("CREATE TABLE expected".into()));
        };
        let SqlStatement::CreateTable(create) = boxed.as_mut() else {
            return Err(TenantError::Internal("CREATE TABLE expected".into()));
        };
        let options = match std::mem::take(&mut create.table_options) {
            CreateTableOptions::None => Vec::new(),
            CreateTableOptions::With(options) => options
                .into_iter()
                .map(option)
                .collect::<Result<Vec<_>>>()?,
            other => {
                return Err(TenantError::NotSupported(format!(
                    "table options '{other}'; use WITH (NAME = value, ...)"
                )));
            }
        };
        Ok(Self {
            kind,
            options,
            statement,
        })
    }
}

/// `NAME = value` of `WITH (...)` or `OPTIONS (...)`, the name upper-cased.
fn option(option: SqlOption) -> Result<(String, String)> {
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

// Display: SQL that parses back to an equal statement.

/// A name as written: bare when lower-case, quoted otherwise (a bare name
/// would be lower-cased when parsed back).
fn name(name: &str) -> Ident {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    match bare {
        true => Ident::new(name),
        false => Ident::with_quote('"', name),
    }
}

/// A user name or a topic: a string literal.
fn string(value: &str) -> Value {
    Value::SingleQuotedString(value.to_string())
}

fn if_not_exists(yes: bool) -> &'static str {
    if yes { "IF NOT EXISTS " } else { "" }
}

fn if_exists(yes: bool) -> &'static str {
    if yes { "IF EXISTS " } else { "" }
}

/// ` keyword (NAME = 'value', ...)`, nothing without options.
fn fmt_options(
    f: &mut fmt::Formatter<'_>,
    keyword: &str,
    options: &[(String, String)],
) -> fmt::Result {
    if options.is_empty() {
        return Ok(());
    }
    write!(f, " {keyword} (")?;
    for (i, (key, value)) in options.iter().enumerate() {
        let comma = if i == 0 { "" } else { ", " };
        write!(f, "{comma}{key} = {}", string(value))?;
    }
    f.write_str(")")
}

impl fmt::Display for TenantStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateNamespace(s) => s.fmt(f),
            Self::DropNamespace(s) => s.fmt(f),
            Self::CreateUser(s) => s.fmt(f),
            Self::AlterUser(s) => s.fmt(f),
            Self::DropUser(s) => s.fmt(f),
            Self::Grant(s) => s.fmt(f),
            Self::ExecuteAs(s) => s.fmt(f),
            Self::CreateTable(s) => s.fmt(f),
            Self::CreateSource(s) => s.fmt(f),
            Self::DropSource(s) => s.fmt(f),
            Self::AlterTopics(s) => s.fmt(f),
            Self::Subscribe(s) => s.fmt(f),
            Self::FlushTable(s) => s.fmt(f),
            Self::Verify(s) => s.fmt(f),
            Self::Sql(s) => write_sql(f, s),
        }
    }
}

/// A DataFusion statement as SQL that parses back to it: DataFusion prints
/// `COPY`'s target without its quotes (`TO out.csv`), which its own parser
/// then refuses, so `COPY`, and an `EXPLAIN` of one, are printed here.
fn write_sql(f: &mut fmt::Formatter<'_>, statement: &DFStatement) -> fmt::Result {
    match statement {
        DFStatement::CopyTo(copy) => write_copy(f, copy),
        DFStatement::Explain(explain) => match explain.statement.as_ref() {
            DFStatement::CopyTo(copy) => {
                // DataFusion prints the explained statement last.
                let text = explain.to_string();
                let inner = copy.to_string();
                match text.strip_suffix(inner.as_str()) {
                    Some(prefix) => {
                        f.write_str(prefix)?;
                        write_copy(f, copy)
                    }
                    None => f.write_str(&text),
                }
            }
            _ => fmt::Display::fmt(explain, f),
        },
        other => fmt::Display::fmt(other, f),
    }
}

fn write_copy(f: &mut fmt::Formatter<'_>, copy: &CopyToStatement) -> fmt::Result {
    let target = copy.target.replace('\'', "''");
    write!(f, "COPY {} TO '{target}'", copy.source)?;
    if let Some(format) = &copy.stored_as {
        write!(f, " STORED AS {format}")?;
    }
    if !copy.partitioned_by.is_empty() {
        write!(f, " PARTITIONED BY ({})", copy.partitioned_by.join(", "))?;
    }
    if !copy.options.is_empty() {
        let options: Vec<_> = copy
            .options
            .iter()
            .map(|(k, v)| format!("'{}' {v}", k.replace('\'', "''")))
            .collect();
        write!(f, " OPTIONS ({})", options.join(", "))?;
    }
    Ok(())
}

impl fmt::Display for CreateNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exists = if_not_exists(self.if_not_exists);
        write!(f, "CREATE NAMESPACE {exists}{}", name(&self.name))
    }
}

impl fmt::Display for DropNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exists = if_exists(self.if_exists);
        write!(f, "DROP NAMESPACE {exists}{}", name(&self.name))
    }
}

impl fmt::Display for CreateUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exists = if_not_exists(self.if_not_exists);
        let user = string(&self.name);
        write!(f, "CREATE USER {exists}{user} WITH ROLE {}", self.role)?;
        match &self.verifier {
            Some(verifier) => write!(f, " PASSWORD {}", string(&verifier.to_string())),
            None => Ok(()),
        }
    }
}

impl fmt::Display for AlterUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = string(&self.name);
        let verifier = string(&self.verifier.to_string());
        write!(f, "ALTER USER {user} WITH PASSWORD {verifier}")
    }
}

impl fmt::Display for DropUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exists = if_exists(self.if_exists);
        write!(f, "DROP USER {exists}{}", string(&self.name))
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, direction) = match self.revoke {
            true => ("REVOKE", "FROM"),
            false => ("GRANT", "TO"),
        };
        let privileges: Vec<&str> = self
            .privileges
            .iter()
            .map(|access| match access {
                Access::Select => "SELECT",
                Access::Insert => "INSERT",
                Access::Update => "UPDATE",
                Access::Delete => "DELETE",
            })
            .collect();
        write!(
            f,
            "{verb} {} ON TABLE {} {direction} {}",
            privileges.join(", "),
            self.table,
            string(&self.user)
        )
    }
}

impl fmt::Display for ExecuteAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EXECUTE AS USER {} ({})",
            string(&self.user),
            self.statement
        )
    }
}

impl fmt::Display for CreateTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The options go back where DataFusion's printer puts them.
        let mut statement = self.statement.clone();
        if let DFStatement::Statement(boxed) = &mut statement
            && let SqlStatement::CreateTable(create) = boxed.as_mut()
            && !self.options.is_empty()
        {
            create.table_options = CreateTableOptions::With(
                self.options
                    .iter()
                    .map(|(key, value)| SqlOption::KeyValue {
                        key: Ident::new(key),
                        value: SqlExpr::Value(string(value).into()),
                    })
                    .collect(),
            );
        }
        let text = statement.to_string();
        match self.kind {
            Some(kind) => {
                let kind = kind.as_str().to_ascii_uppercase();
                f.write_str(&text.replacen("CREATE TABLE", &format!("CREATE {kind} TABLE"), 1))
            }
            None => f.write_str(&text),
        }
    }
}

impl fmt::Display for CreateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (source, kind) = (name(&self.name), name(&self.kind));
        write!(f, "CREATE SOURCE {source} TYPE {kind}")?;
        fmt_options(f, "WITH", &self.options)
    }
}

impl fmt::Display for DropSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exists = if_exists(self.if_exists);
        write!(f, "DROP SOURCE {exists}{}", name(&self.name))
    }
}

impl fmt::Display for AlterTopics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.add { "ADD" } else { "DROP" };
        let topics: Vec<String> = self.topics.iter().map(|t| string(t).to_string()).collect();
        write!(
            f,
            "ALTER STREAM TABLE {} {verb} TOPICS ({})",
            self.table,
            topics.join(", ")
        )
    }
}

impl fmt::Display for Subscribe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SUBSCRIBE TO {}", self.table)?;
        if let Some(predicate) = &self.predicate {
            write!(f, " WHERE {predicate}")?;
        }
        fmt_options(f, "OPTIONS", &self.options)
    }
}

impl fmt::Display for FlushTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.compact { "COMPACT" } else { "FLUSH" };
        write!(f, "{verb} TABLE {}", self.table)
    }
}

impl fmt::Display for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.table {
            Some(table) => write!(f, "VERIFY TABLE {table}"),
            None => f.write_str("VERIFY DATABASE"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_custom_statements() {
        assert_eq!(
            parse("CREATE NAMESPACE IF NOT EXISTS App").unwrap(),
            TenantStatement::CreateNamespace(CreateNamespace {
                name: "app".into(),
                if_not_exists: true
            })
        );
        assert!(matches!(
            parse("create user 'Alice' with role service;").unwrap(),
            TenantStatement::CreateUser(CreateUser { name, role: Role::Service, .. }) if name == "Alice"
        ));
        assert!(matches!(
            parse("GRANT SELECT, INSERT ON app.t TO bob").unwrap(),
            TenantStatement::Grant(Grant { privileges, user, revoke: false, .. })
                if privileges.len() == 2 && user == "bob"
        ));
        let TenantStatement::CreateTable(create) =
            parse("CREATE SHARED TABLE app.t (id INT) WITH (ACCESS_LEVEL = 'restricted')").unwrap()
        else {
            panic!("not a CREATE TABLE");
        };
        assert_eq!(create.kind, Some(TableType::Shared));
        assert_eq!(
            create.options,
            vec![("ACCESS_LEVEL".to_string(), "restricted".to_string())]
        );
        assert!(matches!(
            parse("CREATE TABLE t (a INT)").unwrap(),
            TenantStatement::CreateTable(CreateTable { kind: None, .. })
        ));
    }

    #[test]
    fn parses_live_statements() {
        let TenantStatement::CreateSource(source) =
            parse("CREATE SOURCE Feed TYPE websocket WITH (URL = 'ws://x', WEIGHT = 2)").unwrap()
        else {
            panic!("not a CREATE SOURCE");
        };
        assert_eq!(
            (source.name.as_str(), source.kind.as_str()),
            ("feed", "websocket")
        );
        assert_eq!(source.options[1], ("WEIGHT".to_string(), "2".to_string()));
        assert!(matches!(
            parse("DROP SOURCE IF EXISTS feed").unwrap(),
            TenantStatement::DropSource(DropSource {
                if_exists: true,
                ..
            })
        ));
        assert!(matches!(
            parse("flush table app.notes;").unwrap(),
            TenantStatement::FlushTable(FlushTable { table, compact: false })
                if table.to_string() == "app.notes"
        ));
        assert!(matches!(
            parse("COMPACT TABLE t").unwrap(),
            TenantStatement::FlushTable(FlushTable { compact: true, .. })
        ));
        assert!(matches!(
            parse("verify table app.notes").unwrap(),
            TenantStatement::Verify(Verify { table: Some(table) }) if table.to_string() == "app.notes"
        ));
        assert_eq!(
            parse("VERIFY DATABASE;").unwrap(),
            TenantStatement::Verify(Verify { table: None })
        );
        let TenantStatement::AlterTopics(alter) =
            parse("ALTER STREAM TABLE m.ticks DROP TOPICS ('A', 'B')").unwrap()
        else {
            panic!("not an ALTER STREAM TABLE");
        };
        assert!(!alter.add);
        assert_eq!(alter.topics, ["A", "B"]);
        let TenantStatement::Subscribe(subscribe) =
            parse("SUBSCRIBE TO m.ticks WHERE symbol = 'A' AND price > 1 OPTIONS (LAST_ROWS = 5)")
                .unwrap()
        else {
            panic!("not a SUBSCRIBE");
        };
        let predicate = subscribe.predicate.map(|p| p.to_string());
        assert_eq!(predicate.as_deref(), Some("symbol = 'A' AND price > 1"));
        assert_eq!(
            subscribe.options,
            [("LAST_ROWS".to_string(), "5".to_string())]
        );
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
    fn execute_as_parses_the_inner_statement_from_its_tokens() {
        let inner = |sql: &str| match parse(sql).unwrap() {
            TenantStatement::ExecuteAs(execute) => (execute.user, *execute.statement),
            other => panic!("unexpected {other:?}"),
        };
        let (user, statement) = inner("EXECUTE AS USER 'bob' (SELECT ')' , \"x(\" FROM t);");
        assert_eq!(user, "bob");
        assert_eq!(statement, parse("SELECT ')' , \"x(\" FROM t").unwrap());
        assert_eq!(
            inner("EXECUTE AS USER 'bob'\n  (\n SELECT 1\n)").1,
            parse("SELECT 1").unwrap()
        );
        // Comments inside and after the statement, parentheses inside it,
        // one of our own statements, and EXECUTE AS inside EXECUTE AS.
        for (sql, alone) in [
            ("EXECUTE AS USER 'b' (SELECT 1) -- note", "SELECT 1"),
            ("EXECUTE AS USER 'b' (SELECT (1)) /* ) */ ;", "SELECT (1)"),
            (
                "EXECUTE AS USER 'b' (SELECT f((2), ')') -- )\n)",
                "SELECT f((2), ')')",
            ),
            ("EXECUTE AS USER 'b' (SELECT 1 /* ) */ ) -- )", "SELECT 1"),
            (
                "EXECUTE AS USER 'b' (FLUSH TABLE app.t;)",
                "FLUSH TABLE app.t",
            ),
            // DataFusion's own statements that must end the input.
            (
                "EXECUTE AS USER 'b' (COPY t TO 'x.csv' STORED AS CSV)",
                "COPY t TO 'x.csv' STORED AS CSV",
            ),
            (
                "EXECUTE AS USER 'b' (EXPLAIN ANALYZE COPY (SELECT 1) TO 'x' STORED AS CSV)",
                "EXPLAIN ANALYZE COPY (SELECT 1) TO 'x' STORED AS CSV",
            ),
            (
                "EXECUTE AS USER 'b' (EXECUTE AS USER 'c' (SELECT 2))",
                "EXECUTE AS USER 'c' (SELECT 2)",
            ),
        ] {
            assert_eq!(inner(sql).1, parse(alone).unwrap(), "{sql}");
        }
    }

    /// One statement of deeply nested `EXECUTE AS` is refused as it is
    /// parsed, on the small stack a server thread has, before it is run.
    #[test]
    fn nested_execute_as_is_bounded() {
        let nested = |depth: usize| {
            let open = "EXECUTE AS USER 'a' (".repeat(depth);
            format!("{open}SELECT 1{}", ")".repeat(depth))
        };
        let parsed = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let deepest = parse(&nested(MAX_EXECUTE_AS_DEPTH + 1)).map(drop);
                let far_deeper = parse(&nested(100_000)).map(drop);
                (
                    parse(&nested(MAX_EXECUTE_AS_DEPTH)).map(drop),
                    deepest,
                    far_deeper,
                )
            })
            .unwrap()
            .join()
            .expect("parsing nested EXECUTE AS overflowed the stack");
        assert!(parsed.0.is_ok(), "{:?}", parsed.0);
        for refused in [parsed.1, parsed.2] {
            assert_eq!(refused.unwrap_err().code(), "SYNTAX_ERROR");
        }
    }

    #[test]
    fn grant_takes_each_privilege_and_all() {
        assert!(matches!(
            parse("GRANT UPDATE, DELETE ON t TO 'bob'").unwrap(),
            TenantStatement::Grant(Grant { privileges, .. })
                if privileges == [Access::Update, Access::Delete]
        ));
        assert!(matches!(
            parse("REVOKE ALL PRIVILEGES ON t FROM 'bob'").unwrap(),
            TenantStatement::Grant(Grant { privileges, revoke: true, .. }) if privileges == Access::ALL
        ));
    }

    #[test]
    fn bad_input_is_a_syntax_error() {
        for sql in [
            "SELEC 1",
            "CREATE NAMESPACE",
            "GRANT DROP ON t TO bob",
            "EXECUTE AS USER 'bob' (SELECT 1",
            "EXECUTE AS USER 'bob' (SELECT 1) SELECT 2",
            "EXECUTE AS USER 'bob' (SELECT 1; SELECT 2)",
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

    /// Every statement of ours, printed, parses back to an equal statement;
    /// names that need quotes keep them.
    #[test]
    fn every_statement_prints_as_sql_that_parses_back_to_it() {
        let ours = [
            "CREATE NAMESPACE IF NOT EXISTS \"Mixed Case\"",
            "DROP NAMESPACE IF EXISTS app",
            "CREATE USER IF NOT EXISTS 'O''Brien' WITH ROLE dba",
            "CREATE USER 'carol' PASSWORD 'pencil' ROLE service",
            "ALTER USER 'carol' WITH PASSWORD 'it''s'",
            "DROP USER 'bob'",
            "GRANT SELECT, DELETE ON app.t TO 'bob'",
            "REVOKE ALL ON TABLE app.\"T\" FROM 'bob'",
            "EXECUTE AS USER 'bob' (SELECT * FROM app.t WHERE a = ')')",
            "CREATE STREAM TABLE m.ticks (symbol TEXT, price DOUBLE) WITH (SOURCE = 'feed', TTL_SECONDS = 60)",
            "CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT)",
            "CREATE TABLE app.copy AS SELECT 1 AS one",
            "CREATE SOURCE \"Feed\" TYPE websocket WITH (URL = 'ws://127.0.0.1:1/x?a=''b''')",
            "DROP SOURCE IF EXISTS feed",
            "ALTER STREAM TABLE m.ticks ADD TOPICS ('A', 'it''s')",
            "SUBSCRIBE TO m.ticks WHERE symbol IN ('A', 'B') AND price > 1.5 OPTIONS (LAST_ROWS = 5, SLOW_CONSUMER = 'disconnect')",
            "SUBSCRIBE TO notes",
            "FLUSH TABLE app.notes",
            "COMPACT TABLE app.notes",
            "VERIFY TABLE app.notes",
            "VERIFY DATABASE",
        ];
        let mut checked = 0;
        for sql in ours
            .into_iter()
            .map(String::from)
            .chain(tenantfusion_test_support::slt_corpus())
        {
            let Ok(statement) = parse(&sql) else {
                continue; // records that expect a syntax error
            };
            if matches!(statement, TenantStatement::Sql(_)) {
                continue; // DataFusion's own, printed by sqlparser
            }
            let printed = statement.to_string();
            let again = parse(&printed)
                .unwrap_or_else(|e| panic!("{sql}\n printed as {printed}\n does not parse: {e}"));
            assert_eq!(again, statement, "{sql}\n printed as {printed}");
            checked += 1;
        }
        assert!(checked > 60, "only {checked} statements of ours checked");
    }

    #[test]
    fn a_password_is_its_verifier_from_the_parse_on() {
        for sql in [
            "CREATE USER 'carol' WITH PASSWORD 'hunter2' ROLE dba",
            "ALTER USER 'carol' PASSWORD 'hunter2'",
        ] {
            let statement = parse(sql).unwrap();
            for shown in [statement.to_string(), format!("{statement:?}")] {
                assert!(!shown.contains("hunter2"), "{shown}");
            }
            assert!(statement.to_string().contains("'SCRAM-SHA-256$4096:"));
            // The same password twice: two salts, two verifiers.
            assert_ne!(parse(sql).unwrap(), statement);
        }
    }
}
