"""Optimizer algorithms, and what each implementation does in one step per parameter and tensor.

One table (:data:`ALGORITHMS`) says, per algorithm, the fp32 states it keeps per parameter and
the elementwise passes torch's foreach and for-loop steps run over fp32 parameters, gradients and
states (4 bytes each; a pass reads its tensor operands and writes one tensor):

- AdamW (torch/optim/adam.py ``_single_tensor_adam``, decoupled decay on, as torch's
  ``weight_decay`` default of 0.01 has it; two moments): ``param.mul_`` (8),
  ``exp_avg.lerp_(grad)`` (12), ``exp_avg_sq.mul_`` (8) and ``.addcmul_(grad, grad)`` (16), the
  denominator's ``sqrt``, division and ``add_(eps)`` (8 each) and ``param.addcdiv_`` (16): 84
  bytes. The for-loop allocates the ``sqrt`` and the division anew (two tensors the size of the
  one it updates); the foreach step one ``_foreach_sqrt`` copy of every element.
- Adagrad (torch/optim/adagrad.py ``_single_tensor_adagrad``; one state, the sum of squares):
  ``state_sum.addcmul_(grad, grad)`` (16), ``sqrt`` (8, allocated), ``add_(eps)`` (8),
  ``param.addcdiv_`` (16): 48 bytes. Its foreach step (``_multi_tensor_adagrad``) also scales the
  gradients by the learning rate into a new list (``_foreach_mul``, 8): 56 bytes, two copies of
  every element (the root and the scaled gradients; with coupled decay the scaling reuses the
  decayed copy).
- SGD with momentum (torch/optim/sgd.py ``_single_tensor_sgd``; one state, the buffer):
  ``buf.mul_`` (8), ``.add_(grad)`` (12), ``param.add_(buf)`` (12): 32 bytes. Without momentum
  (no state) ``param.add_(grad)`` alone: 12 bytes.
- Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"; one state): torch has
  none; DeepSpeed runs its FusedLion on the GPU and DeepSpeedCPULion offloaded.

SGD's and Adagrad's ``weight_decay`` adds ``grad = grad.add(param, alpha=wd)`` first: 12 bytes and
a new tensor (:attr:`OptimizerChoice.coupled_decay`).

A fused implementation (one multi-tensor kernel: torch's ``fused=True``, DeepSpeed's FusedAdam and
FusedLion, DeepSpeed's CPU optimizers) reads the parameter, the gradient and each state once and
writes the parameter and each state once, 4 (3 + 2 states) bytes: 28 for Adam, 20 for Lion,
Adagrad and momentum SGD. The foreach implementation launches each pass over many tensors at once;
the for-loop one launches every pass per tensor, so a model of many small tensors is
dispatch-bound there (:func:`simtune.model.optimizer_time.loop_dispatch_s`).

Calibration times AdamW in every implementation, and torch's Adagrad, momentum SGD and SGD in the
one torch runs on the device (the for-loop for CPU tensors, foreach for CUDA ones:
:mod:`simtune.calib.optimizer`, fits named by :func:`fit_name`), and, where their ops are built,
the DeepSpeed CPU kernels that step Adagrad and Lion offloaded (:data:`HOST_KERNEL_FITS`). Where
a profile has no fit for an algorithm (a spec profile, Lion) its step is AdamW's rate times the
ratio of bytes the same implementation moves (:meth:`OptimizerChoice.relative_cost`): right where both are memory-bound,
as on a GPU; on a CPU the root and the division of AdamW's step cost more than their bytes, so the
ratio over-predicts SGD by half (benchmarks/results/optimizer_algorithms.txt), which the measured
fits avoid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from simtune.errors import ConfigError

FP32_BYTES = 4
IMPLEMENTATIONS = ("fused", "foreach", "for_loop")
"""How an implementation launches its step's kernels (module docstring)."""


