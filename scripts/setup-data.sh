#!/usr/bin/env bash
# Installs Fashion-MNIST from Debian's dataset-fashion-mnist package, into
# /usr/share/datasets/fashion-mnist, where randbench looks by default. Safe to run again.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DIR/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" "Fashion-MNIST, or set a suite's data.path to an MNIST-layout directory" \
  dataset-fashion-mnist
echo "Fashion-MNIST installed in $DIR"
