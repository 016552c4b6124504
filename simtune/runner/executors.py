"""Where a prepared launch runs: here, as one process group (``local``), or as a Slurm job
(``slurm``, :mod:`simtune.runner.slurm_executor`).

The runner prepares every experiment the same way (result directory, ``cmd.txt``, ``exp.json``)
and hands the executor a :class:`Launch`; the executor gives back an :class:`Execution`, which
:func:`simtune.runner.outcome.classify` turns into the outcome.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from simtune.runner.launcher import kill_group, run_process_group

EXECUTORS = ("local", "slurm")

Submitted = Callable[[Mapping[str, Any]], None]
"""Called with what to add to ``exp.json`` once a launch is handed over (e.g. a job id)."""


class Interrupted(Exception):
    """The run was interrupted; the experiment stays unrecorded so that it runs again next time."""


@dataclass(frozen=True)
class Launch:
    """One experiment's launch as the runner prepared it."""

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    """The launcher's whole environment here."""
    added_env: Mapping[str, str]
    """What simtune adds to an environment (the part a job on another node takes along)."""
    cwd: str
    result_dir: Path
    timeout_s: float | None
    port: int | None = None
    """The rendezvous port (its /dev/shm buffers are removed if simtune dies during the launch)."""


@dataclass(frozen=True)
class Execution:
    """How a launch ended."""

    returncode: int | None
    timed_out: bool
    wall_s: float
    job_state: str | None = None
    """The Slurm job's final state; None for a local launch."""
    job_reason: str = ""
    record: Mapping[str, Any] = field(default_factory=dict)
    """What to add to ``exp.json`` (job ids, submit and start times)."""


class Executor(ABC):
    name: str

    def check(self) -> None:
        """Raise a :class:`~simtune.errors.SimtuneError` when this executor cannot run here."""

    def begin(self) -> None:
        """A run of the runner starts: launches may be handed over again after an interrupt."""

    @abstractmethod
    def capacity(self, slot_sets: int) -> int:
        """How many experiments are handed over at once, given the resources' concurrent slot sets."""

    @abstractmethod
    def execute(self, launch: Launch, submitted: Submitted) -> Execution:
        """Run ``launch`` to its end (raises :class:`Interrupted` once :meth:`stop_all` is called)."""

    def reattach(self, launch: Launch, record: Mapping[str, Any]) -> Execution | None:
        """The end of a launch an earlier, killed search handed over (``record`` is its exp.json);
        None when there is nothing to pick up and the experiment must run again."""
        return None

    @abstractmethod
    def stop_all(self) -> None:
        """Interrupted: stop every launch in flight."""

    def running_pids(self) -> set[int]:
        """The processes this executor started and still owns (and reaps itself)."""
        return set()

    def call(self, name: str, folder: Path, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` where the experiments run, and its result: a measuring launch
        (the machine's calibration, the workload's measurement) must run on the hardware it
        measures. ``folder`` keeps what the executor needs (a job's files); here a plain call."""
        return fn(*args, **kwargs)


class LocalExecutor(Executor):
    """Each launch runs here in a new session, stopped whole at its time-out
    (:func:`~simtune.runner.launcher.run_process_group`)."""

    name = "local"

    def __init__(self) -> None:
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def capacity(self, slot_sets: int) -> int:
        return slot_sets

    def execute(self, launch: Launch, submitted: Submitted) -> Execution:
        metrics = launch.result_dir / "metrics.json"  # written atomically by the probe right before the ranks leave
        with open(launch.result_dir / "stdout.log", "wb") as out, open(launch.result_dir / "stderr.log", "wb") as err:
            def started(process: subprocess.Popen) -> None:
                self._track(process)
                submitted({"pgid": process.pid})  # the launch leads its own process group

            returncode, timed_out, wall_s = run_process_group(
                launch.command, launch.env, launch.cwd, out, err, launch.timeout_s,
                on_start=started, on_end=self._untrack, finished=metrics.is_file, port=launch.port)
        return Execution(returncode, timed_out, wall_s)

    def running_pids(self) -> set[int]:
        with self._lock:
            return {process.pid for process in self._running}

    def stop_all(self) -> None:
        with self._lock:
            running = list(self._running)
        for process in running:
            kill_group(process, signal.SIGKILL)

    def _track(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.add(process)

    def _untrack(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(process)
