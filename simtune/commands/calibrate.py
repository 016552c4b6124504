"""``simtune calibrate``: measure this machine layout and save a hardware profile."""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import TYPE_CHECKING

from simtune.commands.base import Command

if TYPE_CHECKING:
    from simtune.hardware import HardwareProfile

DEFAULT_CPU_PROCESSES = 2
"""Ranks on a machine without GPUs when --gpus is not given."""


def _default_gpus() -> int:
    from simtune.runner.resources import detect_accelerator

    if detect_accelerator() == "cpu":
        return DEFAULT_CPU_PROCESSES
    import torch

    return torch.cuda.device_count()


def format_flop_rate(value: float) -> str:
    return f"{value / 1e12:.3g} TFLOP/s" if value >= 1e12 else f"{value / 1e9:.3g} GFLOP/s"


def format_bytes(value: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


class CalibrateCommand(Command):
    """Measure this machine and save a hardware profile for the cost model.

    One real run on every rank at once (started directly on one node, through DeepSpeed's
    launcher across nodes; NCCL on GPUs, on a machine without GPUs CPU processes with gloo): forward/backward matmul and element-wise
    timings per dtype, the optimizer step per implementation, allreduce/allgather/reduce-scatter/
    broadcast at several message sizes (fitted to latency + bytes / bus bandwidth), copy bandwidth
    and usable memory. Under a minute (2 CPU processes: about 9 s, --quick about 5 s).

    On one node two more launches then run real DeepSpeed engines of a tiny built-in model
    (gpt2-tiny, 64 tokens) and of its heavy twin (gpt2-tiny-heavy: a 65,536-row position table,
    16x the parameters) at every ZeRO stage and save what DeepSpeed's engine costs per unit (per
    ZeRO-3 module fetch, gradient hook, reduction bucket, engine call and step) and per parameter
    (per stage and phase), so that a search measures its workload's model without engines of its
    own (--no-engines: skip; 2 CPU processes: about 40 s).

    The profile is saved as NAME.json in ~/.simtune/profiles (or --out) and records the command,
    the date, the versions and every raw measurement next to its fitted value.
    Example: simtune calibrate --gpus 8 --name my-dgx
    """

    name = "calibrate"

    @classmethod
    def description(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--gpus", "--num_gpus", "--num_accelerators", dest="num_gpus", type=int,
                            help=f"ranks per node: GPUs (CPU processes without GPUs; default: all GPUs, "
                                 f"or {DEFAULT_CPU_PROCESSES} CPU processes)")
        parser.add_argument("--num_nodes", type=int, default=1, help="nodes (needs --hostfile; default 1)")
        parser.add_argument("--hostfile", help="DeepSpeed hostfile (hostname slots=N lines)")
        parser.add_argument("--name", help="profile name (default: from the device, count and host, "
                                           "e.g. cpu-2proc-myhost)")
        parser.add_argument("--out", help="file (.json) or folder to save to (default ~/.simtune/profiles)")
        parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
        parser.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                            help="stop the calibration run after this long (default 900)")
        parser.add_argument("--nvme-path", "--nvme_path", dest="nvme_path", metavar="FOLDER",
                            help="also time the storage ZeRO-Infinity would swap to (DeepSpeed's nvme_path), "
                                 "every rank of a node at once: the profile's NVMe read and write rates")
        parser.add_argument("--no-engines", dest="engines", action="store_false",
                            help="do not measure DeepSpeed's engine costs on two tiny built-in models")

    def run(self, args: argparse.Namespace) -> int:
        from simtune.calibration import run_calibration

        num_gpus = args.num_gpus if args.num_gpus is not None else _default_gpus()
        result = run_calibration(num_gpus, args.num_nodes, args.hostfile, args.name, args.out, args.quick,
                                 timeout_s=args.timeout, say=None if args.quiet else _say, nvme_path=args.nvme_path)
        profile = result.profile
        print(f"Calibrated {profile.device.name} x {profile.device.count} in {result.wall_s:.1f} s.")
        print(f"Saved {profile.name} to {result.path}")
        for line in summary_lines(profile):
            print(line)
        if args.engines and profile.device.nodes == 1:
            learn_engine_costs(profile, num_gpus, timeout_s=args.timeout, quiet=args.quiet)
        return 0


