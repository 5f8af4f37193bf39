#!/usr/bin/env bash
# Runs the fuzzers for SECONDS (default 600), many cases a run, each run
# from a fresh random seed, and prints how many cases ran.
#   scripts/fuzz.sh [SECONDS] [CASES_PER_RUN]
# The fuzzers (property tests; CI runs each with a small case count):
#   SQL as a hostile tenant   tenantfusion  it  fuzz_sql::
#   WAL damage                tenantfusion-store  wal::tests::any_damage
#   any file of a data dir    tenantfusion  it  durable::random_damage
#   STOMP frames, JSON rows   tenantfusion-live   stomp::tests:: json_rows::tests::
# A failure prints the case that failed (proptest shrinks it) and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_WANTED="${1:-600}"
CASES="${2:-2000}"
export TENANTFUSION_FUZZ_CASES="$CASES"
# A fresh seed every round (CI fixes one).
unset PROPTEST_RNG_SEED
export CARGO_INCREMENTAL=0

# The fuzzers, by name: one build of the whole workspace (building a
# single package would resolve DataFusion's features anew and rebuild it).
FUZZERS=(any_bytes_give_the_same_frames encoded_frames_decode any_message_is_rows
  any_damage_is_a_clean_prefix random_damage_anywhere fuzz_sql::)
cargo test --workspace --lib --test it --no-run -q

runs=0
end=$(( $(date +%s) + SECONDS_WANTED ))
while [ "$(date +%s)" -lt "$end" ]; do
  cargo test --workspace --lib --test it -q -- "${FUZZERS[@]}"
  runs=$((runs + 1))
  echo "fuzz round $runs done: $((runs * CASES)) cases per fuzzer so far"
done
echo "fuzzed for ${SECONDS_WANTED}s: $runs rounds, $((runs * CASES)) cases per fuzzer (7 fuzzers)"
