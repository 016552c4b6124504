"""What the benchmarks that time two CPU ranks side by side share: a calibrated profile of this
machine at two ranks, and one launch of the benchmark's own rank job through DeepSpeed's launcher.

A benchmark script using it runs as ``python benchmarks/NAME.py`` (this folder on ``sys.path``)
and, under the launcher, as ``NAME.py --rank-job JOB OUT`` (:func:`run`)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional


def add_arguments(parser: argparse.ArgumentParser, work_name: str, steps: int) -> None:
    """The workload, the alternating blocks and the profile every such benchmark takes."""
    parser.add_argument("--model", default="gpt2-tiny-heavy")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--mbs", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--profile", help="a calibrated profile of this machine at 2 ranks (path)")
    parser.add_argument("--work-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), work_name))


def start(script: str, args: argparse.Namespace, argv: Optional[list[str]]) -> Path:
    """The work folder (made), DeepSpeed's CPU accelerator chosen, and the output's first lines:
    the command and the machine."""
    os.environ["DS_ACCELERATOR"] = "cpu"
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"Command: python benchmarks/{script} {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"date {datetime.datetime.now().isoformat(timespec='seconds')}; load average {os.getloadavg()}")
    return work


def calibrated_profile(work: Path, name: str, path: Optional[str]) -> Any:
    """The profile at ``path``, else ``simtune calibrate --gpus 2 --quick`` of this machine into
    ``work/profiles/NAME.json`` (once; its log beside it). None, with the reason printed, when the
    calibration fails."""
    from simtune.cli import main as simtune_main
    from simtune.hardware import load_profile

    profile_path = Path(path) if path else work / "profiles" / f"{name}.json"
    if not profile_path.exists():
        started = time.perf_counter()
        with open(work / "calibrate.log", "w") as log, contextlib.redirect_stdout(log):
            code = simtune_main(["calibrate", "--gpus", "2", "--quick", "--name", name,
                                 "--out", str(profile_path.parent)])
        if code:
            print(f"simtune calibrate failed: see {work / 'calibrate.log'}")
            return None
        print(f"profile: simtune calibrate --gpus 2 --quick, {time.perf_counter() - started:.0f} s "
              f"(log: {work / 'calibrate.log'})")
    return load_profile(profile_path)


def launch_rank_jobs(script: str, job: dict, work: Path) -> Optional[list]:
    """Run ``script``'s rank job on two CPU ranks of one thread (gloo) with ``job`` as its input;
    what rank 0 wrote (one entry per rank), or None with the launch's output printed."""
    from simtune.runner.launcher import free_port, release_port
    from simtune.runner.runner import remove_shm_buffers

    (work / "job.json").write_text(json.dumps(job))
    out = work / "ranks.json"
    out.unlink(missing_ok=True)
    port = free_port()
    env = dict(os.environ, DS_ACCELERATOR="cpu", LOCAL_SIZE="2", OMP_NUM_THREADS="1")
    try:
        done = subprocess.run([str(Path(sys.executable).with_name("deepspeed")), "--num_accelerators", "2",
                               "--master_port", str(port), script, "--rank-job", str(work / "job.json"), str(out)],
                              env=env, cwd=work, capture_output=True, text=True, timeout=1800)
    finally:
        remove_shm_buffers(port)
        release_port(port)
    if done.returncode != 0 or not out.exists():
        print(done.stdout[-3000:] + done.stderr[-3000:])
        return None
    ranks: list = json.loads(out.read_text())
    return ranks


def rank_engines(job: dict, configs: dict[str, dict]) -> tuple[dict[str, Any], Any]:
    """In a rank job: the process group (gloo), one DeepSpeed engine of ``job``'s workload per
    named config (each from the same seed), and a function giving a micro-batch of random tokens."""
    import deepspeed
    import torch

    from simtune.calib.workload_measure import token_batches
    from simtune.workloads import load_workload
    from simtune.workloads.train import build_training_model

    deepspeed.init_distributed(dist_backend="gloo")
    workload = load_workload(job["model"], seq_len=job["seq_len"])
    make_batch = token_batches(workload, torch.device("cpu"), seed=4321 + torch.distributed.get_rank())
    engines = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        model, _ = build_training_model(workload, config, False)
        engines[name], *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    return engines, make_batch


def finish_rank_job(result: Any, out_path: str) -> None:
    """Gather every rank's ``result`` into ``out_path`` (rank 0 writes it) and end the process."""
    import torch

    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, result)
    if torch.distributed.get_rank() == 0:
        Path(out_path).write_text(json.dumps(gathered))
    torch.distributed.barrier()
    sys.stdout.flush()
    os._exit(0)


def run(main: Callable[[], int], rank_job: Callable[[str, str], None]) -> None:
    """A benchmark script's entry: its rank job where the launcher started it with ``--rank-job JOB
    OUT`` (and its ``--local_rank``), else its main, whose code is the exit status."""
    if "--rank-job" in sys.argv:
        paths = [a for a in sys.argv[sys.argv.index("--rank-job") + 1:] if not a.startswith("--local_rank")]
        rank_job(paths[0], paths[1])
    else:
        sys.exit(main())
