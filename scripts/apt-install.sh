#!/usr/bin/env bash
# Installs Debian packages (as root): `apt-install.sh [apt-get install
# options] PACKAGE...`. One apt at a time: the scripts that install their
# tools run in parallel from the tests, and apt takes one at a time. The
# lock is this process's, so nothing a caller starts afterwards holds it.
# apt's output goes to stderr (callers print a path on stdout).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
exec 9>/tmp/tenantfusion-apt.lock
flock 9
apt-get update -qq >&2
apt-get install -y -qq "$@" >&2
