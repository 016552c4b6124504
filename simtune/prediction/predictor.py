"""Predictions for the trials of a tuning space: the cost model with everything that does not
depend on the trial computed once.

    predictor = Predictor.from_parts(space, workload_or_calibration, profile,
                                     world_size=8, precision="bf16")
    predictor.predict(trial)                 # -> simtune.model.Estimate
    predictor.max_micro_batch_size(stage=2)  # largest micro-batch size predicted to fit

Where the forward and backward times come from:

- a :class:`~simtune.calibration.workload.WorkloadCalibration` made on the profile's hardware
  (same profile name, same precision): the measured seconds at the calibrated micro-batch sizes,
  interpolated linearly in the micro-batch size (``ModelSpec.measured_compute``), plus what its
  real engines added per stage (:func:`engine_residuals`); its measured activation peaks and, on
  CPU, the program's and ZeRO runtime's memory (``ModelSpec.measured_memory``);
- otherwise (a bare workload, or a calibration from other hardware): the model's FLOPs divided by
  the profile's achieved FLOP/s, looked up on the profile's compute curve at the FLOPs of ONE
  matmul, the layer's MLP matmul ``2 * mbs * s * h * I / mp`` (the x axis calibration measures;
  see :func:`curve_work_flop`), never at the FLOPs of a whole forward.

A calibration also gives the measured parameter tensors, the counted FLOPs and the measured
activation bytes per layer, whatever the hardware.

``residual(trial) -> factor`` (optional) multiplies the predicted step time; the search fits it
to measured runs (xgboost on the residuals). The breakdown terms stay the model's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, Union, runtime_checkable

from simtune.errors import ConfigError, InputError, SimtuneError
from simtune.hardware.profile import HardwareProfile
from simtune.model import compute_time
from simtune.knobs import deepspeed_defaults, modelled_keys
from simtune.prediction.engine_costs import labelled_config
from simtune.prediction.largest_fit import MAX_MICRO_BATCH_SIZE, largest_that_fits
from simtune.model.adapters import hardware_spec, model_spec, structure_of, train_config
from simtune.model.estimate import Estimate, estimate, metrics
from simtune.model.inputs import PRECISIONS, HardwareSpec, ModelSpec, TrainConfig, check_checkpointing_policy
from simtune.model.memory import estimate_memory
from simtune.model.nvme_swap import parameter_buffer_problem, swap_buffers_short, swap_buffers_why
from simtune.nvme_settings import NvmeSwapSettings
from simtune.optimizers import ADAMW, OptimizerChoice
from simtune.precision import autocast_label, autocast_parts, precision_of
from simtune.space import Trial, TuningSpace
from simtune.workloads.presets import Workload, load_workload, workload_from_config

Residual = Callable[[Trial], float]
"""A correction of the predicted step time: the factor measured / predicted for a trial."""

StageOverheads = tuple[tuple[int, int, float, float, float, float], ...]
"""(stage, mbs, forward, backward, step, loop) seconds the real engines added."""
ReduceCallOverheads = tuple[tuple[int, int, float], ...]
"""(stage, mbs, seconds per reduction call)."""
StageResiduals = tuple[tuple[int, int, int], ...]
"""(stage, mbs, bytes) the real engines held beyond the model's memory."""


class Timing(Protocol):
    @property
    def median_s(self) -> float: ...


class EngineRun(Protocol):
    """What the Predictor reads of one measured DeepSpeed engine
    (:class:`~simtune.calibration.workload.EngineMeasurement`)."""

    @property
    def stage(self) -> int: ...
    @property
    def world_size(self) -> int: ...
    @property
    def micro_batch_size(self) -> int: ...
    @property
    def reduce_bucket_size(self) -> Optional[int]: ...
    @property
    def forward(self) -> Timing: ...
    @property
    def backward(self) -> Timing: ...
    @property
    def step(self) -> Timing: ...
    @property
    def loop(self) -> Timing: ...
    @property
    def module_forward(self) -> Timing: ...
    @property
    def module_backward(self) -> Timing: ...
    @property
    def peak_bytes(self) -> int: ...


