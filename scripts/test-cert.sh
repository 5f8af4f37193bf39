#!/usr/bin/env bash
# Writes a throwaway self-signed certificate for 127.0.0.1 and localhost to
# DIR/cert.pem and its key to DIR/key.pem (valid for a day), installing
# Debian's openssl first when it is missing (as root).
# Used by the server's TLS tests.
set -euo pipefail

dir=${1:?usage: test-cert.sh DIR}
if ! command -v openssl >/dev/null 2>&1; then
    echo "test-cert.sh: installing openssl" >&2
    export DEBIAN_FRONTEND=noninteractive
    # One apt at a time (tests that install their tools run in parallel);
    # the lock goes with the subshell.
    (
        flock 9
        apt-get update -qq >&2
        apt-get install -y -qq openssl >&2
    ) 9>/tmp/tenantfusion-apt.lock
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -days 1 -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
