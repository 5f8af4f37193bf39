#!/usr/bin/env bash
# Prints the path of a psql client, installing Debian's postgresql-client
# first when none is on the machine (as root, about half a minute).
# Used by the server's tests: psql is the client everybody has.
set -euo pipefail

if ! command -v psql >/dev/null 2>&1; then
    echo "psql.sh: installing postgresql-client" >&2
    "$(dirname "$0")/apt-install.sh" postgresql-client
fi
command -v psql
