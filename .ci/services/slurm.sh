# A one-node Slurm cluster (Debian's slurm-wlm and munge) for the Slurm tests (tests/slurm/).
# Sourced by .ci/run after apt.sh, and by the tests' fixture when Slurm is installed but no
# controller answers. Exports SIMTUNE_TEST_SLURM=1 once `sinfo` shows this node idle; returns
# non-zero (and exports nothing) when Slurm cannot be installed or started.

slurm_ready() {
    local states
    states=$(sinfo -h -N -o '%T' 2>/dev/null) || return 1
    case "$states" in idle*|mixed*|allocated*) return 0 ;; *) return 1 ;; esac
}

slurm_start() {
    if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
        if command -v apt_install >/dev/null 2>&1; then
            apt_install slurm-wlm munge || return 1
        else
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 || return 1
        fi
    fi
    if slurm_ready; then
        export SIMTUNE_TEST_SLURM=1
        return 0
    fi
    local node cpus memory_mb state=/var/spool/simtune-slurm
    node=$(hostname -s)
    cpus=$(nproc)
    memory_mb=$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')
    mkdir -p /etc/slurm "$state/ctld" "$state/d" /var/log/slurm /run/munge /var/lib/munge /var/log/munge
    cat > /etc/slurm/slurm.conf <<EOF
ClusterName=simtune
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=600
OverTimeLimit=0
NodeName=$node CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    pgrep -x munged >/dev/null 2>&1 || munged --force 2>/dev/null || runuser -u munge -- munged || return 1
    pgrep -x slurmctld >/dev/null 2>&1 || slurmctld -c || return 1
    pgrep -x slurmd >/dev/null 2>&1 || slurmd -c || return 1
    local waited=0
    while ! slurm_ready; do
        if [ "$waited" -ge 60 ]; then
            echo "slurm: the node did not become idle within 60 s (see /var/log/slurm/)" >&2
            return 1
        fi
        scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
        sleep 1
        waited=$((waited + 1))
    done
    export SIMTUNE_TEST_SLURM=1
}

slurm_start
