"""Per-rank element counts for one (model, configuration): the sizes every term is built from.

With P the parameters of one model-parallel rank (parameter_count / mp) and N the
data-parallel degree:

- ZeRO-1/2 flatten all parameters into one buffer padded to a multiple of 2N elements
  (``nccl_start_alignment_factor`` = 2 in stage_1_and_2.py) and give each rank a slice of
  flat / N elements;
- each rank keeps whole gradients for the tensors that touch its slice (``params_in_partition``),
  so a tensor crossing a slice boundary adds to the slice size;
- ZeRO-3 splits each tensor on its own into N pieces of ceil(n / N) elements and keeps tensors of
  at most ``stage3_param_persistence_threshold`` elements whole on every rank; its optimizer steps
  the partition in sub-groups of about ``sub_group_size`` elements, one at a time.

Layout-derived corrections (straddling, padding, persistence) come from the model's tensor list
and are divided by mp like the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from simtune.model.inputs import ModelSpec, TrainConfig


@dataclass(frozen=True)
class Shards:
    params: int
    """P: parameters of one model-parallel rank."""
    flat: int
    """ZeRO-1/2 flat buffer: P padded to a multiple of 2N."""
    flat_partition: int
    """ZeRO-1/2 slice per rank: flat / N."""
    grads_in_partition: int
    """ZeRO-1/2 gradient elements kept per rank: whole tensors touching the slice (max over ranks)."""
    partition: int
    """ZeRO-3 parameter partition per rank: sum of ceil(n / N) over tensors."""
    persistent: int
    """ZeRO-3 elements kept whole on every rank (0 below stage 3)."""
    persistent_tensors: int
    largest_tensor: int
    """Largest single parameter tensor (elements)."""
    largest_layer: int
    """Largest parameter count one module holds directly (the ZeRO-3 unit of gathering)."""
    step_group: int = 0
    """ZeRO-3: elements of the largest optimizer sub-group, which the step holds in fp32 at once
    (:meth:`ParamLayout.largest_sub_group`; the partition when ``sub_group_size`` exceeds it)."""


def shards(model: ModelSpec, config: TrainConfig) -> Shards:
    layout = model.layout
    mp = config.mp_degree
    n = config.dp_degree
    params = -(-model.parameter_count // mp)
    align = 2 * n
    flat = -(-params // align) * align
    flat_partition = flat // n
    layout_partition = -(-layout.total // align) * align // n
    straddle = max(0, layout.max_partition_overlap(n) - layout_partition) // mp
    padding = max(0, layout.partition_numel(n) * n - layout.total) // (n * mp)
    partition = -(-params // n) + padding
    step_group = partition
    if config.stage == 3:
        persistent, persistent_tensors = layout.persistent(config.stage3_param_persistence_threshold)
        persistent = min(params, persistent // mp)
        if config.sub_group_size < layout.partition_numel(n):
            step_group = min(partition, -(-layout.largest_sub_group(config.sub_group_size, n) // mp))
    else:
        persistent, persistent_tensors = 0, 0
    return Shards(params=params, flat=flat, flat_partition=flat_partition,
                  grads_in_partition=flat_partition + straddle, partition=partition,
                  persistent=persistent, persistent_tensors=persistent_tensors,
                  largest_tensor=-(-layout.largest // mp), largest_layer=-(-model.largest_layer_params // mp),
                  step_group=step_group)
