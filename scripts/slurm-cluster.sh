#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on this machine, for testing `snakemake --profile slurm`.
#
#   scripts/slurm-cluster.sh start    install the Debian packages if missing, write the configuration,
#                                     start munged, slurmctld and slurmd, wait until the node is idle
#   scripts/slurm-cluster.sh stop     cancel this cluster's jobs, stop exactly the daemons `start` started
#   scripts/slurm-cluster.sh status   the daemons and the node (exit 0 only when the node takes jobs)
#   scripts/slurm-cluster.sh env      print `export SLURM_CONF=...` for the client commands
#
# Needs root and a machine without systemd-managed SLURM (Debian 12: slurm-wlm 22.05). Each command is
# idempotent. Everything this script writes lives under $GROKBENCH_SLURM_DIR (default
# /tmp/grokbench-slurm), except two things a single-node cluster cannot do without:
#   - /etc/slurm/slurm.conf: a symlink to the generated configuration. Client commands inside jobs
#     (the `srun` that snakemake-executor-plugin-slurm's job step runs) do not inherit SLURM_CONF, so the
#     configuration has to be at the default path. The script never replaces a real file there and
#     removes its symlink on `stop`.
#   - /run/munge: munged's socket folder (no systemd creates it here); and a line in /etc/hosts if
#     the host name does not resolve (slurmctld needs it).
# Design:
#   - No accounting database (AccountingStorageType=accounting_storage/none): `sacct` does not work,
#     and Snakemake's status checks use `squeue`, which keeps finished jobs for MinJobAge=1800 s (so do
#     `scontrol show job`'s records). Finished jobs are also appended to $STATE/log/jobcomp.log.
#   - Two fake GPUs of type `fake` (gres.conf with placeholder device files; no cgroups bind them):
#     `sbatch --gpus=1` and `--gpus=fake:1` are scheduled as on a GPU node (a larger request is refused),
#     the allocation is logged in slurmctld.log (DebugFlags=Gres); the jobs themselves see no GPU.
#   - Partitions `debug` (default) and `gpu`, both the same node.
#   - Daemons run as root, started by hand (no systemd); `stop` ends only those whose pid files it wrote
#     (and a munged it did not start is used and left alone).
set -euo pipefail

STATE=${GROKBENCH_SLURM_DIR:-/tmp/grokbench-slurm}
CONF=$STATE/etc/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
CLUSTER=grokbench
START_TIMEOUT=${GROKBENCH_SLURM_START_TIMEOUT:-60}

log() { echo "slurm-cluster: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---- process bookkeeping: a daemon is "ours" when its pid file under $STATE/run names a live process
# with the expected command name.
pid_of() { # name -> prints pid if our daemon `name` runs
    local name=$1 file=$STATE/run/$1.pid pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$name" ]] || return 1
    echo "$pid"
}

stop_daemon() { # name
    local name=$1 pid i
    if ! pid=$(pid_of "$name"); then
        rm -f "$STATE/run/$name.pid"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        log "$name (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/run/$name.pid"
}

need_root() {
    [[ $EUID -eq 0 ]] || die "must run as root (it installs packages and starts slurmd)"
}

# ---- packages
install_packages() {
    local missing=() bin
    for bin in munged slurmctld slurmd sbatch; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing munge slurmctld slurmd slurm-client (missing: ${missing[*]})"
    # The packages' install scripts try to start the daemons: forbid that (exit 101) where the image does
    # not already, since this script starts them itself with its own configuration.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    local rc=0
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                munge slurmctld slurmd slurm-client
    } >"$STATE/log/apt.log" 2>&1 || rc=$?
    [[ $own_policy -eq 1 ]] && rm -f "$policy"
    if [[ $rc -ne 0 ]]; then
        tail -20 "$STATE/log/apt.log" >&2
        die "package installation failed (full log: $STATE/log/apt.log)"
    fi
}

