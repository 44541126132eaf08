#!/usr/bin/env bash
# A real single-machine Slurm cluster for trying `hydra/launcher=slurm` and for the tests:
# munged, slurmctld and slurmd started directly (no systemd), everything under one folder.
#
#   bash scripts/slurm.sh install        # Debian: apt-get install slurm-wlm munge (as root)
#   bash scripts/slurm.sh start DIR      # config, key, logs and pid files in DIR; prints
#                                        #   export SLURM_CONF=DIR/slurm.conf
#   SLURM_CONF=DIR/slurm.conf sbatch ... # or: lenet5-train -m ... hydra/launcher=slurm
#   bash scripts/slurm.sh stop DIR       # scontrol shutdown, then each daemon by its pid
#
# One partition `debug` of one node (`localhost`) with this machine's cores, jobs run as the
# user who submits them. Facts behind the settings: ../shared/reference/scale-out.md.
set -euo pipefail

command=${1:?usage: slurm.sh install | start DIR | stop DIR}

if [ "$command" = install ]; then
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null ||
        { apt-get update >/dev/null && apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null; }
    exit 0
fi

dir=${2:?usage: slurm.sh $command DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

if [ "$command" = stop ]; then
    SLURM_CONF="$dir/slurm.conf" scontrol shutdown >/dev/null 2>&1 || true
    for pidfile in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
    exit 0
fi

[ "$command" = start ] || { echo "unknown command $command" >&2; exit 2; }
for binary in munged slurmctld slurmd sbatch; do
    command -v "$binary" >/dev/null ||
        { echo "slurm.sh: no $binary: run 'bash scripts/slurm.sh install' (root)" >&2; exit 3; }
done
user=$(id -un)
cpus=$(nproc)
memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
mkdir -p "$dir/spool" "$dir/state" "$dir/munge"
chmod 700 "$dir/munge"
[ -f "$dir/munge/munge.key" ] || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$dir/munge/munge.key"
cat >"$dir/slurm.conf" <<EOF
ClusterName=lenet5
SlurmctldHost=localhost
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket.2
CredType=cred/munge
SlurmctldPort=$((6817 + RANDOM % 1000))
SlurmdPort=$((7817 + RANDOM % 1000))
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
KillWait=30
ReturnToService=2
NodeName=localhost CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket.2" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/seed" \
    --force
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N localhost
for _ in $(seq 100); do
    if sinfo -h -o %t 2>/dev/null | grep -q idle; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "slurm.sh: the node did not come up idle in 20 s; logs in $dir" >&2
sinfo >&2 || true
exit 4
