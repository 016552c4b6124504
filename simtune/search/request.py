"""What to tune, read and checked once: the program each experiment runs, the resources, the
DeepSpeed config with its "autotuning" section and the command-line values over it, and the
tuning space. Every input error is raised here, before anything runs.

    request = SearchRequest.from_flags(SearchFlags.from_namespace(args))
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simtune.dsconfig import AutotuningConfig, load_ds_config
from simtune.errors import InputError
from simtune.hardware import HardwareProfile, load_profile
from simtune.model.adapters import model_spec
from simtune.prediction.predictor import check_swap_buffers, default_precision, precision_of
from simtune.precision import autocast_parts
from simtune.runner.aio_op import async_io_missing
from simtune.runner.executors import Executor, LocalExecutor
from simtune.runner.resources import DEFAULT_HOSTFILE, Resources, detect_accelerator
from simtune.runner.slurm import allocation_resources, job_resources
from simtune.runner.slurm_executor import SlurmExecutor, SlurmSettings
from simtune.search.model_inputs import describes_this_machine
from simtune.search.study_storage import StudyStorage
from simtune.space import TuningSpace
from simtune.workloads import DEFAULT_OPTIMIZER, TRAIN_PROGRAM, Workload, load_workload

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


@dataclass(frozen=True)
class SearchFlags:
    """The command line of ``simtune search``, as parsed (None: not given)."""

    model: str | None = None
    seq_len: int | None = None
    deepspeed: str | None = None
    num_gpus: int | None = None
    num_nodes: int | None = None
    hostfile: str | None = None
    launcher: str = "pdsh"
    launcher_args: str = ""
    executor: str = "local"
    shared_launch: bool = True
    slurm_partition: str | None = None
    slurm_account: str | None = None
    slurm_options: tuple[str, ...] = ()
    strategy: str = "simulate"
    verify_top: int | None = None
    profile: str | None = None
    trials: int | None = None
    confirm_close_calls: int | None = None
    storage: str | None = None
    results_dir: str | None = None
    exps_dir: str | None = None
    overwrite: bool | None = None
    metric: str | None = None
    tuner_type: str | None = None
    fast: bool | None = None
    stop_at_worse_stage: bool = True
    timeout: float | None = None
    memory_budget: str | None = None
    run: bool = False
    quiet: bool = False
    script: tuple[str, ...] = ()

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "SearchFlags":
        given = vars(args)
        values = {f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given}
        for key in ("slurm_options", "script"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)


def default_ds_config(accelerator: str, half: str = "bf16") -> dict[str, Any]:
    """The config model mode uses without --deepspeed: every ZeRO stage, AdamW, mbs from 1;
    ``half`` ("bf16", or "fp16" for GPUs without bf16) on GPU, fp32 and a 20-step measurement
    window on CPU."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "optimizer": copy.deepcopy(DEFAULT_OPTIMIZER),
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

    def workload(self) -> Workload | None:
        """Model mode: the model trained; None in script mode."""
        return load_workload(self.model, self.seq_len) if self.model is not None else None

    @classmethod
    def from_flags(cls, flags: SearchFlags) -> "Program":
        """The script and arguments each experiment runs (model mode or script mode)."""
        if flags.script:
            script, *script_args = flags.script
            if flags.model is not None or flags.seq_len is not None:
                raise InputError("Give either --model (model mode) or a training script (script mode), not both.")
            if flags.deepspeed is not None:
                raise InputError("In script mode pass --deepspeed after the script, as the script receives it.")
            if not os.path.isfile(script):
                raise InputError(f"The training script {script} does not exist.")
            config = config_path_in(script_args)
            if config is None:
                raise InputError(f"The arguments of {script} name no DeepSpeed config: add --deepspeed ds_config.json.")
            return cls(os.path.abspath(script), tuple(script_args), "script", config, f"script mode: {script}")
        model = flags.model or DEFAULT_MODEL
        seq_len = flags.seq_len if flags.seq_len is not None else (None if flags.model else DEFAULT_SEQ_LEN)
        if seq_len is not None and seq_len < 1:
            raise InputError(f"--seq-len must be a positive number of tokens, not {seq_len}.")
        workload = load_workload(model, seq_len)
        if os.path.exists(model):
            model = os.path.abspath(model)
        config = os.path.abspath(flags.deepspeed) if flags.deepspeed else None
        program_args = ("--model", model, "--seq-len", str(workload.seq_len),
                        "--deepspeed", config or "ds_config.json")
        return cls(str(TRAIN_PROGRAM), program_args, "model", config,
                   f"model mode: {workload.name}, {workload.seq_len} tokens per sample", model, workload.seq_len)


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


