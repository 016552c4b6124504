"""An allreduce at the sizes DeepSpeed sends with its default bucket (up to 5e8 elements), against
what a hardware profile's fit says: calibration measures collectives up to 2^22 fp32 elements
(16 MiB) and the model extends the line beyond.

Run from the repository root (no GPU needed; DS_ACCELERATOR=cpu is set here):

    python benchmarks/large_allreduce.py [--profile NAME_OR_PATH] > benchmarks/results/large_allreduce.txt

Two CPU processes under DeepSpeed's launcher time ``deepspeed.comm.all_reduce`` of fp32 tensors
of 4 MiB to 512 MiB (a barrier before each call, the fastest of 3 calls after one warm-up). With
``--profile`` each size is also predicted from the profile's intra-node allreduce fit
(``CollectiveFit.time_s``: latency + bus factor x bytes / bus bandwidth).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

SIZES_MIB = (4, 16, 64, 128, 256, 512)


def _rank(out: str) -> None:
    import deepspeed
    import torch
    from deepspeed import comm as dist

    deepspeed.init_distributed(verbose=False)
    rows = []
    for mib in SIZES_MIB:
        x = torch.ones(mib * 2**20 // 4)
        dist.barrier()
        dist.all_reduce(x)
        times = []
        for _ in range(3):
            dist.barrier()
            started = time.perf_counter()
            dist.all_reduce(x)
            times.append(time.perf_counter() - started)
        rows.append((mib, min(times)))
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(rows, f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="a 2-process CPU profile whose allreduce fit to compare")
    parser.add_argument("--rank-out", help=argparse.SUPPRESS)
    parser.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # given by the launcher
    args = parser.parse_args()
    if args.rank_out:
        _rank(args.rank_out)
        return 0
    from simtune.runner.launcher import free_port

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# command: python benchmarks/large_allreduce.py{' --profile ' + args.profile if args.profile else ''}")
    print(f"# host {platform.node() or 'unknown'}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"load average at start {load}")
    with tempfile.TemporaryDirectory(prefix="simtune-allreduce-") as tmp:
        out = os.path.join(tmp, "rows.json")
        port = free_port()
        env = dict(os.environ, DS_ACCELERATOR="cpu", LOCAL_SIZE="2", OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // 2)))
        try:
            subprocess.run(["deepspeed", "--num_accelerators", "2", "--master_port", str(port), os.path.abspath(__file__),
                            "--rank-out", out], env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        finally:
            for name in os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []:
                if name.startswith("deepspeed_allreduce_buffer_") and f"_{port}_" in name:
                    os.remove(os.path.join("/dev/shm", name))
        with open(out) as f:
            rows = json.load(f)
    fit = None
    if args.profile:
        from simtune.hardware import load_profile

        profile = load_profile(args.profile)
        fit = profile.collectives.intra_node["allreduce"]
        largest = max(p.bytes for p in fit.points)
        print(f"# profile {profile.name}: allreduce latency {fit.latency_s * 1e6:.1f} us, bus bandwidth "
              f"{fit.bandwidth_bytes_per_s / 1e9:.2f} GB/s, fitted up to {largest / 2**20:.0f} MiB")
    print()
    print("| MiB | measured ms | algorithm GB/s |" + (" fit ms | fit / measured |" if fit else ""))
    print("|--:|--:|--:|" + ("--:|--:|" if fit else ""))
    for mib, seconds in rows:
        line = f"| {mib} | {seconds * 1e3:.1f} | {mib * 2**20 / seconds / 1e9:.2f} |"
        if fit is not None:
            predicted = fit.time_s(mib * 2**20, 2)
            line += f" {predicted * 1e3:.1f} | {predicted / seconds:.2f} |"
        print(line)
    print(f"\n# load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
