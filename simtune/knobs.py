"""DeepSpeed's ZeRO knobs that simtune tunes or models: one table, :data:`KNOBS`.

Each row says what DeepSpeed reads (the ``zero_optimization`` key, its type, its default in
DeepSpeed 0.19.8: ``deepspeed/runtime/zero/config.py``), at which stages its engine reads it,
what DeepSpeed's autotuner tries by default (``deepspeed/autotuning/constants.py``,
DEFAULT_TUNING_SPACE_ZERO_1..3: 9, 72 and 144 combinations for stages 1, 2, 3), whether a user's
list tunes it, and whether the cost model's ``TrainConfig`` has a field of that name. The tuning
space (:mod:`simtune.space`), the experiment names (:mod:`simtune.naming`), the defaults and the
cost model's configuration (:mod:`simtune.model.adapters`) are derived from it when they are
used; the row order is the order of the knobs in experiment names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

KnobValue = Union[bool, int]

STAGES = (0, 1, 2, 3)
BUCKET_SIZES = (50_000_000, 500_000_000, 1_000_000_000)
"""The bucket sizes (elements) DeepSpeed's autotuner tries."""


def abbreviation(key: str) -> str:
    """The first letter of each ``_``-separated word: reduce_bucket_size -> rbs (DeepSpeed's
    ``canonical_name``)."""
    return "".join(word[0] for word in key.split("_") if word)


@dataclass(frozen=True)
class Knob:
    """One ``zero_optimization`` key."""

    key: str
    kind: type
    """``bool``, or ``int`` for a size or count."""
    default: KnobValue
    """DeepSpeed's value when the config leaves the key out (at stages other than 3 when
    :attr:`default_at_stage3` is set)."""
    read_at: tuple[int, ...]
    """Stages whose engine reads the key (the ZeRO-1/2 optimizer or ZeRO-3)."""
    tried_at: tuple[int, ...] = ()
    """Stages whose default tuning space holds the key."""
    tried: tuple[KnobValue, ...] = ()
    """The values the default tuning space tries, in order."""
    listable: bool = True
    """A user's list of values tunes the key."""
    modelled: bool = True
    """The cost model's ``TrainConfig`` has a field of this name."""
    default_at_stage3: Optional[KnobValue] = None

    @property
    def abbreviation(self) -> str:
        return abbreviation(self.key)

    def default_for(self, stage: int) -> KnobValue:
        """DeepSpeed's value at ``stage`` when the config leaves the key out."""
        return self.default_at_stage3 if stage == 3 and self.default_at_stage3 is not None else self.default

    @property
    def lists_apply_at(self) -> tuple[int, ...]:
        """Where a user's list applies when the stage is not fixed: the stages whose default space
        holds the key, else every stage that reads it (simtune's stage-3 additions)."""
        return self.tried_at or self.read_at


_OPTIMIZER_STAGES = (1, 2, 3)

KNOBS: tuple[Knob, ...] = (
    Knob("overlap_comm", bool, False, _OPTIMIZER_STAGES, (2, 3), (True, False), default_at_stage3=True),
    Knob("reduce_scatter", bool, True, _OPTIMIZER_STAGES, (2, 3), (False, True)),
    Knob("reduce_bucket_size", int, 500_000_000, _OPTIMIZER_STAGES, (1, 2, 3), BUCKET_SIZES),
    Knob("allgather_partitions", bool, True, _OPTIMIZER_STAGES, (3,), (True, False), modelled=False),
    Knob("allgather_bucket_size", int, 500_000_000, _OPTIMIZER_STAGES, (1, 2, 3), BUCKET_SIZES),
    Knob("contiguous_gradients", bool, True, _OPTIMIZER_STAGES, (2, 3), (False, True)),
    Knob("stage3_prefetch_bucket_size", int, 50_000_000, (3,)),
    Knob("stage3_param_persistence_threshold", int, 100_000, (3,)),
    Knob("stage3_max_live_parameters", int, 1_000_000_000, (3,)),
    Knob("stage3_max_reuse_distance", int, 1_000_000_000, (3,), listable=False),
    Knob("sub_group_size", int, 1_000_000_000, (3,), listable=False),
)
"""Every knob, in the order of experiment names (DeepSpeed's stage-3 default space, then
simtune's stage-3 additions)."""


@dataclass(frozen=True)
class _Views:
    """What the rest of simtune asks of the table, derived once per table."""

    by_key: dict[str, Knob]
    tunable: frozenset[str]
    order: tuple[str, ...]
    modelled: tuple[str, ...]
    defaults: dict[tuple[int, bool], dict[str, KnobValue]]


_memo: Optional[tuple[tuple[Knob, ...], _Views]] = None


def _views() -> _Views:
    """The derived views of :data:`KNOBS`, rebuilt only when the table itself is replaced (the cost
    model asks for them on every prediction)."""
    global _memo
    if _memo is None or _memo[0] is not KNOBS:
        defaults = {(stage, listable_only): {row.key: row.default_for(stage) for row in KNOBS
                                             if row.listable or not listable_only}
                    for stage in STAGES for listable_only in (True, False)}
        _memo = (KNOBS, _Views(by_key={row.key: row for row in KNOBS},
                               tunable=frozenset(row.key for row in KNOBS if row.listable),
                               order=tuple(row.key for row in KNOBS),
                               modelled=tuple(row.key for row in KNOBS if row.modelled), defaults=defaults))
    return _memo[1]


def knob(key: str) -> Knob:
    """The row of ``key``; KeyError for a key the table does not hold."""
    return _views().by_key[key]


def tunable_keys() -> frozenset[str]:
    """The keys a user's list tunes."""
    return _views().tunable


def is_flag(key: str) -> bool:
    """True for a knob that is on or off."""
    return knob(key).kind is bool


def name_order() -> tuple[str, ...]:
    """The order knobs appear in experiment names."""
    return _views().order


def default_space(stage: int) -> tuple[tuple[str, tuple[KnobValue, ...]], ...]:
    """DeepSpeed's default knob space at ``stage``: (key, values) in name order."""
    return tuple((row.key, row.tried) for row in KNOBS if stage in row.tried_at)


def deepspeed_defaults(stage: int, *, listable_only: bool = True) -> dict[str, KnobValue]:
    """DeepSpeed's value at ``stage`` of each knob a config leaves out (the knobs a list tunes, or
    every knob of the table): a new dict the caller may change."""
    return dict(_views().defaults[(stage, listable_only)])


def modelled_keys() -> tuple[str, ...]:
    """The knobs that are fields of the cost model's ``TrainConfig``."""
    return _views().modelled
