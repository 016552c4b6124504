"""Peak device memory per rank: every term on its own, and their combination.

    total = parameters + gradients + master weights + optimizer states     (model states)
          + gathered parameters + held buckets                              (held through the step)
          + max(backward phase, step transient)
          + fixed overhead + runtime overhead (measured: on CPU the program's code and ZeRO's
            runtime; the real engines' residual)
    backward phase = activations + logits + communication scratch + buckets freed after it
                     + gradients freed inside the step (stages 1/2: they leave the model states)
    step transient = fp32 gradients the step builds + the optimizer implementation's temporaries
                     (stages 1/2: at least the cast of their gradient partition to fp32)
    feasible = total <= min(usable memory + fixed overhead, device memory)   (the memory limit)

Activations, logits and a reduction's scratch copy live during forward/backward; the optimizer
step's fp32 gradients and its implementation's temporaries appear after them, so the two phases
share one slot (max). Stage 3 holds its gradient bucket throughout; stages 1/2 free theirs at
the end of each backward (:func:`~simtune.model.memory_buffers.buckets_held_through_step`), and
free their gradients inside the step before the optimizer runs
(:func:`~simtune.model.memory_buffers.gradients_held_through_step`).
Gradients are counted whole beside the activations, which over-counts stages 0/1 (their
gradients grow while activations are freed): the total is an upper bound on the peak.

With a measured activation peak (``ModelSpec.measured_memory``) the activations term is that
peak, logits and loss included (the logits term is then 0). Where memory is the process's
resident set (``HardwareSpec.resident_on_touch``, CPU), buckets count only what gradients fill,
and the program's and ZeRO runtime's measured memory is added. With a workload calibration the
residual of real engines (their measured peak less these terms) is added too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from simtune.model import memory_activations as act
from simtune.model import memory_buffers as buf
from simtune.model import memory_states as st
from simtune.model.inputs import HardwareSpec, ModelSpec, TrainConfig
from simtune.model.shards import Shards, shards


@dataclass(frozen=True)
class MemoryEstimate:
    parameters_bytes: int
    gradients_bytes: int
    master_weights_bytes: int
    optimizer_states_bytes: int
    gradient_buckets_bytes: int
    gathered_parameters_bytes: int
    comm_scratch_bytes: int
    activations_bytes: int
    logits_bytes: int
    """What the loss adds to the backward's peak (under checkpointing, beyond the rebuilt layer)."""
    step_transient_bytes: int
    fixed_overhead_bytes: int
    runtime_overhead_bytes: int
    total_bytes: int
    limit_bytes: int
    """What the total must stay under: the profile's usable memory plus its fixed overhead (at most
    the device memory), the device memory the profile lets training use; the device memory itself
    unless the profile sets its usable memory lower for headroom. The total counts the fixed
    overhead itself, so comparing it with the usable memory alone would count that overhead twice."""
    host_bytes: int
    """Offloaded states per rank in host memory."""
    feasible: bool
    """total is at most limit_bytes, and offloaded states fit in host memory when known."""

    buckets_held_through_step: bool = True
    """Whether the gradient buckets stay allocated through the optimizer step (stage 3) or are
    freed after each backward (stages 1/2), where they share the backward's slot."""
    gradients_held_through_step: bool = True
    """Whether the gradients stay allocated through the optimizer step (stages 0 and 3) or are
    freed inside it before the optimizer runs (stages 1/2), where they share the backward's slot."""

    @property
    def model_states_bytes(self) -> int:
        return (self.parameters_bytes + self.gradients_bytes + self.master_weights_bytes
                + self.optimizer_states_bytes)

    @property
    def backward_phase_bytes(self) -> int:
        """What lives during the backward only: activations, logits, scratch, freed buckets, and
        the gradients where the step frees them before the optimizer runs (stages 1/2)."""
        freed = 0 if self.buckets_held_through_step else self.gradient_buckets_bytes
        gradients = 0 if self.gradients_held_through_step else self.gradients_bytes
        return self.activations_bytes + self.logits_bytes + self.comm_scratch_bytes + freed + gradients

    @property
    def transient_beyond_backward_bytes(self) -> int:
        """How far the optimizer step's transient rises above the backward phase (0 if not)."""
        return max(0, self.step_transient_bytes - self.backward_phase_bytes)


def estimate_memory(model: ModelSpec, hardware: HardwareSpec, config: TrainConfig,
                    sizes: Optional[Shards] = None) -> MemoryEstimate:
    s = sizes if sizes is not None else shards(model, config)
    params = st.parameter_bytes(s, config)
    grads = st.gradient_bytes(s, config)
    master = st.master_weight_bytes(s, config)
    optim = st.optimizer_state_bytes(s, config)
    buckets = buf.gradient_bucket_bytes(s, config)
    gathered = buf.gathered_parameter_bytes(model, s, config)
    scratch = buf.comm_scratch_bytes(s, config, hardware.reduce_scatter_staging)
    buckets = buf.resident_bucket_bytes(buckets, s, config) if hardware.resident_on_touch else buckets
    measured = act.measured_activation_bytes(model, config)
    if measured is None:
        activations, logits = act.activation_and_loss_bytes(model, config, hardware)
    else:
        activations, logits = measured, 0
    transient = buf.step_transient_bytes(s, config) + buf.optimizer_temporary_bytes(s, config, hardware.optimizer_impl)
    grads_kept = buf.gradients_held_through_step(config)
    if not grads_kept:
        transient = max(transient, buf.gradient_cast_bytes(s, config))
    fixed = hardware.fixed_overhead_bytes
    runtime = act.runtime_overhead_bytes(model, config)
    held = buf.buckets_held_through_step(config)
    backward = activations + logits + scratch + (0 if held else buckets) + (0 if grads_kept else grads)
    total = (params + (grads if grads_kept else 0) + master + optim + (buckets if held else 0) + gathered
             + max(backward, transient) + fixed + runtime)
    host = st.host_bytes(s, config)
    limit = min(hardware.usable_memory_bytes + fixed, hardware.device_memory_bytes)
    feasible = total <= limit
    if feasible and host and hardware.host_memory_bytes is not None:
        feasible = host * hardware.ranks_per_node <= hardware.host_memory_bytes
    return MemoryEstimate(
        parameters_bytes=params, gradients_bytes=grads, master_weights_bytes=master,
        optimizer_states_bytes=optim, gradient_buckets_bytes=buckets,
        gathered_parameters_bytes=gathered, comm_scratch_bytes=scratch,
        activations_bytes=activations, logits_bytes=logits, step_transient_bytes=transient,
        fixed_overhead_bytes=fixed, runtime_overhead_bytes=runtime, total_bytes=total,
        limit_bytes=limit, host_bytes=host, feasible=feasible, buckets_held_through_step=held,
        gradients_held_through_step=grads_kept)
