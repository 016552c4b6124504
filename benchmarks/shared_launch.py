"""One launch for several experiments against a launch each: cost, and what each measures.

A search verifies its top predictions one after another. With the built-in program they run in
one shared launch (simtune.runner.shared_launch), which pays the launch's start once. This runs
the same configurations, in rounds, both ways through the runner (the real DeepSpeed launcher,
the probe, 2 CPU processes, gloo): in each round every configuration in a launch of its own,
then all of them as requests to one new shared launch (its start counted in its wall time), the
order of the two halves alternating from round to round. ZeRO-3 runs second, so that stages 1
and 2 run after it in the same process (what it leaves would show in their memory). It reports per configuration the median throughput and peak memory
each way and their ratio, the wall time of all the configurations each way, and how many shared
launches each round took.

Run from the repository root (no GPU needed; DS_ACCELERATOR=cpu is set here):

    python benchmarks/shared_launch.py --rounds 3 > benchmarks/results/shared_launch.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from simtune.workloads import DEFAULT_OPTIMIZER

MODEL, SEQ_LEN = "gpt2-tiny", "64"
CONFIGS = (("z0_mbs16", 0, 16, 1), ("z3_mbs16", 3, 16, 1), ("z1_mbs8_gas2", 1, 8, 2), ("z2_mbs16", 2, 16, 1))
"""(name, stage, micro-batch size, accumulation): ZeRO-3 second, so that two runs follow it."""
WINDOW = (3, 22)
"""The built-in CPU config's measurement window."""


def config(stage: int, micro_batch: int, accumulation: int) -> dict:
    return {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": accumulation,
            "optimizer": DEFAULT_OPTIMIZER,
            "zero_optimization": {"stage": stage}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both ways (default 3)")
    args = parser.parse_args(argv)
    os.environ["DS_ACCELERATOR"] = "cpu"
    from simtune.runner import Resources, Runner
    from simtune.runner.experiment import Experiment
    from simtune.workloads import TRAIN_PROGRAM

    print(f"# command: python benchmarks/shared_launch.py --rounds {args.rounds}")
    print(f"# host {platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"# {MODEL}, {SEQ_LEN} tokens, AdamW, fp32, 2 CPU processes (gloo); steps {WINDOW[0]}..{WINDOW[1]} "
          f"measured; configurations in this order: {', '.join(c[0] for c in CONFIGS)}")
    experiments = [Experiment(name, None, config(stage, mbs, gas)) for name, stage, mbs, gas in CONFIGS]
    values: dict[tuple[str, str], list[float]] = {}
    memory: dict[tuple[str, str], list[int]] = {}
    walls: dict[str, list[float]] = {"own": [], "shared": []}
    failures: list[str] = []
    launch_counts: list[int] = []
    workload = (str(TRAIN_PROGRAM), ("--model", MODEL, "--seq-len", SEQ_LEN, "--deepspeed", "ds_config.json"))
    with tempfile.TemporaryDirectory(prefix="simtune-shared-") as folder:
        for round_ in range(args.rounds):
            halves = ("own", "shared") if round_ % 2 == 0 else ("shared", "own")
            for way in halves:
                where = Path(folder) / f"{way}{round_}"
                runner = Runner(workload, Resources.local(num_gpus=2, accelerator="cpu"), where / "results",
                                where / "exps", overwrite=True, timeout_s=600, start_profile_step=WINDOW[0],
                                end_profile_step=WINDOW[1], shared_launch=way == "shared")
                started = time.monotonic()
                try:
                    results = runner.run(experiments)
                finally:
                    runner.close()
                walls[way].append(time.monotonic() - started)
                shared = runner.shared_launch
                if shared is not None:
                    launch_counts.append(shared.launches)
                for result in results:
                    if not result.ok or result.metrics is None:
                        failures.append(f"round {round_ + 1} {way} {result.name}: {result.status} {result.reason}")
                        continue
                    values.setdefault((result.name, way), []).append(float(result.metrics["throughput"]))
                    memory.setdefault((result.name, way), []).append(int(result.metrics["peak_memory_bytes"]))
                print(f"[round {round_ + 1}] {way}: {walls[way][-1]:.1f} s for {len(experiments)} experiments; "
                      + ", ".join(f"{r.name} {r.metrics['throughput']:.1f}" if r.ok and r.metrics else
                                  f"{r.name} {r.status}" for r in results), flush=True)
    print()
    print("| configuration | own launch samples/s (median, min..max) | shared launch samples/s | shared / own "
          "| own peak MiB | shared peak MiB | shared / own |")
    print("|:--|--:|--:|--:|--:|--:|--:|")
    ratios, memory_ratios = [], []
    for name, *_ in CONFIGS:
        own, shared = values.get((name, "own"), []), values.get((name, "shared"), [])
        own_mem, shared_mem = memory.get((name, "own"), []), memory.get((name, "shared"), [])
        if not own or not shared:
            print(f"| {name} | {len(own)} runs | {len(shared)} runs | - | - | - | - |")
            continue
        ratio = statistics.median(shared) / statistics.median(own)
        mem_ratio = statistics.median(shared_mem) / statistics.median(own_mem)
        ratios.append(ratio)
        memory_ratios.append(mem_ratio)
        print(f"| {name} | {statistics.median(own):.1f} ({min(own):.1f}..{max(own):.1f}) | "
              f"{statistics.median(shared):.1f} ({min(shared):.1f}..{max(shared):.1f}) | {ratio:.3f} | "
              f"{statistics.median(own_mem) / 2**20:.0f} | {statistics.median(shared_mem) / 2**20:.0f} | "
              f"{mem_ratio:.3f} |")
    print()
    own_wall, shared_wall = statistics.median(walls["own"]), statistics.median(walls["shared"])
    print(f"wall time of the {len(CONFIGS)} experiments (median over {args.rounds} rounds): a launch each "
          f"{own_wall:.1f} s, one shared launch {shared_wall:.1f} s (its start included): "
          f"{own_wall / shared_wall:.1f}x; shared launches per round: {', '.join(map(str, launch_counts))}")
    if ratios:
        print(f"throughput shared / own: {min(ratios):.3f}..{max(ratios):.3f} over the configurations; "
              f"peak memory shared / own: {min(memory_ratios):.3f}..{max(memory_ratios):.3f}")
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
