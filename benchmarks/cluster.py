"""What Slurm adds to an experiment, and K experiments queued at once, on the local Slurm cluster.

Part 1 runs the same experiment (gpt2-tiny, 2 CPU processes, gloo) here (``--executor local``)
and as a Slurm job (``--executor slurm``), alternating, and splits the job's time into submission
to start (sbatch, the scheduler, the job's start-up: from handing the launch over to the job's
first line), the launch inside the job, and end to result (the job's end until the search has the
outcome: Slurm's state change and the poll). Part 2 hands K experiments to the Slurm executor in
one call, as a search's K verifications are, and prints each job's submit, start and end time
(Slurm's, in seconds, and the job's own, to the millisecond) from the moment of the hand-over.

Run it on a machine with the local cluster of .ci/services/slurm.sh:
``python benchmarks/cluster.py --repeats 3 --k 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "gpt2-tiny"
SEQ_LEN = "32"
WINDOW = (3, 12)


def config(micro_batch: int) -> dict:
    return {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": 1}, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of the experiment each way (default 3)")
    parser.add_argument("--k", type=int, default=3, help="experiments queued at once in part 2 (default 3)")
    args = parser.parse_args(argv)
    os.environ["DS_ACCELERATOR"] = "cpu"
    from simtune.runner import Resources, Runner
    from simtune.runner.experiment import Experiment
    from simtune.runner.slurm import job_info
    from simtune.runner.slurm_executor import SlurmExecutor
    from simtune.space import Trial
    from simtune.workloads import TRAIN_PROGRAM

    print(f"# command: python benchmarks/cluster.py --repeats {args.repeats} --k {args.k}")
    print(f"# host {platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"{subprocess.run(['sinfo', '-V'], capture_output=True, text=True).stdout.strip()}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"# {MODEL}, {SEQ_LEN} tokens, ZeRO 1, AdamW, fp32, 2 CPU processes (gloo), measured steps "
          f"{WINDOW[0]}..{WINDOW[1]}; one job of 2 CPUs fits the node at a time; one untimed warm-up run first; "
          f"TORCH_EXTENSIONS_DIR={os.environ.get('TORCH_EXTENSIONS_DIR', '(default)')}")
    resources = Resources.local(num_gpus=2, accelerator="cpu")
    program = (str(TRAIN_PROGRAM), ("--model", MODEL, "--seq-len", SEQ_LEN, "--deepspeed", "ds_config.json"))
    rows = {"local": [], "slurm": []}
    with tempfile.TemporaryDirectory(prefix="simtune-cluster-", dir=os.getcwd()) as folder:
        runners = {way: Runner(program, resources, Path(folder) / way, Path(folder) / f"{way}-exps", overwrite=True,
                               timeout_s=600, start_profile_step=WINDOW[0], end_profile_step=WINDOW[1],
                               executor=SlurmExecutor(resources) if way == "slurm" else None)
                   for way in rows}
        (warm,) = runners["local"].run([Experiment("warm_up", Trial(1, 1, 1), config(1))])  # JIT ops, file cache
        print(f"# warm-up run here: {warm.status}, {warm.wall_s:.1f} s (not counted)", file=sys.stderr, flush=True)
        for repeat in range(args.repeats):
            for way, runner in runners.items():
                name = f"z1_r{repeat}"
                handed = time.time()
                (result,) = runner.run([Experiment(name, Trial(1, 1, 1), config(1))])
                done = time.time()
                row = {"status": result.status, "total_s": done - handed, "launch_s": result.wall_s}
                if way == "slurm":
                    ran = json.loads((Path(folder) / way / name / "job_result.json").read_text())
                    row.update(to_start_s=ran["job_started_at"] - handed, to_result_s=done - ran["job_ended_at"])
                rows[way].append(row)
                print(f"# run {repeat} {way}: {result.status}, {row['total_s']:.1f} s", file=sys.stderr, flush=True)

        print()
        print("## Part 1: one experiment, here and as a Slurm job (seconds; median of the runs, min..max)")
        print()
        print("| executor | runs | ok | hand-over to result | launch (in the job) | submission to start | "
              "end to result | Slurm's cost |")
        print("|:--|--:|--:|--:|--:|--:|--:|--:|")
        for way, values in rows.items():
            def cell(key: str) -> str:
                numbers = [v[key] for v in values if key in v]
                if not numbers:
                    return "-"
                return f"{statistics.median(numbers):.2f} ({min(numbers):.2f}..{max(numbers):.2f})"
            for value in values:
                value["cost_s"] = value["total_s"] - value["launch_s"]
            print(f"| {way} | {len(values)} | {sum(v['status'] == 'ok' for v in values)} | {cell('total_s')} | "
                  f"{cell('launch_s')} | {cell('to_start_s')} | {cell('to_result_s')} | {cell('cost_s')} |")

        print()
        print(f"## Part 2: {args.k} experiments handed to the Slurm executor in one call (seconds from the hand-over)")
        print()
        experiments = [Experiment(f"z1_mbs{mbs}", Trial(1, mbs, 1), config(mbs)) for mbs in range(1, args.k + 1)]
        handed = time.time()
        results = runners["slurm"].run(experiments)
        done = time.time()
        print("| experiment | status | job | Slurm submit | Slurm start | Slurm end | job started | job ended | "
              "launch |")
        print("|:--|:--|--:|:--|:--|:--|--:|--:|--:|")
        for experiment, result in zip(experiments, results):
            record = json.loads((Path(result.result_dir) / "exp.json").read_text())
            ran = json.loads((Path(result.result_dir) / "job_result.json").read_text())
            info = job_info(record["job_id"])
            print(f"| {experiment.name} | {result.status} | {record['job_id']} | {info.submit_time[11:]} | "
                  f"{info.start_time[11:]} | {info.end_time[11:]} | {ran['job_started_at'] - handed:.1f} | "
                  f"{ran['job_ended_at'] - handed:.1f} | {result.wall_s:.1f} |")
        launches = [r.wall_s for r in results]
        submits = [json.loads((Path(r.result_dir) / "exp.json").read_text())["job_submit_time"] for r in results]
        cost = statistics.median(v["cost_s"] for v in rows["slurm"])
        print()
        print(f"All {args.k} in {done - handed:.1f} s; their launches took {sum(launches):.1f} s together, the "
              f"longest {max(launches):.1f} s. Slurm's submit times: {', '.join(sorted(set(submits)))}: all "
              f"{args.k} were queued at once and ran one after another, as this node fits one job.")
        print(f"On a cluster with room for {args.k} such jobs they would run side by side: all done after about "
              f"the longest launch plus Slurm's cost of part 1, {max(launches):.1f} + {cost:.1f} = "
              f"{max(launches) + cost:.1f} s instead of {done - handed:.1f} s.")
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
