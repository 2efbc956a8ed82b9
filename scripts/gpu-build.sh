#!/usr/bin/env bash
# Builds randbench with CUDA for every engine (candle's kernels, libtorch's CUDA, ONNX
# Runtime's CUDA execution provider, burn-cuda: its kernels are compiled by NVRTC at run time) on a machine without a GPU or CUDA toolkit, for carrying
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
# The CUDA tree is made whole in a scratch directory and moved into place last, so that a
# set-up cut short is redone from scratch the next time, never taken for a finished one.
CUDA_TREE=${CUDA_BUILD_ROOT:-$PWD/target/cuda-root}
SITE=$(.venv/bin/python -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))')/nvidia/cu13
if [ ! -f "$CUDA_TREE/.complete" ]; then
  # The driver stub lists cudarc's symbols: its source must be here before anything builds.
  cargo fetch -q
  CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | tail -1)
  WORK="$CUDA_TREE.partial"
  rm -rf "$CUDA_TREE" "$WORK"
  mkdir -p "$WORK/tree/lib64" "$WORK/tree/include" "$WORK/wheels"
  .venv/bin/python -m pip download -q --no-deps -d "$WORK/wheels" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
  for w in "$WORK/wheels"/*.whl; do .venv/bin/python -m zipfile -e "$w" "$WORK/unzipped"; done
  chmod +x "$WORK"/unzipped/nvidia/cu13/bin/* "$WORK"/unzipped/nvidia/cu13/nvvm/bin/*
  cp -r "$WORK"/unzipped/nvidia/cu13/bin "$WORK"/unzipped/nvidia/cu13/nvvm "$WORK/tree/"
  cp -r "$SITE"/include/* "$WORK/tree/include/"
  cp -rn "$WORK"/unzipped/nvidia/cu13/include/* "$WORK/tree/include/"
  for pair in cudart:libcudart.so.13 cublas:libcublas.so.13 cublasLt:libcublasLt.so.13 curand:libcurand.so.10 nvrtc:libnvrtc.so.13; do
    ln -sf "$SITE/lib/${pair#*:}" "$WORK/tree/lib64/lib${pair%%:*}.so"
  done
  # burn-cuda's cudarc asks for NCCL too (cudarc links what candle's asks dynamically).
  ln -sf "$(dirname "$SITE")/nccl/lib/libnccl.so.2" "$WORK/tree/lib64/libnccl.so"
  grep -oh "pub unsafe fn cu[A-Za-z0-9_]*" "$CUDARC/src/driver/sys/mod.rs" | awk '{print $4}' | sort -u \
    | awk 'BEGIN { print "/* link-time stand-in for libcuda.so.1 */" } { print "int " $1 "(void) { return 999; }" }' > "$WORK/tree/cuda-stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$WORK/tree/lib64/libcuda.so" "$WORK/tree/cuda-stub.c"
  touch "$WORK/tree/.complete"
  mv "$WORK/tree" "$CUDA_TREE"
  rm -rf "$WORK"
fi
export CUDA_ROOT="$CUDA_TREE" CUDA_PATH="$CUDA_TREE" NVCC="$CUDA_TREE/bin/nvcc" PATH="$CUDA_TREE/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$CUDA_TREE/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}"
cargo build --profile gpu -p randbench --features "${FEATURES:+$FEATURES,}cuda"
echo "built target/gpu/randbench"
# The engines' conformance tests on CUDA (every op against the f64 reference, gradients,
# training steps), for gpu-check.sh to run on the GPU: target/gpu/conformance/ENGINE.
mkdir -p target/gpu/conformance
cargo test --profile gpu --test conformance --no-run --message-format=json \
  -p randbench-candle -p randbench-tch -p randbench-burn \
  --features randbench-candle/cuda,randbench-tch/cuda,randbench-burn/cuda |
  python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        engine = m["manifest_path"].split("/")[-2]
        shutil.copy(m["executable"], "target/gpu/conformance/" + engine)
        print("built target/gpu/conformance/" + engine)
'
