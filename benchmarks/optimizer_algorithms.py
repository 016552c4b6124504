"""How far the bytes ratio carries a measured AdamW rate to other optimizers on this CPU.

Calibration times AdamW only; the cost model steps SGD, Adagrad and Lion at that rate times the
ratio of bytes the same implementation moves (simtune.optimizers: ``relative_cost``). This steps
torch's AdamW, Adagrad, momentum SGD and plain SGD side by side over one flat fp32 tensor (as ZeRO
steps its partition), in each implementation torch has on the CPU, in alternating order over
several rounds, and prints each one's measured time relative to AdamW's in the same implementation
and round against the ratio the model uses. DeepSpeed's CPU kernels, which step an offloaded
optimizer (DeepSpeedCPUAdam, DeepSpeedCPUAdagrad, DeepSpeedCPULion), are one more implementation,
their ratio the fused one's; the first run JIT-compiles those of them not yet built (a few minutes),
and a kernel that cannot be built is left out.

    python benchmarks/optimizer_algorithms.py [--elements 4000000] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from simtune.calib.optimizer import DEEPSPEED_CPU_KERNELS, deepspeed_cpu_optimizer  # noqa: E402
from simtune.optimizers import OptimizerChoice  # noqa: E402

ALGORITHMS = {  # simtune's algorithm: torch's optimizer over the parameters (lr, and its state's options)
    "adamw": lambda params, **kw: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, **kw),
    "adagrad": lambda params, **kw: torch.optim.Adagrad(params, lr=1e-3, **kw),
    "sgd_momentum": lambda params, **kw: torch.optim.SGD(params, lr=1e-3, momentum=0.9, **kw),
    "sgd": lambda params, **kw: torch.optim.SGD(params, lr=1e-3, **kw),
}
IMPLEMENTATIONS = {"for_loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
STEPS, WARM_UP = 7, 2


def build_optimizer(algorithm: str, implementation: str, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """torch's optimizer in ``implementation``, or DeepSpeed's CPU kernel (``deepspeed_cpu``)."""
    if implementation != "deepspeed_cpu":
        return ALGORITHMS[algorithm](params, **IMPLEMENTATIONS[implementation])
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return deepspeed_cpu_optimizer(algorithm)(params, lr=1e-3, weight_decay=0.01)


def step_seconds(algorithm: str, implementation: str, elements: int) -> float | None:
    """Median seconds of one step over a flat tensor (None where torch has no such implementation)."""
    param = torch.nn.Parameter(torch.randn(elements))
    param.grad = torch.randn(elements)
    try:
        optimizer = build_optimizer(algorithm, implementation, [param])
        optimizer.step()
    except Exception:  # no such implementation here (torch's), or a kernel that cannot be built
        return None
    times = []
    for index in range(WARM_UP + STEPS):
        start = time.perf_counter()
        optimizer.step()
        if index >= WARM_UP:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=4_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# command: python benchmarks/optimizer_algorithms.py --elements {args.elements} --rounds {args.rounds} "
          f"--threads {args.threads}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} thread(s); {datetime.now().isoformat(timespec='seconds')}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"# one flat fp32 tensor of {args.elements:,} elements, random gradients; per round every "
          f"(algorithm, implementation) once, the order reversed every other round")
    cases = [(a, i) for i in IMPLEMENTATIONS for a in ALGORITHMS] + [(a, "deepspeed_cpu") for a in DEEPSPEED_CPU_KERNELS]
    ratios: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    per_element: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    for round_index in range(args.rounds):
        order = cases if round_index % 2 == 0 else cases[::-1]
        measured = {case: step_seconds(*case, args.elements) for case in order}
        for (algorithm, implementation), seconds in measured.items():
            adamw = measured[("adamw", implementation)]
            if seconds is None or adamw is None:
                continue
            ratios[(algorithm, implementation)].append(seconds / adamw)
            per_element[(algorithm, implementation)].append(seconds / args.elements)
    print()
    print(f"{'implementation':<15}{'algorithm':<14}{'ns/element':>11}{'measured/AdamW':>16}{'bytes ratio':>13}"
          f"{'error':>8}")
    errors = []
    for algorithm, implementation in cases:
        if not ratios[(algorithm, implementation)]:
            print(f"{implementation:<15}{algorithm:<14}{'none on this CPU':>48}")
            continue
        measured_ratio = statistics.median(ratios[(algorithm, implementation)])
        predicted = OptimizerChoice(algorithm).relative_cost("fused" if implementation == "deepspeed_cpu" else implementation)
        error = predicted / measured_ratio - 1
        if algorithm != "adamw":
            errors.append(abs(error))
        print(f"{implementation:<15}{algorithm:<14}{statistics.median(per_element[(algorithm, implementation)]) * 1e9:>11.2f}"
              f"{measured_ratio:>16.3f}{predicted:>13.3f}{error:>+8.0%}")
    print()
    print(f"step predicted from AdamW's measured rate by the bytes ratio: median |error| "
          f"{statistics.median(errors):.0%}, max {max(errors):.0%} over {len(errors)} (algorithm, implementation) pairs")
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
