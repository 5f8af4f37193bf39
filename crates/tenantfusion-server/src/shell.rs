//! `tenantfusion shell`: an interactive SQL shell, on an engine of its own
//! (`--data-dir`, as one user) or on a server (`--connect postgres://...`).
//!
//! The binary reads lines (with line editing and history on a terminal,
//! plainly from a pipe) and hands each to [`Shell::line`], which gathers
//! them until a statement ends with `;`, runs it, and returns what to
//! print: psql-like aligned tables with a row count, or the error. Lines
//! starting with `\` are commands: `\d [table]`, `\dt`, `\du`,
//! `\timing [on|off]`, `\?`, `\q`.

use std::fmt::Write as _;
use std::time::Instant;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use tenantfusion::TenantSession;
use tokio_postgres::SimpleQueryMessage;

use crate::statements::{Kind, split};

/// Where the shell's statements run.
#[derive(Debug)]
pub enum Target {
    /// In this process, as the session's user.
    Embedded(TenantSession),
    /// On a server, as the connection's user.
    Remote(tokio_postgres::Client),
}

/// What one input line led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Print this and read on.
    Print {
        /// What to print (possibly nothing).
        text: String,
        /// A statement is unfinished (the prompt says so).
        continued: bool,
    },
    /// `\q`: leave.
    Quit,
}

/// The shell's state: where it runs, the unfinished statement, `\timing`.
#[derive(Debug)]
pub struct Shell {
    target: Target,
    buffer: String,
    timing: bool,
}

/// Columns and rows as text (`None`: NULL).
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Shell {
    /// A shell over `target`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            buffer: String::new(),
            timing: false,
        }
    }

    /// The prompt for the next line.
    pub fn prompt(&self) -> &'static str {
        if self.buffer.trim().is_empty() {
            "tenantfusion=> "
        } else {
            "tenantfusion-> "
        }
    }

    /// Takes one input line.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use tenantfusion::{Engine, EngineConfig, Role, UserContext};
    /// use tenantfusion_server::shell::{Shell, Step, Target};
    ///
    /// let engine = Engine::new(EngineConfig::default()).unwrap();
    /// let mut shell = Shell::new(Target::Embedded(engine.session(UserContext::new("a", Role::User))));
    /// assert_eq!(shell.line("SELECT 1 AS one,").await, Step::Print { text: String::new(), continued: true });
    /// let Step::Print { text, .. } = shell.line("2 AS two;").await else { panic!() };
    /// assert_eq!(text, " one | two \n-----+-----\n 1   | 2   \n(1 row)\n");
    /// # });
    /// ```
    pub async fn line(&mut self, line: &str) -> Step {
        if self.buffer.trim().is_empty() && line.trim_start().starts_with('\\') {
            return self.command(line.trim()).await;
        }
        self.buffer.push_str(line);
        self.buffer.push('\n');
        if !self.buffer.trim_end().ends_with(';') {
            return Step::Print {
                text: String::new(),
                continued: !self.buffer.trim().is_empty(),
            };
        }
        let text = self.flush().await;
        Step::Print {
            text,
            continued: false,
        }
    }

    /// Runs what is left unfinished (at the end of input).
    pub async fn finish(&mut self) -> String {
        self.flush().await
    }

    async fn flush(&mut self) -> String {
        let input = std::mem::take(&mut self.buffer);
        let mut out = String::new();
        for piece in split(&input) {
            out.push_str(&self.run(piece.sql, &piece.kind).await);
        }
        out
    }

    async fn command(&mut self, line: &str) -> Step {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        let argument = words.next();
        let text = match (name, argument) {
            ("\\q", _) => return Step::Quit,
            ("\\timing", None) => self.set_timing(!self.timing),
            ("\\timing", Some("on")) => self.set_timing(true),
            ("\\timing", Some("off")) => self.set_timing(false),
            ("\\dt", _) | ("\\d", None) => {
                self.run(
                    "SELECT namespace, table_name, table_type, access_level \
                     FROM system.tables ORDER BY namespace, table_name",
                    &ROWS,
                )
                .await
            }
            ("\\d", Some(table)) => self.run(&format!("SHOW COLUMNS FROM {table}"), &ROWS).await,
            ("\\du", _) => {
                self.run(
                    "SELECT user_id, role FROM system.users ORDER BY user_id",
                    &ROWS,
                )
                .await
            }
            ("\\?", _) => HELP.to_string(),
            _ => format!("invalid command {name}; \\? lists them\n"),
        };
        Step::Print {
            text,
            continued: false,
        }
    }

    fn set_timing(&mut self, on: bool) -> String {
        self.timing = on;
        format!("Timing is {}.\n", if on { "on" } else { "off" })
    }

    /// Runs one statement of kind `kind`; its table, tag or error as text.
    async fn run(&mut self, sql: &str, kind: &Kind) -> String {
        let started = Instant::now();
        let result = match &self.target {
            Target::Embedded(session) => embedded(session, sql).await,
            Target::Remote(client) => remote(client, sql).await,
        };
        let mut out = match (result, kind) {
            // A change answers with its count, as psql shows it.
            (Ok(Outcome::Rows(table)), Kind::Change(command)) => {
                let changed = table
                    .rows
                    .first()
                    .and_then(|row| row.first().cloned().flatten())
                    .unwrap_or_default();
                change_tag(command, &changed)
            }
            (Ok(Outcome::Done(changed)), Kind::Change(command)) => {
                change_tag(command, &changed.to_string())
            }
            (Ok(Outcome::Rows(table)), _) => render(&table),
            (Ok(Outcome::Done(_)), _) => String::new(),
            (Err(message), _) => format!("ERROR:  {message}\n"),
        };
        if self.timing {
            let _ = writeln!(
                out,
                "Time: {:.3} ms",
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        out
    }
}

/// The kind of the statements the commands run.
const ROWS: Kind = Kind::Rows("SELECT");

/// What a statement gave: rows, or a completion with this many rows.
enum Outcome {
    Rows(Table),
    Done(u64),
}

fn change_tag(command: &str, changed: &str) -> String {
    if command == "INSERT" {
        format!("INSERT 0 {changed}\n")
    } else {
        format!("{command} {changed}\n")
    }
}

const HELP: &str = "\
\\d [table]        list tables, or a table's columns
\\dt               list tables
\\du               list users
\\timing [on|off]  show how long each statement takes
\\q                quit
Statements end with ';' and may span lines.
";

async fn embedded(session: &TenantSession, sql: &str) -> Result<Outcome, String> {
    let query = session.sql(sql).await.map_err(|e| e.to_string())?;
    let schema = query.schema().clone();
    let batches = query.collect().await.map_err(|e| e.to_string())?;
    if schema.fields().is_empty() {
        return Ok(Outcome::Done(0));
    }
    let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(text_rows(batch).map_err(|e| e.to_string())?);
    }
    Ok(Outcome::Rows(Table { columns, rows }))
}

