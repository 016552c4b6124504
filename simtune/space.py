"""The tuning space read from a DeepSpeed config, one point of it, and that point's config.

:class:`TuningSpace` is built once from the user's DeepSpeed config, the "autotuning" section
and the number of processes; it holds every dimension as tuples (ZeRO stages, the micro-batch
sizes, gradient accumulation, the ZeRO knob values per stage, simtune's offload and activation
checkpointing choices) and never changes. :class:`Trial` is one point; :meth:`TuningSpace.render`
turns it into the full DeepSpeed config of the experiment.

How each tunable value is read is documented in docs/configuration.md; the rules follow
DeepSpeed's autotuner (``deepspeed/autotuning/autotuner.py``) except where its behaviour is a
known defect (it drops the user's ZeRO section; it ignores the user's knob values).
"""

from __future__ import annotations

import functools
import itertools
import json
import warnings
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from simtune import knobs
from simtune.dsconfig import AutotuningConfig, ConfigWarning, clips_gradients, json_type_name, pins_offload_memory
from simtune.errors import ConfigError
from simtune.knobs import STAGES
from simtune.naming import experiment_name
from simtune.nvme_settings import NvmeSwapSettings
from simtune.optimizers import OptimizerChoice, optimizer_choice
from simtune.precision import communication_precision_of

OFFLOAD_DEVICES = ("none", "cpu", "nvme")
"""Offload devices a Trial may hold; simtune tunes "none" and "cpu", "nvme" is kept when the
user fixed it."""

KnobSpace = tuple[tuple[str, tuple[Any, ...]], ...]
"""(key, values) for each tuned ZeRO knob of a stage, keys sorted."""
KnobValues = tuple[tuple[str, Any], ...]
"""(key, value) pairs, keys sorted."""

MBS_KEY = "train_micro_batch_size_per_gpu"
GAS_KEY = "gradient_accumulation_steps"
TBS_KEY = "train_batch_size"
ZERO_KEY = "zero_optimization"
ACTIVATION_CHECKPOINTING_KEY = "activation_checkpointing"
"""The arg_mappings key whose flag turns activation checkpointing on or off in the script."""

@functools.lru_cache(maxsize=1)
def _torch_has_all_gather_into_tensor() -> bool:
    """From the installed torch's version when it is 1.13 or newer (``all_gather_into_tensor``
    is public since 1.13): importing torch costs over a second and a search may not need it."""
    import importlib.metadata
    import re

    try:
        found = re.match(r"(\d+)\.(\d+)", importlib.metadata.version("torch"))
        if found and (int(found[1]), int(found[2])) >= (1, 13):
            return True
    except importlib.metadata.PackageNotFoundError:
        pass
    import torch.distributed as dist

    return hasattr(dist, "all_gather_into_tensor") or hasattr(dist, "_all_gather_base")


def dead_knobs(stage: int) -> frozenset[str]:
    """Knobs with no effect in the installed DeepSpeed at this stage.

    ``allgather_partitions`` is never read by any ZeRO optimizer; ``allgather_bucket_size`` is
    not passed to ZeRO-3, and ZeRO-1/2 use it only when torch lacks ``all_gather_into_tensor``
    (``deepspeed/runtime/utils.py``, ``all_gather_dp_groups``). A search may drop them.
    """
    dead = {"allgather_partitions"}
    if stage == 3 or (stage in (1, 2) and _torch_has_all_gather_into_tensor()):
        dead.add("allgather_bucket_size")
    return frozenset(dead)


def _knob_pairs(knobs: Any) -> tuple[tuple[str, Any], ...]:
    items = knobs.items() if isinstance(knobs, Mapping) else knobs
    pairs = tuple(sorted((str(k), v) for k, v in items))
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"zero_knobs repeats a key: {keys}")
    return pairs


