#!/usr/bin/env bash
# Fails when building one workspace member would compile DataFusion (or any
# shared dependency) with other features than `cargo test --workspace` does,
# which costs a second 25-minute build. Cargo resolves features per set of
# packages built, so each member's resolution is compared with the
# workspace's: every package both contain must have the same features.
# The fix is a line in crates/workspace-hack/Cargo.toml.
#
# The live crate and the test-support crate are checked for the opposite:
# they must not link DataFusion.
set -euo pipefail
cd "$(dirname "$0")/.."

resolve() {
    # "name version feature,feature" per package, one line each.
    cargo tree --locked "$@" -e normal,build,dev -f '{p} {f}' --prefix none \
        | sed -E 's/ \(\*\)//; s/ \(proc-macro\)//; s/ \([^)]*\)//' | sort -u
}

workspace=$(mktemp)
member=$(mktemp)
trap 'rm -f "$workspace" "$member"' EXIT
resolve --workspace >"$workspace"

status=0
members=$(cargo metadata --locked --no-deps --format-version 1 \
    | grep -o '"name":"[^"]*","version":"[^"]*","id":"path+file' | cut -d'"' -f4)
# Usable without SQL, so they must not link DataFusion at all.
standalone=" tenantfusion-live tenantfusion-test-support "
for name in $members; do
    links=$(cargo tree --locked -p "$name" -e normal --prefix none | grep -c '^datafusion ' || true)
    if [[ $standalone == *" $name "* ]]; then
        if [[ $links != 0 ]]; then
            echo "$name links DataFusion; it must depend on arrow alone" >&2
            status=1
        fi
        continue
    fi
    resolve -p "$name" >"$member"
    # A line only the member has: a package the workspace builds with other features.
    drift=$(comm -23 "$member" "$workspace")
    if [[ -n $drift ]]; then
        echo "building $name alone resolves other features than the workspace:" >&2
        while read -r package version _; do
            echo "  $package $version: workspace $(grep "^$package $version" "$workspace" | cut -d' ' -f3)" >&2
            echo "  ${package//?/ } ${version//?/ }  $name      $(grep "^$package $version" "$member" | cut -d' ' -f3)" >&2
        done <<<"$drift"
        status=1
    fi
done
[[ $status == 0 ]] && echo "one feature set: every member resolves the workspace's features"
exit $status
