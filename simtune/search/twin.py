"""An in-memory twin of the runner: results computed from the trial, nothing launched.

Same ``run(experiments) -> [ExperimentResult]`` signature as :class:`simtune.runner.Runner`, for
exercising search logic without processes: ``outcome(trial)`` returns the metrics (a mapping) of a
run that succeeds, or a status string (``"oom"``, ``"crashed"``, ``"timeout"``) for one that fails,
or a (status, reason) pair for one that fails with a given reason.
Every experiment handed to it is kept in ``launched`` and each call's batch in ``batches``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from simtune.runner.experiment import Experiment, ExperimentResult

Outcome = Callable[[Any], "Mapping[str, Any] | str | tuple[str, str]"]


def metrics_for(throughput: float, *, train_batch_size: int = 1) -> dict[str, float]:
    """A metrics.json-like mapping with a consistent throughput, latency (ms) and FLOPS."""
    latency_ms = 1000.0 * train_batch_size / throughput
    return {"throughput": throughput, "latency": latency_ms, "FLOPS_per_gpu": 1e9 * throughput,
            "step_time_s": latency_ms / 1000.0, "train_batch_size": train_batch_size}


class TwinRunner:
    """A runner whose results come from a function of the trial."""

    def __init__(self, outcome: Outcome):
        self.outcome = outcome
        self.launched: list[Experiment] = []
        self.batches: list[list[str]] = []

    def run(self, experiments: Sequence[Experiment]) -> list[ExperimentResult]:
        self.batches.append([e.name for e in experiments])
        results = []
        for experiment in experiments:
            self.launched.append(experiment)
            got = self.outcome(experiment.trial)
            if isinstance(got, (str, tuple)):
                status, reason = (got, f"twin says {got}") if isinstance(got, str) else got
                results.append(ExperimentResult(experiment.name, status, reason, None,
                                                f"twin/{experiment.name}", 0.0))
            else:
                results.append(ExperimentResult(experiment.name, "ok", "", dict(got),
                                                f"twin/{experiment.name}", 0.0))
        return results

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.launched]
