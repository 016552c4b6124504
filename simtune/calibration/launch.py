"""Launch ``simtune.calib.run_all`` on every rank and collect its JSON line.

One launch measures everything. The command (an argv list, never a shell string), on several nodes
DeepSpeed's launcher::

    deepspeed --hostfile F --num_nodes M (--num_gpus N | --num_accelerators N on CPU)
              --master_port P --module simtune.calib.run_all --out <dir>/calib_raw.json [--quick]
              [--nvme-path DIR]

and on one node :mod:`simtune.runner.local_ranks`, which starts the same ranks with the same
variables without the launcher's two DeepSpeed-importing interpreters (2.7 s less)::

    python -m simtune.runner.local_ranks --nproc N --master_port P simtune.calib.run_all --out ... [--quick]

The runner's pieces do the rest: the launcher path, a free rendezvous port, the ranks'
environment (on CPU ``DS_ACCELERATOR=cpu``, ``LOCAL_SIZE=N`` and ``OMP_NUM_THREADS = cores // N``),
the launch as one process group stopped whole at the time-out, the removal of DeepSpeed's CPU
shared-memory buffers (``/dev/shm/deepspeed_allreduce_buffer_*_<port>_<rank>``) whatever the
outcome, and the exception line that explains a failure.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import simtune
from simtune.errors import LaunchError
from simtune.runner import local_ranks
from simtune.runner.arch_list import with_readable_arch_list
from simtune.runner.launcher import (deepspeed_launcher, free_port, own_tools_first, rank_env, release_port,
                                     run_process_group)
from simtune.runner.outcome import first_exception, last_line
from simtune.runner.resources import detect_accelerator
from simtune.watchdog import remove_shm_buffers

RAW_FILE_NAME = "calib_raw.json"
RANK_MODULE = "simtune.calib.run_all"


class CalibrationError(LaunchError):
    """The calibration program did not run to the end or printed no result."""


@dataclass(frozen=True)
class LaunchResult:
    raw: dict[str, Any]
    command: list[str]
    wall_s: float
    stdout_path: Path
    stderr_path: Path


def build_command(
    num_gpus: int, num_nodes: int, hostfile: Optional[str], port: int, raw_path: Path, quick: bool, accelerator: str,
    nvme_path: Optional[str] = None,
) -> list[str]:
    args = ["--out", str(raw_path)] + (["--quick"] if quick else []) + (["--nvme-path", nvme_path] if nvme_path else [])
    if not hostfile and num_nodes == 1:
        return local_ranks.command(num_gpus, port, RANK_MODULE, args)
    placement = ["--hostfile", str(hostfile), "--num_nodes", str(num_nodes)] if hostfile else []
    count_flag = "--num_accelerators" if accelerator == "cpu" else "--num_gpus"
    command = [deepspeed_launcher(), *placement, count_flag, str(num_gpus), "--master_port", str(port)]
    return command + ["--module", RANK_MODULE, *args]


def build_env(num_gpus: int, accelerator: str, base: Optional[dict] = None) -> dict[str, str]:
    """``base`` (default: this environment) with this simtune (and its ``simtune.calib``) first on
    the ranks' import path and the runner's :func:`~simtune.runner.launcher.rank_env` for
    ``num_gpus`` ranks per node."""
    env = dict(os.environ if base is None else base)
    root = str(Path(simtune.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.update(rank_env(accelerator, num_gpus, num_gpus))
    with_readable_arch_list(env)
    return own_tools_first(env)


def parse_output(stdout: str) -> Optional[dict[str, Any]]:
    """The last calibration JSON line of the launcher's output (pdsh may prefix "host: ")."""
    for line in reversed(stdout.splitlines()):
        start = line.find('{"calib_schema"')
        if start < 0:
            continue
        try:
            return json.loads(line[start:])
        except json.JSONDecodeError:
            continue
    return None


def failure_reason(stderr: str, stdout: str) -> str:
    """The exception line that ends the ranks' first traceback, else the last line printed."""
    return first_exception(stderr) or last_line(stderr) or last_line(stdout) or "no output"


def launch(
    num_gpus: int,
    work_dir: Path,
    *,
    num_nodes: int = 1,
    hostfile: Optional[str] = None,
    quick: bool = False,
    accelerator: Optional[str] = None,
    timeout_s: float = 600.0,
    nvme_path: Optional[str] = None,
) -> LaunchResult:
    """Run the calibration program once on ``num_gpus`` x ``num_nodes`` ranks (timing the storage
    under ``nvme_path`` too when given)."""
    accelerator = accelerator or detect_accelerator()
    work_dir.mkdir(parents=True, exist_ok=True)
    raw_path = work_dir / RAW_FILE_NAME
    if raw_path.exists():
        raw_path.unlink()
    stdout_path, stderr_path = work_dir / "stdout.log", work_dir / "stderr.log"
    port = free_port()
    try:
        command = build_command(num_gpus, num_nodes, hostfile, port, raw_path, quick, accelerator, nvme_path)
        with open(stdout_path, "w", encoding="utf-8") as out, open(stderr_path, "w", encoding="utf-8") as err:
            returncode, timed_out, wall_s = run_process_group(
                command, build_env(num_gpus, accelerator), work_dir, out, err, timeout_s,
                finished=raw_path.is_file,  # rank 0 writes it atomically before the ranks' last barrier
                port=port,
            )
    finally:
        remove_shm_buffers(port)
        release_port(port)
    stdout = stdout_path.read_text(encoding="utf-8", errors="replace")
    stderr = stderr_path.read_text(encoding="utf-8", errors="replace")
    if timed_out:
        raise CalibrationError(f"Calibration did not finish within {timeout_s:.0f} s (logs in {work_dir}).")
    raw = None
    if raw_path.is_file():
        try:
            raw = json.loads(raw_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raw = None
    if raw is None:
        raw = parse_output(stdout)
    if returncode != 0 or raw is None:
        raise CalibrationError(
            f"Calibration failed (exit code {returncode}): {failure_reason(stderr, stdout)} (logs in {work_dir})."
        )
    return LaunchResult(raw=raw, command=command, wall_s=wall_s, stdout_path=stdout_path, stderr_path=stderr_path)
