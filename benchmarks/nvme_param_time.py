"""Where parameter offload to NVMe spends its time, DeepSpeed function by function.

benchmarks/nvme_offload.py --params compares step times of whole launches: parameters offloaded to
NVMe against the same in host memory. This script runs the same GPT-2 shape (13.2M parameters,
width 512, 4 layers, tied embedding; stage 3 on 2 CPU ranks, micro-batch 4, 64 tokens, optimizer in
host memory, every parameter released after use, ``max_in_cpu`` 0) in a plain training loop,
launches of the two in alternating order, and times on every rank, in each pass:

- the pass (the engine's forward, backward and step calls),
- the reads: ``Init._ensure_availability_of_partitioned_params``, where a fetch swaps the
  partitions it needs in from NVMe and waits for them (a partition in host memory needs nothing),
- the write-back: ``_reassign_or_swap_out_partitioned_parameters`` in the step, which copies the
  updated parameters into their partitions and, on NVMe, writes them out and waits,

and prints what NVMe adds to each (the medians of each round's NVMe launch less its host-memory
launch, both ranks' means) beside the model's reads and write at the calibrated rates
(``nvme_swap.parameter_swap_bytes`` over the node's rate shared by its ranks, as
``nvme_swap.nvme_swap_s`` charges them). What NVMe adds outside those functions is the rest.

    python benchmarks/nvme_param_time.py --folder /tmp --rounds 3

Each launch trains 10 steps and counts the last 6. Needs DeepSpeed's async_io op (libaio).
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from param_swap_counts import (RANKS, SHAPE, ds_config, engine_and_batches, folder_parser, launch_ranks, modelled_run,
                               nvme_offload, own_arguments)

STEPS, COUNTED = 10, 6
PASSES = ("forward", "backward", "step")
READS = "reads"
WRITE_BACK = "write-back"
TIMED = (("deepspeed.runtime.zero.partition_parameters", "Init", "_ensure_availability_of_partitioned_params", READS),
         ("deepspeed.runtime.zero.stage3", "DeepSpeedZeroOptimizer_Stage3",
          "_reassign_or_swap_out_partitioned_parameters", WRITE_BACK))
"""(module, class, method, label) of the DeepSpeed functions each rank times."""


def rank_program(config_path: str, model_path: str, out: str) -> None:
    phase = ["init"]
    seconds: collections.Counter[str] = collections.Counter()

    def timed(cls: type, name: str, label: str) -> None:
        original = getattr(cls, name)

        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[f"{phase[0]} {label}"] += time.perf_counter() - started

        setattr(cls, name, wrapper)

    @contextlib.contextmanager
    def timed_pass(name: str) -> Iterator[None]:
        phase[0] = name
        started = time.perf_counter()
        yield
        seconds[f"{name} pass"] += time.perf_counter() - started

    for module, cls, method, label in TIMED:
        timed(getattr(importlib.import_module(module), cls), method, label)
    engine, batches, keep_alive = engine_and_batches(config_path, model_path)
    for step in range(STEPS):
        if step == STEPS - COUNTED:
            seconds.clear()
        batch = batches.next()
        with timed_pass("forward"):
            loss = engine(**batch).loss
        with timed_pass("backward"):
            engine.backward(loss)
        with timed_pass("step"):
            engine.step()
    Path(f"{out}.{engine.global_rank}").write_text(json.dumps({k: v / COUNTED for k, v in seconds.items()}))
    del keep_alive


def launch(device: str, folder: Path, model_path: Path) -> dict[str, float]:
    """One launch with the parameters offloaded to ``device``: each timed quantity in seconds per
    step, the mean over the ranks."""
    out = folder / "seconds.json"
    offload = nvme_offload(folder / "swap") if device == "nvme" else {"device": device}
    launch_ranks(__file__, folder, ds_config(offload), model_path, out)
    ranks = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(RANKS)]
    keys = {key for rank in ranks for key in rank}
    return {key: statistics.fmean(rank.get(key, 0.0) for rank in ranks) for key in keys}


def calibrated_rates(folder: Path) -> tuple[float, float]:
    """The node's NVMe (read, write) bytes per second by ``simtune calibrate --nvme-path``."""
    profile = folder / "profile.json"
    env = {**os.environ, "SIMTUNE_HOME": str(folder / "home"), "SIMTUNE_CACHE_DIR": str(folder / "cache")}
    (folder / "calibration").mkdir()
    done = subprocess.run([sys.executable, "-m", "simtune", "calibrate", "--gpus", str(RANKS), "--quick",
                           "--no-engines", "--nvme-path", str(folder / "calibration"), "--out", str(profile)],
                          env=env, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the calibration failed: {done.stderr[-2000:]}")
    offload = json.loads(profile.read_text())["offload"]
    return float(offload["nvme_read_bytes_per_s"]), float(offload["nvme_write_bytes_per_s"])


def modelled_bytes(model_path: str) -> tuple[int, int]:
    """(bytes one rank reads, bytes it writes) per step by the model."""
    from simtune.model.nvme_swap import parameter_swap_bytes

    return parameter_swap_bytes(*modelled_run(model_path))


def main() -> int:
    argv = own_arguments(rank_program)
    if argv is None:
        return 0
    parser = folder_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"# command: python benchmarks/nvme_param_time.py --folder {args.folder} --rounds {args.rounds}")
    print(f"# load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs: dict[str, list[dict[str, float]]] = {"cpu": [], "nvme": []}
    with tempfile.TemporaryDirectory(dir=args.folder) as name:
        folder = Path(name)
        read_rate, write_rate = calibrated_rates(folder)
        model_path = folder / "model.json"
        model_path.write_text(json.dumps(SHAPE))
        read_bytes, written_bytes = modelled_bytes(str(model_path))
        for round_index in range(args.rounds):
            for device in ("cpu", "nvme") if round_index % 2 == 0 else ("nvme", "cpu"):
                run = folder / f"round{round_index}-{device}"
                run.mkdir()
                runs[device].append(launch(device, run, model_path))
                t = runs[device][-1]
                print(f"round {round_index + 1} {device:<4}: " + ", ".join(
                    f"{p} {t.get(f'{p} pass', 0.0) * 1e3:.1f} ms" for p in PASSES)
                    + f" (reads {sum(t.get(f'{p} {READS}', 0.0) for p in PASSES) * 1e3:.1f}, "
                    f"write-back {t.get(f'step {WRITE_BACK}', 0.0) * 1e3:.1f})")
    share = RANKS  # the node's rate, shared by its ranks (nvme_swap.nvme_swap_s)
    model_ms = {"forward": read_bytes / 2 / (read_rate / share) * 1e3, "backward": read_bytes / 2 / (read_rate / share)
                * 1e3, "step": written_bytes / (write_rate / share) * 1e3}

    def added(phase: str, key: str) -> float:
        """The median over rounds of NVMe's launch less the host-memory launch, in ms."""
        return statistics.median(n.get(f"{phase} {key}", 0.0) - c.get(f"{phase} {key}", 0.0)
                                 for n, c in zip(runs["nvme"], runs["cpu"])) * 1e3

    print(f"\nnode NVMe by the calibration: read {read_rate / 1e9:.2f} GB/s, write {write_rate / 1e9:.2f} GB/s, shared "
          f"by {RANKS} ranks; the model: {read_bytes:,} bytes read and {written_bytes:,} written per rank and step")
    print("\nwhat NVMe adds per step (ms; median over rounds of the NVMe launch less the host-memory one, mean of "
          "the ranks):\n")
    print(f"{'pass':<9} {'pass':>8} {'in swaps':>9} {'rest':>8} | {'model':>7}")
    total = [0.0, 0.0, 0.0]
    for phase in PASSES:
        key = WRITE_BACK if phase == "step" else READS
        whole, swaps = added(phase, "pass"), added(phase, key)
        total = [total[0] + whole, total[1] + swaps, total[2] + model_ms[phase]]
        print(f"{phase:<9} {whole:>+8.1f} {swaps:>+9.1f} {whole - swaps:>+8.1f} | {model_ms[phase]:>7.1f}")
    print(f"{'sum':<9} {total[0]:>+8.1f} {total[1]:>+9.1f} {total[0] - total[1]:>+8.1f} | {total[2]:>7.1f}")
    print("\nin swaps: the reads (forward, backward) or the write-back (step) of the NVMe launch less the same "
          "functions' time with the parameters in host memory")
    print(f"# load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
