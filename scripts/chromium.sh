#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium, installing Debian's
# chromium package first when none is on the machine (as root; a minute or
# two, once). Used by the console's browser test.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
    echo "chromium.sh: installing chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    # One apt at a time (tests that install their tools run in parallel);
    # the lock goes with the subshell.
    (
        flock 9
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
    ) 9>/tmp/tenantfusion-apt.lock
fi
command -v chromium
