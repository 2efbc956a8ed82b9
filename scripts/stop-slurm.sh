#!/usr/bin/env bash
# Stops the Slurm daemons that scripts/setup-slurm.sh started (by their pid files in
# .venv/slurm). munged, a system daemon, keeps running. Harmless when nothing runs.
# Jobs in the controller's state come back with the next setup-slurm.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$PWD/.venv/slurm

# slurmd first, then the controller it reports to.
for name in slurmd slurmctld; do
  pid=$(cat "$DIR/$name.pid" 2>/dev/null) || continue
  # A stale pid file may name a pid reused by something else: stop only that daemon.
  if ! kill -0 "$pid" 2>/dev/null || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
    rm -f "$DIR/$name.pid"
    continue
  fi
  kill -TERM "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name (pid $pid) did not exit in 10 s of SIGTERM: killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/$name.pid"
  echo "stopped $name (pid $pid)"
done
