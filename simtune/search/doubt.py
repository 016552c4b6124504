"""Which predictions to verify: the top K, spread over the model's doubt.

A prediction is off by about the model's relative error ``e`` (the residual model's held-out
error, :data:`simtune.prediction.residual.DEFAULT_ERROR` before any run). Every feasible candidate whose
predicted value is within ``e`` of the best prediction could be the true best, so K runs should
cover that set, not K near-copies of the leader. Candidates are therefore picked one at a time:

1. while *contenders* (predicted gap to the best <= e) are left, the one that adds most to
   what is already picked, by novelty level, and the best predicted among equals:

   - 3: a ZeRO stage not yet covered;
   - 2: a micro-batch size / accumulation not yet covered at its stage;
   - 1: another offload or activation-checkpointing setting of a covered (stage, mbs, gas);
   - 0: the same (stage, mbs, gas, offload, checkpointing) with other ZeRO knobs only;

   once a run has contradicted the model (its measured value was off the prediction by more than
   the model's error), a micro-batch size at least twice or at most half of every micro-batch size
   that contradicted it ranks above all of these (4 + the level): the model has shown it is wrong
   about how speed changes with the micro-batch size there, so the doubt now lies in other sizes;
   runs that failed (crashed, timed out) count as covered, so their replacement tries another
   stage before a neighbour of the failed one;

2. then the best predictions left, in order (outside the doubt the ranking is trusted).

``gap = (best - value) / |best|`` for metrics where higher is better, ``(value - best) / |best|``
for latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from simtune.metrics import Metric
from simtune.space import Trial
from simtune.search.forecast import Forecast


@dataclass(frozen=True)
class Candidate:
    """A prediction chosen for verification, and why."""

    forecast: Forecast
    gap: float
    """Predicted shortfall from the best prediction, as a fraction of it (0 for the best)."""
    reason: str


def setting(trial: Trial) -> tuple[int, int, int, str, str, bool]:
    """A trial without its ZeRO knobs: what decides memory and most of the time."""
    return (trial.stage, trial.micro_batch_size, trial.gradient_accumulation_steps, trial.offload_optimizer,
            trial.offload_param, trial.activation_checkpointing)


def novelty(trial: Trial, covered: Iterable[Trial]) -> int:
    """3 new stage, 2 new mbs/gas at its stage, 1 new offload/checkpointing, 0 knobs only."""
    covered = list(covered)
    if all(t.stage != trial.stage for t in covered):
        return 3
    batch = (trial.stage, trial.micro_batch_size, trial.gradient_accumulation_steps)
    if all((t.stage, t.micro_batch_size, t.gradient_accumulation_steps) != batch for t in covered):
        return 2
    if all(setting(t) != setting(trial) for t in covered):
        return 1
    return 0


_WHAT = {3: "another ZeRO stage", 2: "another micro-batch size or accumulation",
         1: "another offload or checkpointing setting", 0: "other ZeRO knobs"}
FAR = 2.0
"""A micro-batch size is away from one that contradicted the model when their ratio is at least this."""


def far_from(trial: Trial, doubted: Iterable[int]) -> bool:
    """Whether the trial's micro-batch size is at least ``FAR`` times, or at most 1/``FAR`` of, each
    micro-batch size in ``doubted``."""
    mbs = trial.micro_batch_size
    return all(mbs >= FAR * d or FAR * mbs <= d for d in doubted)


def sizes_text(doubted: Iterable[int]) -> str:
    """The contradicted micro-batch sizes as a note names them: ``"16, 32"``."""
    return ", ".join(str(d) for d in sorted(set(doubted)))


def _what(level: int, doubted: Sequence[int]) -> str:
    if level < 4:
        return _WHAT[level]
    away = f"a micro-batch size away from {sizes_text(doubted)}, where the model was contradicted"
    return away + (f", and {_WHAT[level - 4]}" if level > 4 else "")


def choose_candidates(ranked: Sequence[Forecast], k: int, *, error: float, metric: Metric,
                      covered: Sequence[Forecast] = (), best_value: float | None = None,
                      failed: Sequence[Trial] = (), doubted: Sequence[int] = ()) -> list[Candidate]:
    """Up to ``k`` candidates from ``ranked`` (feasible forecasts, best first, none already run).

    ``covered``: forecasts already verified or being verified (they count for novelty);
    ``best_value``: the best prediction overall (default: the best of ``ranked`` and ``covered``);
    ``failed``: trials whose runs crashed or timed out (they count for novelty too);
    ``doubted``: micro-batch sizes whose runs contradicted the model.
    """
    if k <= 0:
        return []
    pool = [f for f in ranked if f.feasible]
    values = [f.value for f in [*pool, *covered]]
    if not values:
        return []
    if best_value is None:
        best_value = min(values, key=metric.best_first)
    picked: list[Candidate] = []
    taken = {f.name for f in covered}
    while len(picked) < k:
        left = [f for f in pool if f.name not in taken]
        if not left:
            break
        seen = [f.trial for f in covered] + list(failed) + [c.forecast.trial for c in picked]
        contenders = [f for f in left if metric.shortfall(best_value, f.value) <= error]
        if contenders:
            levels = [(novelty(f.trial, seen) if seen else 3) + (4 if doubted and far_from(f.trial, doubted) else 0)
                      for f in contenders]
            top = max(levels)
            choice = contenders[levels.index(top)]
            gap = metric.shortfall(best_value, choice.value)
            if not seen and gap <= 0:
                reason = "best prediction"
            elif not seen:
                reason = f"best prediction left, {gap:.1%} below the best, inside the model's {error:.0%} error"
            else:
                reason = (f"{gap:.1%} below the best prediction, inside the model's {error:.0%} error: "
                          f"covers {_what(top, doubted)}")
        else:
            choice = left[0]
            gap = metric.shortfall(best_value, choice.value)
            reason = f"next best prediction ({gap:.1%} below the best, outside the model's {error:.0%} error)"
        picked.append(Candidate(choice, max(0.0, gap), reason))
        taken.add(choice.name)
    return picked
