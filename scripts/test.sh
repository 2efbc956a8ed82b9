#!/usr/bin/env bash
# The test suite: installs what the tests need (libtorch, ONNX Runtime, Fashion-MNIST, a
# PostgreSQL server for the history tests, Chromium for the HTML report test), then runs
# every crate's tests, the native backends included.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-native.sh
./scripts/setup-data.sh
./scripts/setup-postgres.sh
./scripts/setup-browser.sh
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
