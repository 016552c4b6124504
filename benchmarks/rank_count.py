"""What changes when one CPU process has the node's cores instead of sharing them with another:
``simtune calibrate`` on 1 and on 2 processes, side by side in one run.

Run from the repository root (no GPU needed; DS_ACCELERATOR=cpu is set here):

    python benchmarks/rank_count.py > benchmarks/results/rank_count.txt

Each calibration measures the machine and the engines of gpt2-tiny and of its heavy twin (as
``simtune calibrate`` does) in a fresh simtune home. Printed per process count: the threads each
rank ran with, the reference model's forward and backward per micro-batch size (what the compute
curves' thread scaling must reproduce), the optimizer's rate, and the engine costs per parameter
read off the pair (what the cost model's rules for another rank count must reproduce). Nothing is
predicted here: the numbers are the evidence for those rules (docs/cost-model.md, section 7).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _calibrate(ranks: int, home: Path) -> dict:
    env = dict(os.environ, DS_ACCELERATOR="cpu", SIMTUNE_HOME=str(home), HF_HUB_OFFLINE="1")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "simtune", "calibrate", "--gpus", str(ranks), "--quiet",
                    "--out", str(home / "profiles"), "--name", f"cpu-{ranks}proc"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return {"wall": time.perf_counter() - started, **_read(home, home / "profiles" / f"cpu-{ranks}proc.json")}


def _read(home: Path, profile_path: Path) -> dict:
    """What one calibration left in ``home``: the profile's optimizer rates, the costs per
    parameter learnt for it, and each reference model's threads and forward/backward times."""
    from simtune.calibration.workload import read_cached
    from simtune.hardware import load_profile
    from simtune.prediction.learnt_engine_costs import learnt_engine_costs

    profile = load_profile(profile_path)
    learnt = learnt_engine_costs(profile, "fp32", home / "profiles" / "engine_costs" / f"{profile.name}.json")
    models = {}
    for path in sorted((home / "cache").glob("workload-*.json")):
        cached = read_cached(path)
        if cached is not None:
            models[cached.name] = (cached.threads, [(m.micro_batch_size, m.forward.median_s, m.backward.median_s)
                                                    for m in cached.measurements])
    return {"table": learnt.param_pass_s if learnt is not None and learnt.param_pass_s else None,
            "models": models, "adam": {name: fit.s_per_param for name, fit in profile.optimizer.fits.items()}}


def main() -> int:
    print("# command: python benchmarks/rank_count.py")
    print(f"# host {platform.node() or 'unknown'}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"load average at start {_load()}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="simtune-ranks-") as tmp:
        for ranks in (1, 2):
            results[ranks] = _calibrate(ranks, Path(tmp) / f"r{ranks}")
            print(f"# calibrate --gpus {ranks}: {results[ranks]['wall']:.0f} s; load average {_load()}")
    print()
    print("model forward / backward ms per micro-batch (median of the timed repeats), threads per rank:")
    for name in sorted(results[1]["models"]):
        for ranks in (1, 2):
            threads, points = results[ranks]["models"][name]
            cells = ", ".join(f"{mbs}: {f * 1e3:.2f}/{b * 1e3:.2f}" for mbs, f, b in points)
            print(f"  {name:16s} {ranks} process(es) x {threads} thread(s): {cells}")
        (_, one), (_, two) = results[1]["models"][name], results[2]["models"][name]
        ratios = ", ".join(f"{a[0]}: {a[1] / b[1]:.2f}/{a[2] / b[2]:.2f}" for a, b in zip(one, two))
        print(f"  {name:16s} ratio 1 process / 2 processes: {ratios}")
    print()
    print("optimizer ns per parameter (each rank's step, every rank stepping at once):")
    for impl in sorted(results[1]["adam"]):
        print(f"  {impl:24s} 1 process {results[1]['adam'][impl] * 1e9:.2f}, "
              f"2 processes {results[2]['adam'][impl] * 1e9:.2f}")
    print()
    print("engine costs per parameter read off gpt2-tiny and its heavy twin (ns; forward, backward, step; "
          "stage 3's step per parameter of the rank's shard):")
    for ranks in (1, 2):
        table = results[ranks]["table"]
        row = "; ".join(f"z{s} " + " ".join(f"{v * 1e9:.2f}" for v in phases) for s, phases in enumerate(table)) \
            if table else "none learnt"
        print(f"  {ranks} process(es): {row}")
    print(f"\n# load average at end {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