# ---- munge
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then
        if pid_of munged >/dev/null; then
            log "munged already running (ours)"
        else
            log "using the munged already running (not started here: left alone)"
        fi
        return 0
    fi
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then
        log "creating $key"
        mungekey --create --keyfile="$key"
    fi
    chown munge:munge "$key"
    chmod 0400 "$key"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 "$STATE/munge"
    chown munge:munge "$STATE/run"
    log "starting munged"
    runuser -u munge -- munged --pid-file="$STATE/run/munged.pid" \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    local i
    for ((i = 0; i < 50; i++)); do
        munge_works && return 0
        sleep 0.1
    done
    die "munged does not answer (log: $STATE/munge/munged.log)"
}

# ---- configuration
write_config() {
    local host cpus mem_kb mem_mb
    host=$(hostname -s)
    if ! getent hosts "$host" >/dev/null; then
        log "adding $host to /etc/hosts (slurmctld must resolve its own host name)"
        echo "127.0.0.1 $host" >>/etc/hosts
    fi
    cpus=$(nproc)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    mem_mb=$((mem_kb * 9 / 10 / 1024)) # below the real total, or slurmctld marks the node invalid
    mkdir -p "$STATE/etc"
    cat >"$CONF.new" <<EOF
# Generated by scripts/slurm-cluster.sh: a single-node test cluster. Do not edit (rewritten on start).
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job with no --mem takes the whole node and jobs run one at a time.
DefMemPerCPU=1000
ReturnToService=2
SchedulerType=sched/backfill
# Finished jobs stay visible to squeue this long: Snakemake's status checks read them there, and so do
# tests/test_slurm.py's checks after its runs (several minutes: one of them trains through time limits).
MinJobAge=1800
# Time limits: at its limit (checked every 30 s) a job gets SIGTERM, then SIGKILL KillWait s later, with no
# grace beyond the limit (OverTimeLimit=0). The training jobs do not depend on KillWait: they ask for
# SIGTERM before the limit (sbatch --signal, profiles/default/config.yaml) and save then. 5 s (the
# default is 30) keeps a test job that ignores SIGTERM from holding the node long.
KillWait=5
OverTimeLimit=0
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# Each finished job gets a line in JobCompLoc: the cluster's history, without a database.
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.log
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
# Log each job's GPU allocation (which index it was bound to): how a test sees that a GPU was allocated.
DebugFlags=Gres
SlurmdDebug=info
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$mem_mb Gres=gpu:fake:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
EOF
    mv "$CONF.new" "$CONF"
    # slurmd drops GPUs without device files: give it two character devices with /dev/null's numbers
    # (nothing is bound to them: no cgroup device constraints here).
    local i
    mkdir -p "$STATE/dev"
    for i in 0 1; do
        [[ -c $STATE/dev/fakegpu$i ]] || mknod -m 0666 "$STATE/dev/fakegpu$i" c 1 3 ||
            die "cannot create the fake GPU device $STATE/dev/fakegpu$i"
    done
    cat >"$STATE/etc/gres.conf" <<EOF
NodeName=$host Name=gpu Type=fake File=$STATE/dev/fakegpu[0-1]
EOF
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        :
    elif [[ -L $SYSTEM_CONF && ! -e $SYSTEM_CONF ]]; then
        log "replacing the dangling symlink $SYSTEM_CONF -> $(readlink "$SYSTEM_CONF")"
        ln -sfn "$CONF" "$SYSTEM_CONF"
    elif [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]]; then
        die "$SYSTEM_CONF exists and is not this script's: this machine has its own SLURM configuration"
    else
        mkdir -p "$(dirname "$SYSTEM_CONF")"
        ln -s "$CONF" "$SYSTEM_CONF"
    fi
}