def learn_engine_costs(profile: HardwareProfile, num_gpus: int, *, timeout_s: float, quiet: bool) -> None:
    """Measure the real engines of :data:`simtune.search.model_inputs.ENGINE_REFERENCE` and of its
    heavy twin (:data:`~simtune.search.model_inputs.ENGINE_REFERENCE_HEAVY`) on this machine for
    ``profile`` and save the costs per unit and per parameter read off them (bf16 on GPUs that
    have it, fp16 on other GPUs, fp32 on CPUs). Measured afresh, never from the workload cache:
    the machine was just measured again."""
    import time

    from simtune.calibration.workload import MeasureScope
    from simtune.calibration.workload_launch import calibrate_workload
    from simtune.runner.resources import detect_accelerator
    from simtune.search.model_inputs import (HEAVY_SCOPE, engine_reference, engine_reference_heavy,
                                             learn_reference_engine_costs)

    precision = "fp32"
    if detect_accelerator() == "cuda":
        import torch

        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    log = None if quiet else _say
    measured = []
    for reference, scope in ((engine_reference(), MeasureScope(checkpointing=False, bucket_engines=num_gpus > 1)),
                             (engine_reference_heavy(), HEAVY_SCOPE)):
        started = time.monotonic()
        measured.append(calibrate_workload(reference, profile, precision=precision, num_gpus=num_gpus,
                                           timeout_s=timeout_s, log=log, refresh=True, scope=scope))
        print(f"Measured DeepSpeed's engines on {reference.name} (seq {reference.seq_len}, {precision}) in "
              f"{time.monotonic() - started:.1f} s.")
    learn_reference_engine_costs(measured[0], profile, precision, say=print, heavy=measured[1])


def summary_lines(profile) -> list[str]:
    """The fitted numbers a user checks first: memory, compute, optimizer, collectives."""
    from simtune.optimizers import ALGORITHMS, fit_algorithm

    device = profile.device
    lines = [
        f"  memory per device   {format_bytes(device.memory_bytes)}, "
        f"usable {format_bytes(device.usable_memory_bytes)}, "
        f"fixed overhead {format_bytes(device.fixed_overhead_bytes)}",
        f"  memory bandwidth    {device.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s",
    ]
    for dtype, curve in profile.compute.curves.items():
        best = max(p.flop_per_s for p in curve.points)
        lines.append(f"  compute {dtype:<11} up to {format_flop_rate(best)} "
                     f"(peak {format_flop_rate(device.peak_flop_per_s[dtype])})")
    pool = profile.compute.thread_pool
    if pool is not None:
        lines.append(f"  thread pool wake    {pool.wake_s * 1e6:.1f} us per parallel kernel once throttled "
                     f"({pool.threads} threads; {pool.alone.median_s * 1e6:.1f} us alone)")
        if pool.product_wake_s is not None:
            lines.append(f"                      {pool.product_wake_s * 1e6:.1f} us per matrix product "
                         f"(the median of {len(pool.products)} products)")
    for impl, fit in profile.optimizer.fits.items():
        algorithm = fit_algorithm(impl)
        takes_root = algorithm is not None and ALGORITHMS[algorithm].sqrt_of_state
        zero = (f"; +{fit.zero_state_s_per_param * 1e9:.3g} ns per element with its states at 0"
                if fit.zero_state is not None and takes_root else "")
        lines.append(f"  optimizer {impl:<26} {fit.s_per_param * 1e9:.3g} ns/param ({fit.device}{zero})")
    for impl, why in profile.optimizer.unavailable.items():
        lines.append(f"  optimizer {impl:<26} unavailable: {why}")
    offload = profile.offload
    if offload.nvme_read_bytes_per_s and offload.nvme_write_bytes_per_s:
        lines.append(f"  nvme (node)         read {offload.nvme_read_bytes_per_s / 1e9:.2f} GB/s  "
                     f"write {offload.nvme_write_bytes_per_s / 1e9:.2f} GB/s")
    collectives = profile.collectives
    if not collectives.applicable:
        lines.append(f"  collectives         not applicable: {collectives.note}")
    elif not collectives.intra_node:
        lines.append("  intra-node          not applicable: one rank per node")
    for scope, table in (("intra-node", collectives.intra_node), ("inter-node", collectives.inter_node)):
        for op, fit in table.items():
            r2 = "n/a" if fit.r2 is None else f"{fit.r2:.3f}"
            lines.append(f"  {scope} {op:<15} latency {fit.latency_s * 1e6:8.1f} us  "
                         f"bus bandwidth {fit.bandwidth_bytes_per_s / 1e9:8.2f} GB/s  R^2 {r2}")
    return lines


def _say(line: str) -> None:
    print(f"simtune: {line}", file=sys.stderr, flush=True)
