"""``--executor slurm``: every experiment is a Slurm job of its own, submitted with submitit.

Each job asks for ``num_nodes`` nodes with ``num_gpus`` GPUs and ``num_gpus`` tasks each,
the partition and account given, a time limit of the experiment time-out rounded up to whole
minutes (Slurm's unit; none without a time-out) and any extra ``sbatch`` options, and runs
:func:`simtune.runner.slurm_job.run_job` with this Python interpreter. The runner hands over as
many experiments as it has (up to :data:`MAX_JOBS_AT_ONCE`), so a search's K verifications are
queued together and run side by side when the cluster has room.

While a job is queued or running, ``exp.json`` holds its id; the search polls Slurm until the job
ends. Its final state is part of the outcome (``TIMEOUT`` -> timeout, ``OUT_OF_MEMORY`` -> oom,
see :func:`simtune.runner.outcome.classify`); a job ended by ``NODE_FAIL`` or ``PREEMPTED`` is
submitted once more, then recorded with its state. A search killed while jobs run finds their
ids in exp.json when run again and waits for them (or reads how they ended) instead of
submitting them again; a job cancelled meanwhile is submitted anew. Ctrl-C cancels the jobs
the search submitted (``scancel``).
"""

from __future__ import annotations

import datetime
import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from simtune.errors import InputError, LaunchError
from simtune.probe.protocol import read_json_object
from simtune.runner.executors import Execution, Executor, Interrupted, Launch, Submitted
from simtune.runner.resources import Resources
from simtune.runner.slurm import JobInfo, cancel_jobs, job_info, require_commands
from simtune.runner.slurm_job import JOB_RESULT_FILE, JobLaunch, run_job

MAX_JOBS_AT_ONCE = 32
"""The most experiments one search keeps queued or running at a time."""
POLL_S = 1.0
"""How often a job's state is read while it is queued or running."""
RESUBMITTED_STATES = ("NODE_FAIL", "PREEMPTED")
"""Job states after which the experiment is submitted once more."""
JOB_FOLDER = "slurm"
"""Sub-folder of an experiment's result directory for submitit's files (the pickled call, the
job's own log)."""


@dataclass(frozen=True)
class SlurmSettings:
    """The sbatch options of every experiment's job."""

    partition: str | None = None
    account: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    """Extra sbatch options as (key, value), e.g. (("qos", "high"), ("constraint", "a100"))."""
    python: str = sys.executable
    """The interpreter the job runs (this one: the job must find simtune and DeepSpeed)."""

    @staticmethod
    def parse_options(pairs: list[str] | tuple[str, ...] | None) -> tuple[tuple[str, str], ...]:
        """``["KEY=VALUE", ...]`` (``--slurm_option``) as pairs; a bare KEY is a switch."""
        parsed = []
        for pair in pairs or ():
            key, has_value, value = pair.partition("=")
            key = key.strip().lstrip("-").replace("-", "_")
            if not key:
                raise InputError(f"--slurm_option takes KEY=VALUE (an sbatch option), not {pair!r}.")
            parsed.append((key, value.strip() if has_value else ""))
        return tuple(parsed)


def time_limit_minutes(timeout_s: float | None) -> int:
    """Slurm's time limit for a time-out: whole minutes, at least 1; 0 (no limit) for none."""
    return 0 if timeout_s is None else max(1, math.ceil(timeout_s / 60.0))


