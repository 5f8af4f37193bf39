//! When a table's rows move from the log and memory to Parquet segments.

use std::fmt;
use std::time::Duration;

use tenantfusion_core::{Result, TenantError};

/// When a durable table flushes a partition on its own (`FLUSH TABLE`
/// flushes at any time): once it holds `rows` unflushed rows, or once its
/// oldest unflushed row is `interval` old, whichever comes first.
///
/// Written as a table option: `WITH (FLUSH_POLICY = 'rows:10000,interval:300')`
/// (interval in seconds; either part may be left out, `none` turns both off).
///
/// ```
/// use std::time::Duration;
/// use tenantfusion_store::FlushPolicy;
///
/// let policy: FlushPolicy = "rows:500,interval:60".parse().unwrap();
/// assert_eq!(policy.rows, Some(500));
/// assert_eq!(policy.interval, Some(Duration::from_secs(60)));
/// assert_eq!(policy.to_string(), "rows:500,interval:60");
/// assert!("rows:0".parse::<FlushPolicy>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Flush a partition holding this many unflushed rows.
    pub rows: Option<u64>,
    /// Flush a partition whose oldest unflushed row is this old.
    pub interval: Option<Duration>,
}

impl Default for FlushPolicy {
    /// `rows:10000,interval:300`.
    fn default() -> Self {
        Self {
            rows: Some(10_000),
            interval: Some(Duration::from_secs(300)),
        }
    }
}

impl FlushPolicy {
    /// Never flushes on its own.
    pub const MANUAL: Self = Self {
        rows: None,
        interval: None,
    };
}

impl std::str::FromStr for FlushPolicy {
    type Err = TenantError;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = |why: &str| {
            TenantError::InvalidArgument(format!(
                "FLUSH_POLICY '{text}' {why}; write e.g. 'rows:10000,interval:300' \
                 (interval in seconds) or 'none'"
            ))
        };
        if text.trim().eq_ignore_ascii_case("none") {
            return Ok(Self::MANUAL);
        }
        let mut policy = Self::MANUAL;
        for part in text.split(',').map(str::trim) {
            let (key, value) = part
                .split_once(':')
                .ok_or_else(|| invalid(&format!("has '{part}' without ':'")))?;
            let value: u64 = match value.trim().parse() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(invalid(&format!(
                        "has '{part}': not a positive whole number"
                    )));
                }
            };
            let slot_taken = match key.trim().to_ascii_lowercase().as_str() {
                "rows" => policy.rows.replace(value).is_some(),
                "interval" => policy
                    .interval
                    .replace(Duration::from_secs(value))
                    .is_some(),
                other => return Err(invalid(&format!("has unknown part '{other}'"))),
            };
            if slot_taken {
                return Err(invalid(&format!("gives '{}' twice", key.trim())));
            }
        }
        Ok(policy)
    }
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .rows
            .map(|n| format!("rows:{n}"))
            .into_iter()
            .chain(self.interval.map(|d| format!("interval:{}", d.as_secs())))
            .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_bad_ones_say_why() {
        assert_eq!("none".parse::<FlushPolicy>().unwrap(), FlushPolicy::MANUAL);
        let rows_only: FlushPolicy = " ROWS : 7 ".parse().unwrap();
        assert_eq!((rows_only.rows, rows_only.interval), (Some(7), None));
        assert_eq!(
            FlushPolicy::default()
                .to_string()
                .parse::<FlushPolicy>()
                .unwrap(),
            FlushPolicy::default()
        );
        for (bad, why) in [
            ("rows", "without ':'"),
            ("rows:-1", "positive"),
            ("rows:1,rows:2", "twice"),
            ("bytes:10", "unknown part 'bytes'"),
            ("", "without ':'"),
        ] {
            let err = bad.parse::<FlushPolicy>().unwrap_err();
            assert_eq!(err.code(), "INVALID_ARGUMENT");
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }
}
