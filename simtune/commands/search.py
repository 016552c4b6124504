"""``simtune search``: find the fastest DeepSpeed configuration for a workload.

This module only reads the command line: :mod:`simtune.search.request` checks it and resolves
what to tune, :class:`simtune.search.session.SearchSession` runs the search and writes the
outputs, and the summary and the best configuration are printed here.
"""

from __future__ import annotations

import argparse
import json

from simtune.commands.base import Command
from simtune.runner.executors import EXECUTORS
from simtune.runner.resources import LAUNCHERS
from simtune.search.request import (DEFAULT_CPU_PROCESSES, DEFAULT_MODEL, DEFAULT_SEQ_LEN, STRATEGIES, SearchFlags,
                                   SearchRequest)
from simtune.search.outputs import optimal_config
from simtune.search.session import SearchSession, say


class SearchCommand(Command):
    """Find the fastest DeepSpeed configuration: ZeRO stage, micro-batch size, accumulation, knobs.

    Model mode (no script): a built-in model preset or a Hugging Face config.json, trained on
    synthetic tokens: simtune search --model gpt2 --seq-len 512 [--deepspeed ds.json].
    Without --model: gpt2-tiny at 64 tokens. Script mode: your training script and its arguments
    after the options, as the deepspeed launcher takes them:
    simtune search --num_gpus 8 train.py --deepspeed ds.json --per_device_train_batch_size 4.
    Strategy simulate (default): calibrate this machine if no hardware profile fits it, search
    every configuration against the cost model (an Optuna study in results_dir/study.db or the
    --storage URL, resumed when interrupted), run the --verify-top best predictions for real and
    return the measured best; --verify-top 0 returns the predicted best for any --profile and GPU
    count without running anything. Strategy measure: every candidate runs for real, in DeepSpeed's order.
    The "autotuning" section of the DeepSpeed config is honoured; each flag below wins over it.
    Results: results_dir/summary.txt, ds_config_optimal.json, cmd_optimal.txt, results.json
    (and predictions.json with simulate).
    """

    name = "search"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        what = parser.add_argument_group("what to train")
        what.add_argument("--model", help=f"model preset name or Hugging Face config.json (model mode; "
                                          f"default {DEFAULT_MODEL} when no script is given)")
        what.add_argument("--seq-len", "--seq_len", dest="seq_len", type=int,
                          help=f"tokens per sample in model mode (default: the preset's; {DEFAULT_SEQ_LEN} "
                               f"for {DEFAULT_MODEL} chosen by default)")
        what.add_argument("--deepspeed", metavar="PATH",
                          help="DeepSpeed config JSON in model mode (script mode: pass it to the script)")
        where = parser.add_argument_group("resources (the deepspeed launcher's meaning)")
        where.add_argument("--num_gpus", "--gpus", "--num_accelerators", dest="num_gpus", type=int,
                           help=f"GPUs per node of each experiment (CPU processes without GPUs; "
                                f"default: all GPUs, or {DEFAULT_CPU_PROCESSES} CPU processes)")
        where.add_argument("--num_nodes", type=int,
                           help="nodes of each experiment (needs --hostfile, --launcher slurm or --executor slurm)")
        where.add_argument("--hostfile", help="DeepSpeed hostfile (hostname slots=N lines)")
        where.add_argument("--launcher", choices=LAUNCHERS, default="pdsh",
                           help="DeepSpeed's multi-node launcher for every experiment (default pdsh); slurm: "
                                "srun steps of the allocation simtune runs in (salloc or sbatch)")
        where.add_argument("--launcher_args", "--launcher-args", dest="launcher_args", default="", metavar="ARGS",
                           help="options DeepSpeed's launcher adds to srun or mpirun, given with '=': "
                                "--launcher_args='--cpu-bind=cores'")
        jobs = parser.add_argument_group("executor (where each experiment runs)")
        jobs.add_argument("--executor", choices=EXECUTORS, default="local",
                          help="local: launch each experiment here (default); slurm: submit each as a Slurm job "
                               "(needs submitit: pip install 'simtune[slurm]')")
        jobs.add_argument("--slurm_partition", "--slurm-partition", dest="slurm_partition", metavar="NAME",
                          help="--executor slurm: the partition of the jobs")
        jobs.add_argument("--slurm_account", "--slurm-account", dest="slurm_account", metavar="NAME",
                          help="--executor slurm: the account the jobs are charged to")
        jobs.add_argument("--slurm_option", "--slurm-option", dest="slurm_options", action="append", default=[],
                          metavar="KEY=VALUE", help="--executor slurm: an extra sbatch option (repeatable), e.g. "
                                                    "qos=high or constraint=a100")
        jobs.add_argument("--shared-launch", "--shared_launch", dest="shared_launch",
                          action=argparse.BooleanOptionalAction, default=True,
                          help="simulate with the built-in program, here: run the verifications one after another "
                               "in one launch started during the study (default); --no-shared-launch gives each "
                               "its own launch")
        how = parser.add_argument_group("search (each wins over the config's \"autotuning\" section)")
        how.add_argument("--strategy", choices=STRATEGIES, default="simulate",
                         help="simulate: search against the cost model, run the top predictions (default); "
                              "measure: run every candidate for real, in DeepSpeed's order")
        how.add_argument("--verify-top", "--verify_top", dest="verify_top", type=int, metavar="K",
                         help="simulate: how many of the best predictions run for real (default 3; 0: none, "
                              "the predicted best is returned)")
        how.add_argument("--profile", metavar="NAME|PATH",
                         help="simulate: the hardware profile of the cost model (default: the one that fits this "
                              "machine; calibrated first when none does)")
        how.add_argument("--trials", "--search-trials", dest="trials", type=int, metavar="N",
                         help="simulate: trials of the Optuna study (default 200)")
        how.add_argument("--confirm-close-calls", "--confirm_close_calls", dest="confirm_close_calls", type=int,
                         metavar="N", help="simulate: when one run each cannot tell the two best verified apart, "
                                           "run each N more times and return the better mean (default 0: only say "
                                           "so)")
        how.add_argument("--storage", metavar="URL",
                         help="simulate: where the Optuna study is kept, to share it between searches and users: "
                              "sqlite:///PATH, postgresql://USER:PASSWORD@HOST/DB, mysql://..., or a journal file "
                              "journal:///PATH.log (default: results_dir/study.db)")
        how.add_argument("--results_dir", "--results-dir", dest="results_dir")
        how.add_argument("--exps_dir", "--exps-dir", dest="exps_dir")
        how.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=None,
                         help="run experiments again even when their results exist (default: reuse them)")
        how.add_argument("--metric", help="throughput (default), latency or FLOPS")
        how.add_argument("--tuner_type", "--tuner-type", dest="tuner_type",
                         help="gridsearch (default), random or model_based: the ZeRO knob tuner")
        how.add_argument("--fast", action=argparse.BooleanOptionalAction, default=None,
                         help="tune only stage and micro-batch size (default); --no-fast also tunes ZeRO knobs")
        how.add_argument("--stop-at-worse-stage", action=argparse.BooleanOptionalAction, default=True,
                         help="skip later stages once a stage is more than 5%% worse than the best so far "
                              "(default on)")
        how.add_argument("--timeout", type=float, metavar="SECONDS", help="time-out of one experiment")
        how.add_argument("--memory-budget", "--memory_budget", dest="memory_budget", metavar="SIZE",
                         help="per-process memory limit, e.g. 1.5GB (stands in for device memory on CPU)")
        how.add_argument("--run", action="store_true",
                         help="after tuning, train with the optimal configuration (cmd_optimal.txt)")
        parser.add_argument("script", nargs=argparse.REMAINDER,
                            help="script mode: the training script and its arguments")

    def run(self, args: argparse.Namespace) -> int:
        session = SearchSession(SearchRequest.from_flags(SearchFlags.from_namespace(args)))
        result = session.run()
        if result.written is not None:
            print(result.written.summary_text, end="")
        if result.message is not None:
            say(result.message)
        if result.best is None or result.written is None:
            return result.exit_code
        kind = "predicted, not measured" if result.best.status == "predicted" else "measured"
        print(f"\nBest configuration, {kind} ({result.written.optimal_config_path}):")
        print(json.dumps(optimal_config(result.best), indent=2))
        print(f"\nTrain with it ({result.written.optimal_command_path}):\n  {result.command}")  # after the lr advice
        return session.train(result) if args.run else result.exit_code
