"""Count the bytes a live DeepSpeed engine holds per rank, for several configurations in turn.

Launched by tests/model/test_model_real_states.py as
``deepspeed --num_accelerators 2 --master_port P count_model_states.py CASES.json OUT.json``.
For each case it builds a small MLP, initialises an engine, trains two optimizer steps and, in
the second, walks every object reachable from the engine (parameters and their attributes such
as ``ds_tensor`` and ``grad``, the ZeRO optimizer, the wrapped optimizer's state) and sums the
bytes of the distinct storages found (deduplicated by data pointer), at these points:

- ``after_forward``: after each micro-step's forward (ZeRO-3 gathered parameters),
- ``before_reduce``: at the end of each backward, before the gradient reduction of the boundary,
- ``after_backward``: after each backward,
- ``in_step``: inside the wrapped optimizer's step (fp32 gradients built by the step),
- ``after_step``: after the optimizer step.

During the second optimizer step it also tallies the collectives the engine calls through
torch.distributed (``collectives``: per ``"<op>:<dtype>"`` the elements of the calls that move
more than ``TALLY_MIN_ELEMENTS``, as nccl-tests sizes them: the tensor for all_reduce, the whole
input for reduce-scatter, the whole output for all-gather).

Rank 0 writes ``{"param_numels": [...], "cases": [{"name", "points": {point: [bytes per rank]},
"collectives": [{key: elements} per rank]}]}``.
"""

import gc
import json
import os
import sys
import types

import deepspeed
import deepspeed.comm as dist
import torch
from torch import nn

HIDDEN, WIDTH, LAYERS, CLASSES, SEQ, BATCH = 256, 1024, 3, 1000, 16, 4
TALLY_MIN_ELEMENTS = 64
"""Smaller calls are the engine's scalars (gradient norms, overflow flags), not gradients."""
COLLECTIVES = {  # torch.distributed function: (keyword of the tensor sized as nccl-tests, its position)
    "all_reduce": ("tensor", 0),
    "reduce_scatter_tensor": ("input", 1),
    "reduce_scatter": ("input_list", 1),
    "all_gather_into_tensor": ("output_tensor", 0),
    "all_gather": ("tensor_list", 0),
}
SKIP = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
        str, bytes, int, float, bool, complex)


class MLP(nn.Module):

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(HIDDEN), nn.Linear(HIDDEN, WIDTH), nn.GELU(), nn.Linear(WIDTH, HIDDEN))
            for _ in range(LAYERS))
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x, y):
        for block in self.blocks:
            x = x + block(x)
        return nn.functional.cross_entropy(self.head(x).float().flatten(0, 1), y.flatten())


def held_bytes(root) -> int:
    """Bytes of the distinct tensor storages reachable from ``root``."""
    seen, storages, stack = set(), {}, [root]
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, SKIP) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if obj.device.type != "meta":
                storage = obj.untyped_storage()
                if storage.nbytes() > 0:
                    storages[storage.data_ptr()] = storage.nbytes()
            if obj.is_leaf and obj.grad is not None:
                stack.append(obj.grad)
            stack.extend(getattr(obj, "__dict__", {}).values())
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        else:
            stack.extend(getattr(obj, "__dict__", {}).values())
            stack.extend(getattr(obj, name) for name in getattr(type(obj), "__slots__", ()) if hasattr(obj, name))
    return sum(storages.values())


BACKEND_FUNCTIONS = {"reduce_scatter_function": "reduce_scatter_tensor", "all_gather_function": "all_gather_into_tensor"}
"""The torch.distributed functions DeepSpeed's torch backend keeps as its own attributes."""


