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
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLIP = 1.0


def rank_job(config_path: str, out_path: str) -> None:
    """One rank: two engines (no clipping, clipping at CLIP) timed block by block."""
    import deepspeed
    import torch

    from simtune.calib.workload_measure import token_batches
    from simtune.workloads import load_workload
    from simtune.workloads.train import build_training_model

    job = json.loads(Path(config_path).read_text())
    deepspeed.init_distributed(dist_backend="gloo")
    workload = load_workload(job["model"], seq_len=job["seq_len"])
    make_batch = token_batches(workload, torch.device("cpu"), seed=4321 + torch.distributed.get_rank())
    engines = {}
    for clip in (0.0, CLIP):
        config = {"train_micro_batch_size_per_gpu": job["mbs"], "gradient_accumulation_steps": 1,
                  "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}},
                  "zero_optimization": {"stage": 0}, "gradient_clipping": clip, "steps_per_print": 10**9}
        torch.manual_seed(0)
        model, _ = build_training_model(workload, config, False)
        engines[clip], *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    step_s: dict[float, list[float]] = {0.0: [], CLIP: []}
    for block in range(job["blocks"] + 1):
        for clip in ((0.0, CLIP) if block % 2 else (CLIP, 0.0)):
            engine = engines[clip]
            for _ in range(job["steps"]):
                batch = make_batch(job["mbs"])
                engine.backward(engine(**batch).loss)
                torch.distributed.barrier()
                start = time.perf_counter()
                engine.step()
                if block:  # the first block warms both engines up
                    step_s[clip].append(time.perf_counter() - start)
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, {str(k): v for k, v in step_s.items()})
    if torch.distributed.get_rank() == 0:
        Path(out_path).write_text(json.dumps(gathered))
    torch.distributed.barrier()
    sys.stdout.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-tiny-heavy")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--mbs", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--profile", help="a calibrated profile of this machine at 2 ranks (path)")
    parser.add_argument("--work-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "simtune-clipping"))
    args = parser.parse_args(argv)
    os.environ["DS_ACCELERATOR"] = "cpu"
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    from simtune.cli import main as simtune_main
    from simtune.hardware import load_profile
    from simtune.model.step_time import clipping_s
    from simtune.prediction.predictor import Predictor
    from simtune.runner.launcher import free_port, release_port
    from simtune.runner.runner import remove_shm_buffers
    from simtune.space import Trial, TuningSpace
    from simtune.workloads import load_workload

    print(f"Command: python benchmarks/gradient_clipping.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"date {datetime.datetime.now().isoformat(timespec='seconds')}; load average {os.getloadavg()}")
    profile_path = Path(args.profile) if args.profile else work / "profiles" / "cpu-2proc-clipping.json"
    if not profile_path.exists():
        started = time.perf_counter()
        with open(work / "calibrate.log", "w") as log, contextlib.redirect_stdout(log):
            code = simtune_main(["calibrate", "--gpus", "2", "--quick", "--name", "cpu-2proc-clipping",
                                 "--out", str(profile_path.parent)])
        if code:
            print(f"simtune calibrate failed: see {work / 'calibrate.log'}")
            return code
        print(f"profile: simtune calibrate --gpus 2 --quick, {time.perf_counter() - started:.0f} s "
              f"(log: {work / 'calibrate.log'})")
    profile = load_profile(profile_path)

    job = {"model": args.model, "seq_len": args.seq_len, "mbs": args.mbs, "blocks": args.blocks, "steps": args.steps}
    (work / "job.json").write_text(json.dumps(job))
    out = work / "steps.json"
    out.unlink(missing_ok=True)
    port = free_port()
    env = dict(os.environ, DS_ACCELERATOR="cpu", LOCAL_SIZE="2", OMP_NUM_THREADS="1")
    try:
        done = subprocess.run([str(Path(sys.executable).with_name("deepspeed")), "--num_accelerators", "2",
                               "--master_port", str(port), __file__, "--rank-job", str(work / "job.json"), str(out)],
                              env=env, cwd=work, capture_output=True, text=True, timeout=1800)
    finally:
        remove_shm_buffers(port)
        release_port(port)
    if done.returncode != 0 or not out.exists():
        print(done.stdout[-3000:] + done.stderr[-3000:])
        return 1
    ranks = json.loads(out.read_text())

    workload = load_workload(args.model, seq_len=args.seq_len)
    space = TuningSpace.from_config({"train_micro_batch_size_per_gpu": args.mbs, "gradient_clipping": CLIP,
                                     "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}},
                                     "zero_optimization": {"stage": 0}}, world_size=2)
    predictor = Predictor.from_parts(space, workload, profile, world_size=2, precision="fp32")
    config = predictor.config(Trial(stage=0, micro_batch_size=args.mbs))
    predicted = clipping_s(predictor.model, predictor.hardware, config)

    print(f"workload: {args.model}, seq {args.seq_len}, micro-batch {args.mbs}, "
          f"{predictor.model.parameter_count:,} parameters in {len(predictor.model.layout.numels)} tensors; "
          f"stage 0, fp32, 2 ranks of 1 thread; profile {profile.name} ({profile_path})")
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
    if "--rank-job" in sys.argv:
        paths = [a for a in sys.argv[sys.argv.index("--rank-job") + 1:] if not a.startswith("--local_rank")]
        rank_job(paths[0], paths[1])
    else:
        sys.exit(main())
