"""The engine reference and its heavy twin measured in one launch or in two, side by side.

``simtune calibrate`` and the first search of a large workload read DeepSpeed's engine costs per
unit and per parameter off real engines of gpt2-tiny and of gpt2-tiny-heavy (the same modules,
16x the parameters). Both can be measured in one launch (their stage-3 engines last:
:mod:`simtune.calib.workload_rank`), which saves a start of the ranks. This benchmark alternates
the two ways over ``--rounds`` rounds on one quick hardware profile and prints, per round, the wall
time and the costs read off the pair (:func:`simtune.prediction.engine_costs.param_pass_costs`,
:func:`~simtune.prediction.engine_costs.framework_costs_of`), then the medians of each way and their
difference beside the spread between rounds of the same way.

    python benchmarks/reference_pair_launch.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNIT_COSTS = ("engine_micro_step_s", "zero3_module_s", "zero3_module_backward_s", "reduce_bucket_s", "gather_call_s",
              "gradient_hook_s", "forward_module_s")


def _costs(reference, heavy, profile) -> dict[str, float]:
    """Costs per parameter (ns) and per unit (us) read off the pair, as ``simtune calibrate`` reads them."""
    from simtune.prediction.engine_costs import framework_costs_of, param_pass_costs
    from simtune.prediction.predictor import Predictor

    def model(measured):
        return Predictor.from_parts(None, measured, profile, world_size=profile.device.count,
                                    precision="fp32").model

    small, large = model(reference), model(heavy)
    per_param = param_pass_costs(small, large, profile.device.count)
    costs = framework_costs_of(small, Predictor.from_parts(None, reference, profile, world_size=profile.device.count,
                                                           precision="fp32").hardware, "fp32", per_param)
    out = {f"z{stage} {phase} ns/param": row[i] * 1e9
           for stage, row in enumerate(per_param) for i, phase in enumerate(("fwd", "bwd", "step"))}
    out.update({f"{name} us": getattr(costs, name) * 1e6 for name in UNIT_COSTS})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work-dir", help="folder for the profile and caches (default: a new temporary one)")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="simtune-pair-"))
    os.environ["SIMTUNE_HOME"] = str(work / "home")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

    from simtune.calibration import run_calibration
    from simtune.calibration.workload import MeasureScope
    from simtune.calibration.workload_launch import calibrate_workloads
    from simtune.search.model_inputs import HEAVY_SCOPE, engine_reference, engine_reference_heavy

    print(f"Command: python benchmarks/reference_pair_launch.py --rounds {args.rounds}")
    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores; load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    profile = run_calibration(2, 1, None, "cpu-2proc-pair", str(work / "profiles"), True).profile
    parts = ((engine_reference(), MeasureScope(checkpointing=False, bucket_engines=True)),
             (engine_reference_heavy(), HEAVY_SCOPE))
    rows: dict[str, list[tuple[float, dict[str, float]]]] = {"one launch": [], "two launches": []}
    for round_ in range(args.rounds):
        ways = ("one launch", "two launches") if round_ % 2 == 0 else ("two launches", "one launch")
        for way in ways:
            started = time.monotonic()
            if way == "one launch":
                reference, heavy = calibrate_workloads(parts, profile, precision="fp32", num_gpus=2, refresh=True,
                                                       cache_dir=work / "cache", log=None)
            else:
                (reference,) = calibrate_workloads(parts[:1], profile, precision="fp32", num_gpus=2, refresh=True,
                                                   cache_dir=work / "cache", log=None)
                (heavy,) = calibrate_workloads(parts[1:], profile, precision="fp32", num_gpus=2, refresh=True,
                                               cache_dir=work / "cache", log=None)
            wall = time.monotonic() - started
            rows[way].append((wall, _costs(reference, heavy, profile)))
            print(f"round {round_ + 1}, {way}: {wall:.1f} s; load average {os.getloadavg()[0]:.2f}", flush=True)

    names = list(rows["one launch"][0][1])
    print()
    print(f"{'':28} {'one launch':>24} {'two launches':>24}  difference of medians / spread of two launches")
    for label, get in [("wall s", lambda r: r[0])] + [(n, (lambda r, n=n: r[1][n])) for n in names]:
        one = [get(r) for r in rows["one launch"]]
        two = [get(r) for r in rows["two launches"]]
        def cell(values):
            return f"{statistics.median(values):8.2f} ({min(values):.2f}..{max(values):.2f})"
        spread = max(two) - min(two)
        diff = statistics.median(one) - statistics.median(two)
        ratio = f"{diff:+.2f} / {spread:.2f}"
        print(f"{label:28} {cell(one):>24} {cell(two):>24}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
