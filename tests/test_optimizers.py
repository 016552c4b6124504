"""The optimizers' table against torch's own steps: the kernels each launches per tensor and the
bytes they move, read off the profiler's record of a real step; and the optimizer a DeepSpeed
config names, as the cost model reads it."""

import pytest
import torch

from simtune.errors import ConfigError
from simtune.optimizers import ADAM_KERNELS, ADAMW, ALGORITHMS, OptimizerChoice, optimizer_choice

SHAPE = (64, 48)


def _step_ops(make=None, **variant) -> list[tuple[str, list]]:
    """(name, input shapes) of every op a second step runs over two parameter tensors (the first
    step creates the states); AdamW unless ``make`` builds another optimizer from the parameters."""
    params = [torch.nn.Parameter(torch.randn(SHAPE)) for _ in range(2)]
    for p in params:
        p.grad = torch.randn(SHAPE)
    if make is None:
        optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, **variant)
    else:
        optimizer = make(params, **variant)
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


LOOPS = {  # algorithm (coupled decay): torch's optimizer over the parameters
    ("adamw", False): None,
    ("adagrad", False): lambda params, **kw: torch.optim.Adagrad(params, lr=1e-3, **kw),
    ("adagrad", True): lambda params, **kw: torch.optim.Adagrad(params, lr=1e-3, weight_decay=0.01, **kw),
    ("sgd_momentum", False): lambda params, **kw: torch.optim.SGD(params, lr=1e-3, momentum=0.9, **kw),
    ("sgd_momentum", True): lambda params, **kw: torch.optim.SGD(params, lr=1e-3, momentum=0.9,
                                                                 weight_decay=0.01, **kw),
    ("sgd", False): lambda params, **kw: torch.optim.SGD(params, lr=1e-3, **kw),
}


@pytest.mark.parametrize("algorithm,coupled", list(LOOPS), ids=lambda v: str(v))
def test_the_for_loop_launches_the_kernels_and_moves_the_bytes_the_table_gives(algorithm, coupled):
    ops = _kernels(_step_ops(LOOPS[(algorithm, coupled)], foreach=False), "aten::")
    # a kernel's nested calls (e.g. div -> div_) appear too: keep the outermost op of each pass
    top = [(n, r) for n, r in ops if n not in ("aten::copy_", "aten::to", "aten::_to_copy")]
    per_tensor = {}
    for name, reads in top:
        per_tensor.setdefault(name, []).append(reads)
    entry = OptimizerChoice(algorithm, coupled).kernels("for_loop")
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


