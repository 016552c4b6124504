"""What runs inside an experiment's Slurm job (submitted by :mod:`simtune.runner.slurm_executor`).

The job takes the launch the runner prepared and runs it on its own node, as the local executor
would: one process group, ``stdout.log`` and ``stderr.log`` in the result directory, stopped
0.2 s after the probe's metrics.json appears. Two things are the job's own: the rendezvous port
(a free one on this node, not the submitting host's) and, for a job on several nodes, the hosts:
the command is aimed at the job's allocation (a hostfile of its nodes, its first node as master),
so DeepSpeed's slurm launcher starts the ranks as srun steps. ``job_result.json`` records the
exit code and times for the submitting search.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

JOB_RESULT_FILE = "job_result.json"
JOB_HOSTFILE = "SIMTUNE_JOB_HOSTFILE"
"""Stands for the job's hostfile in a multi-node job's command until the job knows its nodes."""
JOB_MASTER = "SIMTUNE_JOB_MASTER"
"""Stands for the job's first node in a multi-node job's command and environment."""


@dataclass(frozen=True)
class JobLaunch:
    command: tuple[str, ...]
    added_env: Mapping[str, str]
    cwd: str
    result_dir: str
    slots_per_node: int


def _with_value(command: Sequence[str], flag: str, value: str) -> list[str]:
    out = list(command)
    for index, arg in enumerate(out[:-1]):
        if arg == flag:
            out[index + 1] = value
    return out


def aimed_at_this_job(job: JobLaunch, port: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment with this node's port and, on several nodes, this job's hosts."""
    from simtune.runner.launcher import rank_env

    command = _with_value(job.command, "--master_port", str(port))
    env = {**os.environ, **job.added_env}
    if "MASTER_PORT" in job.added_env:
        env["MASTER_PORT"] = str(port)
    if env.get("DS_ACCELERATOR") == "cpu":  # the cores of this job's node, not the submitting host's
        env.update(rank_env("cpu", job.slots_per_node, job.slots_per_node))
    if JOB_HOSTFILE in command:
        from simtune.runner.slurm import allocation_hosts, write_hostfile

        hosts = allocation_hosts()
        hostfile = write_hostfile(os.environ["SLURM_JOB_ID"], hosts, job.slots_per_node)
        command = [str(hostfile) if arg == JOB_HOSTFILE else hosts[0] if arg == JOB_MASTER else arg
                   for arg in command]
        if env.get("MASTER_ADDR") == JOB_MASTER:
            env["MASTER_ADDR"] = hosts[0]
    _update_env_file(env)
    return command, env


def _update_env_file(env: Mapping[str, str]) -> None:
    """Give the experiment's ``deepspeed_env`` (exported to the other nodes, where it wins over the
    environment) this job's values of the variables the job changed."""
    path = Path(env.get("DS_ENV_FILE", ""))
    if not env.get("DS_ENV_FILE") or not path.is_file():
        return
    changed = ("MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS", "LOCAL_SIZE")
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        key = line.partition("=")[0].strip()
        lines.append(f"{key}={env[key]}" if key in changed and key in env else line)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def run_job(job: JobLaunch) -> int:
    """Run the launch on this job's node(s); returns its exit code (also in job_result.json)."""
    from simtune.probe.protocol import write_json_atomically
    from simtune.runner.launcher import free_port, release_port, run_process_group
    from simtune.runner.runner import remove_shm_buffers

    result_dir = Path(job.result_dir)
    started = time.time()
    port = free_port()
    try:
        command, env = aimed_at_this_job(job, port)
        metrics = result_dir / "metrics.json"
        with open(result_dir / "stdout.log", "wb") as out, open(result_dir / "stderr.log", "wb") as err:
            returncode, _, wall_s = run_process_group(command, env, job.cwd, out, err, None, finished=metrics.is_file)
    finally:
        remove_shm_buffers(port)
        release_port(port)
    write_json_atomically(result_dir / JOB_RESULT_FILE, {
        "returncode": returncode, "wall_s": round(wall_s, 3), "job_started_at": started,
        "job_ended_at": time.time(), "node": os.uname().nodename, "master_port": port})
    return returncode
