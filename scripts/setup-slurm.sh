#!/usr/bin/env bash
# Starts a one-machine Slurm cluster for the tests: Debian's slurm-wlm (22.05) and munge, one
# controller and one compute node (this host), run as root. Its config, state, spool, logs
# and pid files live in the git-ignored .venv/slurm; clients find it through SLURM_CONF:
#   source .venv/slurm/env.sh
# No accounting (sacct has nothing): job states come from squeue and scontrol.
# Safe to run again: daemons already running are left alone. scripts/stop-slurm.sh stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$PWD/.venv/slurm
CONF=$DIR/slurm.conf

# slurmd must be root to start tasks as the submitting user (and munged to drop to munge).
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-slurm.sh starts the Slurm daemons as root: run it as root" >&2
  exit 1
fi
if ! [ -x /usr/sbin/slurmctld ] || ! [ -x /usr/sbin/slurmd ] || ! [ -x /usr/sbin/munged ] \
  || ! command -v sbatch >/dev/null; then
  "$(dirname "$0")/apt-install.sh" "Slurm and munge (slurmctld, slurmd, sbatch, munged)" \
    slurm-wlm munge
fi

# munge authenticates every Slurm message; munged refuses a key others can read.
KEY=/etc/munge/munge.key
if ! [ -s "$KEY" ]; then
  mungekey -c -k "$KEY" 2>/dev/null || dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
fi
chown munge:munge "$KEY"
chmod 400 "$KEY"
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  # /run is a fresh tmpfs after a reboot and nothing (no systemd here) recreates the socket dir.
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 755 /run/munge
  # --force: a munged that died leaves its socket and pid file behind, which block a new one.
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n | unmunge >/dev/null || { echo "munged does not answer (see /var/log/munge/munged.log)" >&2; exit 1; }
fi

# The node as slurmd will see it. RealMemory keeps a margin below MemTotal: slurmd drains a
# node that has less memory than its config says.
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) / 1024 ))
MEM=$(( MEM_MB - MEM_MB / 10 ))
if [ "$MEM" -lt 256 ]; then MEM=256; fi
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
# Addresses are 127.0.0.1 so that nothing depends on this host's name resolving.
cat >"$DIR/slurm.conf.new" <<EOF
# Written by scripts/setup-slurm.sh: a one-machine cluster for the tests.
ClusterName=randbench
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
echo "export SLURM_CONF=$CONF" >"$DIR/env.sh"
export SLURM_CONF=$CONF

# running NAME: whether the daemon NAME's pid file names a live NAME process.
running() {
  local pid
  pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}
if cmp -s "$DIR/slurm.conf.new" "$CONF"; then
  rm "$DIR/slurm.conf.new"
else
  # Daemons started with another config (other CPUs, memory or path) would disagree with it.
  if running slurmctld || running slurmd; then "$(dirname "$0")/stop-slurm.sh"; fi
  mv "$DIR/slurm.conf.new" "$CONF"
fi

started=""
if ! running slurmctld; then
  slurmctld -f "$CONF"
  started="$started slurmctld"
fi
if ! running slurmd; then
  slurmd -f "$CONF" -N "$HOST"
  started="$started slurmd"
fi

# ReturnToService=2 brings the node back from DOWN as soon as slurmd registers.
state=""
for _ in $(seq 150); do
  state=$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null || true)
  case $state in idle | mix | alloc) break ;; esac
  sleep 0.2
done
case $state in
  idle | mix | alloc) ;;
  *)
    echo "Slurm node $HOST is '${state:-not known}' after 30 s ($(sinfo -h -R -o '%E' 2>/dev/null); logs: $DIR/log)" >&2
    exit 1
    ;;
esac

# A cluster just started runs a two-task array once, to know that tasks really start. squeue
# lists a job until it has ended (sbatch --wait polls too slowly: 10 s for this).
if [ -n "$started" ]; then
  check=$(mktemp -d "$DIR/check.XXXXXX")
  job=$(sbatch --parsable --array=0-1 --chdir="$check" --output="$check/%a.out" \
    --wrap 'echo $SLURM_ARRAY_TASK_ID')
  for _ in $(seq 300); do
    if left=$(squeue -h -j "$job" -o %T 2>/dev/null) && [ -z "$left" ]; then break; fi
    sleep 0.1
  done
  if [ "$(cat "$check/0.out" "$check/1.out" 2>/dev/null | tr '\n' ' ')" != "0 1 " ]; then
    echo "Slurm started (${started# }) but two-task array job $job did not run in 30 s (logs: $DIR/log)" >&2
    exit 1
  fi
  rm -rf "$check"
  echo "Slurm started (${started# }): node $HOST, $CPUS CPUs, $MEM MB"
else
  echo "Slurm already running: node $HOST is $state"
fi
echo "For its clients: source .venv/slurm/env.sh   (export SLURM_CONF=$CONF)"
