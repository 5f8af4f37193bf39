//! What the tests of several crates share, in one dev-only crate (it was a
//! `#[path]` include of one crate's test file into another's):
//!
//! - [`fuzz_cases`]: how many cases each property test (fuzzer) runs;
//! - [`slt_corpus`]: the SQL of every record of the sqllogictest files;
//! - [`upstream`]: a WebSocket upstream on 127.0.0.1 that live sources are
//!   tested against.

#![deny(missing_docs)]

pub mod upstream;

/// Cases per property test: the `TENANTFUSION_FUZZ_CASES` environment
/// variable when set (`scripts/fuzz.sh` sets thousands), else `default`,
/// what CI runs.
///
/// ```
/// assert_eq!(tenantfusion_test_support::fuzz_cases(64), std::env::var("TENANTFUSION_FUZZ_CASES")
///     .ok().and_then(|c| c.parse().ok()).unwrap_or(64));
/// ```
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("TENANTFUSION_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

/// The SQL of every `statement` and `query` record of the engine's
/// sqllogictest files (`sql-tests/slt`, subdirectories included), in file
/// order: what the parser's round-trip test and the SQL fuzzer start from.
///
/// ```
/// let corpus = tenantfusion_test_support::slt_corpus();
/// assert!(corpus.iter().any(|sql| sql.starts_with("CREATE")));
/// ```
pub fn slt_corpus() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql-tests/slt");
    let mut files = Vec::new();
    let mut pending = vec![dir.clone()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "slt") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut statements = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if !(line.starts_with("statement") || line.starts_with("query")) {
                continue;
            }
            let sql: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.trim().is_empty() && *l != "----")
                .collect();
            if !sql.is_empty() {
                statements.push(sql.join("\n"));
            }
        }
    }
    assert!(!statements.is_empty(), "no records in {}", dir.display());
    statements
}
