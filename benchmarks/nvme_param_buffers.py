"""What DeepSpeed's parameter swapper needs of ``offload_param``'s buffers, against the model.

Trains the 13.2M-parameter GPT-2 shape of benchmarks/nvme_swap_buffers.py (width 512, 4 layers,
tied head; 13 partitions of 1 MiB or more per rank), or with ``--model llama`` a Llama shape of
27.8M (width 1024, 2 layers, untied head; 16), at stage 3 on 2 CPU ranks for 3 steps with
every parameter on NVMe (``offload_param.device: nvme``, ``max_in_cpu`` 0; a folder of this
machine's disk, DeepSpeed's async_io op, which needs libaio), under five release settings, at the
buffer count the model says (``simtune.model.nvme_swap.parameter_buffers_needed``), one fewer,
and more; and at a ``buffer_size`` of the largest partition and one element less
(``parameter_buffer_problem``). Prints whether DeepSpeed ran or stopped, with its message,
and whether the model said so.

    python benchmarks/nvme_param_buffers.py [--folder /tmp] [--model gpt2|llama]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "gpt2": {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 1024, "n_positions": 64,
             "n_embd": 512, "n_layer": 4, "n_head": 8, "activation_function": "gelu_new"},
    "llama": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 1024,
              "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 2, "num_attention_heads": 8,
              "num_key_value_heads": 8, "max_position_embeddings": 64, "tie_word_embeddings": False},
}
"""The 13.2M-parameter GPT-2 shape (tied head) and a 27.8M-parameter Llama shape (untied head; every
one of its 16 matrices has a partition of 1 MiB or more on 2 ranks)."""
RANKS, SEQ, STEPS = 2, 64, 3
BUFFER_SIZE = 1_000_000
"""Elements per buffer in the count runs, or the largest partition where that is larger."""
SETTINGS = {
    "kept, no prefetch": {"stage3_prefetch_bucket_size": 0},
    "kept (defaults)": {},
    "reuse 6e6, no prefetch": {"stage3_max_reuse_distance": 6_000_000, "stage3_prefetch_bucket_size": 0},
    "reuse 6e6": {"stage3_max_reuse_distance": 6_000_000},
    "all released": {"stage3_max_reuse_distance": 0, "stage3_max_live_parameters": 0,
                     "stage3_prefetch_bucket_size": 0},
}


def model_view(model_path: Path, knobs: dict[str, int], buffers: int, size: int) -> tuple[int, bool, bool]:
    """(buffers needed, whether exactly that many, whether the model says DeepSpeed runs)."""
    from simtune.model.adapters import model_spec
    from simtune.model.inputs import TrainConfig
    from simtune.model.nvme_swap import parameter_buffer_problem, parameter_buffers_exact, parameter_buffers_needed
    from simtune.nvme_settings import NvmeSwapSettings
    from simtune.workloads import load_workload

    m = model_spec(load_workload(str(model_path), seq_len=SEQ))
    c = TrainConfig(stage=3, micro_batch_size=1, dp_degree=RANKS, precision="fp32", offload_optimizer=True,
                    offload_param=True, offload_param_nvme=True, **knobs,
                    nvme=NvmeSwapSettings(max_in_cpu=0, param_buffer_count=buffers, param_buffer_size=size))
    runs = parameter_buffer_problem(m, c) is None
    return parameter_buffers_needed(m, c), parameter_buffers_exact(m, c), runs


def largest_partition(model_path: Path) -> int:
    from simtune.model.adapters import model_spec
    from simtune.workloads import load_workload

    return max(-(-n // RANKS) for n in model_spec(load_workload(str(model_path), seq_len=SEQ)).layout.numels)


def run(folder: Path, model_path: Path, knobs: dict[str, int], buffers: int, size: int) -> tuple[bool, str]:
    """(ran, what DeepSpeed said) of one 3-step run."""
    from simtune.runner.launcher import run_on_cpu_ranks

    swap = Path(tempfile.mkdtemp(dir=folder))
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
              "zero_optimization": {"stage": 3, **knobs, "offload_optimizer": {"device": "cpu"},
                                    "offload_param": {"device": "nvme", "nvme_path": str(swap), "max_in_cpu": 0,
                                                      "buffer_count": buffers, "buffer_size": size}}}
    path = swap / "ds.json"
    path.write_text(json.dumps(config))
    done = run_on_cpu_ranks([str(ROOT / "simtune" / "workloads" / "train.py"), "--deepspeed", str(path), "--model",
                             str(model_path), "--seq-len", str(SEQ), "--steps", str(STEPS)], RANKS, timeout_s=600)
    if done.returncode == 0:
        return True, "ran"
    text = done.stdout + done.stderr
    found = re.findall(r"AssertionError: (.*)", text)
    steps = [int(n) for n in re.findall(r"^step (\d+) loss", done.stdout, re.MULTILINE)]
    where = (f"in step {max(steps) + 1}" if steps else "in step 1" if "train.py: " in done.stdout
             else "as it starts")
    return False, f"stopped {where}: " + (found[-1].strip()[:80] if found else text.strip()[-80:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="/tmp", help="where the swap files go")
    parser.add_argument("--model", choices=sorted(SHAPES), default="gpt2", help="the shape trained (see SHAPES)")
    args = parser.parse_args()
    shape = SHAPES[args.model]
    print(f"Command: python benchmarks/nvme_param_buffers.py --folder {args.folder} --model {args.model}")
    print(f"{args.model} shape {json.dumps({k: v for k, v in shape.items() if k != 'architectures'})}, seq {SEQ}, "
          f"stage 3, every parameter on NVMe (max_in_cpu 0), optimizer in host memory, {RANKS} CPU ranks, "
          f"{STEPS} steps\n")
    print(f"{'release setting':<29} {'model needs':>11} {'buffers':>7} {'buffer_size':>11}  {'model':<6} "
          f"{'agrees':<6} DeepSpeed")
    agree = total = 0
    with tempfile.TemporaryDirectory(dir=args.folder) as name:
        folder = Path(name)
        model_path = folder / f"{args.model}.json"
        model_path.write_text(json.dumps(shape))
        largest = largest_partition(model_path)
        size = max(BUFFER_SIZE, largest)
        cases = []
        for label, knobs in SETTINGS.items():
            need, exact, _ = model_view(model_path, knobs, 1, size)
            counts = [need, need - 1, need + 1 if exact else need + 4]
            cases += [(label, knobs, count, size) for count in counts if count > 0]
        kept = SETTINGS["kept, no prefetch"]
        need = model_view(model_path, kept, 1, size)[0]
        cases += [("kept, no prefetch", kept, need, size) for size in (largest, largest - 1)]
        for label, knobs, count, size in cases:
            need, exact, says_runs = model_view(model_path, knobs, count, size)
            ran, said = run(folder, model_path, knobs, count, size)
            total += 1
            agree += ran == says_runs
            needs = f"{'exactly ' if exact else ''}{need}"
            print(f"{label:<29} {needs:>11} {count:>7} {size:>11,}  {'runs' if says_runs else 'stops':<6} "
                  f"{'yes' if ran == says_runs else 'NO':<6} {said}", flush=True)
    print(f"\nthe model said right whether DeepSpeed runs in {agree} of {total} runs")
    print("release settings: kept = DeepSpeed's stage3_max_reuse_distance 1e9 (every parameter reused within it); "
          "reuse 6e6 = stage3_max_reuse_distance 6e6 (the gpt2 shape's last layer kept); "
          "all released = reuse distance, live parameters and prefetch bucket 0; "
          "no prefetch = stage3_prefetch_bucket_size 0")
    return 0 if agree == total else 1


if __name__ == "__main__":
    sys.exit(main())
