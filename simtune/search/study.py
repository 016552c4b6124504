"""The Optuna study of the model-driven search: every dimension of the space against the model,
kept in a database so that a search can be resumed and inspected.

Storage: ``sqlite:///<results_dir>/study.db`` unless ``--storage`` names another
(:mod:`simtune.search.study_storage`: a database server or a journal file, which several searches and
users can share), one study per (workload, tuning space, hardware profile, residual model,
metric): :func:`study_name` hashes them, so a changed input starts a new study in the same
storage and an unchanged one continues where it stopped, whichever search stored its trials
(the trials of one name are evaluations of the same model on the same space). The sampler works
on an in-memory copy of the stored study (Optuna's TPE rereads every trial for each parameter it
draws, which costs ~0.1 s per trial through SQLAlchemy) and each finished trial is handed at once
to a writer that adds it to the stored study in one transaction (``study.add_trial``; SQLite in
WAL mode with ``synchronous=NORMAL``: durable when the process is killed, without a disk flush
per write). Two searches of one study running at once each load what is stored when they start
and add the trials they draw: nothing is lost, and the study then holds more than ``n_trials``.
On Linux the writer is a forked child process
(:class:`TrialWriter`): Optuna's storage spends ~10 ms of Python per trial (a query per
parameter and attribute), more than drawing the trial, and in a child it runs beside the sampler
on another core (200 trials: 3.5 s -> ~2 s on 2 cores). The search waits for the writer before
it goes on, also when it is interrupted; the child ignores Ctrl-C (which reaches the whole
process group) and writes what it was given. A search killed outright (SIGKILL to every process)
loses the trials still queued, a fraction of a second of model evaluations; a resumed one loads
the stored trials into the sampler's copy and draws the missing ones. Trials a killed process
left RUNNING in the stored study (none with this scheme, but possible with others) are marked
FAIL.

Trials, in this order, until ``n_trials`` have completed:

1. anchors, enqueued when the study is created: per stage, the largest micro-batch size predicted
   to fit at the largest gas the batch limit allows and at gas 1, and the smallest at gas 1
   (DeepSpeed's own starting points);
2. TPE (Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization"; Optuna's
   ``TPESampler``, multivariate and grouped for the stage-conditional dimensions, seeded);
3. a local polish (the last ``POLISH_SHARE`` of the trials): the unseen neighbours
   (:meth:`ModelSpace.neighbours`) of the best feasible trials are enqueued, best first; when
   every neighbour of the top trials is known, TPE draws the rest.

The study stops early once every point of the space has been evaluated (small spaces).

Out of memory is a constraint, not a penalty: every trial records
``trial.set_constraint("memory", (predicted peak - limit) / limit)``; Optuna's constrained TPE
ranks infeasible trials below every feasible one, and ``study.best_trial`` is the best feasible
trial. The objective value of an infeasible trial stays its predicted metric, so the study shows
what an infeasible configuration would have given. Each trial's user attributes hold the
experiment name, the full trial and the prediction (``prediction``: step time, memory, limit,
feasible), so
``optuna.load_study(study_name=..., storage="sqlite:///.../study.db").trials_dataframe()`` shows
everything.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from simtune.errors import StorageError
from simtune.progress import format_value
from simtune.space import Trial
from simtune.search.forecast import Forecast, Forecaster
from simtune.search.model_space import ModelSpace
from simtune.search.study_storage import STUDY_FILE, StudyStorage, parse_storage, reason_of  # noqa: F401 - STUDY_FILE

if TYPE_CHECKING:  # optuna is imported where a study runs: it takes a second to load
    import optuna

POLISH_SHARE = 0.25
"""Share of the trials spent on the local polish of the best trials."""
POLISH_TOP = 5
"""How many of the best feasible trials the polish looks around."""
N_STARTUP_TRIALS = 20
"""Random trials before TPE models the results (anchors count)."""
TRIAL_ATTR = "trial"
NAME_ATTR = "name"
PREDICTION_ATTR = "prediction"


def study_name(*parts: Any) -> str:
    """``simtune-<hash>`` of the inputs that define the study's values."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return "simtune-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def storage_url(results_dir: str | Path) -> str:
    """The default storage's URL: ``sqlite:///<results_dir>/study.db``."""
    return StudyStorage.default(results_dir).url