@dataclass(frozen=True, order=True)
class Trial:
    """One point of the tuning space.

    ``zero_knobs`` holds only the ZeRO keys being tuned, as (key, value) pairs sorted by key
    (a dict is accepted and converted); every other ZeRO key comes from the user's config.
    """

    stage: int
    micro_batch_size: int
    gradient_accumulation_steps: int = 1
    zero_knobs: tuple[tuple[str, Any], ...] = ()
    offload_optimizer: str = "none"
    offload_param: str = "none"
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "zero_knobs", _knob_pairs(self.zero_knobs))
        if self.stage not in STAGES or isinstance(self.stage, bool):
            raise ValueError(f"stage must be 0, 1, 2 or 3, not {self.stage!r}")
        for name in ("micro_batch_size", "gradient_accumulation_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        for name in ("offload_optimizer", "offload_param"):
            if getattr(self, name) not in OFFLOAD_DEVICES:
                raise ValueError(f"{name} must be one of {OFFLOAD_DEVICES}, not {getattr(self, name)!r}")
        if not isinstance(self.activation_checkpointing, bool):
            raise ValueError("activation_checkpointing must be a bool")

    @property
    def knobs(self) -> dict[str, Any]:
        """The tuned ZeRO knobs as a dict."""
        return dict(self.zero_knobs)

    def replace(self, **changes: Any) -> "Trial":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (zero_knobs as an object)."""
        return {
            "stage": self.stage,
            "micro_batch_size": self.micro_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "zero_knobs": dict(self.zero_knobs),
            "offload_optimizer": self.offload_optimizer,
            "offload_param": self.offload_param,
            "activation_checkpointing": self.activation_checkpointing,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Trial":
        """The inverse of :meth:`to_dict`."""
        return cls(**{**data, "zero_knobs": _knob_pairs(data.get("zero_knobs", ()))})


@dataclass(frozen=True)
class TuningSpace:
    """Every dimension of the search, read from a DeepSpeed config; build with :meth:`from_config`."""

    config_json: str
    """The user's DeepSpeed config (serialised, so the space cannot change it)."""
    autotuning: AutotuningConfig
    world_size: int
    """Processes per experiment (nodes x GPUs per node)."""
    stages: tuple[int, ...]
    micro_batch_sizes: tuple[int, ...] | None
    """The user's list of micro-batch sizes (explored exactly), or None: search from the minimum."""
    min_micro_batch_size: int
    """Smallest micro-batch size to try (the user's integer, the mapped script value, or 1)."""
    gradient_accumulation_steps: int
    """The user's gradient accumulation (integer, or the mapped script value, else 1)."""
    knob_spaces: tuple[tuple[int, KnobSpace], ...]
    """Per stage: (key, values) for each tuned ZeRO knob, keys sorted; empty in fast mode."""
    fixed_knobs: tuple[tuple[int, tuple[tuple[str, Any], ...]], ...]
    """Per stage: the value each tunable knob runs with when a trial does not set it (the user's
    value, the first of the user's list, or DeepSpeed's default); None where the user wrote
    "auto" (the script fills it in)."""
    offload_optimizer_devices: tuple[str, ...]
    offload_param_devices: tuple[str, ...]
    activation_checkpointing_choices: tuple[bool, ...]
    user_train_batch_size: int | None = None
    """The user's global batch: train_batch_size if written, else mbs * gas * dp when the
    micro-batch size is not a list; used to advise on the learning rate."""
    communication_precision: str | None = None
    """The config's ``communication_data_type`` (:func:`simtune.precision.communication_precision_of`)."""
    gradient_clipping: bool = False
    """The config clips gradients (:func:`simtune.dsconfig.clips_gradients`)."""
    offload_optimizer_pinned: bool = True
    offload_param_pinned: bool = True
    """Each offload section's ``pin_memory`` (:func:`simtune.dsconfig.pins_offload_memory`)."""
    nvme_swap: NvmeSwapSettings = NvmeSwapSettings()
    """The offload sections' NVMe swap settings (:class:`simtune.nvme_settings.NvmeSwapSettings`)."""

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(
        cls,
        ds_config: Mapping[str, Any],
        autotuning: AutotuningConfig | None = None,
        *,
        world_size: int,
        user_args: Sequence[str] = (),
    ) -> "TuningSpace":
        """Read the tuning space from a DeepSpeed config.

        ``autotuning`` defaults to the config's own "autotuning" section; ``user_args`` are the
        training script's arguments, read through ``arg_mappings`` for "auto" values.
        """
        if not isinstance(ds_config, Mapping):
            raise ConfigError(f"The DeepSpeed config must be a JSON object, not {json_type_name(ds_config)}.")
        if autotuning is None:
            autotuning = AutotuningConfig.from_dict(ds_config.get("autotuning"))
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ConfigError(f"The number of processes per experiment must be a positive integer, not {world_size!r}.")
        if world_size % autotuning.mp_size:
            raise ConfigError(
                f"The {world_size} processes per experiment cannot be split into model-parallel "
                f"groups of mp_size {autotuning.mp_size}: world size must be a multiple of mp_size."
            )
        user_args = tuple(str(a) for a in user_args)
        try:
            config_json = json.dumps(ds_config, sort_keys=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"The DeepSpeed config cannot be written as JSON ({exc}).") from None
        dp = world_size // autotuning.mp_size

        zero = ds_config.get(ZERO_KEY)
        if zero is None:
            zero = {}
        elif not isinstance(zero, Mapping):
            raise ConfigError(f'"{ZERO_KEY}" must be a JSON object, not {json_type_name(zero)}.')
        stages, stage_fixed = _read_stages(ds_config.get(ZERO_KEY), zero)
        communication_precision = communication_precision_of(ds_config)
        gradient_clipping = clips_gradients(ds_config)
        zero_plus_plus = sorted(key for key in ZERO_PLUS_PLUS_KEYS
                                if zero.get(key) and not (key == "zero_hpz_partition_size" and zero[key] == 1))
        if zero_plus_plus:
            warnings.warn(
                f"ZeRO++ ({', '.join(zero_plus_plus)}) is not in the cost model: stage 3 is predicted without "
                "it, and only the experiments that run measure it.",
                ConfigWarning,
                stacklevel=2,
            )

        _check_optimizer(ds_config, stages)
        mbs_list, min_mbs = _read_micro_batch(ds_config, autotuning, user_args)
        gas = _read_gas(ds_config, autotuning, user_args)
        if TBS_KEY in ds_config and ds_config[TBS_KEY] != "auto":
            warnings.warn(
                f"train_batch_size {ds_config[TBS_KEY]!r} is ignored while tuning: each experiment's "
                f"global batch is micro-batch size x gradient accumulation x {dp} data-parallel processes.",
                ConfigWarning,
                stacklevel=2,
            )
        limit = autotuning.max_train_batch_size
        if limit is not None and min_mbs * gas * dp > limit:
            raise ConfigError(
                f"max_train_batch_size {limit} is smaller than the smallest global batch: micro-batch "
                f"size {min_mbs} x gradient accumulation {gas} x {dp} data-parallel processes."
            )
        if mbs_list is not None:
            too_big = [m for m in mbs_list if m > autotuning.max_train_micro_batch_size_per_gpu]
            if too_big:
                raise ConfigError(
                    f"Micro-batch size {too_big[0]} in the list exceeds "
                    f"max_train_micro_batch_size_per_gpu {autotuning.max_train_micro_batch_size_per_gpu}."
                )
            too_big = [m for m in mbs_list if limit is not None and m * dp > limit]
            if too_big:
                raise ConfigError(
                    f"Micro-batch size {too_big[0]} in the list gives a global batch above "
                    f"max_train_batch_size {limit} even without gradient accumulation."
                )

        knob_spaces, fixed_knobs = _read_knobs(zero, stages, stage_fixed, autotuning.fast)
        oo = _read_offload(zero, "offload_optimizer", autotuning.tune_offload)
        op = _read_offload(zero, "offload_param", autotuning.tune_offload)
        if 3 in stages:
            _require_nvme_path(zero, (("offload_optimizer", oo), ("offload_param", op)))
        ac = _read_checkpointing(autotuning, user_args)

        user_tbs = ds_config.get(TBS_KEY)
        if isinstance(user_tbs, bool) or not isinstance(user_tbs, int) or user_tbs < 1:
            user_tbs = min_mbs * gas * dp if mbs_list is None else None

        return cls(
            config_json=config_json,
            autotuning=autotuning,
            world_size=world_size,
            stages=stages,
            micro_batch_sizes=mbs_list,
            min_micro_batch_size=min_mbs,
            gradient_accumulation_steps=gas,
            knob_spaces=knob_spaces,
            fixed_knobs=fixed_knobs,
            offload_optimizer_devices=oo,
            offload_param_devices=op,
            activation_checkpointing_choices=ac,
            user_train_batch_size=user_tbs,
            communication_precision=communication_precision,
            gradient_clipping=gradient_clipping,
            offload_optimizer_pinned=pins_offload_memory(ds_config, "offload_optimizer"),
            offload_param_pinned=pins_offload_memory(ds_config, "offload_param"),
            nvme_swap=NvmeSwapSettings.from_ds_config(ds_config),
        )

    # ------------------------------------------------------------------ dimensions
    @property
    def ds_config(self) -> dict[str, Any]:
        """A fresh copy of the user's DeepSpeed config."""
        config: dict[str, Any] = json.loads(self.config_json)
        return config

    @property
    def swaps_optimizer_to_nvme(self) -> bool:
        """Whether a stage-3 trial of this space offloads its optimizer to NVMe (ZeRO-Infinity's
        swapper: stages 1/2 take the device as host memory)."""
        return 3 in self.stages and "nvme" in self.offload_optimizer_devices

    @property
    def swaps_parameters_to_nvme(self) -> bool:
        """Whether a stage-3 trial of this space keeps its parameters on NVMe (``offload_param``)."""
        return 3 in self.stages and "nvme" in self.offload_param_devices

    @property
    def swaps_to_nvme(self) -> bool:
        """Whether a stage-3 trial of this space swaps its optimizer or its parameters to NVMe."""
        return self.swaps_optimizer_to_nvme or self.swaps_parameters_to_nvme

    @functools.cached_property
    def optimizer(self) -> OptimizerChoice:
        """The optimizer the config trains with, as the cost model knows it
        (:func:`simtune.optimizers.optimizer_choice`)."""
        return optimizer_choice(self.ds_config)[0]

    @property
    def mp_size(self) -> int:
        return self.autotuning.mp_size

    @property
    def dp_size(self) -> int:
        """Data-parallel degree: world_size / mp_size."""
        return self.world_size // self.autotuning.mp_size

    @property
    def fixed_micro_batch_size(self) -> bool:
        """True when the user's list holds exactly one micro-batch size."""
        return self.micro_batch_sizes is not None and len(self.micro_batch_sizes) == 1

    @property
    def max_micro_batch_size(self) -> int:
        """Largest micro-batch size to try: max_train_micro_batch_size_per_gpu, capped by
        max_train_batch_size / (dp * gas) so that the search, which runs at the user's
        gradient accumulation, stays within the global-batch limit (DeepSpeed caps at
        max_train_batch_size / dp and may exceed the limit when gas > 1)."""
        cap = self.autotuning.max_train_micro_batch_size_per_gpu
        if self.autotuning.max_train_batch_size is not None:
            per_rank = self.autotuning.max_train_batch_size // self.dp_size
            cap = min(cap, per_rank // self.gradient_accumulation_steps)
        if self.micro_batch_sizes is not None:
            cap = min(cap, max(self.micro_batch_sizes))
        return cap

    @property
    def tunes_knobs(self) -> bool:
        """True when ZeRO knob experiments are part of the search (fast is false)."""
        return not self.autotuning.fast

    def knob_space(self, stage: int) -> KnobSpace:
        """(key, values) for each tuned ZeRO knob of a stage, keys sorted."""
        self._check_stage(stage)
        return dict(self.knob_spaces)[stage]

    def knob_grid(self, stage: int, *, prune_dead: bool = False) -> list[tuple[tuple[str, Any], ...]]:
        """Every combination of the stage's tuned knobs, in lexical order: keys sorted, each
        key's values in the order given (the user's list or DeepSpeed's default list), the
        last key varying fastest. With ``prune_dead`` the knobs of :func:`dead_knobs` are left
        out. One empty combination when nothing is tuned."""
        space = self.knob_space(stage)
        if prune_dead:
            dead = dead_knobs(stage)
            space = tuple((k, vs) for k, vs in space if k not in dead)
        keys = [k for k, _ in space]
        return [tuple(zip(keys, combo)) for combo in itertools.product(*(vs for _, vs in space))]

    def knob_values(self, trial: Trial) -> dict[str, Any]:
        """Every tunable knob's value in the trial's experiment: the tuned value, else the
        user's value, else DeepSpeed's default; None where the user wrote "auto"."""
        values = dict(dict(self.fixed_knobs)[trial.stage])
        values.update(trial.zero_knobs)
        return values

    def offload_optimizer_choices(self, stage: int) -> tuple[str, ...]:
        """Optimizer offload devices at a stage: ZeRO offload needs stage >= 1."""
        self._check_stage(stage)
        return self.offload_optimizer_devices if stage >= 1 else ("none",)

    def offload_param_choices(self, stage: int) -> tuple[str, ...]:
        """Parameter offload devices at a stage: only ZeRO-3 offloads parameters."""
        self._check_stage(stage)
        return self.offload_param_devices if stage == 3 else ("none",)

    # ------------------------------------------------------------------ trials
    def trial(
        self,
        stage: int,
        micro_batch_size: int,
        gradient_accumulation_steps: int | None = None,
        zero_knobs: Any = (),
        **additions: Any,
    ) -> Trial:
        """A trial with the user's values for what is not given: gas from the config, offload
        and checkpointing at their first choice (the user's fixed setting when not tuned)."""
        self._check_stage(stage)
        fields: dict[str, Any] = {
            "offload_optimizer": self.offload_optimizer_choices(stage)[0],
            "offload_param": self.offload_param_choices(stage)[0],
            "activation_checkpointing": self.activation_checkpointing_choices[0],
        }
        unknown = set(additions) - set(fields)
        if unknown:
            raise TypeError(f"unknown trial field(s): {sorted(unknown)}")
        fields.update(additions)
        gas = self.gradient_accumulation_steps if gradient_accumulation_steps is None else gradient_accumulation_steps
        return Trial(stage, micro_batch_size, gas, zero_knobs, **fields)

    def variants(self, stage: int, micro_batch_size: int, gradient_accumulation_steps: int | None = None,
                 *, prune_dead: bool = False) -> list[Trial]:
        """Every trial at a fixed stage, mbs and gas: the knob grid x offload devices x
        checkpointing choices, in that nesting order (the first is the knob grid's first)."""
        return [
            self.trial(stage, micro_batch_size, gradient_accumulation_steps, knobs,
                       offload_optimizer=oo, offload_param=op, activation_checkpointing=ac)
            for knobs in self.knob_grid(stage, prune_dead=prune_dead)
            for oo in self.offload_optimizer_choices(stage)
            for op in self.offload_param_choices(stage)
            for ac in self.activation_checkpointing_choices
        ]

    def why_not(self, trial: Trial) -> str | None:
        """None when the trial belongs to this space, else the reason it does not."""
        if trial.stage not in self.stages:
            return f"stage {trial.stage} is not among the tuned stages {list(self.stages)}"
        if self.micro_batch_sizes is not None and trial.micro_batch_size not in self.micro_batch_sizes:
            return f"micro-batch size {trial.micro_batch_size} is not in the list {list(self.micro_batch_sizes)}"
        if trial.micro_batch_size > self.autotuning.max_train_micro_batch_size_per_gpu:
            return (f"micro-batch size {trial.micro_batch_size} exceeds max_train_micro_batch_size_per_gpu "
                    f"{self.autotuning.max_train_micro_batch_size_per_gpu}")
        limit = self.autotuning.max_train_batch_size
        if limit is not None and self.global_batch(trial) > limit:
            return f"global batch {self.global_batch(trial)} exceeds max_train_batch_size {limit}"
        space = dict(self.knob_space(trial.stage))
        for key, value in trial.zero_knobs:
            if key not in space:
                return f"{key} is not tuned at stage {trial.stage}"
            if not _knob_value_ok(key, value):
                return f"{key} cannot be {value!r}"
        if trial.offload_optimizer not in self.offload_optimizer_choices(trial.stage):
            return f"optimizer offload {trial.offload_optimizer!r} is not a choice at stage {trial.stage}"
        if trial.offload_param not in self.offload_param_choices(trial.stage):
            return f"parameter offload {trial.offload_param!r} is not a choice at stage {trial.stage}"
        if trial.activation_checkpointing not in self.activation_checkpointing_choices:
            return f"activation checkpointing {trial.activation_checkpointing} is not a choice"
        return None

    def __contains__(self, trial: object) -> bool:
        return isinstance(trial, Trial) and self.why_not(trial) is None

    # ------------------------------------------------------------------ batch arithmetic
    def global_batch(self, trial: Trial) -> int:
        """train_batch_size = mbs * gas * world_size / mp_size."""
        return trial.micro_batch_size * trial.gradient_accumulation_steps * self.world_size // self.mp_size

    def batch_per_gpu(self, max_mbs: int) -> int:
        """The per-data-parallel-rank batch (mbs * gas) the tuning list holds about constant:
        max_train_batch_size / dp when set, else the largest mbs times the user's gas
        (DeepSpeed's get_tuning_micro_batch_size_list; DeepSpeed also divides the latter by
        mp_size, which shrinks the batch of model-parallel runs and is not done here)."""
        if self.autotuning.max_train_batch_size is not None:
            return max(1, self.autotuning.max_train_batch_size // self.dp_size)
        return max_mbs * self.gradient_accumulation_steps

    def gas_for(self, mbs: int, max_mbs: int | None = None) -> int:
        """Gradient accumulation that holds the global batch about constant across the
        tuning list: batch_per_gpu(max_mbs) // mbs, at least 1 (``max_mbs`` defaults to mbs)."""
        if mbs < 1:
            raise ValueError(f"micro-batch size must be positive, not {mbs}")
        return max(1, self.batch_per_gpu(mbs if max_mbs is None else max_mbs) // mbs)

    def tuning_micro_batch_sizes(self, min_mbs: int, max_mbs: int) -> tuple[int, ...]:
        """The micro-batch sizes taken forward once the stage's largest runnable one is known
        (DeepSpeed's get_tuning_micro_batch_size_list, autotuner.py): start at
        max(min_mbs, max_mbs // 2), step (max - start) // num_tuning_micro_batch_sizes (at
        least 1), keep a size only if its gas differs from that of max_mbs, and end with
        max_mbs. Empty when either bound is not positive."""
        if min_mbs <= 0 or max_mbs <= 0:
            return ()
        per_gpu = self.batch_per_gpu(max_mbs)
        start = max(min_mbs, max_mbs // 2)
        stride = max(1, (max_mbs - start) // self.autotuning.num_tuning_micro_batch_sizes)
        gas_at_max = per_gpu // max_mbs
        sizes = [m for m in range(start, max_mbs, stride) if per_gpu // m != gas_at_max]
        return tuple(sizes + [max_mbs])

    # ------------------------------------------------------------------ the experiment's config
    def render(self, trial: Trial) -> dict[str, Any]:
        """The full DeepSpeed config of the trial's experiment.

        A copy of the user's config with train_micro_batch_size_per_gpu and
        gradient_accumulation_steps set and train_batch_size removed (DeepSpeed derives it as
        mbs * gas * world_size / mp_size; a written one is checked against the world size wherever
        a DeepSpeedConfig is built, and transformers builds one for ZeRO-3 model construction
        (``deepspeed.zero.Init``) before the process group exists on CPU, where the world size
        reads 1: every ZeRO-3 run of a Trainer script would fail DeepSpeed's batch assertion);
        zero_optimization is the user's section with "stage" and the
        tuned knobs set (every other user key kept, lists for knobs not tuned reduced to their
        first value); offload sections written with the trial's device (user sub-keys kept) or
        removed for "none"; the "autotuning" section removed. Activation checkpointing is a
        script flag (arg_mappings), not a config key, and is not written here.
        """
        reason = self.why_not(trial)
        if reason is not None:
            raise ValueError(f"trial {experiment_name(trial)} is not in this tuning space: {reason}")
        config = self.ds_config
        config.pop("autotuning", None)
        config[MBS_KEY] = trial.micro_batch_size
        config[GAS_KEY] = trial.gradient_accumulation_steps
        config.pop(TBS_KEY, None)

        zero = dict(config.get(ZERO_KEY) or {})
        zero["stage"] = trial.stage
        for key, value in zero.items():
            if key in knobs.tunable_keys() and isinstance(value, list):
                zero[key] = _normalised_knob(key, value[0])
        zero.update(trial.zero_knobs)
        for key, device in (("offload_optimizer", trial.offload_optimizer), ("offload_param", trial.offload_param)):
            if device == "none":
                zero.pop(key, None)
            else:
                section = zero.get(key)
                zero[key] = {**(section if isinstance(section, dict) else {}), "device": device}
        config[ZERO_KEY] = zero
        return config

    def name(self, trial: Trial) -> str:
        """The experiment name of a trial, as DeepSpeed's autotuner names it: knobs left out where
        they equal the value the stage runs with anyway (:func:`simtune.naming.experiment_name`)."""
        defaults = self.knob_values(trial.replace(zero_knobs=()))
        return experiment_name(trial, {k: v for k, v in defaults.items() if v is not None})

    def _check_stage(self, stage: int) -> None:
        if stage not in self.stages:
            raise ValueError(f"stage {stage!r} is not among the tuned stages {list(self.stages)}")


# ---------------------------------------------------------------------- readers
def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    )


ZERO_PLUS_PLUS_KEYS = ("zero_quantized_weights", "zero_quantized_nontrainable_weights", "zero_hpz_partition_size",
                      "zero_quantized_gradients")
"""``zero_optimization`` keys that turn on ZeRO++ (DeepSpeed 0.19.8 ``runtime/zero/config.py``; an
hpZ partition size of 1 is off)."""


def _read_stages(raw_zero: Any, zero: Mapping[str, Any]) -> tuple[tuple[int, ...], bool]:
    """(stages, whether a single stage is fixed)."""
    if raw_zero is None or "stage" not in zero:
        return (0,), True
    stage = zero["stage"]
    if isinstance(stage, str) and stage.strip().lower() == "all":
        return STAGES, False
    if isinstance(stage, list):
        if not stage:
            raise ConfigError('zero_optimization.stage is an empty list: give stages from 0 to 3 or "all".')
        for s in stage:
            if not _is_int(s) or int(s) not in STAGES:
                raise ConfigError(f'zero_optimization.stage {s!r} is not a ZeRO stage: use 0, 1, 2, 3 or "all".')
        stages = tuple(sorted({int(s) for s in stage}))
        return stages, len(stages) == 1
    if _is_int(stage) and int(stage) in STAGES:
        return (int(stage),), True
    raise ConfigError(f'zero_optimization.stage {stage!r} is not a ZeRO stage: use 0, 1, 2, 3, a list of them or "all".')


def _script_value(autotuning: AutotuningConfig, key: str, user_args: Sequence[str]) -> str | None:
    """The value the script receives for the flag mapped to ``key`` (the last one wins)."""
    flag = autotuning.arg_flag(key)
    if flag is None:
        return None
    found = None
    for i, arg in enumerate(user_args):
        if arg == flag and i + 1 < len(user_args):
            found = user_args[i + 1]
        elif arg.startswith(flag + "="):
            found = arg[len(flag) + 1:]
    return found


def _script_int(autotuning: AutotuningConfig, key: str, user_args: Sequence[str]) -> int | None:
    text = _script_value(autotuning, key, user_args)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"The script flag {autotuning.arg_flag(key)} mapped to {key} has the value {text!r}, "
            f"not a positive integer."
        )
    return value


def _check_optimizer(ds_config: Mapping[str, Any], stages: tuple[int, ...]) -> None:
    """Refuse an optimizer DeepSpeed refuses at the stages tuned; warn where the cost model predicts
    it as another (:func:`simtune.optimizers.optimizer_choice`)."""
    choice, stand_in = optimizer_choice(ds_config)
    if stand_in is not None:
        warnings.warn(stand_in, ConfigWarning, stacklevel=3)
    zero_stages = [s for s in stages if s >= 1]
    if zero_stages and not choice.spec.zero_tested and ds_config.get("zero_allow_untested_optimizer") is not True:
        kind = ds_config["optimizer"]["type"]
        raise ConfigError(
            f"DeepSpeed refuses optimizer {kind!r} at ZeRO stage {zero_stages[0]} unless the config sets "
            '"zero_allow_untested_optimizer": true; set it, or tune stage 0 only.')


def _read_micro_batch(ds_config: Mapping[str, Any], autotuning: AutotuningConfig,
                      user_args: Sequence[str]) -> tuple[tuple[int, ...] | None, int]:
    """(the user's list or None, the smallest micro-batch size to try)."""
    value = ds_config.get(MBS_KEY, "auto")
    if isinstance(value, str) and value == "auto":
        return None, _script_int(autotuning, MBS_KEY, user_args) or 1
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{MBS_KEY} is an empty list: give at least one micro-batch size.")
        for v in value:
            if not _is_int(v) or v < 1:
                raise ConfigError(f"{MBS_KEY} list holds {v!r}: every micro-batch size must be a positive integer.")
        sizes = tuple(sorted({int(v) for v in value}))
        return sizes, sizes[0]
    if _is_int(value) and value >= 1:
        return None, int(value)
    raise ConfigError(f'{MBS_KEY} {value!r} must be a positive integer, a list of them, or "auto".')


def _read_gas(ds_config: Mapping[str, Any], autotuning: AutotuningConfig, user_args: Sequence[str]) -> int:
    value = ds_config.get(GAS_KEY, "auto")
    if isinstance(value, list):
        raise ConfigError(
            f"{GAS_KEY} is a list, and tuning gradient accumulation from a list is not supported: "
            f'give one integer or "auto".'
        )
    if isinstance(value, str) and value == "auto":
        return _script_int(autotuning, GAS_KEY, user_args) or 1
    if _is_int(value) and value >= 1:
        return int(value)
    raise ConfigError(f'{GAS_KEY} {value!r} must be a positive integer or "auto".')


def _knob_value_ok(key: str, value: Any) -> bool:
    if knobs.is_flag(key):
        return isinstance(value, bool)
    return _is_int(value) and value >= 0


def _normalised_knob(key: str, value: Any) -> Any:
    if not _knob_value_ok(key, value):
        kind = "true or false" if knobs.is_flag(key) else "a non-negative whole number"
        raise ConfigError(f"zero_optimization.{key} value {value!r} must be {kind}.")
    return value if knobs.is_flag(key) else int(value)


def _read_knobs(zero: Mapping[str, Any], stages: tuple[int, ...], stage_fixed: bool, fast: bool
                ) -> tuple[tuple[tuple[int, KnobSpace], ...], tuple[tuple[int, KnobValues], ...]]:
    """(knob_spaces, fixed_knobs) per stage, from DeepSpeed's defaults and the user's values.

    A user's scalar fixes a knob (it is not tuned), whether or not a list could tune it; a user's
    list replaces DeepSpeed's default list: at the one stage when the stage is fixed (if the knob
    means something there), otherwise at every stage whose default space has the knob (stage 3 for
    simtune's stage-3 knobs). In fast mode nothing is tuned and a list runs with its first value.
    """
    user_lists: dict[str, tuple[Any, ...]] = {}
    user_scalars: dict[str, Any] = {}
    tunable = knobs.tunable_keys()
    every = set(knobs.name_order())
    for key, value in zero.items():
        if isinstance(value, list) and key != "stage":
            if key not in tunable:
                raise ConfigError(
                    f"zero_optimization.{key} is a list, but only these ZeRO keys can be tuned from a list: "
                    f"{', '.join(sorted(tunable))}."
                )
            if not value:
                raise ConfigError(f"zero_optimization.{key} is an empty list.")
            user_lists[key] = tuple(dict.fromkeys(_normalised_knob(key, v) for v in value))
        elif key in every:
            user_scalars[key] = None if value == "auto" else _normalised_knob(key, value)

    spaces, fixed, explored = [], [], set()
    for stage in stages:
        dims = {} if fast else dict(knobs.default_space(stage))
        values: dict[str, Any] = knobs.deepspeed_defaults(stage)
        for key, scalar in user_scalars.items():
            dims.pop(key, None)
            values[key] = scalar
        for key, listed in user_lists.items():
            values[key] = listed[0]
            row = knobs.knob(key)
            allowed = row.read_at if stage_fixed else row.lists_apply_at
            if fast or stage not in allowed:
                dims.pop(key, None)
            else:
                dims[key] = listed
                explored.add(key)
        tuned = tuple(sorted((k, vs) for k, vs in dims.items() if len(vs) > 1))
        spaces.append((stage, tuned))
        fixed.append((stage, tuple(sorted(values.items()))))

    ignored = sorted(k for k, vs in user_lists.items() if len(vs) > 1 and k not in explored)
    if ignored:
        why = (
            "fast mode tunes only the ZeRO stage and micro-batch size (set \"fast\": false to tune them)"
            if fast
            else "no tuned stage uses them"
        )
        warnings.warn(
            f"The lists for {', '.join(ignored)} are not explored and their first value is used: {why}.",
            ConfigWarning,
            stacklevel=3,
        )
    return tuple(spaces), tuple(fixed)


def _read_offload(zero: Mapping[str, Any], key: str, tune: bool) -> tuple[str, ...]:
    section = zero.get(key)
    if section is None:
        return ("none", "cpu") if tune else ("none",)
    if not isinstance(section, Mapping):
        raise ConfigError(f"zero_optimization.{key} must be a JSON object such as {{\"device\": \"cpu\"}}.")
    for sub, value in section.items():
        if sub != "device" and isinstance(value, list):
            raise ConfigError(f"zero_optimization.{key}.{sub} is a list; only the offload device can be tuned.")
    device = section.get("device", "none")
    devices = device if isinstance(device, list) else [device]
    if not devices:
        raise ConfigError(f"zero_optimization.{key}.device is an empty list.")
    for d in devices:
        if d not in OFFLOAD_DEVICES:
            raise ConfigError(f"zero_optimization.{key}.device {d!r} is not one of none, cpu, nvme.")
    if isinstance(device, list):
        return tuple(dict.fromkeys(devices))
    if tune:
        return tuple(dict.fromkeys([device, "none", "cpu"]))
    return (device,)


def _require_nvme_path(zero: Mapping[str, Any], sections: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    """At stage 3 an offload to NVMe swaps under the section's ``nvme_path``: without one
    DeepSpeed's engine fails as it starts (stage3.py joins the path), so it is refused here.
    (Stages 1/2 offload to host memory whatever the device, and read no path.)"""
    for key, devices in sections:
        section = zero.get(key)
        if "nvme" in devices and isinstance(section, Mapping) and not section.get("nvme_path"):
            raise ConfigError(f"zero_optimization.{key}.device nvme needs nvme_path: the folder on the NVMe "
                              f"drive that ZeRO-3 swaps to.")


_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}


def _read_checkpointing(autotuning: AutotuningConfig, user_args: Sequence[str]) -> tuple[bool, ...]:
    if autotuning.tune_activation_checkpointing:
        return (False, True)
    text = _script_value(autotuning, ACTIVATION_CHECKPOINTING_KEY, user_args)
    if text is None:
        return (False,)
    if text.strip().lower() in _TRUE:
        return (True,)
    if text.strip().lower() in _FALSE:
        return (False,)
    raise ConfigError(
        f"The script flag {autotuning.arg_flag(ACTIVATION_CHECKPOINTING_KEY)} mapped to activation_checkpointing "
        f"has the value {text!r}, not true or false."
    )
