#!/usr/bin/env bash
# Builds randbench with CUDA for every engine (candle's kernels, libtorch's CUDA, ONNX
# Runtime's CUDA execution provider) on a machine without a GPU or CUDA toolkit, for carrying
# to a GPU machine (docs/gpu.md):
#   - nvcc, cicc and CUDA's headers come from PyPI wheels of CUDA 13.0, the version of the
#     pinned PyTorch's CUDA libraries;
#   - the libraries to link are the project environment's (.venv), and libcuda.so is a stub
#     of the driver API's symbols, used at link time only (the driver's own loads at run time).
# Output: target/gpu/randbench (stripped). CUDA_COMPUTE_CAP defaults to 90 (H100/H200).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-native.sh
source scripts/env.sh
ROOT=${CUDA_BUILD_ROOT:-$PWD/target/cuda-root}
SITE=$(.venv/bin/python -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))')/nvidia/cu13
if [ ! -x "$ROOT/bin/nvcc" ]; then
  rm -rf "$ROOT" "$ROOT.wheels" "$ROOT.unzipped"
  mkdir -p "$ROOT/lib64" "$ROOT/include" "$ROOT.wheels"
  .venv/bin/python -m pip download -q --no-deps -d "$ROOT.wheels" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
  for w in "$ROOT.wheels"/*.whl; do .venv/bin/python -m zipfile -e "$w" "$ROOT.unzipped"; done
  chmod +x "$ROOT.unzipped"/nvidia/cu13/bin/* "$ROOT.unzipped"/nvidia/cu13/nvvm/bin/*
  cp -r "$ROOT.unzipped"/nvidia/cu13/bin "$ROOT.unzipped"/nvidia/cu13/nvvm "$ROOT/"
  cp -r "$SITE"/include/* "$ROOT/include/"
  cp -rn "$ROOT.unzipped"/nvidia/cu13/include/* "$ROOT/include/"
  for pair in cudart:libcudart.so.13 cublas:libcublas.so.13 cublasLt:libcublasLt.so.13 curand:libcurand.so.10 nvrtc:libnvrtc.so.13; do
    ln -sf "$SITE/lib/${pair#*:}" "$ROOT/lib64/lib${pair%%:*}.so"
  done
  CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | tail -1)
  grep -oh "pub unsafe fn cu[A-Za-z0-9_]*" "$CUDARC/src/driver/sys/mod.rs" | awk '{print $4}' | sort -u \
    | awk 'BEGIN { print "/* link-time stand-in for libcuda.so.1 */" } { print "int " $1 "(void) { return 999; }" }' > "$ROOT/cuda-stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ROOT/lib64/libcuda.so" "$ROOT/cuda-stub.c"
fi
export CUDA_ROOT="$ROOT" CUDA_PATH="$ROOT" NVCC="$ROOT/bin/nvcc" PATH="$ROOT/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$ROOT/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}"
cargo build --profile gpu -p randbench --features "$FEATURES,cuda"
echo "built target/gpu/randbench"
