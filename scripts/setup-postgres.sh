#!/usr/bin/env bash
# Installs Debian's PostgreSQL server, which the history tests start on loopback themselves
# (a server of their own, in a temporary directory; nothing is configured system-wide).
# Only the tests need it: randbench's history is SQLite unless --db names a postgres:// URL.
# Safe to run again.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" "a PostgreSQL server (/usr/lib/postgresql/VERSION/bin/initdb)" postgresql
echo "PostgreSQL installed: $(ls -d /usr/lib/postgresql/*/bin)"
