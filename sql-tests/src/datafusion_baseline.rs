//! The same `.slt` files on stock DataFusion, record by record: the baseline
//! that tenantfusion's results are compared with.
//!
//! DataFusion's own runner (`datafusion-sqllogictest`'s `DataFusion` engine
//! and `TestContext`, which registers the extra tables some files expect)
//! runs each record, so a record counts as "passing on DataFusion" exactly
//! when DataFusion's CI would pass it with the data this machine has.
//! Records are paired with tenantfusion's by position: both runs walk the
//! same parsed records in order.

use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::TableType;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;
use datafusion_sqllogictest::{
    DFColumnType, DataFusion, TestContext, df_value_validator, value_normalizer,
};
use indicatif::ProgressBar;
use sqllogictest::{Runner, strict_column_validator};
use tenantfusion::{AccessLevel, Engine};

use crate::{FileReport, RecordOutcome, SltOptions, Step, run_file};

/// The session DataFusion's `TestContext` sets up for the file `path` of
/// `test_files`, with the tables and functions it registers in Rust for
/// that file (most files: none); `None` when DataFusion's runner skips the
/// file in this build.
pub async fn test_context(path: &Path, test_files: &Path) -> Option<SessionContext> {
    let relative = path.strip_prefix(test_files).unwrap_or(path);
    let context = TestContext::try_new_for_test_file(relative).await?;
    Some(context.session_ctx().clone())
}

/// Registers in `engine`'s default namespace, as PUBLIC host tables, the
/// tables of `ctx`'s default schema (a [`test_context`]); `path` names the
/// file in errors.
pub async fn register_test_tables(
    engine: &Engine,
    ctx: &SessionContext,
    path: &Path,
) -> Result<(), String> {
    let options = ctx.state().config().options().catalog.clone();
    let Some(schema) = ctx
        .catalog(&options.default_catalog)
        .and_then(|catalog| catalog.schema(&options.default_schema))
    else {
        return Ok(());
    };
    let namespace = engine.config().default_namespace.clone();
    for name in schema.table_names() {
        let Some(table) = schema.table(&name).await.map_err(|e| e.to_string())? else {
            continue;
        };
        // DataFusion's stand-in for a temporary table
        // (`information_schema_table_types.slt`) has no schema at all: it
        // only shows what information_schema says of one, and stays
        // DataFusion's.
        if table.table_type() == TableType::Temporary {
            continue;
        }
        engine
            .register_host_table(&namespace, &name, table, AccessLevel::Public)
            .await
            .map_err(|e| format!("{}: host table {name}: {e}", path.display()))?;
    }
    Ok(())
}

/// The scalar functions of `ctx` (a [`test_context`]) beyond DataFusion's
/// own (for `joins.slt`, `async_udf.slt`), to offer as the host's.
pub fn test_functions(ctx: &SessionContext) -> Vec<Arc<ScalarUDF>> {
    let stock = SessionStateBuilder::new().with_default_features().build();
    ctx.state()
        .scalar_functions()
        .iter()
        .filter(|(name, _)| !stock.scalar_functions().contains_key(*name))
        .map(|(_, function)| Arc::clone(function))
        .collect()
}

/// Runs one file of DataFusion's `test_files/` on stock DataFusion.
///
/// `test_files` is the directory the file's name is taken relative to
/// (DataFusion chooses per-file set-up by that name). Paths inside the file
/// are relative to the working directory, as in DataFusion's own runner:
/// run from the directory that holds `test_files/`.
pub async fn run_file_on_datafusion(path: &Path, test_files: &Path) -> Result<FileReport, String> {
    let relative = path.strip_prefix(test_files).unwrap_or(path).to_path_buf();
    let Some(ctx) = test_context(path, test_files).await else {
        return Err(format!(
            "{}: DataFusion's runner skips it in this build",
            path.display()
        ));
    };
    fresh_scratch_dir(test_files, &relative)?;
    let records = sqllogictest::parse_file::<DFColumnType>(path)
        .map_err(|e| format!("{}: cannot parse: {e}", path.display()))?;
    let mut runner = Runner::new(move || {
        let engine = DataFusion::new(ctx.clone(), relative.clone(), ProgressBar::hidden());
        async move { Ok(engine) }
    });
    runner.add_label("Datafusion");
    runner.with_column_validator(strict_column_validator);
    runner.with_normalizer(value_normalizer);
    runner.with_validator(df_value_validator);

    let mut report = FileReport::default();
    for record in records {
        let loc = match Step::of(&record) {
            Step::Check(loc, _) => loc.clone(),
            Step::Stop => break,
            Step::Setting | Step::Other => {
                // DataFusion's runner takes every other record as it comes.
                let _ = runner.run_async(record).await;
                continue;
            }
        };
        let result = runner.run_async(record).await;
        report.records.push(RecordOutcome::new(&loc, result));
    }
    Ok(report)
}