def tally_collectives(measuring: list) -> tuple[dict, callable]:
    """Wrap torch.distributed's collectives (DeepSpeed's torch backend calls most by attribute,
    and keeps reduce_scatter_tensor and all_gather_into_tensor as its own): while
    ``measuring[0]``, add each call's elements under ``"<op>:<dtype>"``. Returns the tally and a
    function that unwraps them."""
    from deepspeed.comm import comm as ds_comm

    tally: dict[str, int] = {}
    owners = [(torch.distributed, name, name) for name in COLLECTIVES]
    owners += [(ds_comm.cdb, attribute, name) for attribute, name in BACKEND_FUNCTIONS.items()
               if getattr(ds_comm.cdb, attribute, None) is not None]
    originals = {(owner, attribute): (getattr(owner, attribute), name) for owner, attribute, name in owners}

    def wrap(name, original):
        keyword, position = COLLECTIVES[name]

        def wrapped(*args, **kwargs):
            if measuring[0]:
                sized = kwargs.get(keyword, args[position] if len(args) > position else None)
                tensors = list(sized) if isinstance(sized, (list, tuple)) else [sized]
                elements = sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))
                if tensors and isinstance(tensors[0], torch.Tensor) and elements > TALLY_MIN_ELEMENTS:
                    key = f"{name}:{str(tensors[0].dtype).replace('torch.', '')}"
                    tally[key] = tally.get(key, 0) + elements
            return original(*args, **kwargs)
        return wrapped

    for (owner, attribute), (original, name) in originals.items():
        setattr(owner, attribute, wrap(name, original))

    def unwrap():
        for (owner, attribute), (original, _) in originals.items():
            setattr(owner, attribute, original)
    return tally, unwrap


def run_case(case: dict) -> dict:
    torch.manual_seed(0)
    gas = case["gradient_accumulation_steps"]
    config = {
        "train_micro_batch_size_per_gpu": BATCH,
        "gradient_accumulation_steps": gas,
        "optimizer": case.get("optimizer") or {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
        "zero_allow_untested_optimizer": True,
        "zero_optimization": case["zero_optimization"],
        "bf16": {"enabled": case["precision"] == "bf16" and not case.get("autocast")},
        "fp16": {"enabled": case["precision"] == "fp16" and not case.get("autocast")},
        "steps_per_print": 1_000_000,
    }
    if case.get("communication_data_type"):
        config["communication_data_type"] = case["communication_data_type"]
    if case.get("autocast"):  # DeepSpeed's own torch autocast: an fp32 model, products in 16-bit
        config["torch_autocast"] = {"enabled": True, "dtype": {"bf16": "bfloat16", "fp16": "float16"}[case["precision"]]}
    if case.get("zero_init"):  # built partitioned, as the Hugging Face Trainer builds a stage-3 model
        with deepspeed.zero.Init(config_dict_or_path=config):
            model = MLP()
    else:
        model = MLP()
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    dtype = torch.float32 if case.get("autocast") else {"fp32": torch.float32, "bf16": torch.bfloat16,
                                                        "fp16": torch.float16}[case["precision"]]
    points: dict[str, int] = {}
    measuring = [False]
    tally, unwrap = tally_collectives(measuring)

    def record(point: str) -> None:
        if measuring[0]:
            points[point] = max(points.get(point, 0), held_bytes(engine))

    reduce = engine.allreduce_gradients

    def reduce_after_recording(*args, **kwargs):
        record("before_reduce")
        return reduce(*args, **kwargs)

    engine.allreduce_gradients = reduce_after_recording
    # the optimizer the wrapper steps: the one the engine built, except Adagrad at ZeRO 1-3, which the
    # ZeRO optimizer builds again over its fp32 partition (stage_1_and_2.py, stage3.py)
    stepped = getattr(engine.optimizer, "optimizer", engine.basic_optimizer)
    inner_step = stepped.step

    def step_after_recording(*args, **kwargs):
        record("in_step")
        return inner_step(*args, **kwargs)

    stepped.step = step_after_recording
    for micro_step in range(2 * gas):
        measuring[0] = micro_step >= gas
        x = torch.randn(BATCH, SEQ, HIDDEN, dtype=dtype)
        y = torch.randint(0, CLASSES, (BATCH, SEQ))
        loss = engine(x, y)
        record("after_forward")
        engine.backward(loss)
        record("after_backward")
        engine.step()
    record("after_step")
    measuring[0] = False
    unwrap()
    per_rank = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, points)
    tallies = [None] * dist.get_world_size()
    dist.all_gather_object(tallies, tally)
    engine.destroy()
    return {"name": case["name"], "points": {p: [r[p] for r in per_rank] for p in points}, "collectives": tallies}


def main() -> None:
    paths = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    cases = json.loads(open(paths[0]).read())
    deepspeed.init_distributed()
    results = []
    for case in cases:
        results.append(run_case(case))
        gc.collect()  # free the previous engine before the next one is counted
    if dist.get_rank() == 0:
        numels = [p.numel() for p in MLP().parameters()]
        with open(paths[1], "w") as out:
            json.dump({"param_numels": numels, "cases": results}, out)
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # ZeRO-3 engines abort at interpreter exit on CPU


if __name__ == "__main__":
    main()