@runtime_checkable
class Calibration(Protocol):
    """What the Predictor reads of a workload calibration
    (:class:`~simtune.calibration.workload.WorkloadCalibration`)."""

    @property
    def name(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def seq_len(self) -> int: ...
    @property
    def profile_name(self) -> str: ...
    @property
    def engines(self) -> Sequence[EngineRun]: ...
    @property
    def script_overhead(self) -> Optional[Timing]: ...
    @property
    def hf_config(self) -> Optional[Mapping[str, Any]]: ...

    def matches(self, profile_name: str, precision: str) -> bool: ...

    def script_stage_overheads(self) -> StageOverheads: ...

    def model_spec(self, with_measured_compute: bool = True, stage_overheads: StageOverheads = (),
                   process_overheads: bool = False, stage_residuals: StageResiduals = (),
                   reduce_call_overheads: ReduceCallOverheads = ()) -> ModelSpec: ...


def default_precision(profile: HardwareProfile) -> str:
    """The precision to assume without a config: bf16 where the profile has a bf16 curve, else
    fp16, else fp32 (CPU profiles usually measure fp32 only)."""
    for name in ("bf16", "fp16"):
        if name in profile.compute.curves and profile.device.kind == "cuda":
            return name
    return "fp32"


def curve_work_flop(model: ModelSpec, micro_batch_size: int, mp_degree: int = 1) -> float:
    """The work size at which the compute curve is read: the FLOPs of one MLP matmul of a layer
    at this micro-batch size (``2 * mbs * s * h * I / mp``), the unit calibration measures
    (``[tokens, h] x [h, 4h]``). The FLOPs of a whole forward micro-batch are
    ``flops_per_sample_forward * mbs``, about ``6 L`` times larger for GPT-2, and would read the
    curve far to the right of where the hardware actually runs."""
    return compute_time.matmul_work_flop(model, TrainConfig(stage=0, micro_batch_size=micro_batch_size,
                                                            mp_degree=mp_degree))


class Predictor:
    """The cost model bound to one workload, one hardware profile and one process layout."""

    def __init__(self, model: ModelSpec, hardware: HardwareSpec, *, dp_degree: int, mp_degree: int = 1,
                 precision: str, space: Optional[TuningSpace] = None, profile: Optional[HardwareProfile] = None,
                 calibration: Optional[Calibration] = None, measured_compute_used: bool = False,
                 residual: Optional[Residual] = None, checkpointing_policy: str = "full",
                 autocast: bool = False, deepspeed_autocast: bool = False,
                 communication_precision: Optional[str] = None, gradient_clipping: Optional[bool] = None,
                 pin_memory: Optional[bool] = None, optimizer: Optional[OptimizerChoice] = None,
                 nvme_swap: Optional[NvmeSwapSettings] = None) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"Precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
        self.model = model
        self.hardware = hardware
        self.dp_degree = dp_degree
        self.mp_degree = mp_degree
        self.precision = precision
        self.space = space
        self.profile = profile
        self.calibration = calibration
        self.measured_compute_used = measured_compute_used
        """True when forward/backward times come from the workload calibration on this hardware."""
        self.residual = residual
        self.checkpointing_policy = checkpointing_policy
        """What activation checkpointing keeps (:mod:`simtune.model.checkpointing`): ``full`` for
        DeepSpeed's and Hugging Face's; torchtitan's selective policies for capacity planning."""
        check_checkpointing_policy(checkpointing_policy)  # refuse a bad name now, not at the first trial
        if autocast and precision == "fp32":
            raise ConfigError("Autocast needs a 16-bit precision (fp16 or bf16), got fp32.")
        if deepspeed_autocast and not autocast:
            raise ConfigError("DeepSpeed's autocast is autocast: set autocast too.")
        self.autocast = autocast
        """torch autocast around an fp32 model (``TrainConfig.autocast``): for capacity planning of
        training run outside DeepSpeed's precision modes (the Hugging Face Trainer's fp16)."""
        self.deepspeed_autocast = deepspeed_autocast
        """With ``autocast``: DeepSpeed's own (``TrainConfig.deepspeed_autocast``)."""
        hardware.compute.for_precision(precision)  # fail now, not at the first trial
        self._given_optimizer = optimizer
        self._read_space(space)
        if communication_precision is not None:
            if communication_precision not in PRECISIONS:
                raise ConfigError(f"The communication precision must be one of {', '.join(PRECISIONS)}, "
                                  f"not {communication_precision!r}.")
            self.communication_precision: Optional[str] = communication_precision
        if gradient_clipping is not None:
            self.gradient_clipping = gradient_clipping
        if pin_memory is not None:
            self.offload_pinned = (pin_memory, pin_memory)
        if nvme_swap is not None:
            self.nvme_swap = nvme_swap

    def _read_space(self, space: Optional[TuningSpace]) -> None:
        """What the trials take from the space's config besides their own values (without a space,
        DeepSpeed's defaults)."""
        self._knobs = _stage_knobs(space)
        self.optimizer = self._given_optimizer or (space.optimizer if space is not None else ADAMW)
        """The algorithm trials train with (``TrainConfig.optimizer``): the constructor's, else the
        space's config's, else AdamW."""
        self.fused_adam = runs_fused_adam(space, self.hardware, self.optimizer)
        """Whether DeepSpeed runs its FusedAdam (``TrainConfig.fused_adam``)."""
        self.communication_precision = space.communication_precision if space is not None else None
        """The precision gradients are reduced in (``TrainConfig.communication_precision``): the
        space's ``communication_data_type``, unless the constructor was given one."""
        self.gradient_clipping = space.gradient_clipping if space is not None else False
        """The space's config clips gradients (``TrainConfig.gradient_clipping``)."""
        self.offload_pinned = ((space.offload_optimizer_pinned, space.offload_param_pinned) if space is not None
                               else (True, True))
        """The ``pin_memory`` of the space's offload sections, the optimizer's and the parameters'
        (``TrainConfig.offload_optimizer_pinned``, ``offload_param_pinned``)."""
        self.nvme_swap = space.nvme_swap if space is not None else NvmeSwapSettings()
        """The space's offload sections' NVMe swap settings (``TrainConfig.nvme``)."""
        if space is not None:
            check_swap_buffers(space, self.model, dp_degree=self.dp_degree, mp_degree=self.mp_degree,
                               precision="fp32" if self.deepspeed_autocast else self.precision)

    @property
    def precision_label(self) -> str:
        """The precision as measurements are keyed by it (``"bf16+autocast"`` under DeepSpeed's
        torch_autocast: :mod:`simtune.precision`)."""
        return autocast_label(self.precision, self.deepspeed_autocast)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_parts(cls, space: Optional[TuningSpace], workload_or_calibration: Union[Workload, Calibration],
                   profile: Union[HardwareProfile, str], *, world_size: int, precision: str,
                   residual: Optional[Residual] = None, nodes: Optional[int] = None,
                   optimizer_impl: Optional[str] = None, checkpointing_policy: str = "full",
                   autocast: bool = False, deepspeed_autocast: bool = False,
                   communication_precision: Optional[str] = None,
                   gradient_clipping: Optional[bool] = None, pin_memory: Optional[bool] = None,
                   optimizer: Optional[OptimizerChoice] = None,
                   nvme_swap: Optional[NvmeSwapSettings] = None) -> "Predictor":
        """A predictor for ``world_size`` ranks (``nodes`` nodes; default: as many nodes of the
        profile's size as the ranks need).

        ``workload_or_calibration`` is a :class:`~simtune.workloads.Workload` (closed-form counts,
        FLOPs through the profile's curve) or a
        :class:`~simtune.calibration.workload.WorkloadCalibration` (measured counts; measured
        times when it was made on this profile's hardware in this precision). ``profile`` is a
        :class:`~simtune.hardware.HardwareProfile` or a profile name or path. ``optimizer_impl``
        names the profile's optimizer fit to use (default: :func:`default_optimizer_impl`).
        ``checkpointing_policy``: what a trial's activation checkpointing keeps (default ``full``,
        DeepSpeed's; :mod:`simtune.model.checkpointing`). ``autocast``: torch autocast around an
        fp32 model (``TrainConfig.autocast``); ``deepspeed_autocast``: DeepSpeed's own;
        ``communication_precision``: the precision gradients are reduced in where the space's
        config sets none (DeepSpeed's ``communication_data_type``; for capacity planning, another
        framework's, such as FSDP's ``reduce_dtype``); ``gradient_clipping``: whether the loop clips
        gradients (default: whether the space's config does; for capacity planning, a loop outside
        DeepSpeed: the Hugging Face Trainer clips by default); ``pin_memory``: whether offload's host
        buffers are page-locked (default: each offload section's ``pin_memory`` in the space's
        config, else DeepSpeed's default, true); ``optimizer``: the algorithm trained with (default:
        the space's config's, else AdamW; :mod:`simtune.optimizers`); ``nvme_swap``: the offload
        sections' NVMe swap settings (default: the space's config's, else DeepSpeed's defaults)."""
        if isinstance(profile, str):
            from simtune.hardware.registry import load_profile

            profile = load_profile(profile)
        precision, labelled = autocast_parts(precision)  # "bf16+autocast": DeepSpeed's torch_autocast
        autocast, deepspeed_autocast = autocast or labelled, deepspeed_autocast or labelled
        label = autocast_label(precision, deepspeed_autocast)
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise InputError(f"The number of processes must be a positive integer, not {world_size!r}.")
        mp = space.mp_size if space is not None else 1
        if world_size % mp:
            raise ConfigError(f"World size {world_size} is not a multiple of mp_size {mp}.")
        if optimizer_impl is None:
            optimizer_impl = default_optimizer_impl(profile, space.ds_config if space is not None else None,
                                                    optimizer or (space.optimizer if space is not None else ADAMW))
        hardware = layout_hardware(hardware_spec(profile, optimizer_impl), world_size, nodes)
        calibration: Optional[Calibration] = None
        measured = False
        if isinstance(workload_or_calibration, Workload):
            model = model_spec(workload_or_calibration)
        elif isinstance(workload_or_calibration, Calibration):
            calibration = workload_or_calibration
            measured = calibration.matches(profile.name, label)
            cpu = profile.device.kind == "cpu"
            script_rows = calibration.script_stage_overheads() if measured and not calibration.engines else ()
            structure = structure_of_calibration(calibration)
            model = dataclasses.replace(calibration.model_spec(
                with_measured_compute=measured, process_overheads=cpu, stage_overheads=script_rows), **structure)
            if measured and calibration.engines:
                overheads, calls, residuals = engine_residuals(calibration, model, hardware, label)
                script_s = calibration.script_overhead.median_s if calibration.script_overhead is not None else 0.0
                overheads = tuple(row[:5] + (row[5] + max(0.0, script_s),) for row in overheads)
                model = dataclasses.replace(calibration.model_spec(
                    with_measured_compute=True, stage_overheads=overheads, process_overheads=cpu,
                    stage_residuals=residuals, reduce_call_overheads=calls), **structure)
        else:
            raise TypeError("workload_or_calibration must be a Workload or a WorkloadCalibration, "
                            f"not {type(workload_or_calibration).__name__}")
        return cls(model, hardware, dp_degree=world_size // mp, mp_degree=mp, precision=precision,
                   space=space, profile=profile, calibration=calibration, measured_compute_used=measured,
                   residual=residual, checkpointing_policy=checkpointing_policy, autocast=autocast,
                   deepspeed_autocast=deepspeed_autocast, communication_precision=communication_precision,
                   gradient_clipping=gradient_clipping, pin_memory=pin_memory, optimizer=optimizer,
                   nvme_swap=nvme_swap)

    def with_residual(self, residual: Optional[Residual]) -> "Predictor":
        """The same predictor with another step-time correction (None removes it)."""
        copy = self._copy()
        copy.residual = residual
        return copy

    def with_model(self, model: ModelSpec) -> "Predictor":
        """The same predictor for another model spec (everything else kept)."""
        copy = self._copy()
        copy.model = model
        return copy

    def optimizer_note(self) -> Optional[str]:
        """How the trials' optimizer is modelled, in words, when it is not AdamW: its fp32 states
        and where its step's rate comes from (docs/cost-model.md 3.4); None for AdamW."""
        choice = self.optimizer
        if choice.algorithm == "adamw":
            return None
        states = f"{choice.states} fp32 state{'s' if choice.states != 1 else ''} per parameter"
        fit = self.hardware.optimizer_impl or "the device's"
        if self.optimizer_step_measured():
            how = f"its step at the rate calibration measured for it beside {fit}"
        else:
            how = f"its step at {fit}'s AdamW rate scaled to its bytes (not measured here)"
        return f"{choice.algorithm}{' with coupled weight decay' if choice.coupled_decay else ''} ({states}); {how}"

    def optimizer_step_measured(self, offloaded: bool = False) -> bool:
        """Whether the trials' optimizer steps at a rate calibration measured for it: AdamW's
        fits, or another algorithm's fit beside the device's, or offloaded its DeepSpeed CPU
        kernel's; else AdamW's rate scaled to its bytes (docs/cost-model.md 3.4)."""
        algorithm = self.optimizer.algorithm
        return algorithm == "adamw" or self.hardware.algorithm_rate(algorithm, host=offloaded) is not None

    def with_hardware(self, hardware: HardwareSpec) -> "Predictor":
        """The same predictor on other hardware numbers (everything else kept)."""
        copy = self._copy()
        copy.hardware = hardware
        return copy

    def for_space(self, space: Optional[TuningSpace]) -> "Predictor":
        """The same model, hardware and layout for another space: the knobs a trial leaves out
        come from that space's fixed values (None: DeepSpeed's defaults)."""
        if space is not None and space.mp_size != self.mp_degree:
            raise ConfigError(f"The space's mp_size {space.mp_size} is not this predictor's {self.mp_degree}.")
        copy = self._copy()
        copy.space = space
        copy._read_space(space)
        return copy

    def _copy(self) -> "Predictor":
        copy = Predictor.__new__(Predictor)
        copy.__dict__.update(self.__dict__)
        return copy

    # ------------------------------------------------------------------ predicting
    def config(self, trial: Trial) -> TrainConfig:
        """The cost model's configuration of a trial: the trial's knobs over the space's fixed
        values over DeepSpeed's defaults."""
        knobs = self._knobs[trial.stage]
        if trial.zero_knobs:
            knobs = {**knobs, **{k: v for k, v in trial.zero_knobs if k in modelled_keys()}}
        return train_config(trial, dp_degree=self.dp_degree, precision=self.precision,
                            mp_degree=self.mp_degree, knobs=knobs, checkpointing_policy=self.checkpointing_policy,
                            autocast=self.autocast, deepspeed_autocast=self.deepspeed_autocast,
                            fused_adam=self.fused_adam, communication_precision=self.communication_precision,
                            gradient_clipping=self.gradient_clipping, offload_pinned=self.offload_pinned,
                            optimizer=self.optimizer, nvme_swap=self.nvme_swap)

    def predict(self, trial: Trial) -> Estimate:
        """Memory, time and metrics of one trial (the residual correction applied to the step)."""
        config = self.config(trial)
        result = estimate(self.model, self.hardware, config)
        if self.residual is None:
            return result
        factor = float(self.residual(trial))
        if not (factor > 0.0 and math.isfinite(factor)):
            return result
        time = dataclasses.replace(result.time, step_s=result.time.step_s * factor)
        return dataclasses.replace(result, time=time, metrics=metrics(self.model, config, time.step_s))

    def fits(self, trial: Trial) -> bool:
        """True when the trial is predicted to fit in memory (``Estimate.feasible``, from the
        memory terms alone: cheaper than :meth:`predict`)."""
        return estimate_memory(self.model, self.hardware, self.config(trial)).feasible

    def max_micro_batch_size(self, stage: int, *, gradient_accumulation_steps: int = 1,
                             zero_knobs: Any = (), offload_optimizer: str = "none", offload_param: str = "none",
                             activation_checkpointing: bool = False, limit: Optional[int] = None) -> int:
        """The largest micro-batch size predicted to fit in memory at this stage and these
        settings, at most ``limit`` (default: the space's largest, else 4096); 0 when even one
        sample does not fit. Memory grows with the micro-batch size, so a bisection finds it."""
        if limit is None:
            limit = self.space.max_micro_batch_size if self.space is not None else MAX_MICRO_BATCH_SIZE
        base = Trial(stage=stage, micro_batch_size=1, gradient_accumulation_steps=gradient_accumulation_steps,
                     zero_knobs=zero_knobs, offload_optimizer=offload_optimizer, offload_param=offload_param,
                     activation_checkpointing=activation_checkpointing)

        def fits(mbs: int) -> bool:
            return self.fits(base.replace(micro_batch_size=mbs))

        return largest_that_fits(fits, 1, limit) or 0


def asks_for_torch_adam(ds_config: Optional[Mapping[str, Any]]) -> bool:
    """Whether a DeepSpeed config's optimizer sets ``torch_adam`` (torch's AdamW in place of
    DeepSpeed's own Adam)."""
    return bool((((ds_config or {}).get("optimizer") or {}).get("params") or {}).get("torch_adam"))


def runs_fused_adam(space: Optional[TuningSpace], hardware: HardwareSpec,
                    optimizer: OptimizerChoice = ADAMW) -> bool:
    """Whether DeepSpeed's engine runs its own Adam (``TrainConfig.fused_adam``) for the space's
    config (without a space, DeepSpeed's defaults: what the calibration's engines run): not with
    ``torch_adam``, and not on CPU (DeepSpeed's CPU accelerator cannot build it; simtune's training
    program and calibration set ``torch_adam`` there). Only an asynchronous device
    (``HardwareSpec.overlap_capable``: CUDA) runs it, and only for Adam and AdamW (``optimizer``,
    the trials' algorithm)."""
    if optimizer.algorithm != "adamw":
        return False
    return hardware.overlap_capable and not asks_for_torch_adam(space.ds_config if space is not None else None)


def check_swap_buffers(space: TuningSpace, model: ModelSpec, *, dp_degree: int, mp_degree: int = 1,
                       precision: str = "fp32") -> None:
    """Refuse a space whose stage-3 trials swap to NVMe with swap buffers DeepSpeed's swappers
    cannot run with for this model (:func:`swap_buffers_problem`), before anything is launched.
    ``precision``: the dtype the model's parameters are kept in."""
    if not space.swaps_to_nvme:
        return
    trial = Trial(stage=3, micro_batch_size=1,
                  offload_optimizer="nvme" if space.swaps_optimizer_to_nvme else "cpu",
                  offload_param="nvme" if space.swaps_parameters_to_nvme else "none")
    config = train_config(trial, dp_degree=dp_degree, mp_degree=mp_degree, precision=precision,
                          knobs=_stage_knobs(space)[3], optimizer=space.optimizer, nvme_swap=space.nvme_swap)
    problem = swap_buffers_problem(model, config)
    if problem is not None:
        raise ConfigError(problem)


def swap_buffers_problem(model: ModelSpec, config: TrainConfig) -> Optional[str]:
    """The sentence that says why DeepSpeed's NVMe swappers stop with this configuration's swap
    buffers and what to set, naming the config's keys, or None: too few optimizer buffers
    (:func:`simtune.model.nvme_swap.swap_buffers_short`), or parameter buffers it cannot run with
    (:func:`~simtune.model.nvme_swap.parameter_buffer_problem`)."""
    short = swap_buffers_short(model, config)
    if short is not None:
        have, needed = short
        return (f"zero_optimization.offload_optimizer.buffer_count {have} is too few at stage 3: DeepSpeed's "
                f"swapper holds {needed} fp32 swap buffers at once here ({swap_buffers_why(model, config)}) "
                f"and stops in the first step, so set it to at least {needed}.")
    problem = parameter_buffer_problem(model, config)
    if problem is not None:
        key, value, why = problem
        return f"zero_optimization.offload_param.{key} {value:,} {why}."
    return None


def _stage_knobs(space: Optional[TuningSpace]) -> dict[int, dict[str, Any]]:
    """Per stage, the modelled knobs a trial runs with when it does not set them: the space's
    fixed values over DeepSpeed's defaults."""
    knobs: dict[int, dict[str, Any]] = {}
    for stage in range(4):
        defaults: dict[str, Any] = deepspeed_defaults(stage)
        if space is not None and stage in space.stages:
            defaults.update({k: v for k, v in dict(space.fixed_knobs)[stage] if v is not None})
        knobs[stage] = {k: v for k, v in defaults.items() if k in modelled_keys()}
    return knobs


def default_optimizer_impl(profile: HardwareProfile, ds_config: Optional[Mapping[str, Any]] = None,
                           optimizer: OptimizerChoice = ADAMW) -> Optional[str]:
    """The profile's AdamW fit whose implementation DeepSpeed will step the config's optimizer with
    (another algorithm's step is that fit's rate times its relative cost:
    :mod:`simtune.optimizers`): FusedLion's fused kernel for Lion; torch's for-loop on CPU (the
    CPU accelerator cannot run DeepSpeed's fused Adam; torch picks its for-loop implementation for
    CPU tensors); torch's foreach on CUDA with ``torch_adam`` and for the algorithms DeepSpeed
    builds from torch (SGD, Adagrad), else DeepSpeed's fused Adam; None (the fastest fit on the
    device) when the profile lacks the one named. ``optimizer``: the trials' algorithm (the
    space's, :attr:`simtune.space.TuningSpace.optimizer`, unless the caller names one)."""
    fits = profile.optimizer.fits
    algorithm = optimizer.algorithm
    if algorithm == "lion":
        wanted: tuple[str, ...] = ("deepspeed_fused_adam", "torch_adamw_fused")
    elif profile.device.kind == "cpu":
        wanted = ("torch_adamw_for_loop", "torch_adamw_foreach")
    elif asks_for_torch_adam(ds_config) or algorithm != "adamw":
        wanted = ("torch_adamw_foreach", "torch_adamw_fused")
    else:
        wanted = ("deepspeed_fused_adam", "torch_adamw_fused")
    for name in wanted:
        if name in fits and fits[name].device == profile.device.kind:
            return name
    return None


def engine_residuals(calibration: Calibration, model: ModelSpec, hardware: HardwareSpec, precision: str
                     ) -> tuple[StageOverheads, ReduceCallOverheads, StageResiduals]:
    """What the real engines of the calibration spent beyond the cost model's terms, per stage and
    micro-batch size: (stage, mbs, forward, backward, step, loop) seconds, (stage, mbs, seconds per
    reduction call) and (stage, mbs, bytes). For an engine with DeepSpeed's default knobs:

        forward  = engine forward  - bare model forward  (paired)  - model's forward communication
        backward = engine backward - bare model backward (paired)  - model's backward communication
        step     = engine step     - model's step phase (optimizer, gathers after it)
        loop     = the loop around the calls (making the batch)
        memory   = engine peak     - model's total less what the process held before the engine
                                     (the fixed and runtime overheads)

    and from the engine with small buckets at the same stage and size (``n`` reduction calls per
    backward instead of ``n0``), the cost of one more call and the backward without its calls:

        per call = (backward_small - backward) / (n - n0)      (at least 0)
        backward = backward - per call * n0

    each for the engine's own configuration, with ``model`` holding the measured compute but no
    residuals yet."""
    times: list[tuple[int, int, float, float, float, float]] = []
    calls: list[tuple[int, int, float]] = []
    memory: list[tuple[int, int, int]] = []
    small = {(e.stage, e.micro_batch_size): e for e in calibration.engines if e.reduce_bucket_size is not None}

    def backward_residual(e: EngineRun) -> tuple[float, Estimate]:
        config = labelled_config(e.stage, e.micro_batch_size, precision, dp_degree=e.world_size,
                                 fused_adam=runs_fused_adam(None, hardware))
        if e.reduce_bucket_size is not None:
            config = dataclasses.replace(config, reduce_bucket_size=e.reduce_bucket_size)
        predicted = estimate(model, layout_hardware(hardware, e.world_size), config)
        t = predicted.time
        return e.backward.median_s - e.module_backward.median_s - (t.backward_phase_s - t.backward_s - t.recompute_s), \
            predicted

    for e in calibration.engines:
        if e.reduce_bucket_size is not None:
            continue
        backward, predicted = backward_residual(e)
        t, m = predicted.time, predicted.memory
        per_call = 0.0
        partner = small.get((e.stage, e.micro_batch_size))
        if partner is not None and partner.reduce_bucket_size is not None and e.world_size > 1:
            n0 = model.layout.bucket_count(500_000_000)
            n = model.layout.bucket_count(partner.reduce_bucket_size)
            if n > n0:
                per_call = max(0.0, (backward_residual(partner)[0] - backward) / (n - n0))
                backward -= per_call * n0
            calls.append((e.stage, e.micro_batch_size, per_call))
        times.append((e.stage, e.micro_batch_size, e.forward.median_s - e.module_forward.median_s
                      - (t.forward_phase_s - t.forward_s), backward, e.step.median_s - t.step_phase_s, e.loop.median_s))
        held_before = m.fixed_overhead_bytes + m.runtime_overhead_bytes
        memory.append((e.stage, e.micro_batch_size, e.peak_bytes - (m.total_bytes - held_before)))
    return tuple(times), tuple(calls), tuple(memory)


def structure_of_calibration(calibration: Calibration) -> dict[str, Any]:
    """How the layers a calibration counted are built (:func:`~simtune.model.adapters.structure_of`),
    read from the workload a model-mode calibration measured (a preset or config) or from the
    Hugging Face config a script's model carried; nothing for a script's model without one or a
    workload that no longer loads."""
    try:
        if calibration.mode == "model":
            return structure_of(load_workload(calibration.name, seq_len=calibration.seq_len))
        if calibration.hf_config:
            return structure_of(workload_from_config(calibration.name, dict(calibration.hf_config),
                                                     calibration.seq_len))
    except SimtuneError:
        pass
    return {}


def layout_hardware(hardware: HardwareSpec, world_size: int, nodes: Optional[int] = None) -> HardwareSpec:
    """The profile's hardware laid out for ``world_size`` ranks: ranks per node stay the
    profile's (or world_size / nodes when nodes are given), nodes as many as needed; on CPU a rank
    gets the node's cores shared by that many ranks (:meth:`HardwareSpec.with_ranks_per_node`)."""
    if nodes is not None:
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise InputError(f"The number of nodes must be a positive integer, not {nodes!r}.")
        if world_size % nodes:
            raise InputError(f"{world_size} processes cannot be spread evenly over {nodes} nodes.")
        per_node = world_size // nodes
    else:
        per_node = min(world_size, hardware.ranks_per_node)
        nodes = -(-world_size // per_node)
    return hardware.with_ranks_per_node(per_node, nodes)


__all__ = ["Calibration", "EngineRun", "Predictor", "Residual", "curve_work_flop", "default_optimizer_impl",
           "default_precision", "engine_residuals", "layout_hardware", "precision_of"]
