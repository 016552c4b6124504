"""Tuners: which ZeRO-knob experiments to run next, and when to stop.

A tuner walks a fixed list of candidates (one stage's knob grid with the stage's best micro-batch
size and accumulation steps held fixed). :func:`run_tuner` asks it for ``batch_size`` candidates at
a time (the experiments that can run at once), measures them through a caller-supplied function,
and stops after ``num_trials`` candidates, when the list is exhausted, or when the last
``early_stopping`` candidates brought no improvement (DeepSpeed's ``tuner_early_stopping``).

Three tuners, as in DeepSpeed's ``tuner_type``:

- ``gridsearch``: the candidates in the order given (lexical order of the grid); unlike
  DeepSpeed, whose de-duplication through a set scrambles that order.
- ``random``: a seeded random permutation.
- ``model_based``: a few random candidates first, then an XGBoost ranking model
  (``rank:pairwise``, DeepSpeed's parameters: depth 3, eta 0.3) fitted on the numeric features of
  every measured candidate picks the best-predicted unvisited one; with probability
  ``exploration_rate`` a random unvisited candidate is taken instead (DeepSpeed codes a 20 %
  exploration that never takes effect). Failed runs rank below every success.

Values are raw metric values; the :class:`~simtune.metrics.Metric` gives their direction (latency is
better lower), which DeepSpeed's tuner loop ignores.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from simtune.dsconfig import TUNER_TYPES
from simtune.errors import ConfigError
from simtune.metrics import Metric

T = TypeVar("T")


@dataclass(frozen=True)
class TunerSettings:
    """How a tuner runs (the ``tuner_*`` keys of the "autotuning" section)."""

    num_trials: int = 50
    """At most this many candidates are measured (``tuner_num_trials``)."""
    early_stopping: int = 5
    """Stop when the last this-many candidates did not improve the best; 0 disables it."""
    batch_size: int = 1
    """Candidates proposed (and run) at once: the experiments the resources hold together."""
    seed: int = 0
    """Seed of the random and model-based tuners: the same seed gives the same order."""
    initial_random: int = 2
    """Model-based: random candidates measured before the model is first fitted."""
    exploration_rate: float = 0.2
    """Model-based: chance of taking a random unvisited candidate instead of the predicted best."""

    def __post_init__(self) -> None:
        if self.num_trials < 1:
            raise ConfigError(f"tuner_num_trials must be at least 1, not {self.num_trials}.")
        if self.early_stopping < 0:
            raise ConfigError(f"tuner_early_stopping must not be negative, not {self.early_stopping}.")
        if self.batch_size < 1:
            raise ConfigError(f"The tuner batch size must be at least 1, not {self.batch_size}.")
        if not 0.0 <= self.exploration_rate <= 1.0:
            raise ConfigError(f"The exploration rate must lie in [0, 1], not {self.exploration_rate}.")


@dataclass(frozen=True)
class TunerOutcome(Generic[T]):
    """What a tuner measured, in order, and the best of it."""

    evaluated: tuple[tuple[T, float | None], ...]
    """(candidate, metric value or None when the run failed), in the order they were measured."""
    best_index: int | None
    """Position in ``evaluated`` of the best successful candidate; None when none succeeded."""
    stop_reason: str
    """Why the tuner stopped, in words."""

    @property
    def best(self) -> tuple[T, float] | None:
        if self.best_index is None:
            return None
        candidate, value = self.evaluated[self.best_index]
        assert value is not None
        return candidate, value


class Tuner(ABC, Generic[T]):
    """Proposes unvisited candidates; learns from the values measured for them."""

    def __init__(self, candidates: Sequence[T], settings: TunerSettings, metric: Metric):
        self.candidates = list(candidates)
        self.settings = settings
        self.metric = metric
        self.visited: set[int] = set()

    @property
    def exhausted(self) -> bool:
        return len(self.visited) >= len(self.candidates)

    def unvisited(self) -> list[int]:
        return [i for i in range(len(self.candidates)) if i not in self.visited]

    def propose(self, n: int) -> list[int]:
        """Indices of up to ``n`` unvisited candidates to measure next (marked visited)."""
        chosen = self._choose(n)
        self.visited.update(chosen)
        return chosen

    @abstractmethod
    def _choose(self, n: int) -> list[int]:
        """Pick up to ``n`` distinct unvisited indices."""

    def observe(self, index: int, value: float | None) -> None:
        """Record the metric value measured for candidate ``index`` (None: the run failed)."""


class GridSearchTuner(Tuner[T]):
    """The candidates in the order given."""

    def _choose(self, n: int) -> list[int]:
        return self.unvisited()[:n]


class RandomTuner(Tuner[T]):
    """A seeded random order of the candidates."""

    def __init__(self, candidates: Sequence[T], settings: TunerSettings, metric: Metric):
        super().__init__(candidates, settings, metric)
        self._order = list(range(len(self.candidates)))
        random.Random(settings.seed).shuffle(self._order)

    def _choose(self, n: int) -> list[int]:
        return [i for i in self._order if i not in self.visited][:n]


class ModelBasedTuner(Tuner[T]):
    """Random start, then the unvisited candidate an XGBoost ranking model puts first."""

    XGB_PARAMS = {
        "objective": "rank:pairwise",
        "max_depth": 3,
        "eta": 0.3,
        "gamma": 1e-4,
        "min_child_weight": 1,
        "subsample": 1.0,
        "lambda": 1.0,
        "alpha": 0.0,
        "verbosity": 0,
        "nthread": 1,
    }
    BOOST_ROUNDS = 10

    def __init__(
        self,
        candidates: Sequence[T],
        settings: TunerSettings,
        metric: Metric,
        features: Callable[[T], Sequence[float]],
    ):
        super().__init__(candidates, settings, metric)
        self._rng = random.Random(settings.seed)
        self._features = [list(map(float, features(c))) for c in self.candidates]
        self._observed: dict[int, float | None] = {}
        self.model_fits = 0

    def observe(self, index: int, value: float | None) -> None:
        self._observed[index] = value

    def _choose(self, n: int) -> list[int]:
        chosen: list[int] = []
        scores: list[float] | None = None
        fitted = False
        for _ in range(n):
            free = [i for i in self.unvisited() if i not in chosen]
            if not free:
                break
            explore = (len(self._observed) < self.settings.initial_random
                       or self._rng.random() < self.settings.exploration_rate)
            if not explore and not fitted:
                scores, fitted = self._predicted_scores(), True
            if explore or scores is None:
                chosen.append(self._rng.choice(free))
            else:
                chosen.append(max(free, key=lambda i: (scores[i], -i)))
        return chosen

    def _predicted_scores(self) -> list[float] | None:
        """Model scores of every candidate (higher = better), or None when nothing can be learnt."""
        import numpy as np
        import xgboost as xgb  # 0.6 s to import: only the model-based tuner needs it

        labels = self._relevance_labels()
        if labels is None:
            return None
        rows = sorted(labels)
        x = np.asarray([self._features[i] for i in rows], dtype=np.float32)
        y = np.asarray([labels[i] for i in rows], dtype=np.float32)
        booster = xgb.train(self.XGB_PARAMS, xgb.DMatrix(x, label=y), num_boost_round=self.BOOST_ROUNDS)
        self.model_fits += 1
        predicted = booster.predict(xgb.DMatrix(np.asarray(self._features, dtype=np.float32)))
        return [float(p) for p in predicted]

    def _relevance_labels(self) -> dict[int, int] | None:
        """Observed candidates ranked 0 (worst; every failure) .. k (best); None if all tie."""
        ok = {i: v for i, v in self._observed.items() if v is not None}
        ordered = sorted(ok, key=lambda i: self.metric.best_first(ok[i]))
        ordered.reverse()  # worst success first
        labels = {i: 0 for i, v in self._observed.items() if v is None}
        rank = 1
        previous: float | None = None
        for i in ordered:
            if previous is not None and ok[i] != previous:
                rank += 1
            labels[i] = rank
            previous = ok[i]
        if len(set(labels.values())) < 2:
            return None
        return labels


def trial_features(trial: object) -> list[float]:
    """Numeric features of a trial: stage, mbs, gas, every knob value, offload and checkpointing.

    Booleans count as 0/1 and offload devices as 0 ("none") / 1 (anything else); a knob that is not
    a number or a boolean is left out.
    """
    values: list[float] = [
        float(getattr(trial, "stage")),
        float(getattr(trial, "micro_batch_size")),
        float(getattr(trial, "gradient_accumulation_steps")),
    ]
    for _, value in getattr(trial, "zero_knobs", ()):
        if isinstance(value, (bool, int, float)):
            values.append(float(value))
    for device in (getattr(trial, "offload_optimizer", "none"), getattr(trial, "offload_param", "none")):
        values.append(0.0 if device in (None, "none") else 1.0)
    values.append(1.0 if getattr(trial, "activation_checkpointing", False) else 0.0)
    return values


def make_tuner(
    tuner_type: str,
    candidates: Sequence[T],
    settings: TunerSettings,
    metric: Metric,
    features: Callable[[T], Sequence[float]] = trial_features,
) -> Tuner[T]:
    """The tuner named by ``tuner_type`` (one of :data:`TUNER_TYPES`)."""
    if tuner_type == "gridsearch":
        return GridSearchTuner(candidates, settings, metric)
    if tuner_type == "random":
        return RandomTuner(candidates, settings, metric)
    if tuner_type == "model_based":
        return ModelBasedTuner(candidates, settings, metric, features)
    raise ConfigError(f"Unknown tuner_type {tuner_type!r}: choose one of {', '.join(TUNER_TYPES)}.")


def run_tuner(
    tuner: Tuner[T],
    measure: Callable[[list[T]], Sequence[float | None]],
) -> TunerOutcome[T]:
    """Measure the tuner's proposals batch by batch until a stopping rule holds.

    ``measure`` runs a batch of candidates and returns their metric values (None for a failed run),
    in the same order.
    """
    settings = tuner.settings
    evaluated: list[tuple[T, float | None]] = []
    best_index: int | None = None
    best_value: float | None = None
    last_improvement = 0  # number of candidates measured when the best was last improved
    stop_reason = "every candidate was measured"
    while True:
        if len(evaluated) >= settings.num_trials:
            stop_reason = f"reached tuner_num_trials ({settings.num_trials})"
            break
        room = min(settings.batch_size, settings.num_trials - len(evaluated))
        indices = tuner.propose(room)
        if not indices:
            break
        batch = [tuner.candidates[i] for i in indices]
        values = list(measure(batch))
        if len(values) != len(batch):
            raise ValueError(f"measure returned {len(values)} values for {len(batch)} candidates")
        for index, candidate, value in zip(indices, batch, values):
            tuner.observe(index, value)
            evaluated.append((candidate, value))
            if value is not None and tuner.metric.better(value, best_value):
                best_index, best_value = len(evaluated) - 1, value
                last_improvement = len(evaluated)
        if settings.early_stopping and len(evaluated) - last_improvement >= settings.early_stopping:
            stop_reason = (
                f"no improvement in the last {len(evaluated) - last_improvement} trials "
                f"(tuner_early_stopping {settings.early_stopping})"
            )
            break
    return TunerOutcome(evaluated=tuple(evaluated), best_index=best_index, stop_reason=stop_reason)