class SlurmExecutor(Executor):
    """Runs each launch as its own Slurm job (see the module docstring)."""

    name = "slurm"

    def __init__(self, resources: Resources, settings: SlurmSettings | None = None) -> None:
        self.resources = resources
        self.settings = settings or SlurmSettings()
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._stopping = False

    def check(self) -> None:
        require_commands(("sbatch", "scontrol", "scancel"), "--executor slurm")
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise InputError("--executor slurm submits jobs with the submitit package, which is not installed: "
                             "pip install 'simtune[slurm]'.") from None

    def begin(self) -> None:
        self._stopping = False

    def capacity(self, slot_sets: int) -> int:
        return MAX_JOBS_AT_ONCE

    # -- submitting -------------------------------------------------------------------------------
    def _parameters(self, name: str, timeout_s: float | None) -> dict[str, Any]:
        resources = self.resources
        # One task (and core) per rank: what an srun step of the ranks needs on several nodes, and
        # the cores the ranks of a one-node launch share. The job's script itself runs once, on the
        # first node (no srun around it).
        parameters: dict[str, Any] = {
            "job_name": f"simtune-{name}", "nodes": resources.num_nodes, "ntasks_per_node": resources.num_gpus,
            "time": time_limit_minutes(timeout_s), "use_srun": False, "signal_delay_s": 0,
        }
        if resources.accelerator != "cpu":
            parameters["gpus_per_node"] = resources.num_gpus
        if self.settings.partition:
            parameters["partition"] = self.settings.partition
        if self.settings.account:
            parameters["account"] = self.settings.account
        extra = {key: (value if value else True) for key, value in self.settings.options}
        if extra:
            parameters["additional_parameters"] = extra
        return parameters

    def _submit(self, launch: Launch) -> str:
        import submitit

        folder = launch.result_dir / JOB_FOLDER
        executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=0, python=self.settings.python)
        executor.update_parameters(**self._parameters(launch.name, launch.timeout_s))
        job = JobLaunch(launch.command, dict(launch.added_env), launch.cwd, str(launch.result_dir),
                        self.resources.num_gpus)
        try:
            submitted = executor.submit(run_job, job)
        except Exception as exc:  # submitit raises its own errors for sbatch's refusals
            raise LaunchError(f"sbatch refused the job of {launch.name}: {str(exc).strip().splitlines()[-1]}") from None
        return str(submitted.job_id)

    def execute(self, launch: Launch, submitted: Submitted) -> Execution:
        if self._stopping:
            raise Interrupted()
        job_ids: list[str] = []
        while True:
            job_id = self._submit(launch)
            job_ids.append(job_id)
            submitted({"job_id": job_id, "job_ids": list(job_ids),
                       "submitted_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
            info = self._wait(job_id)
            if info.state not in RESUBMITTED_STATES or len(job_ids) > 1:
                return self._execution(launch, info, job_ids)
            _clear_attempt(launch.result_dir)

    def reattach(self, launch: Launch, record: Mapping[str, Any]) -> Execution | None:
        job_id = record.get("job_id")
        if not job_id:
            return None
        info = self._wait(str(job_id))
        if info.state == "CANCELLED" or (not info.known and not (launch.result_dir / JOB_RESULT_FILE).is_file()):
            return None  # cancelled by an interrupt (or no trace of it): it runs again
        return self._execution(launch, info, [str(j) for j in record.get("job_ids") or [job_id]])

    def _wait(self, job_id: str) -> JobInfo:
        with self._lock:
            self._in_flight.add(job_id)
        try:
            while True:
                if self._stopping:
                    raise Interrupted()
                info = job_info(job_id)
                if info.finished or not info.known:
                    return info
                time.sleep(POLL_S)
        except BaseException:  # an interrupt, here or in another thread: the job goes too
            cancel_jobs([job_id])
            raise
        finally:
            with self._lock:
                self._in_flight.discard(job_id)

    def _execution(self, launch: Launch, info: JobInfo, job_ids: list[str]) -> Execution:
        """The job's end: its exit code and wall time from job_result.json, its state from Slurm."""
        ran = read_json_object(launch.result_dir / JOB_RESULT_FILE)
        returncode = ran.get("returncode") if isinstance(ran.get("returncode"), int) else None
        wall_s = float(ran.get("wall_s") or 0.0)
        record = {"job_id": info.job_id, "job_ids": job_ids, "job_state": info.state,
                  "job_submit_time": info.submit_time, "job_start_time": info.start_time,
                  "job_end_time": info.end_time}
        state = info.state if info.known else None
        return Execution(returncode, info.state == "TIMEOUT", wall_s, state, info.reason, record)

    def call(self, name: str, folder: Path, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` as a Slurm job of the experiments' shape (nodes, GPUs, partition,
        account, options; no time limit: the measuring launch keeps its own), its result read back
        (submitit pickles both ways). A job that fails says why in one sentence."""
        import submitit

        executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=0, python=self.settings.python)
        executor.update_parameters(**self._parameters(name, None))
        try:
            job = executor.submit(fn, *args, **kwargs)
        except Exception as exc:  # submitit raises its own errors for sbatch's refusals
            raise LaunchError(f"sbatch refused the {name} job: {str(exc).strip().splitlines()[-1]}") from None
        info = self._wait(str(job.job_id))
        # Read the outcome submitit's job wrote; job.result() would ask sacct for the state, which
        # clusters without accounting do not answer.
        try:
            outcome, value = submitit.core.utils.pickle_load(job.paths.result_pickle)
        except (OSError, EOFError, ValueError, TypeError):
            outcome, value = "error", f"no result (job state {info.state}, {info.reason or 'no reason given'})"
        if outcome == "success":
            return value
        lines = [line for line in str(value).strip().splitlines() if line.strip()]
        raise LaunchError(f"The {name} job {job.job_id} ended {info.state}: "
                          f"{lines[-1] if lines else 'no reason given'} (its log: {folder}).")

    def stop_all(self) -> None:
        """Cancel every job this search is waiting for (``scancel``)."""
        self._stopping = True
        with self._lock:
            job_ids = sorted(self._in_flight)
        cancel_jobs(job_ids)


def _clear_attempt(result_dir: Path) -> None:
    """Before a job is submitted again: remove what the failed attempt left."""
    for name in ("stdout.log", "stderr.log", "metrics.json", JOB_RESULT_FILE):
        (result_dir / name).unlink(missing_ok=True)