fn text_rows(
    batch: &RecordBatch,
) -> Result<Vec<Vec<Option<String>>>, datafusion::arrow::error::ArrowError> {
    let options = FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| {
            batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(column, format)| {
                    (!column.is_null(row)).then(|| format.value(row).to_string())
                })
                .collect()
        })
        .collect())
}

async fn remote(client: &tokio_postgres::Client, sql: &str) -> Result<Outcome, String> {
    let messages = client.simple_query(sql).await.map_err(|e| {
        e.as_db_error()
            .map(|db| db.message().to_string())
            .unwrap_or_else(|| e.to_string())
    })?;
    let mut table: Option<Table> = None;
    let mut completed = 0;
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                table = Some(Table {
                    columns: columns.iter().map(|c| c.name().to_string()).collect(),
                    rows: Vec::new(),
                });
            }
            SimpleQueryMessage::Row(row) => {
                if let Some(table) = &mut table {
                    table.rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    );
                }
            }
            SimpleQueryMessage::CommandComplete(rows) => completed = rows,
            _ => {}
        }
    }
    Ok(table.map_or(Outcome::Done(completed), Outcome::Rows))
}

/// psql's aligned format: a header, a rule, the rows, `(n rows)`.
fn render(table: &Table) -> String {
    let cell = |value: &Option<String>| value.clone().unwrap_or_default();
    let mut widths: Vec<usize> = table.columns.iter().map(|c| c.chars().count()).collect();
    for row in &table.rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell(value).chars().count());
        }
    }
    let line = |values: Vec<String>| {
        values
            .iter()
            .zip(&widths)
            .map(|(value, width)| format!(" {value:<width$} "))
            .collect::<Vec<_>>()
            .join("|")
    };
    let mut out = line(table.columns.clone());
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+"),
    );
    out.push('\n');
    for row in &table.rows {
        out.push_str(&line(row.iter().map(cell).collect()));
        out.push('\n');
    }
    let n = table.rows.len();
    let _ = writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" });
    out
}
