#!/usr/bin/env bash
# Start a one-node SLURM (slurmctld + slurmd + munge) listening on 127.0.0.1.
#
# For tests (`.ci/run` calls this before `make test`) and for trying `isyb run --cluster slurm`
# on a laptop or a container. Debian/Ubuntu only (apt packages slurmctld slurmd slurm-client
# munge); must run as root. No systemd, no accounting database, no cgroups unless
# ISYB_SLURM_CGROUP=1. Safe to run again: installs only what is missing, rewrites the
# configuration, starts only daemons that are not running, and waits until the node is idle.
#
# Environment:
#   ISYB_SLURM_CPUS     CPUs the node offers        (default: nproc)
#   ISYB_SLURM_MEM_MB   memory the node offers, MB  (default: 90% of MemTotal, max 64000)
#   ISYB_SLURM_CGROUP   1 = enforce cores/memory with cgroups (default 0)
#   ISYB_SLURM_TIMEOUT  seconds to wait for the node to become usable (default 60)
set -euo pipefail

t_start=$(date +%s%N)
say() {
  local ms=$(( ($(date +%s%N) - t_start) / 1000000 ))
  printf 'local-slurm [%d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}
die() { say "ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (e.g. sudo bash $0)"

node=$(hostname -s)
cpus=${ISYB_SLURM_CPUS:-$(nproc)}
if [ -n "${ISYB_SLURM_MEM_MB:-}" ]; then
  mem_mb=$ISYB_SLURM_MEM_MB
else
  mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  mem_mb=$(( mem_kb * 9 / 10 / 1024 ))
  [ "$mem_mb" -gt 64000 ] && mem_mb=64000
fi
wait_s=${ISYB_SLURM_TIMEOUT:-60}

if [ "${ISYB_SLURM_CGROUP:-0}" = 1 ]; then
  proctrack=proctrack/cgroup; taskplugin=task/cgroup,task/affinity; constrain=yes
else
  proctrack=proctrack/linuxproc; taskplugin=task/none; constrain=no
fi

# ---- 1. packages -------------------------------------------------------------------------
missing=()
for cmd in slurmctld slurmd sbatch munged; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  say "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]; then
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi
getent passwd slurm >/dev/null || die "user 'slurm' missing (package install incomplete?)"
getent passwd munge >/dev/null || die "user 'munge' missing (package install incomplete?)"

# ---- 2. munge (authentication between the SLURM daemons and commands) --------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  say "creating munge key"
  head -c 1024 /dev/urandom > /etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null >/dev/null 2>&1; then
  # a stale pid/socket from a killed munged blocks a new one
  if [ -s /run/munge/munged.pid ] && ! kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
  fi
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 100); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n </dev/null | unmunge >/dev/null || die "munge does not work"
say "munge ok"

# ---- 3. configuration --------------------------------------------------------------------
install -d -o slurm -g slurm -m 0755 /var/spool/slurmctld /var/log/slurm /run/slurm
install -d -m 0755 /var/spool/slurmd /etc/slurm
conf=/etc/slurm/slurm.conf
new_conf=$(mktemp)
cat > "$new_conf" <<CONF
# Written by isyb-dask cluster/local-slurm/start.sh: one node on 127.0.0.1, for tests.
ClusterName=isyb-local
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=${proctrack}
TaskPlugin=${taskplugin}
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldDebug=info
SlurmdDebug=info
# quick turnaround on a single test node
SchedulerParameters=sched_interval=5
MessageTimeout=10
KillWait=5
InactiveLimit=0
MinJobAge=60
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
conf_changed=0
if ! cmp -s "$new_conf" "$conf"; then
  install -m 0644 "$new_conf" "$conf"
  conf_changed=1
fi
rm -f "$new_conf"
cat > /etc/slurm/cgroup.conf <<CONF
CgroupPlugin=autodetect
ConstrainCores=${constrain}
ConstrainRAMSpace=${constrain}
ConstrainDevices=no
CONF
chmod 0644 /etc/slurm/cgroup.conf

# ---- 4. daemons --------------------------------------------------------------------------
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if alive /run/slurm/slurmctld.pid && [ "$conf_changed" = 1 ]; then
  say "configuration changed: reconfiguring"
  scontrol reconfigure >/dev/null 2>&1 || true
fi
if ! alive /run/slurm/slurmctld.pid; then
  # State saved by another single-node setup (other ClusterName) makes slurmctld refuse to
  # start; this node is ours and disposable, so drop it.
  saved=/var/spool/slurmctld/clustername
  if [ -s "$saved" ] && [ "$(cat "$saved")" != "isyb-local" ]; then
    say "discarding state of cluster '$(cat "$saved")'"
    rm -f "$saved"
  fi
  say "starting slurmctld"
  slurmctld -i || die "slurmctld did not start; see /var/log/slurm/slurmctld.log"
fi
if ! alive /run/slurm/slurmd.pid; then
  say "starting slurmd"
  slurmd || die "slurmd did not start; see /var/log/slurm/slurmd.log"
fi

# ---- 5. wait until the node takes jobs ---------------------------------------------------
state=""
deadline=$(( $(date +%s) + wait_s ))
resumed=0
while [ "$(date +%s)" -lt "$deadline" ]; do
  state=$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*|drained*)
      if [ "$resumed" = 0 ]; then
        scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
        resumed=1
      fi ;;
  esac
  sleep 0.2
done
case "$state" in
  idle|mixed|allocated|completing) ;;
  *) die "node $node is '${state:-unknown}' after ${wait_s}s; see /var/log/slurm/*.log" ;;
esac
sinfo
say "SLURM ready (node $node, ${cpus} CPUs, ${mem_mb} MB)"
