#!/usr/bin/env bash
# A local S3-compatible server (moto) on 127.0.0.1, for the s3:// storage tests.
#   scripts/s3-server.sh start   install moto into a venv if missing, start, wait for it
#   scripts/s3-server.sh stop    stop the server started here
# Port $TF_S3_PORT (9010); venv and state in $TF_S3_DIR (/tmp/tenantfusion-s3).
# Credentials are moto's: any key and secret, region us-east-1, plain HTTP.
# The bucket $TF_S3_BUCKET (tenantfusion) is created once the server is up.
set -euo pipefail

PORT="${TF_S3_PORT:-9010}"
DIR="${TF_S3_DIR:-/tmp/tenantfusion-s3}"
BUCKET="${TF_S3_BUCKET:-tenantfusion}"
VENV="$DIR/venv"
PID_FILE="$DIR/moto.pid"

up() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

install() {
    [ -x "$VENV/bin/moto_server" ] && return
    mkdir -p "$DIR"
    echo "s3-server.sh: installing moto[server] into $VENV (about 2 min)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'moto[server]==5.2.5' >&2
}

start() {
    install
    if up; then
        echo "s3-server.sh: already up on 127.0.0.1:$PORT" >&2
        return
    fi
    nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" > "$DIR/moto.log" 2>&1 &
    echo $! > "$PID_FILE"
    for _ in $(seq 1 300); do
        if up; then
            # Creating a bucket that exists is fine (moto answers 200).
            "$VENV/bin/python" - "$PORT" "$BUCKET" <<'PY'
import sys, urllib.request
port, bucket = sys.argv[1], sys.argv[2]
urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT"))
PY
            echo "s3-server.sh: S3 on http://127.0.0.1:$PORT, bucket $BUCKET" >&2
            return
        fi
        sleep 0.1
    done
    echo "s3-server.sh: moto did not start; see $DIR/moto.log" >&2
    exit 1
}

stop() {
    if [ -f "$PID_FILE" ]; then
        kill "$(cat "$PID_FILE")" 2>/dev/null || true
        rm -f "$PID_FILE"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
