#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium, installing Debian's
# chromium package first when none is on the machine (as root; a minute or
# two, once). Used by the console's browser test.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
    echo "chromium.sh: installing chromium" >&2
    "$(dirname "$0")/apt-install.sh" --no-install-recommends chromium fonts-dejavu-core
fi
command -v chromium
