"""Runs experiments through the DeepSpeed launcher and records each in its result directory.

For each experiment (see docs/experiments.md for every file):

- ``exps_dir/<name>.json``: the experiment description;
- ``results_dir/<name>/``: ``ds_config.json``, ``probe.json``, ``cmd.txt``, ``deepspeed_env``,
  ``exp.json`` (written with status ``running`` before the launch, and with the outcome after
  it), ``stdout.log``, ``stderr.log`` and, when ok, the probe's ``metrics.json``.

The launch runs in a new session, so a time-out (or an interrupt) ends its whole process group.
After every launch the run's ``/dev/shm`` buffers are removed and its port is released.
Experiments run side by side when the resources hold several slot sets
(:meth:`Resources.concurrent_slots`), each on its own slots and port; results come back in
input order. A failure is a recorded result, never an exception out of :meth:`Runner.run`.
The load other processes put on the machine during each launch is recorded in ``exp.json``
(``others_cores``, :mod:`simtune.runner.interference`), so that the strategies can mark the runs
they disturbed.
"""

from __future__ import annotations

import datetime
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from simtune.errors import InputError
from simtune.probe.protocol import ProbeSettings, write_json_atomically
from simtune.runner.experiment import STATUSES, Experiment, ExperimentResult, as_json
from simtune.runner.interference import LoadWatch
from simtune.runner.launcher import (
    build_command,
    deepspeed_launcher,
    free_port,
    kill_group,
    launch_env,
    release_port,
    run_process_group,
    with_config_path,
)
from simtune.runner.outcome import classify, read_metrics
from simtune.runner.resources import Resources, SlotAssignment

Progress = Callable[[str, int, int, ExperimentResult], None]
"""``progress(name, index, total, result)``: ``index`` is the 0-based position in the list given to
:meth:`Runner.run`, called as each experiment ends (reused ones included)."""

DEFAULT_MASTER_PORT = 29500
"""DeepSpeed's default rendezvous port, used in commands meant for the user to run."""

SHM_DIR = Path("/dev/shm")


class _Interrupted(Exception):
    """The run was interrupted; the experiment stays unrecorded so it runs again next time."""


