#!/usr/bin/env bash
# Installs Debian packages for the set-up scripts: apt-install.sh WHAT PACKAGE... (WHAT names
# the need in the error). With sudo when not root; refreshes the package lists only when a
# first attempt fails.
set -euo pipefail
WHAT=$1
shift
if ! command -v apt-get >/dev/null; then
  echo "no apt-get here: install $WHAT (Debian: $*) yourself" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
