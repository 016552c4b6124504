"""What Adam's step costs on CPU where part of its state is exactly zero.

A parameter whose gradient has always been zero keeps ``exp_avg_sq`` at exactly 0 (0 * beta2 + 0),
and torch's CPU ``sqrt`` is slower on zeros than on ordinary values. Embedding rows that no sample
has touched yet are such parameters: the heavy twin's extra 8.4M elements are position rows
beyond the sequence (never touched), and in the first steps of a run most of a large vocabulary
is untouched too. The calibration times the optimizer on dense random gradients
(simtune/calib/optimizer.py), so whatever the zeros add lands in the engine costs per parameter
read off the twin (docs/cost-model.md 3.3).

For each share of zero-gradient elements (a contiguous block, as untouched embedding rows are),
one flat fp32 parameter of the twin's size is stepped by torch's AdamW (the single-tensor path:
DeepSpeed's flat partition on CPU) at one thread, after warm-up steps; the median of the timed
steps is printed, with ``sqrt`` alone on ordinary values, zeros and denormals for comparison, both
into a new tensor (as AdamW's ``exp_avg_sq.sqrt()`` does) and into one allocated beforehand
(``out=``: no page faults of memory mapped afresh, docs/cost-model.md 3.5, only the values differ).

Run from the repository root (no GPU needed):

    python benchmarks/zero_optimizer_state.py > benchmarks/results/zero_optimizer_state.txt
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

ELEMENTS = 8_916_480
"""gpt2-tiny-heavy's parameters (simtune/workloads/presets/gpt2-tiny-heavy.json)."""
SHARES = (0.0, 0.31, 0.94, 1.0)
"""0.94: the twin's untouched position rows over its parameters; 0.31: gpt2's token embedding
over its parameters (most of its rows untouched in a few steps of a few thousand tokens)."""


def timed(step, warmup: int, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def adamw_step_s(zero_share: float, warmup: int, repeats: int) -> float:
    param = torch.nn.Parameter(torch.randn(ELEMENTS))
    grad = torch.randn(ELEMENTS) * 1e-3
    grad[: int(zero_share * ELEMENTS)] = 0.0
    param.grad = grad
    optimizer = torch.optim.AdamW([param], lr=1e-4, foreach=False)
    return timed(optimizer.step, warmup, repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each timing every case in turn")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# command: python benchmarks/zero_optimizer_state.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"{datetime.datetime.now().isoformat(timespec='seconds')}; load average {os.getloadavg()[0]:.2f}")
    print(f"# {ELEMENTS:,} fp32 elements, {args.threads} thread(s); per case the median over {args.rounds} rounds "
          f"of the median of {args.repeats} steps after 3 (the rounds' range in brackets)")
    print()
    values = {"ordinary (uniform 0-1)": torch.rand(ELEMENTS), "zeros": torch.zeros(ELEMENTS).add_(0.0),
              "denormals (1e-40)": torch.full((ELEMENTS,), 1e-40)}
    out = torch.empty(ELEMENTS)
    steps: dict[float, list[float]] = {share: [] for share in SHARES}
    roots: dict[tuple[str, bool], list[float]] = {(name, fresh): [] for name in values for fresh in (True, False)}
    for _ in range(args.rounds):
        for share in SHARES:
            steps[share].append(adamw_step_s(share, 3, args.repeats))
        for (name, fresh), times in roots.items():
            tensor = values[name]
            times.append(timed(tensor.sqrt if fresh else (lambda: torch.sqrt(tensor, out=out)), 2, args.repeats))

    def text(times: list[float]) -> str:
        return f"{statistics.median(times) * 1e3:6.1f} ms [{min(times) * 1e3:.1f}-{max(times) * 1e3:.1f}]"

    dense = statistics.median(steps[0.0])
    print("torch AdamW step (single tensor), by the share of elements whose gradient is always 0:")
    for share in SHARES:
        extra = "" if share == 0 else \
            f"   {(statistics.median(steps[share]) - dense) / (share * ELEMENTS) * 1e9:+.2f} ns per zero element"
        print(f"  share {share:.2f}: {text(steps[share])}{extra}")
    print()
    print("sqrt alone, into a new tensor / into one allocated beforehand:")
    for name in values:
        print(f"  {name:24s} {text(roots[(name, True)])}   {text(roots[(name, False)])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
