//! Runs every `.slt` file under `sql-tests/slt/` twice, the second time
//! running each query twice and comparing (the plan cache's check); files
//! under `slt/user_tables/` run in `--user-tables` mode.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tenantfusion_sql_tests::{SltOptions, Summary, run_files};

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            slt_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files = Vec::new();
    slt_files(&root, &mut files);
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let user_tables_dir = root.join("user_tables");
    let (user_tables, plain): (Vec<_>, Vec<_>) = files
        .into_iter()
        .filter(|f| {
            filter
                .as_ref()
                .is_none_or(|s| f.to_string_lossy().contains(s.as_str()))
        })
        .partition(|f| f.starts_with(&user_tables_dir));
    assert!(
        !plain.is_empty(),
        "no .slt files found under {}",
        root.display()
    );
    // Each file runs twice: as written, then with every query run three
    // times (the last from the plan cache) and compared.
    let mut total = Summary::default();
    for repeat_queries in [false, true] {
        let plain_options = SltOptions {
            user_tables: false,
            repeat_queries,
            ..SltOptions::default()
        };
        let user_options = SltOptions {
            user_tables: true,
            repeat_queries,
            ..SltOptions::default()
        };
        for part in [
            run_files(&plain, &plain_options).await,
            run_files(&user_tables, &user_options).await,
        ] {
            total += part;
        }
    }
    println!("{total}");
    assert!(
        total.from_cache > total.repeated / 2,
        "most repeated queries should come from the plan cache: {total}"
    );
    if total.failed == 0 && total.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
