#!/usr/bin/env bash
# Writes a throwaway self-signed certificate for 127.0.0.1 and localhost to
# DIR/cert.pem and its key to DIR/key.pem (valid for a day), installing
# Debian's openssl first when it is missing (as root).
# Used by the server's TLS tests.
set -euo pipefail

dir=${1:?usage: test-cert.sh DIR}
if ! command -v openssl >/dev/null 2>&1; then
    echo "test-cert.sh: installing openssl" >&2
    "$(dirname "$0")/apt-install.sh" openssl
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -days 1 -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
