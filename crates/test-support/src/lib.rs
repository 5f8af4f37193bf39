//! What the tests of several crates share, in one dev-only crate (it was a
//! `#[path]` include of one crate's test file into another's):
//!
//! - [`fuzz_cases`]: how many cases each property test (fuzzer) runs;
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
