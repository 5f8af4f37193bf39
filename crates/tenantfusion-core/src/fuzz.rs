//! How long the workspace's property tests (its fuzzers) run.

/// Cases per property test: the `TENANTFUSION_FUZZ_CASES` environment
/// variable when set (`scripts/fuzz.sh` sets thousands), else `default`,
/// what CI runs.
///
/// ```
/// assert_eq!(tenantfusion_core::fuzz_cases(64), std::env::var("TENANTFUSION_FUZZ_CASES")
///     .ok().and_then(|c| c.parse().ok()).unwrap_or(64));
/// ```
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("TENANTFUSION_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}