def remove_shm_buffers(port: int, shm_dir: Path = SHM_DIR) -> int:
    """Remove DeepSpeed's shared-memory allreduce buffers of the run on ``port``
    (``deepspeed_allreduce_buffer_<n>_<addr>_<port>_<rank>``, 66 MiB each); returns how many."""
    removed = 0
    for path in shm_dir.glob(f"deepspeed_allreduce_buffer_*_{port}_*"):
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def recorded_result(result_dir: Path, ds_config: Mapping[str, Any]) -> ExperimentResult | None:
    """The finished result recorded in ``result_dir`` for this config, or None (never run, run
    interrupted, run with another config, or ok without a valid metrics.json)."""
    try:
        record = json.loads((result_dir / "exp.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        return None
    if record.get("ds_config") != as_json(ds_config):
        return None
    metrics = None
    if record["status"] == "ok":
        metrics = read_metrics(result_dir / "metrics.json")
        if metrics is None:
            return None
    return ExperimentResult(
        name=record.get("name", result_dir.name),
        status=record["status"],
        reason=record.get("reason", ""),
        metrics=metrics,
        result_dir=str(result_dir),
        wall_s=float(record.get("wall_s") or 0.0),
        reused=True,
        others_cores=record.get("others_cores"),
    )


class Runner:
    """Runs experiments of one workload on the given resources; see the module docstring."""

    def __init__(
        self,
        workload_argv: tuple[str, Sequence[str]],
        resources: Resources,
        results_dir: str | os.PathLike,
        exps_dir: str | os.PathLike,
        *,
        arg_mappings: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        overwrite: bool = False,
        memory_budget_bytes: int | None = None,
        start_profile_step: int = 3,
        end_profile_step: int = 5,
        progress: Progress | None = None,
    ) -> None:
        script, args = workload_argv
        if not os.path.isfile(script):
            raise InputError(f"The training script {script} does not exist.")
        with_config_path(args, "ds_config.json")  # the script must name its DeepSpeed config
        if timeout_s is not None and timeout_s <= 0:
            raise InputError(f"The experiment time-out must be positive, not {timeout_s}.")
        ProbeSettings(start_profile_step, end_profile_step, "", memory_budget_bytes)  # validates
        self.workload = (os.path.abspath(script), tuple(args))
        self.resources = resources
        self.results_dir = Path(results_dir).resolve()
        self.exps_dir = Path(exps_dir).resolve()
        self.arg_mappings = dict(arg_mappings or {})
        self.timeout_s = timeout_s
        self.overwrite = overwrite
        self.memory_budget_bytes = memory_budget_bytes
        self.start_profile_step = start_profile_step
        self.end_profile_step = end_profile_step
        self.progress = progress
        self.cwd = os.getcwd()
        self.slot_sets = resources.concurrent_slots()
        deepspeed_launcher()  # fail now, not per experiment, when the launcher is missing
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._progress_lock = threading.Lock()
        self._interrupted = False

    # -- commands ---------------------------------------------------------------------------------
    def command(self, experiment: Experiment, *, slots: SlotAssignment | None = None,
                port: int = DEFAULT_MASTER_PORT, probe: bool = True,
                config_path: str | os.PathLike | None = None) -> list[str]:
        """The launcher argv of ``experiment``. ``probe=False`` with ``config_path`` (e.g.
        ds_config_optimal.json) gives the plain training command for the user to run."""
        return build_command(
            experiment, self.workload, self.resources, slots or self.slot_sets[0], port,
            self.results_dir / experiment.name, arg_mappings=self.arg_mappings, probe=probe,
            config_path=config_path,
        )

    def command_line(self, experiment: Experiment, **kwargs: Any) -> str:
        """:meth:`command` as one shell-quoted line (what cmd.txt holds)."""
        return shlex.join(self.command(experiment, **kwargs))

    # -- running ----------------------------------------------------------------------------------
    def run(self, experiments: Sequence[Experiment]) -> list[ExperimentResult]:
        """Run (or reuse) each experiment; results in input order."""
        names = [experiment.name for experiment in experiments]
        if len(set(names)) != len(names):
            raise ValueError("Experiment names given to one run must be distinct.")
        total = len(experiments)
        self._interrupted = False
        if len(self.slot_sets) <= 1 or total <= 1:
            try:
                return [self._run_one(i, total, e, self.slot_sets[0]) for i, e in enumerate(experiments)]
            except BaseException:
                self._stop_all()
                raise
        free: queue.Queue[SlotAssignment] = queue.Queue()
        for slots in self.slot_sets:
            free.put(slots)

        def on_free_slots(index: int, experiment: Experiment) -> ExperimentResult:
            slots = free.get()
            try:
                return self._run_one(index, total, experiment, slots)
            finally:
                free.put(slots)

        pool = ThreadPoolExecutor(max_workers=len(self.slot_sets), thread_name_prefix="simtune-exp")
        try:
            futures = [pool.submit(on_free_slots, i, e) for i, e in enumerate(experiments)]
            return [future.result() for future in futures]
        except BaseException:
            self._stop_all()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _stop_all(self) -> None:
        """Interrupted: end every running launch; their experiments stay unrecorded."""
        self._interrupted = True
        with self._lock:
            running = list(self._running)
        for process in running:
            kill_group(process, signal.SIGKILL)

    def _run_one(self, index: int, total: int, experiment: Experiment,
                 slots: SlotAssignment) -> ExperimentResult:
        result_dir = self.results_dir / experiment.name
        result = None if self.overwrite else recorded_result(result_dir, experiment.ds_config)
        if result is None:
            result = self._launch(experiment, result_dir, slots)
        if self.progress is not None:
            with self._progress_lock:
                self.progress(experiment.name, index, total, result)
        return result

    def _describe(self, experiment: Experiment) -> dict[str, Any]:
        return {
            "name": experiment.name,
            "ds_config": as_json(experiment.ds_config),
            "num_gpus": self.resources.num_gpus,
            "num_nodes": self.resources.num_nodes,
            "hostfile": self.resources.hostfile,
            "trial": as_json(experiment.trial),
        }

    def _launch(self, experiment: Experiment, result_dir: Path, slots: SlotAssignment) -> ExperimentResult:
        if self._interrupted:
            raise _Interrupted()
        if result_dir.exists():
            shutil.rmtree(result_dir)
        result_dir.mkdir(parents=True)
        self.exps_dir.mkdir(parents=True, exist_ok=True)
        description = self._describe(experiment)
        write_json_atomically(self.exps_dir / f"{experiment.name}.json", description)
        write_json_atomically(result_dir / "ds_config.json", description["ds_config"])
        start, end = experiment.window or (self.start_profile_step, self.end_profile_step)
        ProbeSettings(start, end, str(result_dir / "metrics.json"),
                      self.memory_budget_bytes).write(result_dir / "probe.json")
        port = free_port()
        try:
            command = self.command(experiment, slots=slots, port=port)
            (result_dir / "cmd.txt").write_text(shlex.join(command) + "\n", encoding="utf-8")
            env = launch_env(self.resources, result_dir)
            record = {
                **description,
                "result_dir": str(result_dir),
                "user_script": self.workload[0],
                "user_args": list(self.workload[1]),
                "command": command,
                "resources": self.resources.to_dict(),
                "slots": slots.include_arg(),
                "master_port": port,
                "start_time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "status": "running",
                "reason": "",
                "wall_s": None,
                "results": None,
            }
            write_json_atomically(result_dir / "exp.json", record)
            watch = LoadWatch(self._running_pids)
            returncode, timed_out, wall_s = self._execute(command, env, result_dir)
            others = watch.load().others_cores
            if self._interrupted:
                raise _Interrupted()
            metrics = read_metrics(result_dir / "metrics.json")
            outcome = classify(
                returncode=returncode, timed_out=timed_out, timeout_s=self.timeout_s,
                stdout=_read_text(result_dir / "stdout.log"), stderr=_read_text(result_dir / "stderr.log"),
                metrics=metrics,
            )
            if outcome.status != "ok" and (result_dir / "metrics.json").exists():
                (result_dir / "metrics.json").unlink()  # never leave an invalid metrics.json behind
            record.update(status=outcome.status, reason=outcome.reason, wall_s=round(wall_s, 3),
                          returncode=returncode, results=metrics, others_cores=others)
            write_json_atomically(result_dir / "exp.json", record)
        finally:
            remove_shm_buffers(port)
            release_port(port)
        return ExperimentResult(experiment.name, outcome.status, outcome.reason, metrics,
                                str(result_dir), wall_s, others_cores=others)

    def _running_pids(self) -> set[int]:
        """The launchers a ``Popen`` still owns (and reaps itself)."""
        with self._lock:
            return {process.pid for process in self._running}

    def _execute(self, command: list[str], env: dict[str, str],
                 result_dir: Path) -> tuple[int, bool, float]:
        """Run ``command`` with its logs in ``result_dir``, stopped at the time-out
        (:func:`run_process_group`). Returns (exit code, timed out, wall seconds)."""
        metrics = result_dir / "metrics.json"  # written atomically by the probe right before the ranks leave
        with open(result_dir / "stdout.log", "wb") as out, open(result_dir / "stderr.log", "wb") as err:
            return run_process_group(command, env, self.cwd, out, err, self.timeout_s,
                                     on_start=self._track, on_end=self._untrack, finished=metrics.is_file)

    def _track(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.add(process)

    def _untrack(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(process)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
