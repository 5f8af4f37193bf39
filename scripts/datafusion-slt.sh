#!/usr/bin/env bash
# DataFusion's own sqllogictest corpus, on stock DataFusion and on tenantfusion's user tables.
#   scripts/datafusion-slt.sh [FILTER]   run every file (or those whose name contains FILTER)
# Fetches the datafusion-sqllogictest crate at the version Cargo.toml pins (from cargo's
# cache, else from crates.io) into target/datafusion-slt/, builds the workspace, and runs
# `tenantfusion-slt --against-datafusion test_files --user-tables` on each file from the
# crate's directory (the files' paths are relative to it, as in DataFusion's own runner).
# Prints per file both counts and every record that passes on DataFusion but not here;
# the last line is the total. The full log is kept in target/datafusion-slt/result.txt.
# Spark files (test_files/spark/, another dialect) are left out; so is any record that
# needs DataFusion's repository data (testing/, parquet-testing/, core/tests/data/), which
# the crate does not ship: those fail on stock DataFusion here too, so they are not counted.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FILTER="${1:-}"
VERSION="$(sed -n 's/^datafusion-sqllogictest = "=\(.*\)"/\1/p' "$ROOT/Cargo.toml")"
[ -n "$VERSION" ] || { echo "datafusion-slt.sh: no datafusion-sqllogictest pin in Cargo.toml" >&2; exit 1; }
WORK="$ROOT/target/datafusion-slt"
CRATE="datafusion-sqllogictest-$VERSION"
DIR="$WORK/$CRATE"

if [ ! -d "$DIR/test_files" ]; then
    mkdir -p "$WORK"
    ARCHIVE="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$CRATE.crate" 2>/dev/null | head -1 || true)"
    if [ -z "$ARCHIVE" ]; then
        ARCHIVE="$WORK/$CRATE.crate"
        echo "datafusion-slt.sh: downloading $CRATE from crates.io" >&2
        curl -fsSL --max-time 300 -o "$ARCHIVE" \
            "https://static.crates.io/crates/datafusion-sqllogictest/$CRATE.crate"
    fi
    tar -xzf "$ARCHIVE" -C "$WORK"
fi

(cd "$ROOT" && cargo build --workspace --bins -q)
BIN="$ROOT/target/debug/tenantfusion-slt"

cd "$DIR"
mapfile -t FILES < <(find test_files -name '*.slt' -not -path 'test_files/spark/*' \
    | grep -F -- "$FILTER" | sort)
echo "datafusion-slt.sh: ${#FILES[@]} files of $CRATE" >&2
set +e
"$BIN" --against-datafusion test_files --user-tables "${FILES[@]}" | tee "$WORK/result.txt"
STATUS="${PIPESTATUS[0]}"
set -e
rm -rf test_files/scratch
exit "$STATUS"
