# Sourced by the other scripts: sets FEATURES to the backends whose libraries the project's
# Python environment (.venv, made by setup-native.sh) holds. Nothing else is needed to build:
# .cargo/config.toml points torch-sys at .venv/libtorch, and crates/ort/build.rs finds ONNX
# Runtime in .venv, so scripts and plain cargo build the same way (no rebuilds between them).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FEATURES=""
if [ -x "$ROOT/.venv/bin/python" ]; then
  if [ -e "$ROOT/.venv/libtorch/lib/libtorch.so" ]; then
    FEATURES="${FEATURES:+$FEATURES,}tch"
  fi
  if "$ROOT/.venv/bin/python" -c 'import onnxruntime' 2>/dev/null; then
    FEATURES="${FEATURES:+$FEATURES,}ort"
  fi
fi
export FEATURES