/// Empties `test_files/scratch/<file stem>/`, where DataFusion's files write
/// (its runner does the same before each file), so neither run reads what
/// the other wrote.
fn fresh_scratch_dir(test_files: &Path, relative: &Path) -> Result<(), String> {
    let stem = relative.file_stem().unwrap_or_default();
    let dir = test_files.join("scratch").join(stem);
    let failed = |e: std::io::Error| format!("{}: {e}", dir.display());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(failed)?;
    }
    std::fs::create_dir_all(&dir).map_err(failed)
}

/// One file run on stock DataFusion and on tenantfusion.
#[derive(Debug)]
pub struct Comparison {
    /// The file's outcome on stock DataFusion.
    pub datafusion: FileReport,
    /// The file's outcome on tenantfusion.
    pub tenantfusion: FileReport,
}

impl Comparison {
    /// Records that pass on DataFusion but not on tenantfusion, with
    /// tenantfusion's failure.
    pub fn only_on_datafusion(&self) -> impl Iterator<Item = &RecordOutcome> {
        self.datafusion
            .records
            .iter()
            .zip(&self.tenantfusion.records)
            .filter(|(theirs, ours)| theirs.failure.is_none() && ours.failure.is_some())
            .map(|(_, ours)| ours)
    }

    /// How many records pass on DataFusion.
    pub fn passing_on_datafusion(&self) -> usize {
        self.datafusion.passed()
    }
}

/// Runs one file on DataFusion, then (with a fresh scratch directory) on
/// tenantfusion with `options`.
pub async fn compare_file(
    path: &Path,
    test_files: &Path,
    options: &SltOptions,
) -> Result<Comparison, String> {
    let datafusion = run_file_on_datafusion(path, test_files).await?;
    fresh_scratch_dir(test_files, path.strip_prefix(test_files).unwrap_or(path))?;
    let tenantfusion = run_file(path, options).await?;
    if datafusion.records.len() != tenantfusion.records.len() {
        return Err(format!(
            "{}: the two runs saw different records ({} and {})",
            path.display(),
            datafusion.records.len(),
            tenantfusion.records.len()
        ));
    }
    Ok(Comparison {
        datafusion,
        tenantfusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose records pass or fail alike on both engines, but for one:
    /// a second connection reading the first one's rows, which DataFusion
    /// shows and a user table does not (the rows are another user's).
    const FILE: &str = "\
statement ok
CREATE TABLE t AS VALUES (1), (2)

query I rowsort
SELECT column1 FROM t
----
1
2

query I
SELECT 3
----
4

connection bob
query I rowsort
SELECT column1 FROM t
----
1
2
";

    #[tokio::test]
    async fn reports_the_records_that_pass_on_datafusion_only() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let test_files = dir.path().join("test_files");
        std::fs::create_dir_all(&test_files).expect("test_files");
        let path = test_files.join("two_users.slt");
        std::fs::write(&path, FILE).expect("write the file");
        let options = SltOptions {
            user_tables: true,
            ..SltOptions::default()
        };

        let comparison = compare_file(&path, &test_files, &options)
            .await
            .expect("both runs");

        assert_eq!(comparison.datafusion.records.len(), 4);
        assert_eq!(comparison.passing_on_datafusion(), 3, "{comparison:?}");
        assert_eq!(comparison.tenantfusion.passed(), 2, "{comparison:?}");
        let only: Vec<_> = comparison.only_on_datafusion().collect();
        assert_eq!(only.len(), 1, "{only:?}");
        assert!(only[0].at.ends_with("two_users.slt:16"), "{only:?}");
        assert!(test_files.join("scratch/two_users").is_dir());
    }

    /// DataFusion's runner registers `table_with_map` in Rust for files named
    /// `map.slt`; offered as a host table, every connection reads it and nobody drops it.
    #[tokio::test]
    async fn the_tables_datafusion_registers_in_rust_are_host_tables() {
        const MAP: &str = "\
query I
SELECT count(*) FROM table_with_map
----
0

connection bob
query I
SELECT count(*) FROM table_with_map
----
0

statement error NOT_SUPPORTED: host table 'public.table_with_map'
DROP TABLE table_with_map
";
        let dir = tempfile::tempdir().expect("temporary directory");
        let test_files = dir.path().join("test_files");
        std::fs::create_dir_all(&test_files).expect("test_files");
        let path = test_files.join("map.slt");
        std::fs::write(&path, MAP).expect("write the file");
        let options = SltOptions {
            user_tables: true,
            datafusion_tables: Some(test_files.clone()),
            ..SltOptions::default()
        };
        let comparison = compare_file(&path, &test_files, &options)
            .await
            .expect("both runs");
        assert_eq!(comparison.tenantfusion.passed(), 3, "{comparison:?}");
        assert_eq!(comparison.passing_on_datafusion(), 2, "{comparison:?}");
    }
}
