"""How a finished launch is classified: ``ok``, ``oom``, ``timeout`` or ``crashed``, with a reason.

Rules, in order (the first that applies wins):

1. ``ok``: metrics.json exists and holds every required key with a positive throughput (whatever
   the exit code: the probe writes it only after the last measured step);
2. ``timeout``: the run was stopped at the time-out, or its Slurm job ended ``TIMEOUT`` (it
   reached its time limit);
3. for a Slurm job: ``oom`` when it ended ``OUT_OF_MEMORY``; ``crashed`` with the state (and
   Slurm's reason) when it ended ``NODE_FAIL``, ``PREEMPTED``, ``BOOT_FAIL``, ``CANCELLED``,
   ``DEADLINE`` or ``REVOKED`` (the logs of a job stopped from outside say nothing about why);
4. ``oom``: the probe's budget line (``simtune-probe: out of memory: ...``), a traceback whose
   exception is an out-of-memory error (``torch.OutOfMemoryError``, ``CUDA out of memory``,
   ``DefaultCPUAllocator: can't allocate memory``, ``MemoryError``), the text ``CUDA out of
   memory`` on stderr, or a rank (or the launcher) killed by SIGKILL, which on a machine left
   alone is the kernel's out-of-memory killer;
5. ``crashed``: the exception line that ends the first traceback on stderr (for chained
   exceptions, the last of the chain), e.g. ``ValueError: bad value``; else the probe's own line
   (the script ended before the last measured step, or the probe could not start); else the
   signal that killed a rank; else the exit code and the last line on stderr.

No rule greps for the word "error": warnings that contain it do not fail a run.
"""

from __future__ import annotations

import json
import math
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from simtune.probe.protocol import (
    CANNOT_START_PREFIX,
    LINE_PREFIX,
    NO_METRICS_PREFIX,
    OUT_OF_MEMORY_PREFIX,
    REQUIRED_METRIC_KEYS,
)

MAX_REASON_CHARS = 400

