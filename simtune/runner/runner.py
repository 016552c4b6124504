"""Runs experiments through the DeepSpeed launcher and records each in its result directory.

For each experiment (see docs/experiments.md for every file):

- ``exps_dir/<name>.json``: the experiment description;
- ``results_dir/<name>/``: ``ds_config.json``, ``probe.json``, ``cmd.txt``, ``deepspeed_env``,
  ``exp.json`` (written with status ``running`` before the launch, and with the outcome after
  it), ``stdout.log``, ``stderr.log`` and, when ok, the probe's ``metrics.json``.

The executor (:mod:`simtune.runner.executors`) runs the launch: ``local`` in a new session here,
so a time-out (or an interrupt) ends its whole process group; ``slurm`` as a Slurm job, whose id
``exp.json`` records while it runs, so that a search killed meanwhile picks the job up when run
again instead of launching it twice. After every launch the run's ``/dev/shm`` buffers are
removed and its port is released. Experiments run side by side when the resources hold several
slot sets (:meth:`Resources.concurrent_slots`), each on its own slots and port, or, as Slurm
jobs, as many as the executor hands over at once; results come back in input order. A failure is
a recorded result, never an exception out of :meth:`Runner.run`.
With ``shared_launch`` (simtune's own training program, one node, one experiment at a time)
the experiments run one after another as requests to one launch
(:mod:`simtune.runner.shared_launch`); everything else is the same.
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
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from simtune.atomic import write_atomically
from simtune.errors import InputError
from simtune.probe.protocol import ProbeSettings, write_json_atomically
from simtune.runner.executors import Execution, Executor, Interrupted, Launch, LocalExecutor
from simtune.runner.experiment import STATUSES, Experiment, ExperimentResult, as_json
from simtune.runner.interference import LoadWatch
from simtune.runner.launcher import (
    build_command,
    deepspeed_launcher,
    free_port,
    launch_env,
    release_port,
    shared_launch_command,
    with_config_path,
)
from simtune.runner.outcome import classify, read_metrics
from simtune.runner.resources import Resources, SlotAssignment
from simtune.runner.shared_launch import FOLDER as SHARED_LAUNCH_FOLDER
from simtune.runner.shared_launch import SharedLaunch
from simtune.watchdog import SHM_DIR, remove_shm_buffers  # noqa: F401 - the runner's clean-up, also the watchdog's

Progress = Callable[[str, int, int, ExperimentResult], None]
"""``progress(name, index, total, result)``: ``index`` is the 0-based position in the list given to
:meth:`Runner.run`, called as each experiment ends (reused ones included)."""

DEFAULT_MASTER_PORT = 29500
"""DeepSpeed's default rendezvous port, used in commands meant for the user to run."""

MEASURING_FOLDER = "measuring"
"""Folder of results_dir for the files of measuring launches run as jobs (not an experiment)."""


