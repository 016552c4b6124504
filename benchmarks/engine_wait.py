"""How much of what a DeepSpeed engine adds per micro-step at two ranks is one rank waiting for
the other, and how stable each reading is from launch to launch.

The workload calibration reads each stage's engine residual as the mean over ranks of
(median engine call - median bare-model call), over 12 steps, each step's calls after a barrier.
An engine's backward ends in a collective (stage 0/1: the gradient all-reduce at the boundary;
stage 2: the last bucket's reduction), so a rank that reaches it first waits for the other, and
that wait is inside its backward. Here every rank times the same pairs as the calibration does
(``simtune.calib.engines.timed_engine_steps``) for many steps, with the moment its engine
backward began on the machine's monotonic clock, and for each window of 12 steps this prints:

- ``calibration``: the calibration's reading (mean over ranks of median - median);
- ``paired``: the mean over ranks of the median over steps of (engine - bare model) per step;
- ``later rank``: per step, the pair difference of the rank that began its backward later (it
  waits least at the collective); median over steps;
- ``start gap``: the median over steps of how much later the later rank began its backward.

Launches of 2 ranks (one CPU thread each), gpt2-tiny at 128 tokens, micro-batch 4, ZeRO stages
0, 1 and 2, DeepSpeed's default knobs, AdamW (torch's), fp32.

Run from the repository root (no GPU needed; DS_ACCELERATOR=cpu is set here):

    python benchmarks/engine_wait.py --launches 4 --steps 48 > benchmarks/results/engine_wait.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

MODEL, SEQ_LEN, MICRO_BATCH, STAGES, WINDOW = "gpt2-tiny", 128, 4, (0, 1, 2), 12


def rank_main(out: Path, steps: int) -> None:
    import deepspeed
    import torch

    from simtune.calib.engines import timed_engine_steps, warm_engine
    from simtune.calib.workload_measure import build_measured_model, device_sync, token_batches
    from simtune.workloads.presets import load_workload

    deepspeed.init_distributed()
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    sync = device_sync(device)
    workload = load_workload(MODEL, seq_len=SEQ_LEN)
    module = build_measured_model(workload, "fp32", device)
    make_batch = token_batches(workload, device, seed=4321 + rank)
    result = {}
    for stage in STAGES:
        engine = warm_engine(stage, MICRO_BATCH, lambda: build_measured_model(workload, "fp32", device), make_batch,
                             lambda o: o.loss, "fp32", world, device)
        result[stage] = timed_engine_steps(engine, module, make_batch, lambda o: o.loss, MICRO_BATCH, sync, steps)
        del engine
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.barrier()
    sys.stdout.flush()
    os._exit(0)


def launch(steps: int) -> dict[int, list[dict[str, list[float]]]]:
    """One launch of two ranks; per stage, each rank's per-step samples."""
    from simtune.runner import local_ranks
    from simtune.runner.launcher import free_port

    with tempfile.TemporaryDirectory(prefix="simtune-engine-wait-") as folder:
        port = free_port()
        processes = [subprocess.Popen([sys.executable, __file__, "--rank", "--out", folder, "--steps", str(steps)],
                                      env=local_ranks.rank_env(rank, 2, port), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
                     for rank in range(2)]
        codes = [p.wait(timeout=900) for p in processes]
        if any(codes):
            raise SystemExit(f"a rank failed: exit codes {codes}")
        ranks = [json.loads((Path(folder) / f"rank{r}.json").read_text()) for r in range(2)]
    return {stage: [r[str(stage)] for r in ranks] for stage in STAGES}


def _pair(r: dict[str, list[float]], i: int) -> float:
    """Step i's engine calls less the bare model's (seconds)."""
    return r["forward"][i] + r["backward"][i] + r["loop"][i] - r["module_forward"][i] - r["module_backward"][i]


def _by_call(ranks: list[dict[str, list[float]]], lo: int, hi: int, stat: Callable[[list[float]], float]) -> float:
    """Mean over ranks of stat(engine calls) - stat(bare-model calls), call by call."""
    return statistics.fmean(sum(stat(r[k][lo:hi]) for k in ("forward", "backward", "loop"))
                            - sum(stat(r[k][lo:hi]) for k in ("module_forward", "module_backward")) for r in ranks)


def readings(ranks: list[dict[str, list[float]]], lo: int, hi: int) -> dict[str, float]:
    """Milliseconds per micro-step of each reading over steps lo..hi-1."""
    steps = range(lo, hi)
    later = [max(range(len(ranks)), key=lambda k, i=i: ranks[k]["backward_started"][i]) for i in steps]
    gap = statistics.median(max(r["backward_started"][i] for r in ranks) - min(r["backward_started"][i] for r in ranks)
                            for i in steps)
    values = {
        "calibration": _by_call(ranks, lo, hi, statistics.median),
        "paired": statistics.fmean(statistics.median(_pair(r, i) for i in steps) for r in ranks),
        "later rank": statistics.median(_pair(ranks[k], i) for k, i in zip(later, steps)),
        "minima": _by_call(ranks, lo, hi, min),
        "means": _by_call(ranks, lo, hi, statistics.fmean),
        "start gap": gap,
    }
    return {name: 1e3 * value for name, value in values.items()}


NAMES = ("calibration", "paired", "later rank", "minima", "means", "start gap")
SPREAD = ("calibration", "minima", "means")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=48, help="timed steps per stage and launch (a multiple of 12)")
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["DS_ACCELERATOR"] = "cpu"
    if args.rank:
        rank_main(args.out, args.steps)
        return 0
    if args.steps < WINDOW or args.steps % WINDOW:
        parser.error(f"--steps must be a positive multiple of {WINDOW}, not {args.steps}")
    print(f"# command: python benchmarks/engine_wait.py --launches {args.launches} --steps {args.steps}")
    print(f"# host {platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"# {MODEL}, {SEQ_LEN} tokens, micro-batch {MICRO_BATCH}, 2 CPU ranks of 1 thread, fp32, AdamW; "
          f"windows of {WINDOW} steps (the calibration's count); ms per micro-step")
    runs = []
    print("\n| launch | window | stage | " + " | ".join(NAMES) + " |")
    print("|--:|:--|--:|" + "--:|" * len(NAMES))
    for n in range(args.launches):
        started = time.perf_counter()
        runs.append(launch(args.steps))
        for stage in STAGES:
            for lo in range(0, args.steps, WINDOW):
                row = readings(runs[-1][stage], lo, lo + WINDOW)
                print(f"| {n + 1} | {lo}..{lo + WINDOW - 1} | {stage} | " + " | ".join(f"{row[k]:.2f}" for k in NAMES)
                      + " |")
        print(f"<!-- launch {n + 1}: {time.perf_counter() - started:.1f} s -->")
    print(f"\n# load average at end {os.getloadavg()[0]:.2f}")
    windows = sorted({WINDOW, 2 * WINDOW, args.steps} & set(range(WINDOW, args.steps + 1, WINDOW)))
    print("\nper stage: each reading's mean and standard deviation over windows of 12, 24 and every step "
          "of a launch; the wait (calibration - later rank) and the per-step sd of engine - bare model")
    for stage in STAGES:
        print(f"  stage {stage}:")
        for size in windows:
            rows = [readings(run[stage], lo, lo + size) for run in runs for lo in range(0, args.steps, size)]
            parts = []
            for k in SPREAD:
                values = [row[k] for row in rows]
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                parts.append(f"{k} {statistics.fmean(values):.2f} sd {sd:.2f}")
            wait = statistics.fmean(row["calibration"] - row["later rank"] for row in rows)
            print(f"    {size:>3} steps ({len(rows):>2} windows): " + "; ".join(parts) + f"; wait {wait:.2f}")
        step_sd = statistics.fmean(statistics.stdev([1e3 * _pair(r, i) for i in range(args.steps)])
                                   for run in runs for r in run[stage])
        print(f"    per-step sd of engine - bare model (mean over ranks and launches): {step_sd:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