@dataclass(frozen=True)
class SearchRequest:
    """One search, fully resolved: what runs, where, and the space it searches."""

    flags: SearchFlags
    program: Program
    resources: Resources
    ds_config: dict[str, Any]
    space: TuningSpace

    @property
    def autotuning(self) -> AutotuningConfig:
        return self.space.autotuning

    @property
    def strategy(self) -> str:
        return self.flags.strategy

    @property
    def predicted_only(self) -> bool:
        """Simulate with --verify-top 0: nothing runs, the predicted best is the answer."""
        return self.strategy == "simulate" and self.autotuning.verify_top == 0

    @property
    def precision(self) -> str:
        return precision_of(self.ds_config, self.resources.accelerator)

    @classmethod
    def from_flags(cls, flags: SearchFlags) -> "SearchRequest":
        """Read the config, resolve resources and build the space; refuse bad input in one sentence."""
        for flag, value, low in (("--verify-top", flags.verify_top, 0), ("--trials", flags.trials, 1),
                                 ("--confirm-close-calls", flags.confirm_close_calls, 0)):
            if value is not None and value < low:
                raise InputError(f"{flag} must be at least {low}, not {value}.")
        program = Program.from_flags(flags)
        file_config = load_ds_config(program.config_path) if program.config_path else None
        with warnings.catch_warnings():  # read again below, where its warnings are shown once
            warnings.simplefilter("ignore")
            file_section = AutotuningConfig.from_dict((file_config or {}).get("autotuning"))
        verify_top = flags.verify_top if flags.verify_top is not None else file_section.verify_top
        profile_name = flags.profile or file_section.profile
        half = "bf16"
        if flags.strategy == "simulate" and verify_top == 0 and profile_name is not None:
            _check_counts(flags)
            planned = load_profile(profile_name)
            resources = planned_resources(flags, planned)
            half = "fp16" if default_precision(planned) == "fp16" else "bf16"
        else:
            resources = local_resources(flags)
        ds_config = file_config if file_config is not None else default_ds_config(resources.accelerator, half)
        autotuning = autotuning_of(flags, ds_config, program)
        for key in ("results_dir", "exps_dir"):
            folder = Path(getattr(autotuning, key))
            if folder.exists() and not folder.is_dir():
                raise InputError(f"The {key} {folder} is an existing file, not a folder.")
        space = TuningSpace.from_config(ds_config, autotuning, world_size=resources.world_size,
                                        user_args=program.args)
        request = cls(flags, program, resources, ds_config, space)
        workload = program.workload() if space.swaps_to_nvme else None
        if workload is not None:
            precision, autocast = autocast_parts(request.precision)
            check_swap_buffers(space, model_spec(workload), dp_degree=resources.world_size // space.mp_size,
                               mp_degree=space.mp_size, precision="fp32" if autocast else precision)
        if not request.predicted_only and resources.accelerator == "cpu" and not space.optimizer.spec.runs_on_cpu \
                and (0 in space.stages or "none" in space.offload_optimizer_devices):
            kind = ds_config["optimizer"]["type"]
            raise InputError(f"Optimizer {kind!r} runs on DeepSpeed's CPU accelerator only offloaded "
                             f"({space.optimizer.spec.offload_impl}): tune stages 1-3 with the optimizer "
                             "offloaded to cpu, or predict a GPU profile with --verify-top 0.")
        if not request.predicted_only and space.swaps_to_nvme \
                and flags.executor == "local":
            missing = async_io_missing(resources.accelerator)
            if missing is not None:
                raise InputError(f"Offload to NVMe at stage 3 swaps through DeepSpeed's async_io op, which {missing}; "
                                 "or predict without running anything: --verify-top 0.")
        if request.strategy == "simulate" and flags.run and autotuning.profile is not None:
            profile = load_profile(autotuning.profile)
            if not describes_this_machine(profile, resources):
                raise InputError(f"--run trains on this machine, but hardware profile {profile.name!r} describes "
                                 f"other hardware: drop --run or use a profile of this machine.")
        if request.strategy == "simulate" and autotuning.storage is not None:
            # a bad URL, a missing driver or an unreachable server, before anything runs
            StudyStorage.chosen(autotuning.storage, autotuning.results_dir).check()
        return request

    def shares_launch(self) -> bool:
        """Whether the verifications may run in one shared launch (the runner also asks that the
        experiments run here, one at a time on one node): the simulate strategy, the built-in
        training program (which runs again in one process; a user's script may not), unless
        ``--no-shared-launch``. The measure strategy keeps a launch per experiment, as DeepSpeed's
        autotuner does."""
        return self.flags.shared_launch and self.strategy == "simulate" and self.program.mode == "model"

    def executor(self) -> Executor | None:
        """Where experiments run: here, or each as a Slurm job; None when nothing runs."""
        flags = self.flags
        if self.predicted_only:
            return None
        if flags.executor == "local":
            if flags.slurm_partition or flags.slurm_account or flags.slurm_options:
                raise InputError("--slurm_partition, --slurm_account and --slurm_option set the jobs of "
                                 "--executor slurm: give it too.")
            return LocalExecutor()
        settings = SlurmSettings(partition=flags.slurm_partition, account=flags.slurm_account,
                                 options=SlurmSettings.parse_options(list(flags.slurm_options)))
        return SlurmExecutor(self.resources, settings)


