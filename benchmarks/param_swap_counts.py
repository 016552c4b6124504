"""What DeepSpeed's parameter swapper reads from NVMe in each pass, against the model's count.

Runs the 13.2M-parameter GPT-2 shape of benchmarks/nvme_offload.py (width 512, 4 layers, tied
embedding) at stage 3 on 2 CPU ranks, micro-batch 4, with the optimizer in host memory and every
parameter on NVMe (``offload_param``, ``max_in_cpu`` 0; every parameter released after use, as
DeepSpeed's 5 parameter swap buffers need here). Rank 0 wraps the swapper's ``swap_in`` and
``synchronize_reads`` and counts, in steps 4-5, the calls, elements and seconds of each pass, and
the script prints them beside the model's elements per rank and pass
(``nvme_swap.parameter_swap_bytes``) and what they take at the calibrated rate given.

    python benchmarks/param_swap_counts.py --folder /tmp [--read-gbps 3.89]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

SHAPE = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 1024, "n_positions": 64,
         "n_embd": 512, "n_layer": 4, "n_head": 8, "activation_function": "gelu_new"}
RANKS, SEQ, MBS, STEPS, COUNTED = 2, 64, 4, 5, 2
RELEASE_ALL = {"stage3_max_reuse_distance": 0, "stage3_max_live_parameters": 0, "stage3_prefetch_bucket_size": 0}


def ds_config(offload_param: dict) -> dict:
    """The run's DeepSpeed config: stage 3, every parameter released after use, the optimizer in
    host memory, the parameters offloaded as ``offload_param`` says."""
    return {"train_micro_batch_size_per_gpu": MBS, "gradient_accumulation_steps": 1,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
            "zero_optimization": {"stage": 3, **RELEASE_ALL, "offload_optimizer": {"device": "cpu"},
                                  "offload_param": offload_param}}


def nvme_offload(swap: Path) -> dict:
    """``offload_param`` with every parameter on NVMe (``max_in_cpu`` 0), swapped in ``swap``."""
    swap.mkdir()
    return {"device": "nvme", "nvme_path": str(swap), "max_in_cpu": 0}


def launch_ranks(script: str, folder: Path, config: dict, model_path: Path, out: Path) -> None:
    """``script --rank`` with ``config`` (written to ``folder``) and the shape at ``model_path`` on
    :data:`RANKS` CPU processes under DeepSpeed's launcher; exits with its output if it fails."""
    from simtune.runner.launcher import run_on_cpu_ranks

    (folder / "ds.json").write_text(json.dumps(config))
    done = run_on_cpu_ranks([script, "--rank", str(folder / "ds.json"), str(model_path), str(out)], RANKS)
    if done.returncode != 0:
        sys.exit(f"the launch in {folder} failed ({done.returncode}): {done.stderr[-2000:]}")


def own_arguments(rank_program: Callable[[str, str, str], None]) -> list[str] | None:
    """The script's own arguments; None where this process is one of the ranks
    :func:`launch_ranks` started, which then ran ``rank_program`` (config, model, output)."""
    argv = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]  # the launcher adds it
    if argv and argv[0] == "--rank":
        rank_program(argv[1], argv[2], argv[3])
        return None
    return argv


