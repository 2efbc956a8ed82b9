#!/usr/bin/env bash
# Installs Debian's PostgreSQL server, which the history tests start on loopback themselves
# (a server of their own, in a temporary directory; nothing is configured system-wide).
# Only the tests need it: randbench's history is SQLite unless --db names a postgres:// URL.
# Safe to run again.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup-postgres: no apt-get here; install a PostgreSQL server so that /usr/lib/postgresql/VERSION/bin/initdb exists" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# The package would start a cluster of its own; the tests do not use it.
$SUDO apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends postgresql >/dev/null; }
echo "PostgreSQL installed: $(ls -d /usr/lib/postgresql/*/bin)"
