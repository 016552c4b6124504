"""The Adam implementations' table against torch's own steps: the kernels each launches per tensor
and the bytes they move, read off the profiler's record of a real step."""

import pytest
import torch

from simtune.optimizers import ADAM_KERNELS

SHAPE = (64, 48)


def _step_ops(**variant) -> list[tuple[str, list]]:
    """(name, input shapes) of every op a second AdamW step runs over two parameter tensors (the
    first step creates the states)."""
    params = [torch.nn.Parameter(torch.randn(SHAPE)) for _ in range(2)]
    for p in params:
        p.grad = torch.randn(SHAPE)
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, **variant)
    optimizer.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        optimizer.step()
    return [(e.name, e.input_shapes) for e in prof.events()]


def _tensor_args(shapes: list) -> int:
    """Inputs of the parameters' shape, one per tensor (a foreach op's list counts each tensor)."""
    count = 0
    for shape in shapes:
        if shape == list(SHAPE):
            count += 1
        elif isinstance(shape, list) and shape and isinstance(shape[0], list):
            count += sum(1 for s in shape if s == list(SHAPE))
    return count


def _kernels(ops, prefix: str) -> list[tuple[str, int]]:
    """The ops that do elementwise work over the parameter-shaped tensors (not their children:
    an op's own dispatch is counted once, at its top-level name) with the tensors they read."""
    seen = []
    for name, shapes in ops:
        if name.startswith(prefix) and name not in ("aten::empty", "aten::empty_like", "aten::empty_strided"):
            reads = _tensor_args(shapes)
            if reads:
                seen.append((name, reads))
    return seen


def test_the_for_loop_adamw_launches_the_kernels_and_moves_the_bytes_the_table_gives():
    ops = _kernels(_step_ops(foreach=False), "aten::")
    # a kernel's nested calls (e.g. div -> div_) appear too: keep the outermost op of each pass
    top = [(n, r) for n, r in ops if n not in ("aten::copy_", "aten::to", "aten::_to_copy")]
    per_tensor = {}
    for name, reads in top:
        per_tensor.setdefault(name, []).append(reads)
    entry = ADAM_KERNELS["torch_adamw_for_loop"]
    passes = sum(len(r) for r in per_tensor.values()) // 2  # two tensors
    assert passes == entry.kernels_per_tensor, per_tensor
    # each pass reads its tensor inputs and writes one tensor, 4 bytes each
    moved = sum(4 * (reads + 1) for reads_list in per_tensor.values() for reads in reads_list) // 2
    assert moved == entry.bytes_per_param, per_tensor


def _pass_names(names: list[str]) -> list[str]:
    return [name.removeprefix("aten::").removeprefix("_foreach_").rstrip("_") for name in names]


def test_the_foreach_adamw_runs_the_for_loops_passes_once_over_every_tensor():
    """The profiler records no shapes of a foreach op's tensor lists: the passes are matched by name
    to the for-loop's (whose bytes the test above counts); the first foreach op counts the steps."""
    loop = _pass_names([name for name, _ in _kernels(_step_ops(foreach=False), "aten::")])
    foreach = [name for name, _ in _step_ops(foreach=True) if name.startswith("aten::_foreach_")]
    assert foreach[0] == "aten::_foreach_add_"  # state_steps += 1, on host scalars
    assert _pass_names(foreach[1:]) == loop[:len(loop) // 2]  # the two tensors' passes at once
    entry = ADAM_KERNELS["torch_adamw_foreach"]
    assert entry.kernels_per_tensor == 0 and entry.bytes_per_param == ADAM_KERNELS["torch_adamw_for_loop"].bytes_per_param


@pytest.mark.parametrize("impl", ["torch_adamw_fused", "deepspeed_fused_adam"])
def test_fused_kernels_read_four_arrays_and_write_three(impl):
    entry = ADAM_KERNELS[impl]
    assert entry.bytes_per_param == 4 * (4 + 3) and entry.kernels_per_tensor == 0
    assert (entry.temporaries_per_element, entry.temporaries_of_largest) == (0, 0)
