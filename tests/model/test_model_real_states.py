"""The model-state memory terms against the bytes live DeepSpeed engines hold (2 CPU ranks, gloo).

One launch of count_model_states.py runs every case in turn; each case's prediction must be
within 2% of the largest count over ranks:

- outside the optimizer step (end of backward before the boundary reduction, after backward):
  parameters + gradients + master weights + optimizer states + gradient buckets;
- inside the optimizer step: parameters + master weights + optimizer states + the step's fp32
  gradients, plus what the stage still holds then (stage 0 and 3 gradients, the stage-3 bucket);
- ZeRO-3 after forward: the parameters still gathered.

Two cases run DeepSpeed's own torch autocast (``torch_autocast`` bf16 over an fp32 model), which
the model takes as ``TrainConfig.deepspeed_autocast``; three reduce their bf16 gradients in fp32
(``communication_data_type``), one runs stage 3 with ``reduce_scatter`` off and one steps stage 3's
optimizer in sub-groups (``sub_group_size``).

The same launch tallies the collectives of each case's measured optimizer step: the gradient
bytes each reduction collective carries must be the model's (:func:`gradient_reduction`).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simtune.model.comm_time import gradient_reduction
from simtune.model.inputs import BYTES_PER_ELEMENT, ModelSpec, TrainConfig
from simtune.model.memory_buffers import gradient_bucket_bytes, kept_gathered_elements, step_transient_bytes
from simtune.model.memory_states import gradient_bytes, master_weight_bytes, optimizer_state_bytes, parameter_bytes
from simtune.model.shards import shards
from simtune.optimizers import optimizer_choice
from simtune.runner.launcher import free_port, release_port
from simtune.runner.runner import remove_shm_buffers

PROGRAM = Path(__file__).with_name("count_model_states.py")
TOLERANCE = 0.02
SMALL_BUCKETS = {"reduce_bucket_size": 200_000, "allgather_bucket_size": 200_000}


def _case(name, stage, precision, gas=1, autocast=False, communication=None, optimizer=None, zero_init=False,
          **zero):
    return {"name": name, "precision": precision, "gradient_accumulation_steps": gas, "autocast": autocast,
            "communication_data_type": communication, "optimizer": optimizer, "zero_init": zero_init,
            "zero_optimization": {"stage": stage, **SMALL_BUCKETS, **zero}}


SGD_MOMENTUM = {"type": "SGD", "params": {"lr": 1e-3, "momentum": 0.9}}
ADAGRAD = {"type": "Adagrad", "params": {"lr": 1e-3}}
SGD = {"type": "SGD", "params": {"lr": 1e-3}}


CASES = [
    _case("z0-fp32", 0, "fp32"),
    _case("z0-bf16-gas2", 0, "bf16", gas=2),
    _case("z1-fp32", 1, "fp32"),
    _case("z1-bf16-gas2-overlap", 1, "bf16", gas=2, overlap_comm=True),
    _case("z2-fp32-gas2-overlap", 2, "fp32", gas=2, overlap_comm=True),
    _case("z2-bf16", 2, "bf16"),
    _case("z3-fp32-persist5000", 3, "fp32", stage3_param_persistence_threshold=5000),
    _case("z3-bf16-gas2", 3, "bf16", gas=2),
    # gradients reduced in fp32 (communication_data_type): buckets cast at stages 0-2, kept in it at 3
    _case("z0-bf16-comm-fp32", 0, "bf16", communication="fp32"),
    _case("z2-bf16-gas2-comm-fp32", 2, "bf16", gas=2, communication="fp32"),
    _case("z3-bf16-gas2-comm-fp32", 3, "bf16", gas=2, communication="fp32"),
    # stage 3 allreducing its buckets; the 262,144-element weights exceed the bucket and are
    # still reduce-scattered alone
    _case("z3-fp32-allreduce", 3, "fp32", reduce_scatter=False),
    # the optimizer steps the 917,620-element partition in sub-groups of about 3e5 elements: the
    # step's fp32 gradients are one sub-group's
    _case("z3-fp32-sub-groups", 3, "fp32", sub_group_size=300_000),
    # other algorithms than AdamW (simtune.optimizers): one state (a momentum buffer, Adagrad's sum of
    # squares) or none (plain SGD); DeepSpeed builds torch's from the config
    _case("z0-fp32-sgd-momentum", 0, "fp32", optimizer=SGD_MOMENTUM),
    _case("z0-bf16-adagrad", 0, "bf16", optimizer=ADAGRAD),
    _case("z0-fp32-adagrad", 0, "fp32", optimizer=ADAGRAD),
    _case("z1-bf16-adagrad", 1, "bf16", optimizer=ADAGRAD),
    _case("z2-fp32-adagrad", 2, "fp32", optimizer=ADAGRAD),
    # Adagrad builds its state for the parameters it is given first, which the wrappers replace
    # (simtune.model.memory_states.stale_state_bytes); a stage-3 model is built partitioned
    _case("z3-bf16-adagrad", 3, "bf16", optimizer=ADAGRAD, zero_init=True),
    _case("z2-fp32-sgd", 2, "fp32", optimizer=SGD),
    _case("z3-bf16-sgd-momentum", 3, "bf16", optimizer=SGD_MOMENTUM),
    # DeepSpeed's torch_autocast: fp32 states with the master partition, a bucket per communication
    # dtype. Last: its engine leaves runtime/torch_autocast.py's TORCH_AUTOCAST_INITIALIZED set for
    # the process, and later ZeRO engines would then key their buckets by each parameter's dtype,
    # whatever communication_data_type says.
    _case("z1-autocast-bf16", 1, "bf16", autocast=True),
    _case("z3-autocast-bf16", 3, "bf16", autocast=True),
]
FP16_CASES = [_case("z2-fp16", 2, "fp16"), _case("z3-fp16", 3, "fp16")]


def fp16_supported() -> bool:
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


def train_config(case: dict) -> TrainConfig:
    zero = case["zero_optimization"]
    return TrainConfig(
        stage=zero["stage"], micro_batch_size=4, gradient_accumulation_steps=case["gradient_accumulation_steps"],
        dp_degree=2, precision=case["precision"], autocast=case["autocast"], deepspeed_autocast=case["autocast"],
        reduce_bucket_size=zero["reduce_bucket_size"],
        allgather_bucket_size=zero["allgather_bucket_size"], overlap_comm=zero.get("overlap_comm"),
        stage3_param_persistence_threshold=zero.get("stage3_param_persistence_threshold", 100_000),
        reduce_scatter=zero.get("reduce_scatter", True), communication_precision=case.get("communication_data_type"),
        sub_group_size=zero.get("sub_group_size", 1_000_000_000),
        optimizer=optimizer_choice({"optimizer": case["optimizer"]} if case.get("optimizer") else None)[0])


def model_spec(numels: list[int]) -> ModelSpec:
    return ModelSpec(parameter_count=sum(numels), num_layers=3, hidden_size=256, num_heads=4,
                     intermediate_size=1024, vocab_size=1000, seq_len=16,
                     flops_per_sample_forward=2.0 * sum(numels) * 16, largest_layer_params=max(numels),
                     param_tensor_numels=tuple(numels))


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    cases = CASES + (FP16_CASES if fp16_supported() else [])
    work = tmp_path_factory.mktemp("model_states")
    (work / "cases.json").write_text(json.dumps(cases))
    out = work / "counts.json"
    port = free_port()
    env = dict(os.environ, DS_ACCELERATOR="cpu", LOCAL_SIZE="2", OMP_NUM_THREADS="1")
    deepspeed = Path(sys.executable).with_name("deepspeed")
    try:
        run = subprocess.run([str(deepspeed), "--num_accelerators", "2", "--master_port", str(port), str(PROGRAM),
                              str(work / "cases.json"), str(out)], env=env, cwd=work, capture_output=True,
                             text=True, timeout=240)
    finally:
        remove_shm_buffers(port)
        release_port(port)
    assert run.returncode == 0 and out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())
    return (model_spec(data["param_numels"]), {c["name"]: c["points"] for c in data["cases"]},
            {c["name"]: c["collectives"] for c in data["cases"]})


def _close(predicted: int, counted: int) -> bool:
    return abs(predicted - counted) <= TOLERANCE * counted


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_states_outside_the_step_match_deepspeed(measured, case):
    model, counts, _ = measured
    points = counts[case["name"]]
    c = train_config(case)
    s = shards(model, c)
    predicted = (parameter_bytes(s, c) + gradient_bytes(s, c) + master_weight_bytes(s, c)
                 + optimizer_state_bytes(s, c) + gradient_bucket_bytes(s, c))
    counted = max(max(points["before_reduce"]), max(points["after_backward"]))
    assert _close(predicted, counted), (predicted, counted)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_states_inside_the_step_match_deepspeed(measured, case):
    model, counts, _ = measured
    c = train_config(case)
    s = shards(model, c)
    predicted = (parameter_bytes(s, c) + master_weight_bytes(s, c) + optimizer_state_bytes(s, c)
                 + step_transient_bytes(s, c))
    if c.stage in (0, 3):
        predicted += gradient_bytes(s, c)
    if c.stage == 3:
        predicted += gradient_bucket_bytes(s, c)
    counted = max(counts[case["name"]]["in_step"])
    assert _close(predicted, counted), (predicted, counted)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c["zero_optimization"]["stage"] == 3],
                         ids=lambda c: c["name"])
def test_stage3_parameters_gathered_after_forward_match_deepspeed(measured, case):
    model, counts, _ = measured
    points = counts[case["name"]]
    c = train_config(case)
    s = shards(model, c)
    predicted = c.state_bytes * kept_gathered_elements(model, s, c)  # gathered copies in the parameters' dtype
    counted = max(points["after_forward"]) - max(points["after_step"])
    assert predicted > 0 and _close(predicted, counted), (predicted, counted)


@pytest.mark.slow
def test_fp16_states_match_deepspeed(measured):
    if not fp16_supported():
        pytest.skip("fp16 needs oneDNN fp16 support on this CPU (torch.ops.mkldnn._is_mkldnn_fp16_supported())")
    model, counts, _ = measured
    for case in FP16_CASES:
        c = train_config(case)
        s = shards(model, c)
        predicted = (parameter_bytes(s, c) + gradient_bytes(s, c) + master_weight_bytes(s, c)
                     + optimizer_state_bytes(s, c) + gradient_bucket_bytes(s, c))
        points = counts[case["name"]]
        assert _close(predicted, max(max(points["before_reduce"]), max(points["after_backward"]))), case["name"]


DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _reduced_bytes(tally: dict[str, int], ops: tuple[str, ...]) -> int:
    """Bytes a rank's tallied calls of ``ops`` carried (elements x their dtype's size)."""
    return sum(elements * BYTES_PER_ELEMENT[DTYPE_NAMES[key.split(":")[1]]]
               for key, elements in tally.items() if key.split(":")[0] in ops)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_gradient_reductions_carry_the_models_bytes(measured, case):
    """Per optimizer step and rank, the bytes DeepSpeed's allreduces and reduce-scatters carried
    (calls above a handful of elements: not the engine's scalars) against the model's reduction
    passes: one at stages 0-1, one per micro-step at stages 2-3."""
    model, _, collectives = measured
    c = train_config(case)
    reduction = gradient_reduction(model, shards(model, c), c)
    passes = c.gradient_accumulation_steps if c.stage >= 2 else 1
    for tally in collectives[case["name"]]:
        allreduced = _reduced_bytes(tally, ("all_reduce",))
        scattered = _reduced_bytes(tally, ("reduce_scatter_tensor", "reduce_scatter"))
        for predicted, counted in ((reduction.allreduce_bytes * passes, allreduced),
                                   (reduction.reduce_scatter_bytes * passes, scattered)):
            assert (counted == 0 if predicted == 0 else _close(predicted, counted)), (tally, reduction)
