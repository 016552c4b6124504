"""The space the model-driven search explores: every dimension of the tuning space, bounded by
what the model says can fit.

Per ZeRO stage:

- micro-batch size (mbs): the user's list, else every size from the smallest to the largest the
  model predicts to fit (at gas 1, with the stage's most memory-frugal choices: offload and
  activation checkpointing on where they are choices), capped by
  ``max_train_micro_batch_size_per_gpu`` and by the per-GPU batch limit below;
- gradient accumulation (gas): 1 .. ``batch_limit // mbs``, where the per-GPU batch limit is
  ``max_train_batch_size / dp`` when set, else the largest mbs (the list's largest, or the
  largest predicted to fit at any stage) times the user's gas: without a limit the largest
  runnable micro-batch defines the batch, as in DeepSpeed's autotuner;
- the ZeRO knobs of the stage (fast = false), without those the installed DeepSpeed ignores
  (:func:`simtune.space.dead_knobs`), which would only add copies of the same experiment;
- optimizer / parameter offload and activation checkpointing when they are choices.

A point is a :class:`simtune.space.Trial`. In Optuna terms a point is drawn as ``stage``, then
``z{stage}_micro_batch_size`` and ``z{stage}_batch_per_gpu`` (gas = batch_per_gpu // mbs, at
least 1; both distributions fixed per stage, so every trial of a stage shares them) and one
categorical per other dimension, ``z{stage}_<name>``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from simtune.prediction.largest_fit import largest_that_fits
from simtune.space import Trial, TuningSpace, dead_knobs

Fits = Callable[[Trial], bool]


@dataclass(frozen=True)
class StageDims:
    """The dimensions of one stage."""

    stage: int
    micro_batch_sizes: tuple[int, ...]
    """Every mbs explored, increasing."""
    knobs: tuple[tuple[str, tuple[Any, ...]], ...]
    """(key, values) of each live tuned knob."""
    offload_optimizer: tuple[str, ...]
    offload_param: tuple[str, ...]
    checkpointing: tuple[bool, ...]
    predicted_max_mbs: int | None
    """Largest mbs predicted to fit (frugal choices, gas 1); None when not even the smallest fits."""

    @property
    def variants(self) -> int:
        """Combinations of the dimensions other than mbs and gas."""
        count = len(self.offload_optimizer) * len(self.offload_param) * len(self.checkpointing)
        for _, values in self.knobs:
            count *= len(values)
        return count


@dataclass(frozen=True)
class ModelSpace:
    """See the module docstring; build with :meth:`build`."""

    space: TuningSpace
    stages: tuple[StageDims, ...]
    batch_limit: int
    """Largest per-GPU batch (mbs * gas)."""
    listed_mbs: bool
    """True when the micro-batch sizes are the user's list (drawn as a categorical)."""

    # ---------------------------------------------------------------------------- building
    @classmethod
    def build(cls, space: TuningSpace, fits: Fits, *, prune_dead: bool = True) -> "ModelSpace":
        """The dimensions of ``space`` with mbs bounded by ``fits(trial)`` (the model's memory verdict)."""
        cap = space.autotuning.max_train_micro_batch_size_per_gpu
        explicit_limit = None
        if space.autotuning.max_train_batch_size is not None:
            explicit_limit = max(1, space.autotuning.max_train_batch_size // space.dp_size)
            cap = min(cap, explicit_limit)
        raw = []
        for stage in space.stages:
            knobs = space.knob_space(stage)
            if prune_dead:
                knobs = tuple((k, vs) for k, vs in knobs if k not in dead_knobs(stage))
            oo, op = space.offload_optimizer_choices(stage), space.offload_param_choices(stage)
            ac = space.activation_checkpointing_choices

            def frugal(mbs: int, stage: int = stage, oo: tuple[str, ...] = oo, op: tuple[str, ...] = op) -> Trial:
                return space.trial(stage, mbs, 1, (), offload_optimizer="cpu" if "cpu" in oo else oo[0],
                                   offload_param="cpu" if "cpu" in op else op[0],
                                   activation_checkpointing=True in ac)

            if space.micro_batch_sizes is not None:
                listed = tuple(m for m in space.micro_batch_sizes if m <= cap) or (space.micro_batch_sizes[0],)
                fitting = [m for m in listed if fits(frugal(m))]
                largest = max(fitting) if fitting else None
                sizes = listed
            else:
                largest = largest_that_fits(lambda m: fits(frugal(m)), space.min_micro_batch_size,
                                            max(space.min_micro_batch_size, cap))
                top = largest if largest is not None else space.min_micro_batch_size
                sizes = tuple(range(space.min_micro_batch_size, top + 1))
            raw.append(StageDims(stage, sizes, knobs, oo, op, ac, largest))
        if explicit_limit is not None:
            limit = explicit_limit
        else:
            if space.micro_batch_sizes is not None:
                largest_any = max(space.micro_batch_sizes)
            else:
                largest_any = max([d.predicted_max_mbs or 0 for d in raw] + [space.min_micro_batch_size])
            limit = largest_any * space.gradient_accumulation_steps
        stages = tuple(
            StageDims(d.stage, tuple(m for m in d.micro_batch_sizes if m <= limit) or d.micro_batch_sizes[:1],
                      d.knobs, d.offload_optimizer, d.offload_param, d.checkpointing, d.predicted_max_mbs)
            for d in raw
        )
        return cls(space, stages, limit, space.micro_batch_sizes is not None)

    # ---------------------------------------------------------------------------- queries
    def dims(self, stage: int) -> StageDims:
        for d in self.stages:
            if d.stage == stage:
                return d
        raise ValueError(f"stage {stage} is not explored")

    def gas_choices(self, mbs: int) -> range:
        """Gradient accumulation steps explored at a micro-batch size."""
        return range(1, max(1, self.batch_limit // mbs) + 1)

    def size(self) -> int:
        """How many points the space holds."""
        return sum(d.variants * sum(len(self.gas_choices(m)) for m in d.micro_batch_sizes) for d in self.stages)

    def points(self) -> Iterator[Trial]:
        """Every point, stage by stage, mbs and gas increasing."""
        for d in self.stages:
            for mbs in d.micro_batch_sizes:
                for gas in self.gas_choices(mbs):
                    yield from self.variants(d.stage, mbs, gas)

    def variants(self, stage: int, mbs: int, gas: int) -> Iterator[Trial]:
        d = self.dims(stage)
        keys = [k for k, _ in d.knobs]
        for combo in itertools.product(*(vs for _, vs in d.knobs)):
            for oo in d.offload_optimizer:
                for op in d.offload_param:
                    for ac in d.checkpointing:
                        yield self.space.trial(stage, mbs, gas, tuple(zip(keys, combo)), offload_optimizer=oo,
                                               offload_param=op, activation_checkpointing=ac)

    def __contains__(self, trial: object) -> bool:
        if not isinstance(trial, Trial):
            return False
        try:
            d = self.dims(trial.stage)
        except ValueError:
            return False
        knobs = dict(trial.zero_knobs)
        return (trial.micro_batch_size in d.micro_batch_sizes
                and trial.gradient_accumulation_steps in self.gas_choices(trial.micro_batch_size)
                and set(knobs) == {k for k, _ in d.knobs}
                and all(knobs[k] in vs for k, vs in d.knobs)
                and trial.offload_optimizer in d.offload_optimizer and trial.offload_param in d.offload_param
                and trial.activation_checkpointing in d.checkpointing)

    def describe(self) -> str:
        """One line per stage: its mbs range, accumulation and other choices."""
        lines = []
        for d in self.stages:
            sizes = d.micro_batch_sizes
            mbs = (f"mbs {list(sizes)}" if self.listed_mbs else f"mbs {sizes[0]}..{sizes[-1]}")
            fit = ("nothing predicted to fit" if d.predicted_max_mbs is None
                   else f"predicted to fit up to {d.predicted_max_mbs}")
            extra = f", {d.variants} knob/offload/checkpointing setting(s)" if d.variants > 1 else ""
            lines.append(f"z{d.stage}: {mbs} ({fit}), gas up to {self.batch_limit // sizes[0]}{extra}")
        return "; ".join(lines)

    def fingerprint_data(self) -> dict[str, Any]:
        """Everything that defines the points (for the study's name)."""
        return {
            "batch_limit": self.batch_limit,
            "stages": [[d.stage, list(d.micro_batch_sizes), [[k, list(vs)] for k, vs in d.knobs],
                        list(d.offload_optimizer), list(d.offload_param), list(d.checkpointing)]
                       for d in self.stages],
            "fixed_knobs": [[s, [[k, v] for k, v in knobs]] for s, knobs in self.space.fixed_knobs],
            "world_size": self.space.world_size,
            "mp_size": self.space.mp_size,
        }

    # ---------------------------------------------------------------------------- Optuna encoding
    def sample(self, suggest: "Suggester") -> Trial:
        """Draw a point through an Optuna trial's ``suggest_*`` methods."""
        stage = suggest.suggest_categorical("stage", [d.stage for d in self.stages])
        d = self.dims(stage)
        p = f"z{stage}_"
        if self.listed_mbs or len(d.micro_batch_sizes) == 1:
            mbs = suggest.suggest_categorical(p + "micro_batch_size", list(d.micro_batch_sizes))
        else:
            mbs = suggest.suggest_int(p + "micro_batch_size", d.micro_batch_sizes[0], d.micro_batch_sizes[-1],
                                      log=True)
        low = d.micro_batch_sizes[0]
        batch = suggest.suggest_int(p + "batch_per_gpu", low, max(low, self.batch_limit), log=True)
        gas = min(max(1, batch // mbs), len(self.gas_choices(mbs)))
        knobs = tuple((k, suggest.suggest_categorical(p + k, list(vs))) for k, vs in d.knobs)
        oo = suggest.suggest_categorical(p + "offload_optimizer", list(d.offload_optimizer))
        op = suggest.suggest_categorical(p + "offload_param", list(d.offload_param))
        ac = suggest.suggest_categorical(p + "activation_checkpointing", list(d.checkpointing))
        return self.space.trial(stage, mbs, gas, knobs, offload_optimizer=oo, offload_param=op,
                                activation_checkpointing=ac)

    def params(self, trial: Trial) -> dict[str, Any]:
        """The Optuna parameters that draw exactly ``trial`` (for enqueuing it)."""
        p = f"z{trial.stage}_"
        params: dict[str, Any] = {
            "stage": trial.stage,
            p + "micro_batch_size": trial.micro_batch_size,
            p + "batch_per_gpu": trial.micro_batch_size * trial.gradient_accumulation_steps,
            p + "offload_optimizer": trial.offload_optimizer,
            p + "offload_param": trial.offload_param,
            p + "activation_checkpointing": trial.activation_checkpointing,
        }
        params.update({p + k: v for k, v in trial.zero_knobs})
        return params

    # ---------------------------------------------------------------------------- local moves
    def neighbours(self, trial: Trial) -> list[Trial]:
        """Points one move away: mbs or gas one step up or down, mbs halved or doubled (or one
        step) with gas holding the per-GPU batch, gas at its largest, another stage at the same
        mbs and gas, one knob, offload or checkpointing choice changed."""
        d = self.dims(trial.stage)
        mbs, gas = trial.micro_batch_size, trial.gradient_accumulation_steps
        sizes = d.micro_batch_sizes
        index = sizes.index(mbs) if mbs in sizes else 0
        batch = mbs * gas
        moves: list[Trial] = []

        def at(stage_dims: StageDims, m: int, g: int, base: Trial) -> None:
            if m not in stage_dims.micro_batch_sizes:
                return
            g = min(max(1, g), len(self.gas_choices(m)))
            moves.append(base.replace(stage=stage_dims.stage, micro_batch_size=m, gradient_accumulation_steps=g))

        for step in (-1, 1):
            if 0 <= index + step < len(sizes):
                other = sizes[index + step]
                at(d, other, gas, trial)
                at(d, other, max(1, batch // other), trial)
        for other in (mbs * 2, mbs // 2):
            at(d, other, max(1, batch // max(other, 1)), trial)
        for g in (gas - 1, gas + 1, len(self.gas_choices(mbs))):
            at(d, mbs, g, trial)
        for dims in self.stages:
            if dims.stage == trial.stage:
                continue
            base = self.space.trial(dims.stage, mbs, gas, tuple((k, vs[0]) for k, vs in dims.knobs),
                                    offload_optimizer=_keep(trial.offload_optimizer, dims.offload_optimizer),
                                    offload_param=_keep(trial.offload_param, dims.offload_param),
                                    activation_checkpointing=_keep(trial.activation_checkpointing, dims.checkpointing))
            nearest = min(dims.micro_batch_sizes, key=lambda m: (abs(m - mbs), m))
            at(dims, nearest, max(1, batch // nearest), base)
        knobs = dict(trial.zero_knobs)
        for key, values in d.knobs:
            for value in values:
                if value != knobs.get(key):
                    moves.append(trial.replace(zero_knobs=tuple({**knobs, key: value}.items())))
        for field, choices in (("offload_optimizer", d.offload_optimizer), ("offload_param", d.offload_param),
                               ("activation_checkpointing", d.checkpointing)):
            for choice in choices:
                if choice != getattr(trial, field):
                    moves.append(trial.replace(**{field: choice}))
        unique = list(dict.fromkeys(m for m in moves if m != trial and m in self))
        return unique


class Suggester(Protocol):
    """What :meth:`ModelSpace.sample` needs of an ``optuna.Trial``."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...


def _keep(value: Any, choices: tuple[Any, ...]) -> Any:
    return value if value in choices else choices[0]

