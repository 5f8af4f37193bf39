#!/usr/bin/env bash
# Prints the path of a Python with psycopg 3 (PostgreSQL's Python driver,
# libpq inside the wheel), made once as a venv in $TF_PY_DIR
# (/tmp/tenantfusion-py). Used by the server's tests: a real driver in
# another language.
set -euo pipefail

DIR="${TF_PY_DIR:-/tmp/tenantfusion-py}"
if [ ! -x "$DIR/bin/python" ] || ! "$DIR/bin/python" -c 'import psycopg' 2>/dev/null; then
    echo "python-driver.sh: installing psycopg[binary] into $DIR" >&2
    rm -rf "$DIR"
    python3 -m venv "$DIR" >&2
    "$DIR/bin/pip" install -q --disable-pip-version-check 'psycopg[binary]==3.2.10' >&2
fi
echo "$DIR/bin/python"
