#!/usr/bin/env bash
# The GPU checks, on a machine with an NVIDIA GPU whose python3 has PyTorch 2.11.0+cu130
# (docs/gpu.md). Runs what scripts/gpu-build.sh built: the engines' CUDA conformance tests,
# the quick and randomization suites on tch-cuda:0, candle-cuda:0 and burn-cuda:0, the refusal
# of ort-cuda:0 without ONNX Runtime's CUDA provider, the PyTorch eager peer on the same GPU,
# and second-order MAML's step on each engine and the peer in turns. Writes its files under
# OUT.
#   PACK           a folder from scripts/gpu-pack.sh (default target/gpu-carry), unpacked into
#                  target/gpu/ first where it exists; its Fashion-MNIST is then the default
#   RANDBENCH_BIN  the binary (default target/gpu/randbench)
#   FASHION_MNIST  a folder with Fashion-MNIST's four .gz files, installed where randbench
#                  looks when the machine has no copy
#   LIMIT          seconds each run may take (default 300): a lent GPU's time is short, and
#                  one slow engine must not use up what the others need
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/gpu-check}
BIN=${RANDBENCH_BIN:-target/gpu/randbench}
PY=${PYTHON:-python3}
LIMIT=${LIMIT:-300}
mkdir -p "$OUT"
PACK=${PACK:-target/gpu-carry}
if [ -f "$PACK/randbench.xz" ]; then
  $PY - "$PACK" <<'UNPACK'
import glob, lzma, os, shutil, sys
pack = sys.argv[1]
for src in glob.glob(pack + "/randbench.xz") + glob.glob(pack + "/conformance/*.xz"):
    dst = "target/gpu/" + os.path.relpath(src, pack)[:-3]
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with lzma.open(src) as packed, open(dst, "wb") as out:
        shutil.copyfileobj(packed, out)
    os.chmod(dst, 0o755)
UNPACK
  FASHION_MNIST=${FASHION_MNIST:-$PACK/fashion-mnist}
fi
WORK=$(mktemp -d)
SITE=$($PY -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
export LD_LIBRARY_PATH="$SITE/torch/lib:$SITE/nvidia/cu13/lib:$SITE/nvidia/nccl/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ORT=$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -1)
[ -n "$ORT" ] && export ORT_DYLIB_PATH="$ORT"
DEST=/usr/share/datasets/fashion-mnist
if [ -n "${FASHION_MNIST:-}" ] && [ ! -f "$DEST/train-images-idx3-ubyte.gz" ]; then
  mkdir -p "$DEST" && cp "$FASHION_MNIST"/*.gz "$DEST/"
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c 'import torch; print("python3 torch", torch.__version__)'
  echo "ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-}"
  "$BIN" list
} > "$OUT/list.txt" 2>&1
# The engines' conformance tests, their CUDA checks only (CI runs the CPU ones).
for test in "$(dirname "$BIN")"/conformance/*; do
  [ -x "$test" ] || continue
  name=$(basename "$test")
  timeout "$LIMIT" "$test" cuda:: --test-threads 1 > "$OUT/conformance-$name.txt" 2>&1
  echo "exit $?" >> "$OUT/conformance-$name.txt"
done
# One backend a run, so that one that does not work here does not stop the others; the quick
# suite on every engine first, then the peer's step, then the Fashion-MNIST suite.
for suite in quick randomization; do
  for backend in tch-cuda:0 candle-cuda:0 burn-cuda:0; do
    timeout "$LIMIT" "$BIN" run "$suite" --backends "$backend" --out "$WORK/$suite-$backend" >> "$OUT/$suite.txt" 2>&1
    echo "$backend: exit $?" >> "$OUT/$suite.txt"
    cat "$WORK/$suite-$backend/results.jsonl" >> "$OUT/$suite.jsonl" 2>/dev/null
  done
  if [ "$suite" = quick ]; then
    { timeout "$LIMIT" "$BIN" run quick --backends ort-cuda:0 --out "$WORK/ort"; echo "exit $?"; } > "$OUT/ort-cuda.txt" 2>&1
    timeout "$LIMIT" $PY scripts/peers/pytorch_eager.py step --device cuda > "$OUT/pytorch-step.json" 2>&1
  fi
done
timeout "$LIMIT" $PY scripts/peers/pytorch_eager.py randomization --device cuda > "$OUT/pytorch-randomization.json" 2>&1
timeout "$LIMIT" $PY scripts/peers/pytorch_l2l.py unroll --device cuda > "$OUT/pytorch-l2l.json" 2>&1
# Second-order MAML's meta-training step in the peer bench's configuration (28×28, 32
# filters, 5-way 1-shot, 15 queries, 4 tasks, one inner step at 0.4, Adam 1e-3) on Omniglot,
# each engine and the peer taking turns twice; episodes/s over 4 is steps/s.
cat > "$WORK/maml-step.yaml" <<'SUITE'
description: second-order MAML's meta-training step, as the peer bench times it
seeds: [0]
grad: native
workloads:
  - few_shot:
      name: maml-step
      data:
        train: [Japanese_(katakana), Korean, Latin, Greek, Balinese]
        validation: [Tagalog]
        test: [Sanskrit, Early_Aramaic]
      episodes: [{way: 5, shot: 1}]
      query: 15
      learner: {filters: 32, blocks: 4}
      methods: [maml]
      inner: {lr: 0.4, steps: 1, test_steps: 1}
      meta: {steps: 100, tasks: 4, lr: 0.001, validate_every: 100, validation_episodes: 10}
      test_episodes: 10
SUITE
for round in 1 2; do
  timeout "$LIMIT" $PY scripts/peers/pytorch_maml.py --device cuda --steps 50 >> "$OUT/pytorch-maml.jsonl" 2>&1
  for backend in tch-cuda:0 candle-cuda:0 burn-cuda:0 ort-cuda:0; do
    timeout "$LIMIT" "$BIN" run "$WORK/maml-step.yaml" --backends "$backend" --out "$WORK/maml-$round-$backend" >> "$OUT/maml-step.txt" 2>&1
    echo "$backend round $round: exit $?" >> "$OUT/maml-step.txt"
    cat "$WORK/maml-$round-$backend/results.jsonl" >> "$OUT/maml-step.jsonl" 2>/dev/null
  done
done
echo "done: $(ls "$OUT")"
