"""One search run, from a resolved request to its outputs.

    session = SearchSession(request)
    result = session.run()          # results_dir held, the strategy run, the outputs written
    session.train(result)           # --run: train with the optimal configuration

The results folder is held for the whole run (a second search there is refused, naming the
first's pid). An interrupt (Ctrl-C) writes results.json with what finished and exits 130; the
same command resumes from the experiments and the study kept.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from simtune.errors import InputError
from simtune.file_lock import Busy, exclusive
from simtune.progress import Progress
from simtune.runner import Runner
from simtune.search.optimal_command import optimal_command, train_with_optimal
from simtune.search.outcome import Measurement, SearchOutcome
from simtune.search.outputs import (OPTIMAL_CONFIG_FILE, WrittenOutputs, command_text, lr_advice, optimizer_type,
                                    results_document, write_outputs, write_results_json)
from simtune.search.request import SearchRequest
from simtune.search.strategy import StrategyResult, strategy_for

RESULTS_LOCK_FILE = ".search.lock"
"""In results_dir: held (lockf) by the search running there; released when it ends, however."""

INTERRUPTED = 130
"""The exit code of an interrupted search (128 + SIGINT)."""


@dataclass(frozen=True)
class SessionResult:
    """How a search ended: its exit code, its outputs, and the sentence that explains a failure."""

    exit_code: int
    best: Measurement | None = None
    written: WrittenOutputs | None = None
    command: str | None = None
    """The optimal training command (cmd_optimal.txt)."""
    message: str | None = None
    """Said on stderr: why nothing was found, or what an interrupt kept."""


class SearchSession:
    """Owns one search run: the runner, the progress lines, the strategy and the outputs."""

    def __init__(self, request: SearchRequest, *, started: float | None = None) -> None:
        self.request = request
        self.started = time.monotonic() if started is None else started
        autotuning = request.autotuning
        self.runner = Runner(
            (request.program.script, request.program.args), request.resources, autotuning.results_dir,
            autotuning.exps_dir, arg_mappings=autotuning.arg_mappings, timeout_s=autotuning.experiment_timeout_s,
            overwrite=autotuning.overwrite, memory_budget_bytes=autotuning.memory_budget_bytes,
            start_profile_step=autotuning.start_profile_step, end_profile_step=autotuning.end_profile_step,
            executor=request.executor(), shared_launch=request.shares_launch())
        self.progress = Progress(metric=autotuning.metric, quiet=request.flags.quiet)

    def run(self) -> SessionResult:
        request, autotuning = self.request, self.request.autotuning
        self.progress.note(f"{request.program.label}; {request.resources.world_size} {request.resources.accelerator} "
                           f"process(es) per experiment; stages {list(request.space.stages)}; metric "
                           f"{autotuning.metric}; strategy {request.strategy}; results in {autotuning.results_dir}")
        with only_search_in(autotuning.results_dir):
            strategy = strategy_for(request, self.runner, self.progress, self.started)
            try:
                found = strategy.run()
            except KeyboardInterrupt:
                partial = strategy.partial_outcome()
                if partial is None:
                    raise
                return self.interrupted(partial, strategy.kept())
            finally:
                self.runner.close()
            return self.finish(found)

    def finish(self, found: StrategyResult) -> SessionResult:
        """Write the outputs; the best configuration and its training command, or why there is none."""
        request = self.request
        results_dir = Path(request.autotuning.results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)  # a study kept elsewhere leaves it to be made here
        best = found.outcome.best
        advice = command = None
        if best is not None:
            if request.program.config_path is not None:  # the built-in config's batch is not the user's
                advice = lr_advice(request.space.user_train_batch_size, request.space.global_batch(best.trial),
                                   optimizer_type(request.ds_config))
            command = command_text(*optimal_command(self.runner, best, results_dir.resolve() / OPTIMAL_CONFIG_FILE),
                                   cwd=self.runner.cwd)
        written = write_outputs(results_dir, found.outcome, time.monotonic() - self.started, optimal_command=command,
                                advice=advice, predicted=found.predictions, model=found.model)
        if best is not None:
            return SessionResult(0, best, written, command)
        if found.model is not None and found.model.predicted_only:
            message = "no configuration is predicted to fit in memory on this hardware profile."
        else:
            message = (f"no experiment ran successfully; the reasons are in {written.results_path} and each "
                       f"experiment's stderr.log under {results_dir}.")
        return SessionResult(1, None, written, None, message)

    def interrupted(self, partial: SearchOutcome, kept: str) -> SessionResult:
        """Ctrl-C: results.json with what finished, and what is kept."""
        results_dir = self.request.autotuning.results_dir
        Path(results_dir).mkdir(parents=True, exist_ok=True)
        path = write_results_json(results_dir, results_document(partial, time.monotonic() - self.started,
                                                                interrupted=True))
        return SessionResult(INTERRUPTED, message=(
            f"interrupted: {kept}{len(partial.measurements)} finished experiment(s) are kept in {results_dir} "
            f"(listed in {path}); the same command reuses them unless --overwrite is given."))

    def train(self, result: SessionResult) -> int:
        """Train here with the optimal configuration the search wrote."""
        if result.best is None or result.written is None or result.written.optimal_config_path is None:
            raise ValueError("no optimal configuration to train with")
        return train_with_optimal(self.runner, result.best, result.written.optimal_config_path)


@contextmanager
def only_search_in(results_dir: str) -> Iterator[None]:
    """Hold ``results_dir`` for this search: a second search there at the same time would mix
    its experiments and study with this one's, so it is refused, naming this one's pid."""
    with ExitStack() as held:
        try:
            held.enter_context(exclusive(Path(results_dir) / RESULTS_LOCK_FILE, wait=False))
        except Busy as busy:
            holder = f"pid {busy.pid}" if busy.pid else "another process"
            raise InputError(f"Another search ({holder}) is running in {results_dir}: wait for it to end, or "
                             f"give this one another --results_dir.") from None
        yield


def say(message: str) -> None:
    """One sentence on stderr, as simtune says it."""
    print(f"simtune: {message}", file=sys.stderr)
