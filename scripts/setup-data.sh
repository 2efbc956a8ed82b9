#!/usr/bin/env bash
# Installs Fashion-MNIST from Debian's dataset-fashion-mnist package, into
# /usr/share/datasets/fashion-mnist, where randbench looks by default. Safe to run again.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DIR/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup-data: no apt-get here; install Debian's dataset-fashion-mnist package, or set a suite's data.path to an MNIST-layout directory" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; }
echo "Fashion-MNIST installed in $DIR"
