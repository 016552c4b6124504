"""What DeepSpeed's gradient clipping adds to a stage-0 fp32 step, measured against the model.

At stage 0 with neither fp16 nor bf16 enabled the engine clips gradients itself
(``clip_fp32_gradients``: a norm per tensor, a scalar allreduce, a multiply per tensor) whenever
``gradient_clipping`` is above 0; the engines a calibration measures never clip, so the model adds
:func:`simtune.model.step_time.clipping_s`. This benchmark launches two CPU ranks (gloo) that
build two stage-0 fp32 engines of one workload, one clipping at 1.0 and one not, and time their
``step`` calls in alternating blocks after a forward and backward each; it prints the median
step call of each, their difference, and the model's term from a calibrated profile of this
machine (``--profile``, else ``simtune calibrate --gpus 2 --quick`` into the work folder).

    python benchmarks/gradient_clipping.py [--model gpt2-tiny-heavy] [--seq-len 64] [--mbs 4]
        [--blocks 8] [--steps 6] [--profile PATH] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from two_rank_jobs import add_arguments, calibrated_profile, finish_rank_job, launch_rank_jobs, rank_engines, run, start

CLIP = 1.0


def rank_job(config_path: str, out_path: str) -> None:
    """One rank: two engines (no clipping, clipping at CLIP) timed block by block."""
    import torch

    job = json.loads(Path(config_path).read_text())
    engines, make_batch = rank_engines(job, {str(clip): {
        "train_micro_batch_size_per_gpu": job["mbs"], "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}},
        "zero_optimization": {"stage": 0}, "gradient_clipping": clip, "steps_per_print": 10**9}
        for clip in (0.0, CLIP)})
    step_s: dict[str, list[float]] = {name: [] for name in engines}
    for block in range(job["blocks"] + 1):
        for name in (list(engines) if block % 2 else list(engines)[::-1]):
            engine = engines[name]
            for _ in range(job["steps"]):
                batch = make_batch(job["mbs"])
                engine.backward(engine(**batch).loss)
                torch.distributed.barrier()
                start = time.perf_counter()
                engine.step()
                if block:  # the first block warms both engines up
                    step_s[name].append(time.perf_counter() - start)
    finish_rank_job(step_s, out_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, "simtune-clipping", steps=6)
    args = parser.parse_args(argv)
    work = start("gradient_clipping.py", args, argv)

    from simtune.model.step_time import clipping_s
    from simtune.prediction.predictor import Predictor
    from simtune.space import Trial, TuningSpace
    from simtune.workloads import load_workload

    profile = calibrated_profile(work, "cpu-2proc-clipping", args.profile)
    if profile is None:
        return 1
    job = {"model": args.model, "seq_len": args.seq_len, "mbs": args.mbs, "blocks": args.blocks, "steps": args.steps}
    ranks = launch_rank_jobs(__file__, job, work)
    if ranks is None:
        return 1

    workload = load_workload(args.model, seq_len=args.seq_len)
    space = TuningSpace.from_config({"train_micro_batch_size_per_gpu": args.mbs, "gradient_clipping": CLIP,
                                     "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}},
                                     "zero_optimization": {"stage": 0}}, world_size=2)
    predictor = Predictor.from_parts(space, workload, profile, world_size=2, precision="fp32")
    config = predictor.config(Trial(stage=0, micro_batch_size=args.mbs))
    predicted = clipping_s(predictor.model, predictor.hardware, config)

    print(f"workload: {args.model}, seq {args.seq_len}, micro-batch {args.mbs}, "
          f"{predictor.model.parameter_count:,} parameters in {len(predictor.model.layout.numels)} tensors; "
          f"stage 0, fp32, 2 ranks of 1 thread; profile {profile.name}")
    print(f"{args.blocks} blocks of {args.steps} step calls per engine, engines alternating; "
          "the step call timed after a forward and backward each")
    print()
    print("rank  step call without clipping  with clipping   difference (median, ms)")
    differences = []
    for rank, times in enumerate(ranks):
        plain, clipped = statistics.median(times["0.0"]) * 1e3, statistics.median(times[str(CLIP)]) * 1e3
        differences.append(clipped - plain)
        print(f"{rank:>4}  {plain:>26.2f}  {clipped:>13.2f}  {clipped - plain:>12.2f}")
    measured = statistics.mean(differences)
    print()
    print(f"measured: clipping adds {measured:.2f} ms per step (mean over the ranks' median differences)")
    print(f"model (step_time.clipping_s): {predicted * 1e3:.2f} ms ({(predicted * 1e3 / measured - 1) * 100:+.0f}%)")
    print(f"load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    run(main, rank_job)
