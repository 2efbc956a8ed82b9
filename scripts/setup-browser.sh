#!/usr/bin/env bash
# Installs Debian's Chromium, in which the report test opens report.html headless (checking
# that its charts render and that it makes no network request). Only the tests need it.
# Safe to run again.
set -euo pipefail
if command -v chromium >/dev/null; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" "a headless browser for the HTML report test (Debian: chromium)" chromium
echo "Chromium installed: $(command -v chromium)"