def read_exp_json(result_dir: Path) -> dict[str, Any] | None:
    """``result_dir/exp.json`` as a dict, or None when it is missing or unreadable."""
    try:
        record = json.loads((result_dir / "exp.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def read_record(result_dir: Path, ds_config: Mapping[str, Any]) -> dict[str, Any] | None:
    """``result_dir/exp.json`` when it describes this config (finished or still running), else None."""
    record = read_exp_json(result_dir)
    if record is None or record.get("ds_config") != as_json(ds_config):
        return None
    return record


def recorded_result(result_dir: Path, ds_config: Mapping[str, Any],
                    timeout_s: float | None = None) -> ExperimentResult | None:
    """The finished result recorded in ``result_dir`` for this config, or None (never run, run
    interrupted, run with another config, ok without a valid metrics.json, or timed out under a
    shorter time-out than ``timeout_s``, None meaning no time-out)."""
    record = read_record(result_dir, ds_config)
    if record is not None and record.get("status") == "running" and record.get("executor", "local") == "local":
        record = _finished_after_all(result_dir, record)
    if record is None or record.get("status") not in STATUSES:
        return None
    if record["status"] == "timeout" and not _timed_out_under_as_long(record.get("timeout_s"), timeout_s):
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


def _finished_after_all(result_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """An experiment still ``running`` in its exp.json whose simtune died: its /dev/shm buffers are
    removed, and if its ranks wrote a complete metrics.json before its launch ended it is recorded
    ``ok`` (else it stays ``running``, to run again)."""
    if isinstance(record.get("master_port"), int):
        remove_shm_buffers(record["master_port"])
    metrics = read_metrics(result_dir / "metrics.json")
    if metrics is None:
        return record
    finished = {**record, "status": "ok", "reason": "", "results": metrics,
                "note": "measured completely by a launch whose simtune process died"}
    write_json_atomically(result_dir / "exp.json", finished)
    return finished


def _timed_out_under_as_long(recorded_s: Any, timeout_s: float | None) -> bool:
    """Whether a run stopped at ``recorded_s`` would also be stopped now: its time-out was at
    least ``timeout_s`` (a record without one, from an older simtune, counts as shorter)."""
    if not isinstance(recorded_s, (int, float)) or isinstance(recorded_s, bool):
        return False
    return timeout_s is not None and recorded_s >= timeout_s


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
        executor: Executor | None = None,
        shared_launch: bool = False,
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
        self.executor = executor or LocalExecutor()
        self.executor.check()
        deepspeed_launcher()  # fail now, not per experiment, when the launcher is missing
        if shared_launch and self.can_share_launch():
            self.executor = SharedLaunch(self._shared_launch_command, self._shared_launch_env,
                                         self.results_dir / SHARED_LAUNCH_FOLDER, self.cwd, self.executor)
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

    # -- one launch for many experiments ----------------------------------------------------------
    def can_share_launch(self) -> bool:
        """Whether experiments can run in one shared launch (:mod:`simtune.runner.shared_launch`):
        here, on the first slots of this one node, one experiment at a time, and not on CPU under a
        memory budget (a later run's resident-set peak includes what the earlier ones left)."""
        return (self.executor.name == "local" and not self.resources.uses_own_launcher
                and len(self.slot_sets) == 1 and self.resources.is_first_local_slots(self.slot_sets[0])
                and not (self.resources.accelerator == "cpu" and self.memory_budget_bytes is not None))

    @property
    def shared_launch(self) -> SharedLaunch | None:
        """The shared launch the experiments run in; None when each has its own."""
        return self.executor if isinstance(self.executor, SharedLaunch) else None

    def start_shared_launch(self) -> None:
        """Start the shared launch now (its start overlaps what runs here until the first
        experiment); nothing without one, nor when the results folder already holds finished
        experiments: a search run again may reuse every one, and its stored study leaves little to
        overlap, so its launch starts with the first experiment that runs (if any does)."""
        if self.shared_launch is not None and not self.has_finished_experiments():
            self.shared_launch.start()

    def has_finished_experiments(self) -> bool:
        """Whether an earlier run left a finished experiment in the results folder."""
        records = (read_exp_json(path.parent) for path in self.results_dir.glob("*/exp.json"))
        return any(record is not None and record.get("status") in STATUSES for record in records)

    def close(self) -> None:
        """End the shared launch, if any."""
        if self.shared_launch is not None:
            self.shared_launch.close()

    def _shared_launch_command(self, port: int, folder: Path) -> list[str]:
        return shared_launch_command(self.workload[0], self.resources, self.slot_sets[0], port, folder)

    def _shared_launch_env(self, port: int, folder: Path) -> dict[str, str]:
        return launch_env(self.resources, folder, rendezvous=(self.slot_sets[0].hosts[0], port))

    @property
    def parallel(self) -> int:
        """How many experiments run (or, as jobs, are handed over) at once."""
        return self.executor.capacity(len(self.slot_sets))

    def measuring(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` where the experiments run (a calibration or a workload
        measurement: here, or as a Slurm job whose files go to ``results_dir/measuring/<name>``)."""
        return self.executor.call(name, self.results_dir / MEASURING_FOLDER / name, fn, *args, **kwargs)

    # -- running ----------------------------------------------------------------------------------
    def run(self, experiments: Sequence[Experiment]) -> list[ExperimentResult]:
        """Run (or reuse) each experiment; results in input order."""
        names = [experiment.name for experiment in experiments]
        if len(set(names)) != len(names):
            raise ValueError("Experiment names given to one run must be distinct.")
        total = len(experiments)
        self._interrupted = False
        self.executor.begin()
        parallel = self.parallel
        if parallel <= 1 or total <= 1:
            try:
                return [self._run_one(i, total, e, self.slot_sets[0]) for i, e in enumerate(experiments)]
            except BaseException:
                self._stop_all()
                raise
        free: queue.Queue[SlotAssignment] = queue.Queue()
        for index in range(parallel):  # as jobs, each has its own allocation: the same slots over again
            free.put(self.slot_sets[index % len(self.slot_sets)])

        def on_free_slots(index: int, experiment: Experiment) -> ExperimentResult:
            slots = free.get()
            try:
                return self._run_one(index, total, experiment, slots)
            finally:
                free.put(slots)

        pool = ThreadPoolExecutor(max_workers=min(parallel, total), thread_name_prefix="simtune-exp")
        try:
            futures = [pool.submit(on_free_slots, i, e) for i, e in enumerate(experiments)]
            return [future.result() for future in futures]
        except BaseException:
            self._stop_all()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _stop_all(self) -> None:
        """Interrupted: end every launch in flight; their experiments stay unrecorded."""
        self._interrupted = True
        self.executor.stop_all()

    def _run_one(self, index: int, total: int, experiment: Experiment,
                 slots: SlotAssignment) -> ExperimentResult:
        result_dir = self.results_dir / experiment.name
        result = None
        if not self.overwrite:
            result = (recorded_result(result_dir, experiment.ds_config, self.timeout_s)
                      or self._reattach(experiment, result_dir))
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
            raise Interrupted()
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
            write_atomically(result_dir / "cmd.txt", shlex.join(command) + "\n")
            env = launch_env(self.resources, result_dir, rendezvous=(slots.hosts[0], port))
            record = {
                **description,
                "result_dir": str(result_dir),
                "user_script": self.workload[0],
                "user_args": list(self.workload[1]),
                "command": command,
                "resources": self.resources.to_dict(),
                "slots": slots.include_arg(),
                "master_port": port,
                "executor": self.executor.name,
                "timeout_s": self.timeout_s,
                "start_time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "status": "running",
                "reason": "",
                "wall_s": None,
                "results": None,
            }
            write_json_atomically(result_dir / "exp.json", record)

            def submitted(fields: Mapping[str, Any]) -> None:
                record.update(fields)
                write_json_atomically(result_dir / "exp.json", record)

            watch = LoadWatch(self.executor.running_pids)
            execution = self.executor.execute(self._launch_of(experiment, command, env, port), submitted)
            others = watch.load().others_cores
            if self._interrupted:
                raise Interrupted()
            return self._finish(experiment, result_dir, record, execution, others)
        finally:
            remove_shm_buffers(port)
            release_port(port)

    def _launch_of(self, experiment: Experiment, command: Sequence[str], env: Mapping[str, str],
                   port: int | None = None) -> Launch:
        added = {key: value for key, value in env.items() if os.environ.get(key) != value}
        return Launch(experiment.name, tuple(command), dict(env), added, self.cwd,
                      self.results_dir / experiment.name, self.timeout_s, port)

    def _reattach(self, experiment: Experiment, result_dir: Path) -> ExperimentResult | None:
        """The result of a launch an earlier, killed search handed over and left running (a Slurm
        job), once it ends; None when there is none to pick up."""
        record = read_record(result_dir, experiment.ds_config)
        if record is None or record.get("status") != "running" or record.get("executor") != self.executor.name:
            return None
        command = record.get("command") or []
        launch = Launch(experiment.name, tuple(command), {}, {}, self.cwd, result_dir, self.timeout_s)
        execution = self.executor.reattach(launch, record)
        if execution is None:
            return None
        if self._interrupted:
            raise Interrupted()
        return self._finish(experiment, result_dir, record, execution)

    def _finish(self, experiment: Experiment, result_dir: Path, record: dict[str, Any],
                execution: Execution, others: float | None = None) -> ExperimentResult:
        """Classify the launch's end, complete exp.json and return the result."""
        metrics = read_metrics(result_dir / "metrics.json")
        outcome = classify(
            returncode=execution.returncode, timed_out=execution.timed_out, timeout_s=self.timeout_s,
            stdout=_read_text(result_dir / "stdout.log"), stderr=_read_text(result_dir / "stderr.log"),
            metrics=metrics, job_state=execution.job_state, job_reason=execution.job_reason,
        )
        if outcome.status != "ok" and (result_dir / "metrics.json").exists():
            (result_dir / "metrics.json").unlink()  # never leave an invalid metrics.json behind
        record.update(execution.record)
        record.update(status=outcome.status, reason=outcome.reason, wall_s=round(execution.wall_s, 3),
                      returncode=execution.returncode, results=metrics, others_cores=others)
        write_json_atomically(result_dir / "exp.json", record)
        return ExperimentResult(experiment.name, outcome.status, outcome.reason, metrics,
                                str(result_dir), execution.wall_s, others_cores=others)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