def _check_counts(flags: SearchFlags) -> None:
    for flag, value in (("--num_gpus", flags.num_gpus), ("--num_nodes", flags.num_nodes)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be at least 1, not {value}.")


def local_resources(flags: SearchFlags) -> Resources:
    """The processes of each experiment: here, on a hostfile's hosts, or in a Slurm allocation or job."""
    _check_counts(flags)
    if flags.executor == "slurm":
        if flags.launcher != "pdsh" or flags.hostfile is not None:
            raise InputError("--executor slurm runs each experiment on the nodes of its own job: leave out "
                             "--launcher and --hostfile.")
        return job_resources(num_gpus=flags.num_gpus, num_nodes=flags.num_nodes,
                             default_cpu_processes=DEFAULT_CPU_PROCESSES)
    if flags.launcher == "slurm":
        if flags.hostfile is not None:
            raise InputError("--launcher slurm takes the nodes of the Slurm allocation; leave out --hostfile.")
        return allocation_resources(num_gpus=flags.num_gpus, num_nodes=flags.num_nodes,
                                    launcher_args=flags.launcher_args, default_cpu_processes=DEFAULT_CPU_PROCESSES)
    if flags.launcher != "pdsh" and flags.hostfile is None:
        raise InputError(f"--launcher {flags.launcher} starts the ranks with mpirun on the hosts of a hostfile: "
                         f"give --hostfile.")
    if flags.launcher == "pdsh" and flags.launcher_args:
        raise InputError("--launcher_args are options of srun or mpirun: give --launcher too.")
    num_gpus = flags.num_gpus
    if num_gpus is None and flags.hostfile is None and not os.path.isfile(DEFAULT_HOSTFILE) \
            and detect_accelerator() == "cpu":
        num_gpus = DEFAULT_CPU_PROCESSES
    resources = Resources.resolve(num_gpus=num_gpus, num_nodes=flags.num_nodes, hostfile=flags.hostfile)
    return dataclasses.replace(resources, launcher=flags.launcher, launcher_args=flags.launcher_args)


def planned_resources(flags: SearchFlags, profile: HardwareProfile) -> Resources:
    """Predictions only, for the hardware of a profile: that hardware's accelerator, --num_gpus
    per node (default: the profile's) on --num_nodes nodes, whatever this machine has."""
    if flags.hostfile is not None:
        return Resources.from_hostfile(flags.hostfile, num_gpus=flags.num_gpus, num_nodes=flags.num_nodes,
                                       accelerator=profile.device.kind)
    per_node = flags.num_gpus or profile.device.count_per_node
    if per_node > profile.device.count_per_node:
        raise InputError(f"Profile {profile.name} has {profile.device.count_per_node} devices per node, so "
                         f"--num_gpus {per_node} is too many (use --num_nodes for more nodes).")
    nodes = flags.num_nodes or 1
    if nodes == 1:
        hosts: tuple[tuple[str, int], ...] = (("localhost", per_node),)
    else:
        hosts = tuple((f"worker-{i}", per_node) for i in range(nodes))
    return Resources(hosts=hosts, num_gpus=per_node, num_nodes=nodes, accelerator=profile.device.kind)


def autotuning_of(flags: SearchFlags, ds_config: dict[str, Any], program: Program) -> AutotuningConfig:
    """The config's "autotuning" section with the command-line values applied."""
    autotuning = AutotuningConfig.from_dict(ds_config.get("autotuning")).with_overrides(
        results_dir=flags.results_dir,
        exps_dir=flags.exps_dir,
        overwrite=flags.overwrite,
        metric=flags.metric,
        tuner_type=flags.tuner_type,
        fast=flags.fast,
        experiment_timeout_s=flags.timeout,
        memory_budget_bytes=flags.memory_budget,
        verify_top=flags.verify_top,
        profile=flags.profile,
        search_trials=flags.trials,
        confirm_close_calls=flags.confirm_close_calls,
        storage=flags.storage,
    )
    if program.mode == "model":
        mappings = dict(autotuning.arg_mappings or {})
        mappings.setdefault("activation_checkpointing", CHECKPOINTING_FLAG)
        autotuning = autotuning.with_overrides(arg_mappings=mappings)
    return autotuning