# ---- slurm daemons
start_slurmctld() {
    if pid_of slurmctld >/dev/null; then
        log "slurmctld already running (ours)"
        return 0
    fi
    # -c: start clean, without the jobs of an earlier (stopped) cluster. A new log too (the previous one
    # kept as .1): job ids can repeat across starts, and the log is read per job id.
    [[ -f $STATE/log/slurmctld.log ]] && mv -f "$STATE/log/slurmctld.log" "$STATE/log/slurmctld.log.1"
    log "starting slurmctld"
    slurmctld -c -f "$CONF" || die "slurmctld failed to start (log: $STATE/log/slurmctld.log)"
    wait_pid_file slurmctld "$STATE/log/slurmctld.log"
}

start_slurmd() {
    if pid_of slurmd >/dev/null; then
        log "slurmd already running (ours)"
        return 0
    fi
    log "starting slurmd"
    slurmd -f "$CONF" || die "slurmd failed to start (log: $STATE/log/slurmd.log)"
    wait_pid_file slurmd "$STATE/log/slurmd.log"
}

wait_pid_file() { # name log: the daemon forks into the background; wait for its pid file
    local i
    for ((i = 0; i < 100; i++)); do
        pid_of "$1" >/dev/null && return 0
        sleep 0.1
    done
    tail -5 "$2" >&2 || true
    die "$1 did not start (log: $2)"
}

node_state() { SLURM_CONF=$CONF sinfo -h -N -o %T 2>/dev/null | head -1; }

wait_idle() {
    local i state=""
    for ((i = 0; i < START_TIMEOUT * 2; i++)); do
        pid_of slurmctld >/dev/null || break
        pid_of slurmd >/dev/null || break
        state=$(node_state || true)
        case $state in
        idle | mixed | allocated | completing) return 0 ;;
        inval*) break ;; # a configuration the node does not match: waiting will not help
        esac
        sleep 0.5
    done
    log "last lines of $STATE/log/slurmctld.log:"
    tail -5 "$STATE/log/slurmctld.log" >&2 || true
    log "last lines of $STATE/log/slurmd.log:"
    tail -5 "$STATE/log/slurmd.log" >&2 || true
    pid_of slurmctld >/dev/null || die "slurmctld exited (log: $STATE/log/slurmctld.log)"
    pid_of slurmd >/dev/null || die "slurmd exited (log: $STATE/log/slurmd.log)"
    die "the node did not become idle within ${START_TIMEOUT}s (state: ${state:-none})"
}

cmd_start() {
    need_root
    mkdir -p "$STATE"/{etc,run,log,state,spool}
    chmod 755 "$STATE" "$STATE/run"
    install_packages
    start_munge
    write_config
    start_slurmctld
    start_slurmd
    wait_idle
    log "cluster '$CLUSTER' is up: $(SLURM_CONF=$CONF sinfo -h -N -o '%N %T cpus=%c mem=%m gres=%G' | head -1)"
    log "clients: export SLURM_CONF=$CONF (also linked from $SYSTEM_CONF)"
}

cmd_stop() {
    need_root
    if pid_of slurmctld >/dev/null; then
        local -a jobs
        mapfile -t jobs < <(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null || true)
        if [[ ${#jobs[@]} -gt 0 ]]; then
            log "cancelling jobs: ${jobs[*]}"
            SLURM_CONF=$CONF scancel "${jobs[@]}" 2>/dev/null || true
        fi
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
    log "stopped (state kept in $STATE)"
}

cmd_status() {
    local name pid ok=0
    for name in munged slurmctld slurmd; do
        if pid=$(pid_of "$name"); then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running (none started by this script)"
        fi
    done
    if [[ -f $CONF ]] && pid_of slurmctld >/dev/null; then
        SLURM_CONF=$CONF sinfo -N -o '%N %P %T %c %m %G' || ok=1
        case $(node_state || true) in
        idle | mixed | allocated | completing) ;;
        *) ok=1 ;;
        esac
    else
        ok=1
    fi
    return $ok
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 {start|stop|status|env}" >&2
    exit 2
    ;;
esac
