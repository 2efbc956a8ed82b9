#!/usr/bin/env bash
# Checks the vendored Omniglot zips (data/omniglot) against the sha256 sums in their SOURCE.md,
# then installs Fashion-MNIST from Debian's dataset-fashion-mnist package, into
# /usr/share/datasets/fashion-mnist, where randbench looks by default. Safe to run again.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

# Omniglot is in the repository, not installed: a damaged zip (a bad checkout, a stray edit)
# would otherwise surface as a decoding error deep in a run.
OMNIGLOT="$ROOT/data/omniglot"
SUMS=$(sed -n 's/^[[:space:]]*\([0-9a-f]\{64\}  [^[:space:]]*\.zip\)[[:space:]]*$/\1/p' "$OMNIGLOT/SOURCE.md")
if [ -z "$SUMS" ]; then
  echo "setup-data: no sha256 sums found in $OMNIGLOT/SOURCE.md (restore it with: git checkout data/omniglot)" >&2
  exit 1
fi
if ! BAD=$(cd "$OMNIGLOT" && sha256sum -c --quiet <<<"$SUMS" 2>&1); then
  echo "setup-data: Omniglot data in $OMNIGLOT is damaged:" >&2
  echo "$BAD" | sed 's/^/  /' >&2
  echo "restore it with: git checkout data/omniglot" >&2
  exit 1
fi

DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DIR/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" "Fashion-MNIST, or set a suite's data.path to an MNIST-layout directory" \
  dataset-fashion-mnist
echo "Fashion-MNIST installed in $DIR"
