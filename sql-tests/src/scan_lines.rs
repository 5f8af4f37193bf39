//! Plans that differ only in how a table's scan is printed.
//!
//! DataFusion's `.slt` files print the plans of its memory tables, whose
//! scan is `DataSourceExec: partitions=1, partition_sizes=[2]`; the same
//! plan over a user table ends in `PartitionScanExec: table=t,
//! projection=[a], predicate=...`. The comparison run counts the records
//! whose output differs only there apart, so the rest of the plan (joins,
//! aggregates, repartitioning, limits) is still compared line by line. The
//! scan's `fetch=` (a limit taken by the scan) is compared too, and so is a
//! memory scan of several partitions (ours read one).

/// Whether `expected` and `actual` (a record's output, one row per line)
/// are the same once every table scan line is read as `SCAN` (with its
/// `fetch=`), and differ at all in a scan line.
///
/// ```
/// use tenantfusion_sql_tests::differ_only_in_scan_lines;
/// assert!(differ_only_in_scan_lines(
///     "01)FilterExec: a@0 > 1\n02)--DataSourceExec: partitions=1, partition_sizes=[1]",
///     "01)FilterExec: a@0 > 1\n02)--PartitionScanExec: table=default.t, projection=[a], predicate=a@0 > 1",
/// ));
/// assert!(!differ_only_in_scan_lines(
///     "01)DataSourceExec: partitions=4, partition_sizes=[1, 1, 1, 1]",
///     "01)PartitionScanExec: table=default.t",
/// ));
/// ```
pub fn differ_only_in_scan_lines(expected: &str, actual: &str) -> bool {
    let expected: Vec<_> = expected.lines().map(normalise).collect();
    let actual: Vec<_> = actual.lines().map(normalise).collect();
    expected.len() == actual.len()
        && expected.iter().any(|(_, scan)| *scan)
        && expected.iter().zip(&actual).all(|(e, a)| e.0 == a.0)
}

/// The line with its whitespace collapsed, its scan (if any) read as
/// `SCAN[, fetch=N]`; and whether it was a scan line.
fn normalise(line: &str) -> (String, bool) {
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let (start, rest) =
        if let Some(at) = line.find("DataSourceExec: partitions=1, partition_sizes=[") {
            let rest = &line[at..];
            match rest.find(']') {
                Some(end) => (at, &rest[end + 1..]),
                None => return (line, false),
            }
        } else if let Some(at) = line.find("PartitionScanExec: table=") {
            (at, &line[at..])
        } else {
            return (line, false);
        };
    let fetch = rest
        .find(", fetch=")
        .map(|at| {
            let digits: String = rest[at + 8..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            format!(", fetch={digits}")
        })
        .unwrap_or_default();
    (format!("{}SCAN{fetch}", &line[..start]), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scan_lines_are_read_alike() {
        let ours = "physical_plan\n01)ProjectionExec: expr=[a@0 as a]\n\
                    02)--PartitionScanExec: table=default.t, projection=[a], fetch=3";
        assert!(differ_only_in_scan_lines(
            "physical_plan\n01)ProjectionExec: expr=[a@0 as a]\n\
             02)--DataSourceExec: partitions=1, partition_sizes=[2], fetch=3",
            ours
        ));
        // Another limit, another plan above, or no scan at all: different.
        assert!(!differ_only_in_scan_lines(
            "physical_plan\n01)ProjectionExec: expr=[a@0 as a]\n\
             02)--DataSourceExec: partitions=1, partition_sizes=[2], fetch=4",
            ours
        ));
        assert!(!differ_only_in_scan_lines(
            "physical_plan\n01)ProjectionExec: expr=[a@0 as b]\n\
             02)--DataSourceExec: partitions=1, partition_sizes=[2], fetch=3",
            ours
        ));
        assert!(!differ_only_in_scan_lines("1\n2", "1\n3"));
        assert!(!differ_only_in_scan_lines("1", "1\n2"));
    }
}
