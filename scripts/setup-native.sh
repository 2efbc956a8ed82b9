#!/usr/bin/env bash
# Installs the native libraries randbench's optional backends use, from pinned PyPI wheels,
# into a project-local, git-ignored Python environment (.venv). Safe to run again.
#   torch 2.11.0        -> libtorch for randbench-tch (tch 0.24 binds exactly this version)
#   onnxruntime 1.31.1  -> libonnxruntime for randbench-ort (ort 2.0.0-rc.15 with load-dynamic)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.11.0
ORT_VERSION=1.31.1
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  "torch==${TORCH_VERSION}" "onnxruntime==${ORT_VERSION}"
.venv/bin/python - <<'PY'
import os, torch, onnxruntime
# torch-sys builds against LIBTORCH (.cargo/config.toml points it here): the wheel's torch
# package has the include/ and lib/ it expects, at a path that names no Python version.
link = ".venv/libtorch"
if os.path.islink(link):
    os.remove(link)
os.symlink(os.path.relpath(os.path.dirname(torch.__file__), ".venv"), link)
print(f"torch {torch.__version__} and onnxruntime {onnxruntime.__version__} installed in .venv")
PY
