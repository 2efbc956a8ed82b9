#!/usr/bin/env bash
# The test suite: installs what the tests need (libtorch, ONNX Runtime, Fashion-MNIST, a
# PostgreSQL server for the history tests, Chromium for the HTML report test, a one-machine
# Slurm cluster for the fleet tests), then runs every crate's tests, the native backends
# included. A Slurm cluster this script started is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-native.sh
./scripts/setup-data.sh
./scripts/setup-postgres.sh
./scripts/setup-browser.sh
# The Slurm daemons run as root; elsewhere the Slurm test runs only against a cluster that
# `sudo scripts/setup-slurm.sh` started.
if [ "$(id -u)" -eq 0 ]; then
  if ! [ -s .venv/slurm/slurmctld.pid ] || ! kill -0 "$(cat .venv/slurm/slurmctld.pid)" 2>/dev/null; then
    trap ./scripts/stop-slurm.sh EXIT
  fi
  ./scripts/setup-slurm.sh
  # The Slurm tests fail, rather than skip, without the cluster.
  export RANDBENCH_REQUIRE_SLURM=1
fi
if [ -f .venv/slurm/env.sh ]; then source .venv/slurm/env.sh; fi
source scripts/env.sh
# Tests that use Fashion-MNIST fail, rather than skip, when it is missing.
export RANDBENCH_REQUIRE_DATA=1
# The PostgreSQL history test fails, rather than skips, without a server.
export RANDBENCH_REQUIRE_POSTGRES=1
# The HTML report test fails, rather than skips, without Chromium.
export RANDBENCH_REQUIRE_BROWSER=1
ARGS=()
if [ -n "$FEATURES" ]; then ARGS+=(--features "randbench/${FEATURES//,/,randbench/}"); fi
cargo test --workspace "${ARGS[@]}" "$@"
