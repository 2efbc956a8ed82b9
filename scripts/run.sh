#!/usr/bin/env bash
# The main job: installs what this machine allows (libtorch and ONNX Runtime from pinned PyPI
# wheels, Fashion-MNIST from Debian), builds randbench with every backend whose libraries are
# present, and runs a suite (default: quick) on every backend usable here.
#   scripts/run.sh [SUITE] [randbench run options...]
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${1:-quick}
[ $# -gt 0 ] && shift
./scripts/setup-native.sh || echo "run: libtorch and ONNX Runtime could not be installed; running on candle only" >&2
./scripts/setup-data.sh || echo "run: data set-up failed (see above); suites that need Fashion-MNIST or Omniglot will say so" >&2
source scripts/env.sh
cargo build --release --quiet -p randbench --features "$FEATURES"
exec target/release/randbench run "$SUITE" "$@"