def open_storage(results_dir: str | Path) -> Any:
    """The default storage, ``results_dir/study.db`` (created when missing), WAL journal."""
    return StudyStorage.default(results_dir).open()


class TrialWriter:
    """Adds finished trials to the stored study ``name`` in ``storage``: from a forked child
    process where ``fork`` exists and the storage outlives the process (the parent's database
    connections are closed first; the child opens the database again by its URL), else in this
    process. :meth:`close` waits until every trial given is stored."""

    def __init__(self, storage: Any, name: str, *, background: bool | None = None, where: str | None = None):
        import optuna  # 2.5 s to import: loaded when a study runs

        self.storage = storage
        self.name = name
        self.where = where or storage_url_of(storage)
        if background is None:
            background = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
        self._pipe: Any = None
        self._process: Any = None
        self._inline: Any = None
        if background and not isinstance(storage, optuna.storages.InMemoryStorage):
            engine = getattr(storage, "engine", None)
            if engine is not None:
                engine.dispose()  # no open connection is carried into the child
            context = multiprocessing.get_context("fork")
            reader, self._pipe = context.Pipe()  # duplex: a writer that fails answers why
            self._process = context.Process(target=_write_trials, args=(storage, name, reader, self._pipe),
                                            name="simtune-study-writer", daemon=True)
            self._process.start()
            reader.close()  # the child holds the only reader: it sees the end when this process is gone
        else:
            self._inline = optuna.load_study(study_name=name, storage=storage)

    def add(self, trial: Any) -> None:
        """Store ``trial`` (from the child: as soon as it has stored the ones before it; this
        blocks only while a pipe's worth of trials waits)."""
        if self._inline is not None:
            self._inline.add_trial(trial)
            return
        try:
            self._pipe.send(trial)
        except OSError:  # the writer is gone: close() says why
            self.close()
            raise

    def close(self) -> None:
        """Wait for every trial to be stored; a writer that failed is reported here, with its reason."""
        if self._process is None:
            return
        process, self._process = self._process, None
        try:
            self._pipe.send(None)
        except OSError:  # the writer is gone: its answer or exit code says why
            pass
        process.join()
        reason = self._pipe.recv() if process.exitcode != 0 and self._pipe.poll() else None
        self._pipe.close()
        if process.exitcode != 0:
            raise StorageError(f"Writing the study's trials to {self.where} failed "
                               f"({reason or f'writer exit code {process.exitcode}'}).")


def _write_trials(storage: Any, name: str, reader: Any, parents_end: Any) -> None:
    """The writer process: store every trial from ``reader`` until None arrives or the parent is
    gone. Ctrl-C reaches the whole process group; the parent decides when to stop."""
    import optuna  # 2.5 s to import: loaded when a study runs

    parents_end.close()  # else the pipe never ends when the parent dies
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=_reopened(storage))
        while True:
            try:
                trial = reader.recv()
            except (EOFError, OSError):  # the parent died: what arrived is stored
                return
            if trial is None:
                return
            study.add_trial(trial)
    except Exception as exc:  # noqa: BLE001 - any failure ends the writer; the parent says why
        reader.send(reason_of(exc))
        sys.exit(1)


def _reopened(storage: Any) -> Any:
    """A database storage opened again from its URL (SQLite's connections must not cross a fork,
    and this one is opened as the parent's was: pragmas, time-out); a journal file's storage as it
    is (it holds no open file between writes)."""
    url = getattr(storage, "url", None)
    return parse_storage(url).open() if url is not None else storage


