"""How much one real experiment's throughput varies from run to run, by measurement window.

Every tuner decides from single runs, so the run-to-run spread of one configuration bounds how
finely any of them can rank configurations. This runs the same configurations again and again
through the runner (the real DeepSpeed launcher, the probe, 2 CPU processes, gloo), the
configurations and windows in alternation, and reports for each window (start..end profile step)
the median, the range and the coefficient of variation (stdev / mean) of the throughput, and the
wall time of one experiment. For the windows of at least ``MIN_WINDOW_STEPS`` steps it also gives
how far each run's step time moved within its window (the two halves' medians,
:mod:`simtune.runner.steadiness`) and how many runs moved more than a steady run may, which a
model-driven search would run once more.

Run from the repository root (no GPU needed; DS_ACCELERATOR=cpu is set here):

    python benchmarks/measurement_noise.py --repeats 6 > benchmarks/results/measurement_noise.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from simtune.workloads import DEFAULT_OPTIMIZER

MODEL, SEQ_LEN, MICRO_BATCH = "gpt2-tiny", "64", 16
WINDOWS = ((3, 5), (3, 22))
"""DeepSpeed's default window (steps 3..5) and the built-in CPU config's (3..22)."""
STAGES = (0, 2)


def config(stage: int) -> dict:
    return {"train_micro_batch_size_per_gpu": MICRO_BATCH, "gradient_accumulation_steps": 1,
            "optimizer": DEFAULT_OPTIMIZER,
            "zero_optimization": {"stage": stage}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6, help="runs of each configuration and window (default 6)")
    args = parser.parse_args(argv)
    os.environ["DS_ACCELERATOR"] = "cpu"
    from simtune.runner import Resources, Runner
    from simtune.runner.experiment import Experiment
    from simtune.space import Trial
    from simtune.workloads import TRAIN_PROGRAM

    print(f"# command: python benchmarks/measurement_noise.py --repeats {args.repeats}")
    print(f"# host {platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"# {MODEL}, {SEQ_LEN} tokens, micro-batch {MICRO_BATCH}, AdamW, fp32, 2 CPU processes; "
          f"ZeRO stages {', '.join(map(str, STAGES))}; windows and stages in alternation")
    from simtune.runner.steadiness import MAX_WINDOW_SHIFT, window_shift

    values: dict[tuple, list[float]] = {}
    walls: dict[tuple, list[float]] = {}
    shifts: dict[tuple, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="simtune-noise-") as folder:
        runners = {w: Runner((str(TRAIN_PROGRAM), ("--model", MODEL, "--seq-len", SEQ_LEN, "--deepspeed",
                                                   "ds_config.json")),
                             Resources.local(num_gpus=2, accelerator="cpu"), Path(folder) / f"r{w[1]}",
                             Path(folder) / f"e{w[1]}", overwrite=True, timeout_s=600,
                             start_profile_step=w[0], end_profile_step=w[1])
                   for w in WINDOWS}
        for repeat in range(args.repeats):
            for window in WINDOWS:
                for stage in STAGES:
                    started = time.perf_counter()
                    (result,) = runners[window].run([Experiment(f"z{stage}_r{repeat}", Trial(stage, MICRO_BATCH, 1),
                                                                config(stage))])
                    walls.setdefault((window, stage), []).append(time.perf_counter() - started)
                    value = (result.metrics or {}).get("throughput") if result.status == "ok" else None
                    print(f"# run {repeat} window {window[0]}..{window[1]} z{stage}: {result.status} "
                          f"{'' if value is None else f'{value:.1f} samples/s'}", file=sys.stderr, flush=True)
                    if value is not None:
                        values.setdefault((window, stage), []).append(float(value))
                        shift = window_shift((result.metrics or {}).get("step_times_s"))
                        if shift is not None:
                            shifts.setdefault((window, stage), []).append(shift.relative)
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    print()
    print("| window | stage | runs | median samples/s | min..max | CV | wall s per experiment |")
    print("|:--|--:|--:|--:|:--|--:|--:|")
    summary = {}
    for window in WINDOWS:
        for stage in STAGES:
            v = values.get((window, stage), [])
            if len(v) < 2:
                print(f"| {window[0]}..{window[1]} | {stage} | {len(v)} | - | - | - | - |")
                continue
            cv = statistics.stdev(v) / statistics.mean(v)
            summary.setdefault(window, []).append(cv)
            print(f"| {window[0]}..{window[1]} | {stage} | {len(v)} | {statistics.median(v):.1f} | "
                  f"{min(v):.1f}..{max(v):.1f} | {cv:.1%} | {statistics.median(walls[(window, stage)]):.1f} |")
    print()
    for window, cvs in summary.items():
        print(f"window {window[0]}..{window[1]} ({window[1] - window[0] + 1} steps): mean CV {statistics.mean(cvs):.1%}")
    if shifts:
        print()
        print(f"step time moved within the window (the medians of its two halves, over the faster; a search "
              f"runs a verification once more above {MAX_WINDOW_SHIFT:.0%}):")
        for (window, stage), moved in shifts.items():
            above = sum(1 for x in moved if x > MAX_WINDOW_SHIFT)
            print(f"  window {window[0]}..{window[1]} z{stage}: median {statistics.median(moved):.1%}, max "
                  f"{max(moved):.1%}; {above} of {len(moved)} runs above {MAX_WINDOW_SHIFT:.0%}")
        every = [x for moved in shifts.values() for x in moved]
        above = sum(1 for x in every if x > MAX_WINDOW_SHIFT)
        print(f"  all: {above} of {len(every)} runs above {MAX_WINDOW_SHIFT:.0%}")
    print(json.dumps({f"{w[0]}..{w[1]} z{s}": v for (w, s), v in values.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
