"""What optimizer offload's copies cost on this machine, measured against the model.

Two parts, both on CPU (DeepSpeed's CPU accelerator, gloo):

1. Host casts. After an offloaded step DeepSpeed casts the updated fp32 partition into a 16-bit
   buffer on the host (stage_1_and_2.py; stage 3 through torch's blocking cross-device copy, which
   casts on the host). The model costs a copy of n elements from fp32 to b bytes as (4 + b) n
   bytes at half the host's copy rate (a copy of N bytes reads N and writes N). This part times
   fp32 -> fp32, bf16 and fp16 copies of 2^25 elements beside a byte copy of the same memory, at
   one and two threads, and prints each against that formula.
2. ZeRO-2 with and without optimizer offload. Two ranks build two stage-2 engines of one workload
   (torch's AdamW, the one DeepSpeed runs on CPU), one offloading its optimizer and one not, and
   time whole optimizer steps (forward, backward, step: the gradients go down inside the
   backward, the cast and the copy up inside the step) in alternating blocks. On CPU both engines
   step the same flat partition with the same AdamW, so the difference is offload's copies and
   bookkeeping: it is printed beside the model's ``optimizer_time.offload_transfer_s`` from a
   calibrated profile of this machine (``--profile``, else ``simtune calibrate --gpus 2 --quick``
   into the work folder), and beside the formula the model had before it counted the host cast
   and the fp32 gradients (the slice down and up once each in the state precision).

    python benchmarks/offload_copies.py [--model gpt2-tiny-heavy] [--seq-len 64] [--mbs 4]
        [--precision fp32|bf16] [--blocks 8] [--steps 4] [--profile PATH] [--op-profile] [--work-dir DIR]

``--op-profile`` adds torch.profiler's view of two steps of each engine on rank 0: the ops whose
time differs most between them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from two_rank_jobs import add_arguments, calibrated_profile, finish_rank_job, launch_rank_jobs, rank_engines, run, start

CAST_ELEMENTS = 2**25
ENGINES = ("plain", "offload")


def best_of(fn: Callable[[], Any], repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def host_casts() -> list[str]:
    """Part 1: casts within host memory against (4 + b) n / (2 R), R a byte copy's rate."""
    import torch

    lines = ["threads  copy rate R   cast           measured ms  model ms   error"]
    src = torch.randn(CAST_ELEMENTS)
    raw_src = torch.ones(4 * CAST_ELEMENTS, dtype=torch.uint8)
    raw_dst = torch.empty_like(raw_src)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rate = raw_src.numel() / best_of(lambda: raw_dst.copy_(raw_src))
        for dtype, b in ((torch.float32, 4), (torch.bfloat16, 2), (torch.float16, 2)):
            dst = torch.empty(CAST_ELEMENTS, dtype=dtype)
            measured = best_of(lambda: dst.copy_(src))
            model = (4 + b) * CAST_ELEMENTS / (2 * rate)
            name = f"fp32 -> {str(dtype).removeprefix('torch.')}"
            lines.append(f"{threads:>7}  {rate / 1e9:>6.2f} GB/s  {name:<14} {measured * 1e3:>10.2f}  "
                         f"{model * 1e3:>8.2f}  {(model / measured - 1) * 100:>+5.0f}%")
    return lines


def engine_config(job: dict, offload: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": 2}
    if offload:
        zero["offload_optimizer"] = {"device": "cpu"}
    config: dict[str, Any] = {"train_micro_batch_size_per_gpu": job["mbs"], "gradient_accumulation_steps": 1,
                              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}},
                              "zero_optimization": zero, "steps_per_print": 10**9}
    if job["precision"] == "bf16":
        config["bf16"] = {"enabled": True}
    return config


def op_profile(engines: dict[str, Any], make_batch: Callable[[int], Any], mbs: int, steps: int = 2) -> dict:
    """Per engine, torch.profiler's self CPU milliseconds and calls per optimizer step of each op."""
    from torch.profiler import ProfilerActivity, profile

    ops = {}
    for name, engine in engines.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                engine.backward(engine(**make_batch(mbs)).loss)
                engine.step()
        ops[name] = {e.key: (e.self_cpu_time_total / 1e3 / steps, e.count / steps) for e in prof.key_averages()}
    return ops