@dataclass(frozen=True)
class OptimizerKernels:
    """One implementation's step."""

    bytes_per_param: int
    """Bytes read and written per parameter (fp32 states)."""
    kernels_per_tensor: int
    """Kernels launched per parameter tensor (0: multi-tensor kernels, launched per chunk of many)."""
    temporaries_per_element: int
    """fp32 temporaries per element it updates, held together."""
    temporaries_of_largest: int
    """fp32 temporaries the size of the largest tensor it updates (one tensor at a time)."""


@dataclass(frozen=True)
class Algorithm:
    """An optimizer's update rule as its implementations run it (module docstring)."""

    name: str
    states: int
    """fp32 state tensors per parameter (Adam's two moments, momentum SGD's buffer)."""
    passes: tuple[int, ...]
    """Bytes per element of each elementwise pass of torch's for-loop and foreach steps; empty
    where torch has no implementation."""
    loop_temporaries: int
    """Tensors the size of the one it updates that the for-loop step allocates and holds together."""
    foreach_temporaries: int
    """Copies of every element the foreach step allocates."""
    sqrt_of_state: bool
    """Takes the square root of a state that stays exactly 0 where no gradient arrives (torch's CPU
    ``sqrt`` is several times slower on zeros: ``HardwareSpec.zero_state_s_per_param``)."""
    offload_impl: Optional[str]
    """DeepSpeed's CPU implementation under ZeRO-Offload (runtime/engine.py
    ``_configure_basic_optimizer``); None: DeepSpeed steps torch's on host tensors."""
    zero_tested: bool
    """DeepSpeed's ``ZERO_SUPPORTED_OPTIMIZERS`` (runtime/zero/utils.py) holds what it builds; else
    ZeRO stages 1-3 need ``zero_allow_untested_optimizer``."""
    runs_on_cpu: bool = True
    """DeepSpeed's CPU accelerator can build it without offload (FusedLion has no CPU kernel)."""
    foreach_passes: Optional[tuple[int, ...]] = None
    """The foreach step's passes where they differ from the for-loop's."""
    foreach_decay_copies: int = 1
    """Copies of every element the foreach step's coupled decay adds (0 where a later pass would
    have allocated one and reuses the decayed gradient instead)."""
    eager_state: bool = False
    """torch builds its states when the optimizer is constructed (Adagrad's ``sum``, a
    ``full_like`` of each parameter), not at its first step: over the parameters DeepSpeed first
    hands it, which a ZeRO or 16-bit wrapper then replaces
    (:func:`simtune.model.memory_states.optimizer_state_bytes`)."""

    @property
    def fused_bytes(self) -> int:
        return FP32_BYTES * (3 + 2 * self.states)


ALGORITHMS: dict[str, Algorithm] = {
    "adamw": Algorithm("adamw", 2, (8, 12, 8, 16, 8, 8, 8, 16), 2, 1, True, "DeepSpeedCPUAdam", True),
    "adagrad": Algorithm("adagrad", 1, (16, 8, 8, 16), 1, 2, True, "DeepSpeedCPUAdagrad", True,
                         foreach_passes=(16, 8, 8, 8, 16), foreach_decay_copies=0, eager_state=True),
    "sgd_momentum": Algorithm("sgd_momentum", 1, (8, 12, 12), 0, 0, False, None, False),
    "sgd": Algorithm("sgd", 0, (12,), 0, 0, False, None, False),
    "lion": Algorithm("lion", 1, (), 0, 0, False, "DeepSpeedCPULion", True, runs_on_cpu=False),
}
"""By name: every algorithm the cost model knows (module docstring)."""

COUPLED_DECAY_PASS = 12
"""``grad.add(param, alpha=weight_decay)``: reads two tensors, writes a new one."""


