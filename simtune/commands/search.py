"""``simtune search``: find the fastest DeepSpeed configuration for a workload.

Two strategies: ``simulate`` (the default: calibrate, search the whole space against the cost
model, run only the top ``--verify-top`` predictions; :mod:`simtune.search.simulated`) and
``measure`` (every candidate run for real in DeepSpeed's order; :mod:`simtune.search.measured`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from simtune.commands.base import Command
from simtune.dsconfig import AutotuningConfig, load_ds_config
from simtune.errors import InputError
from simtune.file_lock import Busy, exclusive
from simtune.search.outputs import (
    OPTIMAL_CONFIG_FILE,
    ModelReport,
    command_text,
    lr_advice,
    optimal_config,
    optimizer_type,
    results_document,
    write_outputs,
    write_results_json,
)
from simtune.hardware import load_profile
from simtune.prediction.predictor import Predictor, default_precision, precision_of
from simtune.progress import Progress
from simtune.runner import Resources, Runner
from simtune.runner.launcher import (
    absolute_paths,
    deepspeed_launcher,
    free_port,
    launch_env,
    launcher_args,
    mapped_args,
    release_port,
    with_config_path,
)
from simtune.runner.interference import load_note
from simtune.runner.resources import DEFAULT_HOSTFILE, LAUNCHERS, detect_accelerator
from simtune.runner.runner import DEFAULT_MASTER_PORT, remove_shm_buffers
from simtune.runner.executors import EXECUTORS, Executor, LocalExecutor
from simtune.runner.slurm import allocation_resources, job_resources
from simtune.runner.slurm_executor import SlurmExecutor, SlurmSettings
from simtune.space import TuningSpace
from simtune.search.measured import MeasuredSearch, MeasureOptions, Measurement
from simtune.search.memory_bound import search_memory_bound
from simtune.search.model_inputs import (choose_profile, choose_script_workload, choose_workload,
                                             describes_this_machine, here, load_residual, measure_scope,
                                             profile_fingerprint)
from simtune.search.simulated import SimulatedSearch, SimulateOptions, model_report
from simtune.search.study_storage import StudyStorage
from simtune.workloads import TRAIN_PROGRAM, load_workload

STRATEGIES = ("simulate", "measure")
"""--strategy choices: "simulate" searches against the cost model and runs the top predictions
(the default); "measure" runs every candidate for real (DeepSpeed's method)."""

DEFAULT_MODEL = "gpt2-tiny"
DEFAULT_SEQ_LEN = 64
"""Model mode with no --model: the tiny built-in GPT-2 at 64 tokens, a search of a few minutes on CPU."""

DEFAULT_CPU_PROCESSES = 2
"""Processes per experiment on a machine without GPUs when --num_gpus is not given."""

CPU_MAX_MICRO_BATCH_SIZE = 16
"""max_train_micro_batch_size_per_gpu of the built-in config on CPU: CPU steps are slow, and a
CPU process that runs out of memory makes the machine swap instead of failing fast."""

CPU_PROFILE_STEPS = (3, 22)
"""start/end_profile_step of the built-in config on CPU: 20 measured steps instead of DeepSpeed's
3..5. On 2 CPU processes (benchmarks/results/measurement_noise.txt) the run-to-run coefficient of
variation of one configuration's throughput falls from 6% to 3%, and stage 2, whose first steps
are still slow, is no longer read 18% below its steady speed, for 0.2-1.1 s more per experiment
of the tiny preset. Verification decides from one run."""

CHECKPOINTING_FLAG = "--gradient_checkpointing"
"""The built-in training program's activation-checkpointing flag (mapped in model mode)."""

CONFIG_FLAGS = ("--deepspeed", "--deepspeed_config")

RESULTS_LOCK_FILE = ".search.lock"
"""In results_dir: held (lockf) by the search running there; released when it ends, however."""


def default_ds_config(accelerator: str, half: str = "bf16") -> dict[str, Any]:
    """The config model mode uses without --deepspeed: every ZeRO stage, AdamW, mbs from 1;
    ``half`` ("bf16", or "fp16" for GPUs without bf16) on GPU, fp32 and a 20-step measurement
    window on CPU."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.0}},
        "zero_optimization": {"stage": "all"},
    }
    if accelerator == "cpu":
        config["autotuning"] = {"max_train_micro_batch_size_per_gpu": CPU_MAX_MICRO_BATCH_SIZE,
                                "start_profile_step": CPU_PROFILE_STEPS[0], "end_profile_step": CPU_PROFILE_STEPS[1]}
    else:
        config[half] = {"enabled": True}
    return config


@dataclass(frozen=True)
class Program:
    """What each experiment runs: a script and its arguments, and where its config came from."""

    script: str
    args: tuple[str, ...]
    mode: str
    """"model" (the built-in program) or "script" (the user's)."""
    config_path: str | None
    """The user's DeepSpeed config file; None when model mode uses the built-in one."""
    label: str
    model: str | None = None
    """Model mode: the preset name or config.json path."""
    seq_len: int | None = None


def config_path_in(args: list[str] | tuple[str, ...]) -> str | None:
    """The DeepSpeed config a script receives: the value of --deepspeed / --deepspeed_config."""
    for index, arg in enumerate(args):
        name, has_value, value = arg.partition("=")
        if name not in CONFIG_FLAGS:
            continue
        if has_value and value:
            return value
        if index + 1 < len(args) and not args[index + 1].startswith("--"):
            return args[index + 1]
    return None


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

    # ------------------------------------------------------------------------------------------
    def run(self, args: argparse.Namespace) -> int:
        started = time.monotonic()
        for flag, value, low in (("--verify-top", args.verify_top, 0), ("--trials", args.trials, 1),
                                 ("--confirm-close-calls", args.confirm_close_calls, 0)):
            if value is not None and value < low:
                raise InputError(f"{flag} must be at least {low}, not {value}.")
        program = self.program(args)
        strategy = args.strategy
        file_config = load_ds_config(program.config_path) if program.config_path else None
        with warnings.catch_warnings():  # read again below, where its warnings are shown once
            warnings.simplefilter("ignore")
            file_section = AutotuningConfig.from_dict((file_config or {}).get("autotuning"))
        verify_top = args.verify_top if args.verify_top is not None else file_section.verify_top
        profile_name = args.profile or file_section.profile
        predicted_only = strategy == "simulate" and verify_top == 0
        half = "bf16"
        if predicted_only and profile_name is not None:
            resources = self.planned_resources(args, profile_name)
            half = "fp16" if default_precision(load_profile(profile_name)) == "fp16" else "bf16"
        else:
            resources = self.resources(args)
        ds_config = file_config if file_config is not None else default_ds_config(resources.accelerator, half)
        autotuning = self.autotuning(args, ds_config, program)
        for key in ("results_dir", "exps_dir"):
            folder = Path(getattr(autotuning, key))
            if folder.exists() and not folder.is_dir():
                raise InputError(f"The {key} {folder} is an existing file, not a folder.")
        space = TuningSpace.from_config(ds_config, autotuning, world_size=resources.world_size,
                                        user_args=program.args)
        runner = Runner(
            (program.script, program.args), resources, autotuning.results_dir, autotuning.exps_dir,
            arg_mappings=autotuning.arg_mappings, timeout_s=autotuning.experiment_timeout_s,
            overwrite=autotuning.overwrite, memory_budget_bytes=autotuning.memory_budget_bytes,
            start_profile_step=autotuning.start_profile_step, end_profile_step=autotuning.end_profile_step,
            executor=self.executor(args, resources) if not predicted_only else None,
        )
        progress = Progress(metric=autotuning.metric, quiet=args.quiet)
        progress.note(f"{program.label}; {resources.world_size} {resources.accelerator} process(es) per "
                      f"experiment; stages {list(space.stages)}; metric {autotuning.metric}; strategy {strategy}; "
                      f"results in {autotuning.results_dir}")
        if strategy == "simulate" and args.run and autotuning.profile is not None:
            profile = load_profile(autotuning.profile)
            if not describes_this_machine(profile, resources):
                raise InputError(f"--run trains on this machine, but hardware profile {profile.name!r} describes "
                                 f"other hardware: drop --run or use a profile of this machine.")
        if strategy == "simulate" and autotuning.storage is not None:
            # a bad URL, a missing driver or an unreachable server, before anything runs
            StudyStorage.chosen(autotuning.storage, autotuning.results_dir).check()
        with only_search_in(autotuning.results_dir):
            if strategy == "simulate":
                return self.simulate(args, program, resources, ds_config, space, runner, progress, started)
            precision = precision_of(ds_config)
            memory = search_memory_bound(
                space, resources, parallel=runner.parallel, precision=precision, profile=profile_name,
                budget_bytes=autotuning.memory_budget_bytes,
                workload=load_workload(program.model, program.seq_len) if program.mode == "model" else None,
                script=(program.script, program.args, ds_config) if program.mode == "script" else None,
                say=progress.note)
            search = MeasuredSearch(space, runner, MeasureOptions(stop_at_worse_stage=args.stop_at_worse_stage,
                                                                parallel=runner.parallel), memory=memory,
                                    progress=progress)
            try:
                outcome = search.run()
            except KeyboardInterrupt:
                return interrupted(autotuning.results_dir, search.outcome(), time.monotonic() - started)
            elapsed_s = time.monotonic() - started
            return self.report(args, outcome, elapsed_s, runner, space, ds_config, program)

    # ------------------------------------------------------------------------------------------
    def simulate(self, args, program: Program, resources: Resources, ds_config: dict, space: TuningSpace,
                 runner: Runner, progress: Progress, started: float) -> int:
        """The model-driven search: profile, workload, study, verification, outputs."""
        autotuning = space.autotuning
        verify_top = autotuning.verify_top
        storage = StudyStorage.chosen(autotuning.storage, autotuning.results_dir)
        precision = precision_of(ds_config)
        workload = load_workload(program.model, program.seq_len) if program.mode == "model" else None
        scope = measure_scope(space, workload) if workload is not None else None
        # Calibrations run where the experiments run (a job of their own with --executor slurm).
        measuring = here if runner.executor.name == "local" else runner.measuring
        choice = choose_profile(autotuning.profile, resources, say=progress.note, measure_workload=(
            (workload, precision) if workload is not None and verify_top > 0 else None), scope=scope,
            measuring=measuring)
        profile = choice.profile
        if verify_top > 0 and not choice.local:
            raise InputError(f"Hardware profile {profile.name!r} describes {profile.device.count} x "
                             f"{profile.device.name}, not this machine's {resources.world_size} process(es), so its "
                             f"predictions cannot be verified here: use --verify-top 0 or a profile of this machine.")
        if choice.workload is not None:
            chosen = choice.workload
        elif program.mode == "script":
            chosen = choose_script_workload(program.script, program.args, ds_config, profile, precision=precision,
                                            num_gpus=resources.num_gpus, local=choice.local, say=progress.note,
                                            arg_mappings=autotuning.arg_mappings,
                                            timeout_s=autotuning.experiment_timeout_s)
        else:
            chosen = choose_workload(workload, profile, precision=precision,
                                     measure=verify_top > 0 and choice.local, say=progress.note,
                                     num_gpus=resources.num_gpus, scope=scope, measuring=measuring)
        residual = load_residual(profile)
        predictor = Predictor.from_parts(space, chosen.model, profile, world_size=resources.world_size,
                                         precision=precision, nodes=resources.num_nodes)
        options = SimulateOptions(verify_top=verify_top, search_trials=autotuning.search_trials,
                                  parallel=runner.parallel, confirm_close_calls=autotuning.confirm_close_calls)
        identity = {"profile": profile.name, "profile_numbers": profile_fingerprint(profile),
                    "workload": chosen.key, "workload_source": numbers_source(chosen.how), "precision": precision,
                    "world_size": resources.world_size, "nodes": resources.num_nodes, "program": program.args}
        search = SimulatedSearch(space, predictor, runner, results_dir=autotuning.results_dir, residual=residual,
                                 workload=chosen.key, identity=identity, options=options,
                                 memory_budget_bytes=autotuning.memory_budget_bytes, progress=progress,
                                 storage=storage)
        try:
            result = search.run()
        except KeyboardInterrupt:  # the residual model is not saved: a resumed search predicts as this one did
            partial = search.partial_outcome()
            return interrupted(autotuning.results_dir, partial, time.monotonic() - started,
                               kept=f"the study in {search.storage_place} and ")
        saved = search.save_residual()
        if saved is not None:
            progress.note(search.residual_note(saved))
        calibration_s = choice.seconds + chosen.seconds
        notes = []
        if choice.workload is not None:
            notes.append(f"this machine was calibrated first and the workload measured in the same launch "
                         f"({choice.seconds:.1f} s; profile saved to {choice.path}, measurement cached for the "
                         f"next search)")
        else:
            if choice.how == "calibrated":
                notes.append(f"this machine was calibrated first ({choice.seconds:.1f} s, profile saved to "
                             f"{choice.path})")
            if chosen.how == "measured":
                notes.append(f"the workload was measured ({chosen.seconds:.1f} s, cached for the next search)")
            elif chosen.how == "closed-form":
                notes.append("the workload's numbers come from the closed-form analysis of the preset")
            else:
                notes.append("the workload's measurement was read from the cache")
        measured = [("the calibration", choice.load)]
        if chosen is not choice.workload:  # else measured in the calibration's launch
            measured.append(("the workload's measurement", chosen.load))
        notes.extend(note for note in (load_note(what, load) for what, load in measured) if note)
        report = model_report(result, space, profile=profile.name, profile_kind=profile.kind,
                              calibration_s=calibration_s, total_s=time.monotonic() - started,
                              calibration_note="; ".join(notes) or None,
                              residual_file=str(saved) if saved else None)
        return self.report(args, result.outcome, time.monotonic() - started, runner, space, ds_config, program,
                           model=report, predictions=result.predictions)

    def report(self, args, outcome, elapsed_s: float, runner, space, ds_config: dict, program: Program, *,
               model: ModelReport | None = None, predictions: dict | None = None) -> int:
        """Write the outputs, print the summary and the best configuration; train with it on --run."""
        results_dir = Path(space.autotuning.results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)  # a study kept elsewhere leaves it to be made here
        best = outcome.best
        advice = command = None
        if best is not None:
            if program.config_path is not None:  # the built-in config's batch is not the user's
                advice = lr_advice(space.user_train_batch_size,
                                   space.global_batch(best.trial) if best.trial is not None else None,
                                   optimizer_type(ds_config))
            command = command_text(*optimal_command(runner, best, results_dir.resolve() / OPTIMAL_CONFIG_FILE),
                                   cwd=runner.cwd)
        written = write_outputs(results_dir, outcome, elapsed_s, optimal_command=command, advice=advice,
                                predicted=predictions, model=model)
        print(written.summary_text, end="")
        if best is None:
            if model is not None and model.predicted_only:
                print("simtune: no configuration is predicted to fit in memory on this hardware profile.",
                      file=sys.stderr)
            else:
                print(f"simtune: no experiment ran successfully; the reasons are in {written.results_path} and "
                      f"each experiment's stderr.log under {results_dir}.", file=sys.stderr)
            return 1
        kind = "predicted, not measured" if best.status == "predicted" else "measured"
        print(f"\nBest configuration, {kind} ({written.optimal_config_path}):")
        print(json.dumps(optimal_config(best), indent=2))
        print(f"\nTrain with it ({written.optimal_command_path}):\n  {command}")  # the summary gave the lr advice
        if args.run:
            return train_with_optimal(runner, best, written.optimal_config_path)
        return 0

    # ------------------------------------------------------------------------------------------
    def program(self, args: argparse.Namespace) -> Program:
        """The script and arguments each experiment runs (model mode or script mode)."""
        if args.script:
            script, *script_args = args.script
            if args.model is not None or args.seq_len is not None:
                raise InputError("Give either --model (model mode) or a training script (script mode), not both.")
            if args.deepspeed is not None:
                raise InputError("In script mode pass --deepspeed after the script, as the script receives it.")
            if not os.path.isfile(script):
                raise InputError(f"The training script {script} does not exist.")
            config = config_path_in(script_args)
            if config is None:
                raise InputError(f"The arguments of {script} name no DeepSpeed config: add --deepspeed ds_config.json.")
            return Program(os.path.abspath(script), tuple(script_args), "script", config,
                           f"script mode: {script}")
        model = args.model or DEFAULT_MODEL
        seq_len = args.seq_len if args.seq_len is not None else (None if args.model else DEFAULT_SEQ_LEN)
        if seq_len is not None and seq_len < 1:
            raise InputError(f"--seq-len must be a positive number of tokens, not {seq_len}.")
        workload = load_workload(model, seq_len)
        if os.path.exists(model):
            model = os.path.abspath(model)
        config = os.path.abspath(args.deepspeed) if args.deepspeed else None
        program_args = ("--model", model, "--seq-len", str(workload.seq_len),
                        "--deepspeed", config or "ds_config.json")
        return Program(str(TRAIN_PROGRAM), program_args, "model", config,
                       f"model mode: {workload.name}, {workload.seq_len} tokens per sample", model, workload.seq_len)

    def executor(self, args: argparse.Namespace, resources: Resources) -> Executor:
        """Where experiments run: here, or each as a Slurm job (--executor slurm)."""
        if args.executor == "local":
            if args.slurm_partition or args.slurm_account or args.slurm_options:
                raise InputError("--slurm_partition, --slurm_account and --slurm_option set the jobs of "
                                 "--executor slurm: give it too.")
            return LocalExecutor()
        settings = SlurmSettings(partition=args.slurm_partition, account=args.slurm_account,
                                 options=SlurmSettings.parse_options(args.slurm_options))
        return SlurmExecutor(resources, settings)

    def resources(self, args: argparse.Namespace) -> Resources:
        for flag, value in (("--num_gpus", args.num_gpus), ("--num_nodes", args.num_nodes)):
            if value is not None and value < 1:
                raise InputError(f"{flag} must be at least 1, not {value}.")
        if args.executor == "slurm":
            if args.launcher != "pdsh" or args.hostfile is not None:
                raise InputError("--executor slurm runs each experiment on the nodes of its own job: leave out "
                                 "--launcher and --hostfile.")
            return job_resources(num_gpus=args.num_gpus, num_nodes=args.num_nodes,
                                 default_cpu_processes=DEFAULT_CPU_PROCESSES)
        if args.launcher == "slurm":
            if args.hostfile is not None:
                raise InputError("--launcher slurm takes the nodes of the Slurm allocation; leave out --hostfile.")
            return allocation_resources(num_gpus=args.num_gpus, num_nodes=args.num_nodes,
                                        launcher_args=args.launcher_args, default_cpu_processes=DEFAULT_CPU_PROCESSES)
        if args.launcher != "pdsh" and args.hostfile is None:
            raise InputError(f"--launcher {args.launcher} starts the ranks with mpirun on the hosts of a hostfile: "
                             f"give --hostfile.")
        if args.launcher == "pdsh" and args.launcher_args:
            raise InputError("--launcher_args are options of srun or mpirun: give --launcher too.")
        num_gpus = args.num_gpus
        if num_gpus is None and args.hostfile is None and not os.path.isfile(DEFAULT_HOSTFILE) \
                and detect_accelerator() == "cpu":
            num_gpus = DEFAULT_CPU_PROCESSES
        resources = Resources.resolve(num_gpus=num_gpus, num_nodes=args.num_nodes, hostfile=args.hostfile)
        return dataclasses.replace(resources, launcher=args.launcher, launcher_args=args.launcher_args)

    def planned_resources(self, args: argparse.Namespace, profile_name: str) -> Resources:
        """Predictions only, for the hardware of a profile: that hardware's accelerator, --num_gpus
        per node (default: the profile's) on --num_nodes nodes, whatever this machine has."""
        for flag, value in (("--num_gpus", args.num_gpus), ("--num_nodes", args.num_nodes)):
            if value is not None and value < 1:
                raise InputError(f"{flag} must be at least 1, not {value}.")
        profile = load_profile(profile_name)
        if args.hostfile is not None:
            return Resources.from_hostfile(args.hostfile, num_gpus=args.num_gpus, num_nodes=args.num_nodes,
                                           accelerator=profile.device.kind)
        per_node = args.num_gpus or profile.device.count_per_node
        if per_node > profile.device.count_per_node:
            raise InputError(f"Profile {profile.name} has {profile.device.count_per_node} devices per node, so "
                             f"--num_gpus {per_node} is too many (use --num_nodes for more nodes).")
        nodes = args.num_nodes or 1
        if nodes == 1:
            hosts = (("localhost", per_node),)
        else:
            hosts = tuple((f"worker-{i}", per_node) for i in range(nodes))
        return Resources(hosts=hosts, num_gpus=per_node, num_nodes=nodes, accelerator=profile.device.kind)

    def autotuning(self, args: argparse.Namespace, ds_config: dict, program: Program) -> AutotuningConfig:
        """The config's "autotuning" section with the command-line values applied."""
        autotuning = AutotuningConfig.from_dict(ds_config.get("autotuning")).with_overrides(
            results_dir=args.results_dir,
            exps_dir=args.exps_dir,
            overwrite=args.overwrite,
            metric=args.metric,
            tuner_type=args.tuner_type,
            fast=args.fast,
            experiment_timeout_s=args.timeout,
            memory_budget_bytes=args.memory_budget,
            verify_top=args.verify_top,
            profile=args.profile,
            search_trials=args.trials,
            confirm_close_calls=args.confirm_close_calls,
            storage=args.storage,
        )
        if program.mode == "model":
            mappings = dict(autotuning.arg_mappings or {})
            mappings.setdefault("activation_checkpointing", CHECKPOINTING_FLAG)
            autotuning = autotuning.with_overrides(arg_mappings=mappings)
        return autotuning


def numbers_source(how: str) -> str:
    """Where the workload's numbers come from, as the study's identity takes it: a measurement
    read from the cache is the one measured when the search first ran ("measured" either way), so
    a search killed after measuring resumes its own study; the closed form is other numbers."""
    return "closed-form" if how == "closed-form" else "measured"


@contextmanager
def only_search_in(results_dir: str) -> Iterator[None]:
    """Hold ``results_dir`` for this search: a second search there at the same time would mix
    its experiments and study with this one's, so it is refused, naming this one's pid."""
    with ExitStack() as held:
        try:
            held.enter_context(exclusive(Path(results_dir) / RESULTS_LOCK_FILE, wait=False))
        except Busy as busy:
            holder = f"pid {busy.pid}" if busy.pid else "another process"
            raise InputError(f"Another search ({holder}) is running in {results_dir}: wait for it to end, or "
                             f"give this one another --results_dir.") from None
        yield


def interrupted(results_dir: str, partial, elapsed_s: float, kept: str = "") -> int:
    """Ctrl-C: write results.json with what finished, say what is kept; exit code 130."""
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    path = write_results_json(results_dir, results_document(partial, elapsed_s, interrupted=True))
    print(f"simtune: interrupted: {kept}{len(partial.measurements)} finished experiment(s) are kept in "
          f"{results_dir} (listed in {path}); the same command reuses them unless --overwrite is given.",
          file=sys.stderr)
    return 130


# ----------------------------------------------------------------------------------------------
# the optimal command
def optimal_command(runner, best: Measurement, config_path: Path, port: int | None = None
                    ) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that train with the optimal config: the runner's launcher command for the
    best experiment with no probe, the script's config flag pointing at ``config_path``, the
    mapped flags set to the best experiment's values and the relative paths of existing files made
    absolute (run in ``runner.cwd``, where the experiments ran, for the paths still relative)."""
    script, args = runner.workload
    script_args = mapped_args(with_config_path(absolute_paths(args, runner.cwd), str(config_path)),
                              runner.arg_mappings, best.ds_config, best.trial)
    slots = runner.slot_sets[0]
    port = port or DEFAULT_MASTER_PORT
    argv = [deepspeed_launcher(), *launcher_args(runner.resources, slots, port), script, *script_args]
    env = launch_env(runner.resources, config_path.parent, base={}, rendezvous=(slots.hosts[0], port))
    return argv, env


def train_with_optimal(runner, best: Measurement, config_path: Path) -> int:
    """Run the optimal command here (on a free rendezvous port) and return its exit code."""
    port = free_port()
    try:
        argv, env = optimal_command(runner, best, config_path, port)
        print(f"\nsimtune: training with the optimal configuration: {command_text(argv)}", file=sys.stderr,
              flush=True)
        return subprocess.run(argv, env={**os.environ, **env}, cwd=runner.cwd, check=False).returncode
    finally:
        remove_shm_buffers(port)
        release_port(port)