_RANK_PREFIX = re.compile(r"^\[rank\d+\]:\s?")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(:\s.*|:)?$")
_CHAIN_LINES = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
_RANK_EXIT = re.compile(r"exits with return code = (-?\d+)")
_OOM_TEXTS = ("OutOfMemoryError", "out of memory", "can't allocate memory", "MemoryError")
JOB_ENDED_FROM_OUTSIDE = ("NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "CANCELLED", "DEADLINE", "REVOKED")
"""Slurm job states whose reason is the state itself, not the job's logs."""


@dataclass(frozen=True)
class Outcome:
    status: str
    reason: str


def read_metrics(path: str | Path) -> dict[str, Any] | None:
    """metrics.json if it exists and is valid (every required key, a positive throughput), else None."""
    try:
        with open(path, encoding="utf-8") as handle:
            metrics = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or any(key not in metrics for key in REQUIRED_METRIC_KEYS):
        return None
    throughput = metrics["throughput"]
    if not isinstance(throughput, (int, float)) or not math.isfinite(throughput) or throughput <= 0:
        return None
    return metrics


def _lines(text: str) -> list[str]:
    return [_RANK_PREFIX.sub("", line.rstrip()) for line in text.splitlines()]


def with_details(message: str, after: list[str], most: int = 6) -> str:
    """An exception line that ends with ':' and the list items printed under it (``- ...``, as
    the Hugging Face Trainer lists the config values it refuses), on one line."""
    if not message.rstrip().endswith(":"):
        return message
    items = []
    for line in after[:most]:
        if not line.lstrip().startswith("- "):
            break
        items.append(line.strip()[2:].strip())
    return f"{message.rstrip()} {'; '.join(items)}" if items else message


_TRAINER_BATCH = re.compile(r"ds train_batch_size=(\d+) vs hf train_batch_size=(\d+)")
_TRAINER_FLAG = re.compile(r"ds (train_micro_batch_size_per_gpu|gradient_accumulation_steps)=\S+ vs hf (\S+)=")


def trainer_advice(exception: str) -> str:
    """What to change when the Hugging Face Trainer refuses the experiment's config ('' when the
    exception is not that refusal). A Trainer that counts fewer processes than DeepSpeed runs is
    one on CPU without ``--use_cpu true``; a micro-batch size or accumulation it disagrees with is
    a flag missing from ``arg_mappings``."""
    batch = _TRAINER_BATCH.search(exception)
    if batch and int(batch.group(2)) < int(batch.group(1)):
        return ("the Trainer counts fewer processes than DeepSpeed runs; on CPU give the script "
                "--use_cpu true: ")
    flags = _TRAINER_FLAG.findall(exception)
    if flags:
        pairs = ", ".join(f'"{key}": "--{flag}"' for key, flag in flags)
        return f"the Trainer's flags disagree with the config; add {pairs} to autotuning.arg_mappings: "
    return ""


def first_exception(stderr: str) -> str | None:
    """The exception line ending the first traceback (the last of its chain), or None."""
    lines = _lines(stderr)
    found = None
    index = 0
    while index < len(lines):
        if not lines[index].startswith("Traceback (most recent call last):"):
            index += 1
            continue
        index += 1
        while index < len(lines) and (lines[index][:1].isspace() or not _EXCEPTION_LINE.match(lines[index])):
            index += 1
        if index >= len(lines):
            return found
        found = with_details(lines[index], lines[index + 1:])
        following = index + 1
        while following < len(lines) and not lines[following].strip():
            following += 1
        if following < len(lines) and lines[following] in _CHAIN_LINES:
            index = following + 1
            continue
        return found
    return found


def last_line(text: str) -> str:
    """The last non-blank line of ``text`` (rank prefix removed), or ``""``."""
    return next((line.strip() for line in reversed(_lines(text)) if line.strip()), "")


def _probe_line(text: str, prefix: str) -> str | None:
    for line in _lines(text):
        if line.startswith(prefix):
            return line[len(LINE_PREFIX):].strip()
    return None


def _rank_exit_codes(text: str) -> list[int]:
    return [int(code) for code in _RANK_EXIT.findall(text)]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _short(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."


def classify(*, returncode: int | None, timed_out: bool, timeout_s: float | None,
             stdout: str, stderr: str, metrics: Mapping[str, Any] | None,
             job_state: str | None = None, job_reason: str = "") -> Outcome:
    """The outcome of one launch, ``job_state`` the final state of its Slurm job if it ran as one
    (see the module docstring for the rules)."""
    if metrics is not None:
        return Outcome("ok", "")
    if job_state == "TIMEOUT":
        return Outcome("timeout", "the Slurm job reached its time limit"
                       + (f" (the time-out of {timeout_s:g} s, in whole minutes)" if timeout_s else ""))
    if timed_out:
        return Outcome("timeout", f"no result within the time-out of {timeout_s:g} s")
    if job_state == "OUT_OF_MEMORY":
        return Outcome("oom", "the Slurm job ran out of memory (OUT_OF_MEMORY)")
    if job_state in JOB_ENDED_FROM_OUTSIDE:
        why = f" ({job_reason})" if job_reason and job_reason not in ("None", "(null)") else ""
        return Outcome("crashed", _short(f"the Slurm job ended {job_state}{why}"))
    budget_line = _probe_line(stderr, OUT_OF_MEMORY_PREFIX)
    if budget_line is not None:
        return Outcome("oom", _short(budget_line))
    exception = first_exception(stderr)
    if exception is not None and any(text in exception for text in _OOM_TEXTS):
        return Outcome("oom", _short(exception))
    for line in _lines(stderr):
        if "CUDA out of memory" in line:
            return Outcome("oom", _short(line.strip()))
    signals = [-code for code in _rank_exit_codes(stdout + "\n" + stderr) if code < 0]
    if returncode is not None and returncode < 0:
        signals.append(-returncode)
    if signal.SIGKILL in signals:
        return Outcome("oom", "a process was killed by SIGKILL (most likely the kernel's out-of-memory killer)")
    if exception is not None:
        return Outcome("crashed", _short(trainer_advice(exception) + exception))
    for prefix in (NO_METRICS_PREFIX, CANNOT_START_PREFIX):
        line = _probe_line(stderr, prefix)
        if line is not None:
            return Outcome("crashed", _short(line))
    if signals:
        return Outcome("crashed", f"a process was killed by {_signal_name(signals[0])}")
    last = last_line(stderr)
    code = "no exit code" if returncode is None else f"exit code {returncode}"
    if returncode == 0:
        return Outcome("crashed", "the run ended without writing metrics.json")
    return Outcome("crashed", _short(f"the launcher ended with {code}" + (f": {last}" if last else "")))