@dataclass(frozen=True)
class StudyResult:
    """What the study holds once it has run."""

    name: str
    storage: str
    completed: int
    """Trials completed in the study (this run and earlier ones)."""
    resumed_from: int
    """Trials that had completed before this run (0 for a new study)."""
    forecasts: tuple[Forecast, ...]
    """The distinct points evaluated, best first (feasible before infeasible)."""
    best: Forecast | None
    """The best feasible point (``study.best_trial``)."""
    seconds: float


class ModelStudy:
    """Runs (or resumes) the study of one search."""

    def __init__(self, model_space: ModelSpace, forecaster: Forecaster, *, storage: Any, name: str,
                 seed: int = 0, progress: Callable[[str], None] | None = None, where: str | None = None,
                 inputs: Any = None):
        self.model_space = model_space
        self.forecaster = forecaster
        self.inputs = inputs
        """What the study's name stands for, in words a reader of a shared storage can use
        (workload, profile, ...); stored as the study's ``inputs`` attribute."""
        self.storage = storage
        self.where = where or storage_url_of(storage)
        """The storage as printed (no password)."""
        self.name = name
        self.seed = seed
        self.progress = progress or (lambda message: None)

    # ---------------------------------------------------------------------------- running
    def run(self, n_trials: int) -> StudyResult:
        import optuna  # 2.5 s to import: loaded when a study runs, not with the command line

        started = time.monotonic()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        direction = self.forecaster.metric.optuna_direction
        durable = optuna.create_study(storage=self.storage, study_name=self.name, direction=direction,
                                      load_if_exists=True)
        self._fail_stale_trials(durable)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=N_STARTUP_TRIALS,
                                                 multivariate=True, group=True)
        working = optuna.create_study(direction=direction, sampler=sampler)
        finished = self._finished(durable)
        working.add_trials(finished)
        resumed_from = done = len(finished)
        if not done:
            durable.set_user_attr("space", self.model_space.describe())
            durable.set_user_attr("metric", self.forecaster.metric.name)
            if self.inputs is not None:
                durable.set_user_attr("inputs", self.inputs)
        else:
            self.progress(f"study {self.name}: {done} of {n_trials} trials already done, resuming")
        seen = {Trial.from_dict(t.user_attrs[TRIAL_ATTR]) for t in finished}
        for anchor in self.anchors():
            if anchor not in seen:
                working.enqueue_trial(self.model_space.params(anchor), skip_if_exists=True)
        polish_from = n_trials - int(n_trials * POLISH_SHARE)
        report_every = max(1, n_trials // 4)
        size = self.model_space.size()
        writer = TrialWriter(self.storage, self.name, where=self.where) if done < n_trials else None
        try:
            while writer is not None and done < n_trials:
                if len(seen) >= size:
                    self.progress(f"study: all {size} configurations evaluated after {done} trials; the study stops")
                    break
                if done >= polish_from and not self._has_waiting(working):
                    self._enqueue_polish(working)
                working.optimize(self._objective, n_trials=1, catch=())
                last = working.get_trials(deepcopy=False)[self._last_number]
                writer.add(last)  # committed by the writer at once: a killed search keeps it
                seen.add(Trial.from_dict(last.user_attrs[TRIAL_ATTR]))
                done += 1
                if done % report_every == 0 or done == n_trials:
                    best = self._best(working)
                    lead = f"; best so far {best.name} {self._fmt(best.value)}" if best else ""
                    self.progress(f"study: {done}/{n_trials} trials{lead}")
        finally:
            if writer is not None:
                writer.close()
        return self.result(working, resumed_from, time.monotonic() - started)

    def _objective(self, trial: optuna.trial.Trial) -> float:
        self._last_number = trial.number
        point = self.model_space.sample(trial)
        forecast = self.forecaster.forecast(point)
        trial.set_user_attr(NAME_ATTR, forecast.name)
        trial.set_user_attr(TRIAL_ATTR, point.to_dict())
        # one attribute, not four: each is a row (and a query) in the stored study
        trial.set_user_attr(PREDICTION_ATTR, {"step_s": forecast.step_s, "memory_bytes": forecast.memory_bytes,
                                              "memory_limit_bytes": forecast.limit_bytes,
                                              "feasible": forecast.feasible})
        excess = (forecast.memory_bytes - forecast.limit_bytes) / max(1, forecast.limit_bytes)
        trial.set_constraint("memory", max(excess, 1e-9) if not forecast.feasible else min(excess, 0.0))
        return forecast.value

    # ---------------------------------------------------------------------------- helpers
    def anchors(self) -> list[Trial]:
        """DeepSpeed's starting points per stage: the largest mbs predicted to fit (at the
        largest gas and at gas 1) and the smallest mbs, other dimensions at their first choice."""
        points = []
        for d in self.model_space.stages:
            top = d.predicted_max_mbs if d.predicted_max_mbs in d.micro_batch_sizes else d.micro_batch_sizes[-1]
            for mbs, gas in ((top, len(self.model_space.gas_choices(top))), (top, 1),
                             (d.micro_batch_sizes[0], 1)):
                points.append(next(self.model_space.variants(d.stage, mbs, gas)))
        return list(dict.fromkeys(points))

    @staticmethod
    def _fail_stale_trials(study: optuna.Study) -> None:
        """Trials left RUNNING by a killed process are marked FAIL (model trials take
        milliseconds; nothing else runs them)."""
        from optuna.trial import TrialState  # optuna is loaded by then; kept out of the module's imports

        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)  # noqa: SLF001

    @staticmethod
    def _completed(study: optuna.Study) -> int:
        from optuna.trial import TrialState  # optuna is loaded by then; kept out of the module's imports

        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    @staticmethod
    def _has_waiting(study: optuna.Study) -> bool:
        from optuna.trial import TrialState  # optuna is loaded by then; kept out of the module's imports

        return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _enqueue_polish(self, study: optuna.Study) -> None:
        """Enqueue one unseen neighbour of the best feasible points (best point first)."""
        seen = {Trial.from_dict(t.user_attrs[TRIAL_ATTR]) for t in self._finished(study)}
        ranked = self._ranked(study)
        for forecast in [f for f in ranked if f.feasible][:POLISH_TOP]:
            fresh = [n for n in self.model_space.neighbours(forecast.trial) if n not in seen]
            if fresh:
                best = min(self.forecaster.forecast_many(fresh), key=self.forecaster.sort_key)
                study.enqueue_trial(self.model_space.params(best.trial))
                return

    @staticmethod
    def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        from optuna.trial import TrialState  # optuna is loaded by then; kept out of the module's imports

        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return [t for t in trials if TRIAL_ATTR in t.user_attrs]

    def _ranked(self, study: optuna.Study) -> list[Forecast]:
        trials = list(dict.fromkeys(Trial.from_dict(t.user_attrs[TRIAL_ATTR]) for t in self._finished(study)))
        return sorted(self.forecaster.forecast_many(trials), key=self.forecaster.sort_key)

    def _best(self, study: optuna.Study) -> Forecast | None:
        ranked = self._ranked(study)
        return ranked[0] if ranked and ranked[0].feasible else None

    def result(self, study: optuna.Study, resumed_from: int, seconds: float) -> StudyResult:
        ranked = self._ranked(study)
        best = ranked[0] if ranked and ranked[0].feasible else None
        return StudyResult(self.name, self.where, self._completed(study), resumed_from,
                           tuple(ranked), best, seconds)

    def _fmt(self, value: float) -> str:
        return format_value(value)


def storage_url_of(storage: Any) -> str:
    """The URL of an RDB storage (SQLAlchemy prints it without its password), else its repr."""
    url = getattr(getattr(storage, "engine", None), "url", None)
    return str(url) if url is not None else str(storage)


def study_trials(study_name_: str, results_dir: str | Path) -> Sequence[Any]:
    """The completed trials of a stored study (for inspection and tests)."""
    import optuna  # 2.5 s to import: loaded when a study is read
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name_, storage=storage_url(results_dir))
    return study.get_trials(states=(TrialState.COMPLETE,))