@pytest.mark.parametrize("algorithm,coupled", [k for k in LOOPS if k != ("sgd", False)], ids=lambda v: str(v))
def test_the_foreach_step_runs_the_for_loops_passes_once_over_every_tensor(algorithm, coupled):
    """As for AdamW: the foreach passes match the for-loop's by name, as many as the table gives."""
    make = LOOPS[(algorithm, coupled)]
    loop = _pass_names([name for name, _ in _kernels(_step_ops(make, foreach=False), "aten::")])
    foreach = [name for name, _ in _step_ops(make, foreach=True) if name.startswith("aten::_foreach_")]
    if algorithm in ("adamw", "adagrad"):
        assert foreach[0] == "aten::_foreach_add_"  # the steps += 1
        foreach = foreach[1:]
    choice = OptimizerChoice(algorithm, coupled)
    assert len(foreach) == len(choice.passes("foreach"))
    if ALGORITHMS[algorithm].foreach_passes is None:
        assert _pass_names(foreach) == loop[:len(loop) // 2]
        assert choice.kernels("foreach").bytes_per_param == choice.kernels("for_loop").bytes_per_param
    else:  # Adagrad scales the gradients by the learning rate before its last pass
        assert _pass_names(foreach) == loop[:len(loop) // 2 - 1] + ["mul"] + loop[len(loop) // 2 - 1:len(loop) // 2]
    assert choice.kernels("foreach").kernels_per_tensor == 0


@pytest.mark.parametrize("impl", ["torch_adamw_fused", "deepspeed_fused_adam"])
def test_fused_kernels_read_four_arrays_and_write_three(impl):
    entry = ADAM_KERNELS[impl]
    assert entry.bytes_per_param == 4 * (4 + 3) and entry.kernels_per_tensor == 0
    assert (entry.temporaries_per_element, entry.temporaries_of_largest) == (0, 0)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_a_fused_step_reads_parameter_gradient_and_states_once_and_writes_parameter_and_states(algorithm):
    spec = ALGORITHMS[algorithm]
    assert OptimizerChoice(algorithm).kernels("fused").bytes_per_param == 4 * (2 + spec.states) + 4 * (1 + spec.states)


def test_the_relative_cost_is_the_ratio_of_bytes_in_the_same_implementation():
    assert ADAMW.relative_cost("for_loop") == 1.0
    assert OptimizerChoice("sgd_momentum").relative_cost("for_loop") == pytest.approx(32 / 84)
    # decay (12), addcmul (16), sqrt, add and the scaling (8 each), addcdiv (16)
    assert OptimizerChoice("adagrad", coupled_decay=True).relative_cost("foreach") == pytest.approx(68 / 84)
    assert OptimizerChoice("lion").relative_cost("fused") == pytest.approx(20 / 28)
    # torch has no Lion loop: a loop fit steps it as the fused kernel it runs
    assert OptimizerChoice("lion").kernels("for_loop") == OptimizerChoice("lion").kernels("fused")


@pytest.mark.parametrize("section,expected", [
    (None, ("adamw", False)),
    ({"type": "AdamW", "params": {"lr": 1e-3}}, ("adamw", False)),
    ({"type": "adam", "params": {"weight_decay": 0.1}}, ("adamw", False)),
    ({"type": "SGD", "params": {"lr": 0.1}}, ("sgd", False)),
    ({"type": "SGD", "params": {"lr": 0.1, "momentum": 0.9}}, ("sgd_momentum", False)),
    ({"type": "sgd", "params": {"momentum": 0.9, "weight_decay": 5e-4}}, ("sgd_momentum", True)),
    ({"type": "Adagrad"}, ("adagrad", False)),
    ({"type": "Adagrad", "params": {"weight_decay": 0.01}}, ("adagrad", True)),
    ({"type": "Lion", "params": {"lr": 1e-4, "weight_decay": 0.1}}, ("lion", False)),
])
def test_a_configs_optimizer_is_read_as_deepspeed_reads_its_type(section, expected):
    config = {} if section is None else {"optimizer": section}
    choice, stand_in = optimizer_choice(config)
    assert (choice.algorithm, choice.coupled_decay) == expected and stand_in is None


def test_an_optimizer_the_model_does_not_know_is_predicted_as_adamw_and_said_so():
    choice, stand_in = optimizer_choice({"optimizer": {"type": "Lamb", "params": {"lr": 1e-3}}})
    assert choice == ADAMW and "'Lamb' is not in the cost model" in stand_in and "Adam's two states" in stand_in
    choice, stand_in = optimizer_choice({"optimizer": {"type": "RMSprop"}})
    assert choice == ADAMW and "AdamW's states" in stand_in


@pytest.mark.parametrize("section", [{"params": {}}, {"type": ""}, "SGD", {"type": "SGD", "params": []},
                                     {"type": "SGD", "params": {"momentum": "high"}}])
def test_a_malformed_optimizer_section_is_refused_in_one_sentence(section):
    with pytest.raises(ConfigError) as error:
        optimizer_choice({"optimizer": section})
    assert str(error.value).count(".") <= 2 and "\n" not in str(error.value)


def test_an_unknown_algorithm_or_implementation_is_refused():
    with pytest.raises(ConfigError):
        OptimizerChoice("rmsprop")
    with pytest.raises(ConfigError):
        OptimizerChoice("adamw", coupled_decay=True)
    with pytest.raises(ConfigError):
        ADAMW.kernels("vectorised")


def test_every_algorithm_deepspeed_offloads_to_a_cpu_kernel_has_that_kernels_fit_name():
    from simtune.optimizers import HOST_KERNEL_FITS, fit_algorithm

    assert set(HOST_KERNEL_FITS) == {name for name, spec in ALGORITHMS.items() if spec.offload_impl}
    assert {fit_algorithm(fit) for fit in HOST_KERNEL_FITS.values()} == set(HOST_KERNEL_FITS)
