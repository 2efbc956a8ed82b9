# Sourced by the other scripts: points the build at the project's Python environment
# (.venv, made by setup-native.sh) and sets FEATURES to the backends whose libraries are there.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FEATURES=""
if [ -x "$ROOT/.venv/bin/python" ]; then
  export VIRTUAL_ENV="$ROOT/.venv"
  export PATH="$VIRTUAL_ENV/bin:$PATH"
  if "$VIRTUAL_ENV/bin/python" -c 'import torch' 2>/dev/null; then
    export LIBTORCH_USE_PYTORCH=1
    FEATURES="${FEATURES:+$FEATURES,}tch"
  fi
  if "$VIRTUAL_ENV/bin/python" -c 'import onnxruntime' 2>/dev/null; then
    FEATURES="${FEATURES:+$FEATURES,}ort"
  fi
fi
export FEATURES
