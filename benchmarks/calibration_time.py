"""Wall time of a full and a --quick 2-CPU-process calibration, and the R^2 of each collective fit.

Run from the repository root (no GPU needed; DS_ACCELERATOR=cpu is set here):

    python benchmarks/calibration_time.py > benchmarks/results/calibration_time.txt

Targets: full within 60 s, --quick within 20 s (wall time of the launch, start-up included),
R^2 >= 0.95 for every collective on the measured sizes. The load average is printed because
other processes on a 2-core machine stretch every timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

TARGET_S = {"full": 60.0, "quick": 20.0}
R2_TARGET = 0.95


def _one(quick: bool, out_dir: str) -> list[str]:
    from simtune.calibration import run_calibration

    label = "quick" if quick else "full"
    started = time.perf_counter()
    result = run_calibration(2, quick=quick, out=out_dir, name=f"bench-{label}")
    total_s = time.perf_counter() - started
    profile = result.profile
    raw_elapsed = result.launch.raw.get("elapsed_s", float("nan"))
    sections = result.launch.raw.get("sections_s", {})
    verdict = "ok" if result.wall_s <= TARGET_S[label] else "MISSED"
    lines = [
        f"{label}: launch wall {result.wall_s:.1f} s (target {TARGET_S[label]:.0f} s: {verdict}); "
        f"calibrate() total {total_s:.1f} s; rank-0 program {raw_elapsed:.1f} s "
        f"(" + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in sections.items()) + ")",
    ]
    for op, fit in profile.collectives.intra_node.items():
        sizes = f"{fit.points[0].bytes / 2**20:g}..{fit.points[-1].bytes / 2**20:g} MiB x {len(fit.points)}"
        flag = "ok" if fit.r2 >= R2_TARGET else "below target"
        lines.append(
            f"  {op:<15} R^2 {fit.r2:.3f} ({flag})  latency {fit.latency_s * 1e6:7.1f} us  "
            f"bus bandwidth {fit.bandwidth_bytes_per_s / 1e9:6.2f} GB/s  sizes {sizes}"
        )
    for impl, fit in profile.optimizer.fits.items():
        lines.append(f"  optimizer {impl:<22} {fit.s_per_param * 1e9:6.2f} ns/param  R^2 {fit.r2:.3f}")
    for dtype, curve in profile.compute.curves.items():
        best = max(p.flop_per_s for p in curve.points)
        lines.append(f"  compute {dtype:<5} best {best / 1e9:7.1f} GFLOP/s over {len(curve.points)} sizes")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="calibrations of each kind (default 1)")
    args = parser.parse_args(argv)
    os.environ["DS_ACCELERATOR"] = "cpu"
    print("# command: python benchmarks/calibration_time.py" + (f" --repeat {args.repeat}" if args.repeat != 1 else ""))
    print(f"# host {platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="simtune-bench-") as out_dir:
        for round_index in range(args.repeat):
            for quick in (False, True):
                if args.repeat > 1:
                    print(f"[round {round_index + 1}]", end=" ")
                for line in _one(quick, out_dir):
                    print(line)
                sys.stdout.flush()
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
