#!/usr/bin/env bash
# Prints the path of a psql client, installing Debian's postgresql-client
# first when none is on the machine (as root, about half a minute).
# Used by the server's tests: psql is the client everybody has.
set -euo pipefail

if ! command -v psql >/dev/null 2>&1; then
    echo "psql.sh: installing postgresql-client" >&2
    export DEBIAN_FRONTEND=noninteractive
    # One apt at a time (tests that install their tools run in parallel);
    # the lock goes with the subshell.
    (
        flock 9
        apt-get update -qq >&2
        apt-get install -y -qq postgresql-client >&2
    ) 9>/tmp/tenantfusion-apt.lock
fi
command -v psql
