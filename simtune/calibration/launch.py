"""Launch ``calib.run_all`` through the real DeepSpeed launcher and collect its JSON line.

One launch measures everything. The command (an argv list, never a shell string)::

    deepspeed [--hostfile F --num_nodes M] (--num_gpus N | --num_accelerators N on CPU)
              --master_port P --module calib.run_all --out <dir>/calib_raw.json [--quick]

On CPU the environment adds ``DS_ACCELERATOR=cpu``, ``LOCAL_SIZE=N`` (DeepSpeed's CPU device
count) and ``OMP_NUM_THREADS = cores // N`` (oversubscribed cores turn timings into noise). The
rendezvous port is free at launch (the runner's ``free_port`` when present). DeepSpeed's CPU
shared-memory allreduce leaves ``/dev/shm/deepspeed_allreduce_buffer_*_<port>_<rank>`` files;
they are removed when the launch ends, whatever its outcome.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from simtune.errors import LaunchError

RAW_FILE_NAME = "calib_raw.json"
_EXCEPTION_LINE = re.compile(r"^\s*(\w+\.)*\w*(Error|Exception|Interrupt)\b.*")


class CalibrationError(LaunchError):
    """The calibration program did not run to the end or printed no result."""


@dataclass(frozen=True)
class LaunchResult:
    raw: dict
    command: list[str]
    wall_s: float
    stdout_path: Path
    stderr_path: Path


def _take_port() -> tuple[int, Optional[Callable[[int], None]]]:
    """A free rendezvous port, and how to hand it back (None when nothing needs handing back)."""
    try:
        from simtune.runner.launcher import free_port
    except ImportError:
        free_port = None
    if free_port is not None:
        try:
            from simtune.runner.launcher import release_port
        except ImportError:
            release_port = None
        return free_port(), release_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1], None


def deepspeed_launcher() -> str:
    """The ``deepspeed`` launcher of this Python environment (else the one on PATH)."""
    beside = Path(sys.executable).with_name("deepspeed")
    if beside.is_file():
        return str(beside)
    found = shutil.which("deepspeed")
    if found is None:
        raise LaunchError("The deepspeed launcher was not found: install DeepSpeed in this environment.")
    return found


def detect_accelerator() -> str:
    """"cpu" when DS_ACCELERATOR=cpu or torch sees no CUDA device, else "cuda"."""
    if os.environ.get("DS_ACCELERATOR", "").lower() == "cpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "cpu"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def build_command(
    num_gpus: int, num_nodes: int, hostfile: Optional[str], port: int, raw_path: Path, quick: bool, accelerator: str
) -> list[str]:
    placement = ["--hostfile", str(hostfile), "--num_nodes", str(num_nodes)] if hostfile else []
    count_flag = "--num_accelerators" if accelerator == "cpu" else "--num_gpus"
    command = [deepspeed_launcher(), *placement, count_flag, str(num_gpus), "--master_port", str(port)]
    command += ["--module", "calib.run_all", "--out", str(raw_path)]
    return command + (["--quick"] if quick else [])


def build_env(num_gpus: int, accelerator: str, base: Optional[dict] = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    calib_spec = importlib.util.find_spec("calib")
    if calib_spec is not None and calib_spec.submodule_search_locations:
        root = str(Path(list(calib_spec.submodule_search_locations)[0]).resolve().parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if accelerator == "cpu":
        env.update(
            DS_ACCELERATOR="cpu",
            LOCAL_SIZE=str(num_gpus),
            OMP_NUM_THREADS=str(max(1, usable_cores() // num_gpus)),
        )
    return env


def remove_shm_buffers(port: int) -> list[str]:
    """Delete DeepSpeed's CPU allreduce buffers of the run on ``port``; returns what was removed."""
    removed = []
    for path in glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_*_{port}_*"):
        try:
            os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def parse_output(stdout: str) -> Optional[dict]:
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
    """The last exception line the ranks printed, else the last non-empty line."""
    for text in (stderr, stdout):
        for line in reversed(text.splitlines()):
            if _EXCEPTION_LINE.match(line) and "Warning" not in line:
                return line.strip()
    for text in (stderr, stdout):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "no output"


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the launcher and the ranks it started (they share the launcher's new session)."""
    for sig, grace_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _run(command: list[str], env: dict, cwd: Path, out, err, timeout_s: float) -> Optional[int]:
    """The launcher's exit code, or None if it ran past ``timeout_s`` (then it and its ranks are stopped)."""
    proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        return None
    except BaseException:
        _stop_group(proc)
        raise


def launch(
    num_gpus: int,
    work_dir: Path,
    *,
    num_nodes: int = 1,
    hostfile: Optional[str] = None,
    quick: bool = False,
    accelerator: Optional[str] = None,
    timeout_s: float = 600.0,
) -> LaunchResult:
    """Run the calibration program once on ``num_gpus`` x ``num_nodes`` ranks."""
    accelerator = accelerator or detect_accelerator()
    work_dir.mkdir(parents=True, exist_ok=True)
    raw_path = work_dir / RAW_FILE_NAME
    if raw_path.exists():
        raw_path.unlink()
    stdout_path, stderr_path = work_dir / "stdout.log", work_dir / "stderr.log"
    port, release = _take_port()
    command = build_command(num_gpus, num_nodes, hostfile, port, raw_path, quick, accelerator)
    started = time.perf_counter()
    try:
        with open(stdout_path, "w", encoding="utf-8") as out, open(stderr_path, "w", encoding="utf-8") as err:
            returncode = _run(command, build_env(num_gpus, accelerator), work_dir, out, err, timeout_s)
    finally:
        remove_shm_buffers(port)
        if release is not None:
            release(port)
    wall_s = time.perf_counter() - started
    stdout = stdout_path.read_text(encoding="utf-8", errors="replace")
    stderr = stderr_path.read_text(encoding="utf-8", errors="replace")
    if returncode is None:
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