def rank_job(config_path: str, out_path: str) -> None:
    """One rank: a stage-2 engine with and one without optimizer offload, timed block by block."""
    import torch

    job = json.loads(Path(config_path).read_text())
    engines, make_batch = rank_engines(job, {name: engine_config(job, name == "offload") for name in ENGINES})
    step_s: dict[str, list[float]] = {name: [] for name in ENGINES}
    for block in range(job["blocks"] + 1):
        for name in (ENGINES if block % 2 else ENGINES[::-1]):
            engine = engines[name]
            for _ in range(job["steps"]):
                batch = make_batch(job["mbs"])
                torch.distributed.barrier()
                start = time.perf_counter()
                engine.backward(engine(**batch).loss)
                engine.step()
                if block:  # the first block warms both engines up
                    step_s[name].append(time.perf_counter() - start)
    result: dict[str, Any] = {"steps": step_s}
    if job["op_profile"]:
        result["ops"] = op_profile(engines, make_batch, job["mbs"])
    finish_rank_job(result, out_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, "simtune-offload", steps=4)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--op-profile", action="store_true",
                        help="also profile two steps of each engine (torch.profiler); print the ops that differ most")
    args = parser.parse_args(argv)
    work = start("offload_copies.py", args, argv)

    from simtune.model.optimizer_time import offload_transfer_s
    from simtune.model.shards import shards
    from simtune.prediction.predictor import Predictor
    from simtune.space import Trial, TuningSpace
    from simtune.workloads import load_workload

    print()
    print(f"1. casts within host memory, {CAST_ELEMENTS:,} fp32 elements (best of 5)")
    for line in host_casts():
        print("  " + line)
    print()

    profile = calibrated_profile(work, "cpu-2proc-offload", args.profile)
    if profile is None:
        return 1
    job = {"model": args.model, "seq_len": args.seq_len, "mbs": args.mbs, "blocks": args.blocks,
           "steps": args.steps, "precision": args.precision, "op_profile": args.op_profile}
    ranks = launch_rank_jobs(__file__, job, work)
    if ranks is None:
        return 1

    workload = load_workload(args.model, seq_len=args.seq_len)
    space = TuningSpace.from_config(engine_config(job, True), world_size=2)
    predictor = Predictor.from_parts(space, workload, profile, world_size=2, precision=args.precision)
    trial = Trial(stage=2, micro_batch_size=args.mbs, offload_optimizer="cpu")
    config = predictor.config(trial)
    hw = predictor.hardware
    s = shards(predictor.model, config)
    model_now = offload_transfer_s(predictor.model, s, hw, config)
    b = config.state_bytes
    model_before = b * s.flat_partition * (1 / hw.d2h_bandwidth_bytes_per_s + 1 / hw.h2d_bandwidth_bytes_per_s)
    step_gap = (predictor.predict(trial).time.step_s
                - predictor.predict(trial.replace(offload_optimizer="none")).time.step_s)

    print(f"2. ZeRO-2 with and without optimizer offload: {args.model}, seq {args.seq_len}, micro-batch {args.mbs}, "
          f"{args.precision}, {predictor.model.parameter_count:,} parameters ({s.flat_partition:,} in a rank's "
          f"slice), 2 ranks of 1 thread; profile {profile.name} (host copy "
          f"{(hw.host_copy_bytes_per_s or 0) / 1e9:.2f} GB/s)")
    print(f"   {args.blocks} blocks of {args.steps} optimizer steps per engine, engines alternating")
    print()
    print("   rank  step without offload  with offload  difference (median, ms)")
    differences = []
    for rank, result in enumerate(ranks):
        times = result["steps"]
        plain, offload = statistics.median(times["plain"]) * 1e3, statistics.median(times["offload"]) * 1e3
        differences.append(offload - plain)
        print(f"   {rank:>4}  {plain:>20.2f}  {offload:>12.2f}  {offload - plain:>12.2f}")
    measured = statistics.mean(differences)
    print()
    print(f"   measured: offload adds {measured:.2f} ms per step (mean over the ranks' median differences)")
    for label, value in (("model (optimizer_time.offload_transfer_s)", model_now),
                         ("the predicted steps' difference", step_gap),
                         ("the formula before (slice down and up in the state precision)", model_before)):
        print(f"   {label}: {value * 1e3:.2f} ms ({(value * 1e3 / measured - 1) * 100:+.0f}%)")
    if args.op_profile:
        ops = ranks[0]["ops"]
        names = sorted(set(ops["plain"]) | set(ops["offload"]),
                       key=lambda k: -abs(ops["plain"].get(k, (0, 0))[0] - ops["offload"].get(k, (0, 0))[0]))
        print()
        print("   rank 0 under torch.profiler, self CPU ms per optimizer step (calls), the ten ops that differ most")
        print(f"   {'op':<40} {'without offload':>16} {'with offload':>16}")
        for key in names[:10]:
            (a, n), (o, m) = ops["plain"].get(key, (0.0, 0)), ops["offload"].get(key, (0.0, 0))
            print(f"   {key[:40]:<40} {a:>9.2f} ({n:>4.0f}) {o:>9.2f} ({m:>4.0f})")
    print(f"load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    run(main, rank_job)
