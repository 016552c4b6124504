"""ZeRO-Infinity's NVMe offload run for real on this machine, against the model's swap time.

Calibrates this machine quickly with ``--nvme-path`` (the storage's read and write rates), then
runs the same stage-3 configuration with its optimizer offloaded to host memory and to NVMe, in
turn, ``--rounds`` times (``simtune search --strategy measure``: DeepSpeed's launcher and engines,
2 CPU processes, gloo; DeepSpeed's async_io op must build, which needs libaio), and prints the
measured step times and engine-step calls beside the model's swap time (``simtune estimate``
with the calibrated profile: offload transfer with NVMe less without).

    python benchmarks/nvme_offload.py --work-dir /tmp/simtune-nvme --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODEL, SEQ, MBS, RANKS = "gpt2-tiny-heavy", 64, 4, 2


def run(command: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def measure(device: str, folder: Path, swap: Path, env: dict) -> dict:
    folder.mkdir(parents=True)
    config = {"train_micro_batch_size_per_gpu": [MBS], "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3, "offload_optimizer": {"device": device, "nvme_path": str(swap)}},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
              "autotuning": {"start_profile_step": 3, "end_profile_step": 13}}
    (folder / "ds.json").write_text(json.dumps(config))
    run([sys.executable, "-m", "simtune", "search", "--strategy", "measure", "--model", MODEL, "--seq-len", str(SEQ),
         "--num_gpus", str(RANKS), "--deepspeed", "ds.json", "-q"], env, folder)
    document = json.loads((folder / "autotuning_results" / "results.json").read_text())
    # a run whose steps moved is run again, and the search returns the steady one
    return next(e["metrics"] for e in document["experiments"] if e["name"] == document["best"])


def predict(device: str, profile: Path, env: dict, cwd: Path) -> dict:
    done = run([sys.executable, "-m", "simtune", "estimate", "--model", MODEL, "--seq-len", str(SEQ), "--profile",
                str(profile), "--gpus", str(RANKS), "--stage", "3", "--mbs", str(MBS), "--offload-optimizer", device,
                "--json"], env, cwd)
    return json.loads(done.stdout)["time_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="/tmp/simtune-nvme")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(args.work_dir)
    if work.exists():
        sys.exit(f"{work} exists: name a new --work-dir")
    swap = work / "swap"
    swap.mkdir(parents=True)
    env = {**os.environ, "SIMTUNE_HOME": str(work / "home"), "SIMTUNE_CACHE_DIR": str(work / "cache")}
    print(f"# command: python benchmarks/nvme_offload.py --work-dir {work} --rounds {args.rounds}")
    print(f"# {MODEL}, {SEQ} tokens, micro-batch {MBS}, ZeRO-3, {RANKS} CPU processes (gloo); load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    profile = work / "profile.json"
    started = time.perf_counter()
    run([sys.executable, "-m", "simtune", "calibrate", "--gpus", str(RANKS), "--quick", "--no-engines", "--nvme-path",
         str(swap), "--out", str(profile)], env, work)
    offload = json.loads(profile.read_text())["offload"]
    print(f"calibration {time.perf_counter() - started:.0f} s: node NVMe read {offload['nvme_read_bytes_per_s'] / 1e9:.2f} "
          f"GB/s, write {offload['nvme_write_bytes_per_s'] / 1e9:.2f} GB/s")
    measured: dict[str, list[dict]] = {"cpu": [], "nvme": []}
    for round_index in range(args.rounds):
        order = ("cpu", "nvme") if round_index % 2 == 0 else ("nvme", "cpu")
        for device in order:
            m = measure(device, work / f"round{round_index}-{device}", swap, env)
            measured[device].append(m)
            print(f"round {round_index + 1} {device:4s}: step {m['step_time_s'] * 1e3:7.1f} ms (forward "
                  f"{m['fwd_s'] * 1e3:.1f}, backward {m['bwd_s'] * 1e3:.1f}, step call {m['step_s'] * 1e3:.1f})")
    predicted = {device: predict(device, profile, env, work) for device in ("cpu", "nvme")}

    def median(device: str, key: str) -> float:
        return statistics.median(m[key] for m in measured[device]) * 1e3

    swap_ms = (predicted["nvme"]["offload_transfer"] - predicted["cpu"]["offload_transfer"]) * 1e3
    print()
    print(f"predicted swap time (offload transfer, nvme less cpu): {swap_ms:.1f} ms")
    print(f"measured, medians over rounds: step {median('nvme', 'step_time_s') - median('cpu', 'step_time_s'):+.1f} ms, "
          f"step call {median('nvme', 'step_s') - median('cpu', 'step_s'):+.1f} ms, backward "
          f"{median('nvme', 'bwd_s') - median('cpu', 'bwd_s'):+.1f} ms (nvme less cpu)")
    print(f"predicted step: cpu {predicted['cpu']['step'] * 1e3:.1f} ms, nvme {predicted['nvme']['step'] * 1e3:.1f} ms; "
          f"measured medians: cpu {median('cpu', 'step_time_s'):.1f} ms, nvme {median('nvme', 'step_time_s'):.1f} ms")
    print(f"# load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