@dataclass(frozen=True)
class OptimizerChoice:
    """The optimizer a configuration trains with: an algorithm of :data:`ALGORITHMS`, and whether
    its weight decay is added to the gradient first (torch's SGD and Adagrad with ``weight_decay``;
    AdamW's decoupled decay is one of its passes)."""

    algorithm: str = "adamw"
    coupled_decay: bool = False

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"Unknown optimizer algorithm {self.algorithm!r}; "
                              f"the cost model knows {', '.join(sorted(ALGORITHMS))}.")
        if self.coupled_decay and self.algorithm in ("adamw", "lion"):
            raise ConfigError(f"{self.algorithm} decays its weights decoupled, not through the gradient.")

    @property
    def spec(self) -> Algorithm:
        return ALGORITHMS[self.algorithm]

    @property
    def states(self) -> int:
        return self.spec.states

    def kernels(self, implementation: str) -> OptimizerKernels:
        """What one implementation's step moves, launches and allocates. An algorithm torch has no
        loop for (Lion) is taken as its fused kernel whatever the implementation."""
        spec = self.spec
        if implementation not in IMPLEMENTATIONS:
            raise ConfigError(f"Unknown optimizer implementation {implementation!r}; "
                              f"one of {', '.join(IMPLEMENTATIONS)}.")
        if implementation == "fused" or not spec.passes:
            return OptimizerKernels(spec.fused_bytes, 0, 0, 0)
        decay = (COUPLED_DECAY_PASS,) if self.coupled_decay else ()
        if implementation == "foreach":
            copies = spec.foreach_temporaries + spec.foreach_decay_copies * len(decay)
            return OptimizerKernels(sum(self.passes("foreach")), 0, copies, 0)
        passes = self.passes("for_loop")
        return OptimizerKernels(sum(passes), len(passes), 0, spec.loop_temporaries + len(decay))

    def passes(self, implementation: str) -> tuple[int, ...]:
        """Bytes per element of each pass of torch's foreach or for-loop step, the coupled decay
        first."""
        spec = self.spec
        own = spec.foreach_passes if implementation == "foreach" and spec.foreach_passes else spec.passes
        return ((COUPLED_DECAY_PASS,) if self.coupled_decay else ()) + own

    def relative_cost(self, implementation: str) -> float:
        """Its step's bytes over AdamW's in the same implementation: the factor on a measured
        AdamW rate (module docstring)."""
        return self.kernels(implementation).bytes_per_param / ADAMW.kernels(implementation).bytes_per_param


ADAMW = OptimizerChoice()
"""DeepSpeed's and simtune's default (``simtune.workloads.DEFAULT_OPTIMIZER``)."""

FIT_IMPLEMENTATIONS: dict[str, str] = {
    "torch_adamw_for_loop": "for_loop",
    "torch_adamw_foreach": "foreach",
    "torch_adamw_fused": "fused",
    "deepspeed_fused_adam": "fused",
    "deepspeed_cpu_adam": "fused",
}
"""By the name of a hardware profile's optimizer fit (:class:`simtune.hardware.OptimizerFit`): how
the AdamW it timed launches its step."""

HOST_KERNEL_FITS: dict[str, str] = {"adamw": "deepspeed_cpu_adam", "adagrad": "deepspeed_cpu_adagrad",
                                    "lion": "deepspeed_cpu_lion"}
"""By algorithm: the profile's optimizer fit of the DeepSpeed CPU kernel that steps it offloaded
(:attr:`Algorithm.offload_impl`; one fused loop over the host's cores), which calibration times
where the op is already built."""

ADAM_KERNELS: dict[str, OptimizerKernels] = {
    name: ADAMW.kernels(kind) for name, kind in FIT_IMPLEMENTATIONS.items() if name != HOST_KERNEL_FITS["adamw"]}
"""AdamW's step by device fit name."""


def implementation_of(fit: Optional[str]) -> Optional[str]:
    """How the AdamW of a profile's fit launches its step; None for an unknown or unnamed fit."""
    return FIT_IMPLEMENTATIONS.get(fit or "")


CALIBRATED_ALGORITHMS = ("adagrad", "sgd_momentum", "sgd")
"""The algorithms besides AdamW that calibration times (torch has them; Lion it has not)."""


