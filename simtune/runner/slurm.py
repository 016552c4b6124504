"""Slurm as simtune sees it: the allocation it runs in, and what Slurm says about a job.

Inside an allocation (``salloc`` or an ``sbatch`` script: ``SLURM_JOB_ID`` is set) experiments
run through DeepSpeed's slurm launcher as srun steps on the allocation's nodes; the hosts come
from ``scontrol show hostnames $SLURM_JOB_NODELIST`` and are written to a hostfile for
DeepSpeed's launcher. A job's state is read from ``scontrol show job`` while the controller
still holds it (``MinJobAge`` seconds after its end), else from ``sacct`` (job accounting).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from simtune.errors import InputError, LaunchError
from simtune.runner.resources import Resources, detect_accelerator

QUERY_TIMEOUT_S = 30.0

PENDING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
                            "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING"})
FINISHED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                             "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"})


def require_commands(names: tuple[str, ...], purpose: str) -> None:
    """Refuse in one sentence when a Slurm command is not on PATH."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise InputError(f"{purpose} needs Slurm's {', '.join(missing)} on PATH, which "
                         f"{'is' if len(missing) == 1 else 'are'} not installed here.")


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, check=False)


# -- the allocation ---------------------------------------------------------------------------------
def allocation_hosts(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The allocation's node names, in Slurm's order."""
    environ = dict(os.environ if environ is None else environ)
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not nodelist:
        raise InputError("The Slurm allocation names no nodes (SLURM_JOB_NODELIST is unset).")
    done = _run(["scontrol", "show", "hostnames", nodelist])
    hosts = tuple(line.strip() for line in done.stdout.splitlines() if line.strip())
    if done.returncode != 0 or not hosts:
        raise LaunchError(f"scontrol could not expand the allocation's node list {nodelist!r}: "
                          f"{done.stderr.strip() or 'no host names'}.")
    return hosts


def gpus_on_node(environ: dict[str, str]) -> int | None:
    """GPUs per node of the allocation (``SLURM_GPUS_ON_NODE``), if Slurm says."""
    value = environ.get("SLURM_GPUS_ON_NODE", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def allocation_resources(*, num_gpus: int | None, num_nodes: int | None, launcher_args: str = "",
                         default_cpu_processes: int) -> Resources:
    """Resources for ``--launcher slurm``: the allocation's nodes, ``num_gpus`` per node (default:
    the allocation's GPUs per node, this node's GPUs, or ``default_cpu_processes`` on CPU) on
    ``num_nodes`` of them (default all), and a hostfile that lists them for DeepSpeed's launcher."""
    environ = dict(os.environ)
    if "SLURM_JOB_ID" not in environ:
        raise InputError("--launcher slurm runs each experiment as an srun step of the Slurm allocation simtune "
                         "runs in, but there is none (SLURM_JOB_ID is unset): run simtune inside salloc or an "
                         "sbatch script, or submit each experiment as a job with --executor slurm.")
    require_commands(("srun", "sinfo", "scontrol"), "--launcher slurm")
    hosts = allocation_hosts(environ)
    accelerator = detect_accelerator()
    if num_gpus is None:
        if accelerator == "cuda":
            num_gpus = gpus_on_node(environ)
            if num_gpus is None:
                import torch

                num_gpus = torch.cuda.device_count()
        else:
            num_gpus = default_cpu_processes
    nodes = len(hosts) if num_nodes is None else num_nodes
    hostfile = write_hostfile(environ["SLURM_JOB_ID"], hosts, num_gpus)
    return Resources(hosts=tuple((host, num_gpus) for host in hosts), num_gpus=num_gpus, num_nodes=nodes,
                     accelerator=accelerator, hostfile=str(hostfile), launcher="slurm", launcher_args=launcher_args)


def job_resources(*, num_gpus: int | None, num_nodes: int | None, default_cpu_processes: int) -> Resources:
    """Resources of one experiment's own job (``--executor slurm``): ``num_gpus`` per node (default:
    this machine's GPUs, or ``default_cpu_processes`` on CPU) on ``num_nodes`` nodes (default 1).
    On one node the job launches its ranks itself; on several, through DeepSpeed's slurm
    launcher, with hosts the job fills in (:mod:`simtune.runner.slurm_job`)."""
    from simtune.runner.slurm_job import JOB_HOSTFILE, JOB_MASTER

    accelerator = detect_accelerator()
    if num_gpus is None:
        if accelerator == "cuda":
            import torch

            num_gpus = torch.cuda.device_count()
        else:
            num_gpus = default_cpu_processes
    if num_gpus < 1:
        raise InputError("This machine has no GPU to count: give --num_gpus, the GPUs per node of each job.")
    nodes = num_nodes or 1
    if nodes == 1:
        return Resources(hosts=(("localhost", num_gpus),), num_gpus=num_gpus, num_nodes=1, accelerator=accelerator)
    hosts = ((JOB_MASTER, num_gpus),) + tuple((f"SIMTUNE_JOB_NODE_{i}", num_gpus) for i in range(1, nodes))
    return Resources(hosts=hosts, num_gpus=num_gpus, num_nodes=nodes, accelerator=accelerator,
                     hostfile=JOB_HOSTFILE, launcher="slurm")


def write_hostfile(job_id: str, hosts: tuple[str, ...], slots: int) -> Path:
    """A DeepSpeed hostfile of the allocation (``host slots=N`` lines) in the temporary folder,
    named after the job, so that cmd_optimal.txt can name it for the rest of the allocation."""
    path = Path(tempfile.gettempdir()) / f"simtune-hostfile-{job_id}-{slots}"
    text = "".join(f"{host} slots={slots}\n" for host in hosts)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


# -- jobs -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobInfo:
    """What Slurm says about one job."""

    job_id: str
    state: str
    """Slurm's state (``PENDING``, ``RUNNING``, ``COMPLETED``, ``TIMEOUT``, ...); ``UNKNOWN``
    when neither the controller nor accounting knows the job."""
    reason: str = ""
    submit_time: str = ""
    start_time: str = ""
    end_time: str = ""
    exit_code: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def known(self) -> bool:
        return self.state != "UNKNOWN"


_FIELD = re.compile(r"(\w+)=(\S*)")


def job_info(job_id: str) -> JobInfo:
    """The job's state and times: from the controller, else from accounting, else UNKNOWN."""
    done = _run(["scontrol", "show", "job", "-o", job_id])
    if done.returncode == 0 and done.stdout.strip():
        fields = dict(_FIELD.findall(done.stdout.splitlines()[0]))
        return JobInfo(job_id, fields.get("JobState", "UNKNOWN").split()[0], fields.get("Reason", ""),
                       fields.get("SubmitTime", ""), fields.get("StartTime", ""), fields.get("EndTime", ""),
                       fields.get("ExitCode", ""))
    if shutil.which("sacct") is not None:
        done = _run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State,Reason,Submit,Start,End,ExitCode"])
        line = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else ""
        if line:
            state, reason, submit, start, end, exit_code = (line.split("|") + [""] * 6)[:6]
            return JobInfo(job_id, state.split()[0] if state else "UNKNOWN", reason, submit, start, end, exit_code)
    return JobInfo(job_id, "UNKNOWN")


def cancel_jobs(job_ids: list[str]) -> None:
    """``scancel`` the jobs (those already ended are ignored by Slurm)."""
    if job_ids:
        _run(["scancel", *job_ids])