def folder_parser(doc: str) -> argparse.ArgumentParser:
    """The script's argument parser (described by its docstring's first line), with ``--folder``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--folder", default="/tmp", help="where the swap files go")
    return parser


def engine_and_batches(config_path: str, model_path: str) -> tuple:
    """DeepSpeed's engine over the shape at ``model_path`` with the config at ``config_path``, its
    synthetic batches of :data:`MBS` x :data:`SEQ` tokens, and what must outlive the training."""
    import deepspeed
    import torch

    from simtune.workloads import load_workload
    from simtune.workloads.train import SyntheticTokens, build_training_model

    ds_config = json.loads(Path(config_path).read_text())
    workload = load_workload(model_path, seq_len=SEQ)
    model, keep_alive = build_training_model(workload, ds_config, False)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds_config)
    return engine, SyntheticTokens(workload, MBS, torch.device("cpu"), seed=1), keep_alive


def rank_program(config_path: str, model_path: str, out: str) -> None:
    from deepspeed.runtime.swap_tensor import partitioned_param_swapper as swapper

    phase = ["init"]
    counts: collections.Counter[str] = collections.Counter()
    cls = swapper.AsyncPartitionedParameterSwapper
    swap_in, synchronize = cls.swap_in, cls.synchronize_reads

    inside = [False]  # a synchronous swap_in waits through synchronize_reads: count that wait once

    def counted_swap_in(self, params, async_op=True, swap_in_buffers=None):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        inside[0] = True
        try:
            done = swap_in(self, params, async_op=async_op, swap_in_buffers=swap_in_buffers)
        finally:
            inside[0] = False
        counts[f"{phase[0]} calls"] += 1
        counts[f"{phase[0]} elements"] += sum(p.ds_tensor.ds_numel for p in params)
        counts[f"{phase[0]} seconds"] += time.perf_counter() - started
        return done

    def counted_synchronize(self):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        done = synchronize(self)
        if not inside[0]:
            counts[f"{phase[0]} seconds"] += time.perf_counter() - started
        return done

    cls.swap_in, cls.synchronize_reads = counted_swap_in, counted_synchronize
    engine, batches, keep_alive = engine_and_batches(config_path, model_path)
    for step in range(STEPS):
        if step == STEPS - COUNTED:
            counts.clear()
        phase[0] = "forward"
        loss = engine(**batches.next()).loss
        phase[0] = "backward"
        engine.backward(loss)
        phase[0] = "step"
        engine.step()
    if engine.global_rank == 0:
        Path(out).write_text(json.dumps({k: v / COUNTED for k, v in counts.items()}))
    del keep_alive


def modelled_run(model_path: str) -> tuple:
    """The model's (ModelSpec, TrainConfig) of the run: the shape at ``model_path``, stage 3 on
    :data:`RANKS` ranks, the optimizer in host memory, every parameter on NVMe and released after use."""
    from simtune.model.adapters import model_spec
    from simtune.model.inputs import TrainConfig
    from simtune.nvme_settings import NvmeSwapSettings
    from simtune.workloads import load_workload

    m = model_spec(load_workload(model_path, seq_len=SEQ))
    c = TrainConfig(stage=3, micro_batch_size=MBS, dp_degree=RANKS, precision="fp32", offload_optimizer=True,
                    offload_param=True, offload_param_nvme=True, nvme=NvmeSwapSettings(max_in_cpu=0), **RELEASE_ALL)
    return m, c


def model_count(model_path: str) -> tuple[float, int]:
    """(elements the model reads per rank and pass, the rank's partition elements)."""
    from simtune.model.nvme_swap import parameter_swap_bytes
    from simtune.model.shards import shards

    m, c = modelled_run(model_path)
    return parameter_swap_bytes(m, c)[0] / 4 / 2, shards(m, c).partition


def main() -> int:
    argv = own_arguments(rank_program)
    if argv is None:
        return 0
    parser = folder_parser(__doc__)
    parser.add_argument("--read-gbps", type=float, default=3.89, help="the node's calibrated NVMe read rate")
    args = parser.parse_args(argv)
    print(f"Command: python benchmarks/param_swap_counts.py --folder {args.folder} --read-gbps {args.read_gbps}")
    with tempfile.TemporaryDirectory(dir=args.folder) as name:
        folder = Path(name)
        model_path = folder / "gpt2-wide.json"
        model_path.write_text(json.dumps(SHAPE))
        out = folder / "counts.json"
        launch_ranks(__file__, folder, ds_config(nvme_offload(folder / "swap")), model_path, out)
        counts = json.loads(out.read_text())
        per_pass, partition = model_count(str(model_path))
    rate = args.read_gbps * 1e9 / RANKS
    print(f"GPT-2 shape, 13.2M parameters, rank partition {partition:,} elements; stage 3, {RANKS} CPU ranks, "
          f"micro-batch {MBS}; per step, rank 0, steps {STEPS - COUNTED + 1}-{STEPS}\n")
    print(f"{'pass':<9} {'swap-ins':>8} {'elements':>11} {'waited ms':>9} | {'model elements':>14} {'at rate ms':>10}")
    for phase in ("forward", "backward", "step"):
        elements = counts.get(f"{phase} elements", 0.0)
        modelled = per_pass if phase != "step" else 0.0
        print(f"{phase:<9} {counts.get(f'{phase} calls', 0):>8.0f} {elements:>11,.0f} "
              f"{counts.get(f'{phase} seconds', 0.0) * 1e3:>9.1f} | {modelled:>14,.0f} {4 * modelled / rate * 1e3:>10.1f}")
    print(f"\nrate: the node's {args.read_gbps} GB/s over its {RANKS} ranks; fp32 elements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