def fit_name(algorithm: str, implementation: str) -> str:
    """A profile's optimizer fit for torch's step of an algorithm: ``torch_adamw_foreach``,
    ``torch_sgd_momentum_for_loop``."""
    return f"torch_{algorithm}_{implementation}"


def fit_algorithm(name: str) -> Optional[str]:
    """The algorithm a profile's optimizer fit timed: AdamW for the AdamW fits (DeepSpeed's
    included), the algorithm of a DeepSpeed CPU kernel's (:data:`HOST_KERNEL_FITS`), else the one
    :func:`fit_name` names; None for a name it does not make."""
    if name in FIT_IMPLEMENTATIONS or name.startswith("torch_adamw_"):
        return "adamw"
    for algorithm, fit in HOST_KERNEL_FITS.items():
        if name == fit:
            return algorithm
    for algorithm in CALIBRATED_ALGORITHMS:
        for implementation in IMPLEMENTATIONS:
            if name == fit_name(algorithm, implementation):
                return algorithm
    return None


CONFIG_TYPES = {"adam": "adamw", "adamw": "adamw", "adagrad": "adagrad", "sgd": "sgd", "lion": "lion"}
"""DeepSpeed config optimizer types (lower case) the cost model knows, by their algorithm."""
ADAM_LIKE_TYPES = ("lamb", "onebitadam", "zerooneadam", "onebitlamb", "muadam", "muadamw", "adamax",
                   "nadam", "radam")
"""Types with Adam's two states, predicted as AdamW's step (a warning says so)."""


def optimizer_choice(ds_config: Optional[Mapping[str, Any]]) -> tuple[OptimizerChoice, Optional[str]]:
    """The optimizer a DeepSpeed config trains with, and a sentence when it is predicted as
    another: its ``optimizer.type`` (case-insensitive, as DeepSpeed reads it) and ``params``; AdamW
    without an optimizer section. SGD keeps a buffer when its ``momentum`` is above 0; SGD's and
    Adagrad's ``weight_decay`` above 0 is coupled. Types the model does not know are predicted as
    AdamW, and the sentence says so."""
    section = (ds_config or {}).get("optimizer")
    if section is None:
        return ADAMW, None
    if not isinstance(section, Mapping):
        raise ConfigError('The DeepSpeed config\'s "optimizer" must be a JSON object with a "type".')
    kind = section.get("type")
    if not isinstance(kind, str) or not kind:
        raise ConfigError('The DeepSpeed config\'s "optimizer" needs a "type" (for example "AdamW").')
    params = section.get("params")
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise ConfigError('The DeepSpeed config\'s "optimizer.params" must be a JSON object.')
    algorithm = CONFIG_TYPES.get(kind.lower())
    if algorithm is None:
        like = "Adam's two states and step" if kind.lower() in ADAM_LIKE_TYPES else "AdamW's states and step"
        return ADAMW, (f"Optimizer {kind!r} is not in the cost model: it is predicted with {like}; "
                       "only the experiments that run measure it.")
    if algorithm == "sgd" and _positive(params, "momentum", kind):
        algorithm = "sgd_momentum"
    coupled = algorithm in ("sgd", "sgd_momentum", "adagrad") and _positive(params, "weight_decay", kind)
    return OptimizerChoice(algorithm, coupled), None


def _positive(params: Mapping[str, Any], key: str, kind: str) -> bool:
    value = params.get(key, 0)
    if value == "auto":
        return False
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"Optimizer {kind!r} has a {key} of {value!r}; it must be a number.")
    return value > 0


__all__ = ["ADAMW", "ADAM_KERNELS", "ALGORITHMS", "Algorithm", "FIT_IMPLEMENTATIONS", "HOST_KERNEL_FITS",
           "IMPLEMENTATIONS", "OptimizerChoice", "OptimizerKernels", "CALIBRATED_ALGORITHMS", "fit_algorithm",
           "fit_name", "implementation_of", "optimizer_choice"]
