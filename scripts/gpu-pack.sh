#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine into one folder, small enough to
# carry (about 50 MB; the binary alone is 78 MB unpacked): the binary and the conformance
# tests built by scripts/gpu-build.sh, xz-compressed, and Fashion-MNIST's four files, for a
# machine without them. gpu-check.sh unpacks it with Python's lzma (no xz needed there).
# Output: target/gpu-carry/.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=target/gpu-carry
SRC=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
[ -x target/gpu/randbench ] || { echo "no target/gpu/randbench: run scripts/gpu-build.sh first" >&2; exit 2; }
rm -rf "$PACK"
mkdir -p "$PACK/conformance" "$PACK/fashion-mnist"
xz -T0 -6 -c target/gpu/randbench > "$PACK/randbench.xz"
for test in target/gpu/conformance/*; do
  xz -T0 -6 -c "$test" > "$PACK/conformance/$(basename "$test").xz"
done
cp "$SRC"/*-ubyte.gz "$PACK/fashion-mnist/"
du -sh "$PACK"
