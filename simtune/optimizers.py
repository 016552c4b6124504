"""What each Adam implementation does in one step, per parameter and per parameter tensor.

Counted from the kernels each one launches over fp32 parameters, gradients and two moments (4
bytes each; AdamW's decoupled decay on, as torch's ``weight_decay`` default of 0.01 has it):

- fused (torch's ``fused=True``, DeepSpeed's FusedAdam; one multi-tensor kernel): reads the
  parameter, gradient and both moments and writes the parameter and both moments, 28 bytes;
- foreach and for-loop (torch/optim/adam.py ``_multi_tensor_adam``, ``_single_tensor_adam``):
  eight elementwise passes, each reading and writing whole tensors: the decay ``param.mul_`` (8),
  ``exp_avg.lerp_(grad)`` (12), ``exp_avg_sq.mul_`` (8) and ``.addcmul_(grad, grad)`` (16), the
  denominator's ``sqrt``, division and ``add_(eps)`` (8 each) and ``param.addcdiv_`` (16): 84
  bytes. The foreach variant launches each pass over many tensors at once; the for-loop one
  launches the eight per tensor, so a model of many small tensors is dispatch-bound there
  (:func:`simtune.model.optimizer_time.loop_dispatch_s`).

Temporaries the step allocates beyond the states (fp32): the for-loop's ``exp_avg_sq.sqrt() /
bias_correction2_sqrt`` makes two the size of the tensor it updates, one tensor at a time (twice
the largest tensor); the foreach one ``_foreach_sqrt`` copy of every element; fused kernels none.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdamKernels:
    """One implementation's step."""

    bytes_per_param: int
    """Bytes read and written per parameter (fp32 states)."""
    kernels_per_tensor: int
    """Kernels launched per parameter tensor (0: multi-tensor kernels, launched per chunk of many)."""
    temporaries_per_element: int
    """fp32 temporaries per element it updates, held together."""
    temporaries_of_largest: int
    """fp32 temporaries the size of the largest tensor it updates (one tensor at a time)."""


FUSED = AdamKernels(bytes_per_param=28, kernels_per_tensor=0, temporaries_per_element=0, temporaries_of_largest=0)

ADAM_KERNELS: dict[str, AdamKernels] = {
    "torch_adamw_for_loop": AdamKernels(84, 8, 0, 2),
    "torch_adamw_foreach": AdamKernels(84, 0, 1, 0),
    "torch_adamw_fused": FUSED,
    "deepspeed_fused_adam": FUSED,
}
"""By the name of a hardware profile's optimizer fit (:class:`simtune.hardware.OptimizerFit`)."""
