#!/usr/bin/env bash
# The nightly regression run: runs the nightly suite (5 rounds, engines taking turns) into a
# dated directory, stores it in the history, exports its figures for continuous-benchmarking
# services, and compares it with the baseline: NIGHTLY_BASELINE (a run directory you keep as
# the reference) or else the previous night's run. A flagged regression is confirmed by a
# second run; exit code 1 on a confirmed regression (compare.txt names the cell); "too noisy
# to tell" is reported, not failed.
#
#   NIGHTLY_SUITE     the suite (default: nightly)
#   NIGHTLY_DIR       where the dated runs go (default: reports/nightly)
#   NIGHTLY_DB        the history (default: reports/history.sqlite; or a postgres:// URL)
#   NIGHTLY_BASELINE  a run directory to compare with (default: the previous night's)
#   RANDBENCH_BIN     a randbench binary to use (default: build the release binary here)
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${NIGHTLY_SUITE:-nightly}
NIGHTS=${NIGHTLY_DIR:-reports/nightly}
DB=${NIGHTLY_DB:-reports/history.sqlite}
if [ -z "${RANDBENCH_BIN:-}" ]; then
  ./scripts/setup-native.sh
  ./scripts/setup-data.sh
  source scripts/env.sh
  cargo build --release -q -p randbench --features "$FEATURES"
  RANDBENCH_BIN=target/release/randbench
fi

mkdir -p "$NIGHTS"
# The latest earlier night that finished (a run writes report.md at its end).
PREVIOUS=${NIGHTLY_BASELINE:-}
if [ -z "$PREVIOUS" ]; then
  for d in $(ls -d "$NIGHTS"/20* 2>/dev/null | sort -r); do
    if [ -f "$d/report.md" ]; then PREVIOUS=$d; break; fi
  done
fi
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT="$NIGHTS/$STAMP"
n=1
while [ -e "$OUT" ]; do n=$((n + 1)); OUT="$NIGHTS/$STAMP-$n"; done

"$RANDBENCH_BIN" run "$SUITE" --out "$OUT"
# Exit code 4: a results line could not be read (named on stderr); the rest was stored and
# exported, and compare below says so too.
"$RANDBENCH_BIN" ingest --db "$DB" "$OUT" || [ $? -eq 4 ]
"$RANDBENCH_BIN" export "$OUT" --format bencher --out "$OUT/bencher.json" || [ $? -eq 4 ]
"$RANDBENCH_BIN" export "$OUT" --format github-smaller --out "$OUT/github-smaller-is-better.json" || [ $? -eq 4 ]
"$RANDBENCH_BIN" export "$OUT" --format github-bigger --out "$OUT/github-bigger-is-better.json" || [ $? -eq 4 ]

if [ -z "$PREVIOUS" ]; then
  echo "nightly: $OUT is the first night in $NIGHTS: nothing to compare with yet"
  exit 0
fi
# A flagged regression is confirmed by a second run of the suite, compared with the baseline
# again: a machine that was only slow for a while does not fail the night.
compare() {
  set +e
  "$RANDBENCH_BIN" compare "$PREVIOUS" "$1" --json "$1/compare.json" | tee "$1/compare.txt"
  local code=${PIPESTATUS[0]}
  set -e
  return "$code"
}
code=0
compare "$OUT" || code=$?
if [ "$code" -eq 1 ]; then
  echo "nightly: a regression against $PREVIOUS is flagged; running the suite again to confirm it"
  "$RANDBENCH_BIN" run "$SUITE" --out "$OUT/confirm" >/dev/null
  code=0
  compare "$OUT/confirm" || code=$?
  if [ "$code" -ne 1 ]; then
    echo "nightly: the second run did not confirm it (the machine was slow for a while): no regression; see $OUT/compare.txt and $OUT/confirm/compare.txt"
    exit 0
  fi
fi
case $code in
  0) echo "nightly: no regression against $PREVIOUS; report in $OUT" ;;
  1) echo "nightly: REGRESSION against $PREVIOUS, confirmed by a second run: see $OUT/confirm/compare.txt" >&2; exit 1 ;;
  3) echo "nightly: too noisy to tell against $PREVIOUS (not a failure): see $OUT/compare.txt; more rounds or a quieter machine would tell" ;;
  4) echo "nightly: lines of a results file could not be read (named above); the rest was compared: see $OUT/compare.txt" >&2; exit 4 ;;
  *) exit "$code" ;;
esac
