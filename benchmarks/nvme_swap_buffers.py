"""How many optimizer swap buffers DeepSpeed's NVMe swappers need, against the model's count.

Trains a GPT-2 shape of 13.2M parameters (width 512, 4 layers; stage 3 on 2 CPU ranks splits it
into 7 optimizer sub-groups of ``sub_group_size`` 1e6) for 3 steps with the optimizer offloaded
to NVMe (a folder of this machine's disk; DeepSpeed's async_io op, which needs libaio), with each
pipeline setting at the buffer count the model says it needs and at one fewer, and once with a
single sub-group (the default ``sub_group_size``) with both pipelines. Prints whether
DeepSpeed ran or stopped, and where, beside ``simtune.model.nvme_swap.swap_buffers_needed``.

    python benchmarks/nvme_swap_buffers.py
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 1024, "n_positions": 64,
         "n_embd": 512, "n_layer": 4, "n_head": 8, "activation_function": "gelu_new"}
RANKS, SEQ, SUB_GROUP = 2, 64, 1_000_000


def needed(model_path: Path, read: bool, write: bool, sub_group_size: int) -> int:
    from simtune.model.adapters import model_spec
    from simtune.model.inputs import TrainConfig
    from simtune.model.nvme_swap import swap_buffers_needed
    from simtune.nvme_settings import NvmeSwapSettings
    from simtune.workloads import load_workload

    m = model_spec(load_workload(str(model_path), seq_len=SEQ))
    c = TrainConfig(stage=3, micro_batch_size=1, dp_degree=RANKS, precision="fp32", offload_optimizer=True,
                    offload_optimizer_nvme=True, sub_group_size=sub_group_size,
                    nvme=NvmeSwapSettings(pipeline_read=read, pipeline_write=write))
    return swap_buffers_needed(m, c)


def run(folder: Path, model_path: Path, read: bool, write: bool, buffers: int, sub_group_size: int) -> str:
    from simtune.runner.launcher import run_on_cpu_ranks

    swap = folder / f"swap-{read}-{write}-{buffers}-{sub_group_size}"
    swap.mkdir()
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
              "zero_optimization": {"stage": 3, "sub_group_size": sub_group_size, "offload_optimizer": {
                  "device": "nvme", "nvme_path": str(swap), "buffer_count": buffers,
                  "pipeline_read": read, "pipeline_write": write}}}
    path = folder / "ds.json"
    path.write_text(json.dumps(config))
    done = run_on_cpu_ranks([str(ROOT / "simtune" / "workloads" / "train.py"), "--deepspeed", str(path), "--model",
                             str(model_path), "--seq-len", str(SEQ), "--steps", "3"], RANKS)
    if done.returncode == 0:
        return "ran"
    text = done.stdout + done.stderr
    where = re.search(r"in (_swap_\w+)", text[text.rfind("Traceback"):] if "Traceback" in text else text)
    out_of = "ran out of swap buffers" if "ran out of swap buffers" in text else "AssertionError"
    return f"stopped ({out_of}{', in ' + where.group(1) if where else ''})"


def main() -> int:
    print("Command: python benchmarks/nvme_swap_buffers.py")
    print(f"GPT-2 shape {SHAPE['n_embd']} wide, {SHAPE['n_layer']} layers, seq {SEQ}, stage 3, AdamW offloaded to "
          f"NVMe, {RANKS} CPU ranks, 3 steps\n")
    print(f"{'sub_group_size':>14} {'pipeline':<11} {'model needs':>11} {'buffers':>7}  DeepSpeed")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        model_path = folder / "gpt2-wide.json"
        model_path.write_text(json.dumps(SHAPE))
        cases = [(False, False, SUB_GROUP), (True, False, SUB_GROUP), (False, True, SUB_GROUP),
                 (True, True, SUB_GROUP), (True, True, 1_000_000_000)]
        for read, write, sub_group_size in cases:
            need = needed(model_path, read, write, sub_group_size)
            label = "+".join(p for p, on in (("read", read), ("write", write)) if on) or "none"
            for buffers in (need, need - 1):
                outcome = run(folder, model_path, read, write, buffers, sub_group_size)
                print(f"{sub_group_size:>14.0e} {label:<11} {need:>11} {buffers:>7}  {outcome}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
