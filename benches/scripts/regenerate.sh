#!/usr/bin/env bash
# Regenerates the results part of BENCHMARKS.md, benches/latest.json and the
# charts in benches/charts/ from one full release run (PostgreSQL included:
# postgres-rls.sh installs and starts it on 127.0.0.1 and stops it after).
# Extra arguments go to the bench, e.g. `--quick` for a dry run.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p tenantfusion-bench
"${CARGO_TARGET_DIR:-target}/release/tenantfusion-bench" --with-postgres \
  --json benches/latest.json --charts benches/charts --update-doc BENCHMARKS.md "$@"
