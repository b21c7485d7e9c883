#!/usr/bin/env bash
# Stop the one-node SLURM started by start.sh: cancel jobs, stop slurmd, slurmctld, munged.
#
# Only the daemons' own PIDs (from their pid files) are signalled, never processes matched by
# name. Safe to run when nothing is running. ISYB_SLURM_PURGE=1 also deletes the saved state
# and the logs so that the next start is clean.
set -uo pipefail

say() { printf 'local-slurm stop: %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || { say "run as root"; exit 1; }

if command -v scontrol >/dev/null 2>&1 && scontrol ping >/dev/null 2>&1; then
  scancel --full --user=root >/dev/null 2>&1 || true
  scancel --state=PENDING >/dev/null 2>&1 || true
  for _ in $(seq 50); do
    [ -z "$(squeue -h 2>/dev/null)" ] && break
    sleep 0.2
  done
  scontrol shutdown >/dev/null 2>&1 || true   # asks slurmctld and slurmd to exit
fi

stop_daemon() {  # $1 = pid file, $2 = label
  local pidfile=$1 label=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done  # graceful exit
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    say "stopped $label ($pid)"
  fi
  rm -f "$pidfile"
}
stop_daemon /run/slurm/slurmd.pid slurmd
stop_daemon /run/slurm/slurmctld.pid slurmctld
stop_daemon /run/munge/munged.pid munged

if [ "${ISYB_SLURM_PURGE:-0}" = 1 ]; then
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/* /var/log/slurm/*
  say "removed saved state and logs"
fi
exit 0
