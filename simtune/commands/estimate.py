"""``simtune estimate``: the cost model's prediction for one model, hardware profile and layout."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
from typing import Any, Optional

from simtune.commands.base import Command
from simtune.errors import InputError
from simtune.model.step_time import STEP_TERMS
from simtune.model.adapters import host_optimizer_fit
from simtune.model.nvme_swap import nvme_rates_missing, nvme_traffic
from simtune.model.optimizer_time import torch_steps_on_host
from simtune.optimizers import ALGORITHMS, OptimizerChoice, fit_algorithm
from simtune.space import OFFLOAD_DEVICES

MEMORY_TERMS = ("parameters", "gradients", "master_weights", "optimizer_states", "gradient_buckets",
                "gathered_parameters", "comm_scratch", "activations", "logits", "step_transient",
                "fixed_overhead", "runtime_overhead")
"""MemoryEstimate fields (without ``_bytes``), in the order printed; ``total`` follows."""

_GROSS = {"exposed_comm": ("grad_reduce", "param_gather")}
TIME_TERMS = (*(field for name, _ in STEP_TERMS for field in _GROSS.get(name, (name,))), "hidden_comm")
"""TimeEstimate fields (without ``_s``): :data:`STEP_TERMS` with the exposed communication shown
gross; ``hidden_comm`` is what overlap saved (subtracted); ``step`` follows."""

DEFAULT_MODEL = "gpt2"


def _positive(name: str, value: Optional[int]) -> None:
    if value is not None and value < 1:
        raise InputError(f"{name} must be a positive integer, not {value}.")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _size(text: str, least: int = 1) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of elements such as 5e8, not {text!r}") from None
    if value < least or not value.is_integer():
        what = "positive" if least else "non-negative"
        raise argparse.ArgumentTypeError(f"expected a {what} whole number of elements, not {text!r}")
    return int(value)


def _size_or_zero(text: str) -> int:
    return _size(text, least=0)


def fmt_bytes(value: float) -> str:
    return f"{value / 1e9:.2f} GB" if value >= 1e8 else f"{value / 1e6:.1f} MB"


def fmt_seconds(value: float) -> str:
    return f"{value:.3f} s" if value >= 1 else f"{value * 1e3:.2f} ms"


def estimate_document(estimate: Any, config: dict[str, Any], profile_name: str,
                      usable_memory_bytes: int) -> dict[str, Any]:
    """The ``--json`` object: every memory and time term, the metrics, the configuration.

    ``usable_memory_bytes`` is the profile's usable memory (device memory less its fixed overhead);
    ``memory_limit_bytes`` is what the total, fixed overhead included, is compared with.
    """
    memory = estimate.memory
    time = estimate.time
    document = {
        "memory_bytes": {**{term: getattr(memory, f"{term}_bytes") for term in MEMORY_TERMS},
                         "total": memory.total_bytes},
        "host_memory_bytes": memory.host_bytes,
        "usable_memory_bytes": usable_memory_bytes,
        "memory_limit_bytes": memory.limit_bytes,
        "time_s": {**{term: getattr(time, f"{term}_s") for term in TIME_TERMS}, "step": time.step_s},
        "throughput": estimate.metrics.throughput_samples_per_s,
        "latency_ms": estimate.metrics.latency_ms,
        "flops_per_gpu": estimate.metrics.flops_per_gpu,
        "feasible": estimate.feasible,
        "config": config,
        "profile": profile_name,
    }
    return document


class EstimateCommand(Command):
    """Predict memory per GPU and step time of one training configuration, without running it.

    The cost model (docs/cost-model.md) for a model preset or config.json on any hardware profile
    and GPU count: memory per GPU term by term, time per optimizer step term by term, throughput,
    and whether it fits. Without --mbs it takes the largest micro-batch size predicted to fit and
    lists that size for every ZeRO stage; without --stage it shows the stage with the best
    predicted throughput. A workload calibration of the same model on the same profile (made by a
    search on that machine) is used when cached; otherwise FLOPs go through the profile's curve.
    Example: simtune estimate --model gpt2-xl --profile dgx2-v100-32gb --gpus 16 --stage 2 --json
    """

    name = "estimate"

    @classmethod
    def description(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", default=DEFAULT_MODEL,
                            help=f"model preset or path of a Hugging Face config.json (default {DEFAULT_MODEL})")
        parser.add_argument("--profile",
                            help="hardware profile name or JSON path (required; simtune profiles lists them)")
        parser.add_argument("--gpus", "--num_gpus", dest="gpus", type=int,
                            help="GPUs per node (default: the profile's)")
        parser.add_argument("--num_nodes", type=int, default=1, help="nodes (default 1)")
        parser.add_argument("--stage", type=int, choices=(0, 1, 2, 3),
                            help="ZeRO stage (default: the fastest that fits)")
        parser.add_argument("--mbs", type=int, help="micro-batch size per GPU (default: the largest that fits)")
        parser.add_argument("--gas", type=int, default=1, help="gradient accumulation steps (default 1)")
        parser.add_argument("--seq-len", "--seq_len", dest="seq_len", type=int,
                            help="tokens per sample (default: the preset's)")
        parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"),
                            help="training precision (default: bf16 where the profile has it, else fp16, else fp32)")
        parser.add_argument("--autocast", nargs="?", const="torch", choices=("torch", "deepspeed"),
                            help="an fp32 model under torch autocast, products in --precision (16-bit), norms and "
                                 "softmax in fp32; from the closed form. torch (the flag alone): the Hugging Face "
                                 "Trainer's --fp16/--bf16 without DeepSpeed, fp32 parameters, gradients and their "
                                 "reduction; deepspeed: DeepSpeed's torch_autocast section, its fp32 master kept and "
                                 "linear layers communicated in 16-bit")
        parser.add_argument("--offload-optimizer", "--offload_optimizer", dest="offload_optimizer",
                            choices=OFFLOAD_DEVICES, default="none",
                            help="optimizer offload (stages 1-3; nvme swaps at stage 3 only, DeepSpeed's stages "
                                 "1/2 offload to host memory whatever the device)")
        parser.add_argument("--offload-param", "--offload_param", dest="offload_param",
                            choices=OFFLOAD_DEVICES, default="none", help="parameter offload (stage 3)")
        parser.add_argument("--pin-memory", "--pin_memory", dest="pin_memory", type=_bool, metavar="true|false",
                            help="offload's host buffers page-locked (DeepSpeed's pin_memory; default true, "
                                 "DeepSpeed's since 0.19.5): false copies through pageable memory, at the "
                                 "profile's pageable rates where it measured them")
        parser.add_argument("--sub-group-size", "--sub_group_size", dest="sub_group_size", type=_size,
                            help="sub_group_size in elements: stage 3 steps its optimizer, and swaps it to NVMe, "
                                 "one sub-group of about this many partition elements at a time (default "
                                 "DeepSpeed's 1e9)")
        parser.add_argument("--nvme-pipeline", "--nvme_pipeline", dest="nvme_pipeline", type=_bool,
                            metavar="true|false",
                            help="the optimizer's NVMe swaps pipelined (DeepSpeed's pipeline_read and "
                                 "pipeline_write): sub-groups read and written while others step (default false)")
        parser.add_argument("--nvme-buffer-count", "--nvme_buffer_count", dest="nvme_buffer_count", type=int,
                            help="the optimizer's NVMe swap buffers (DeepSpeed's offload_optimizer.buffer_count, "
                                 "default 4), each the size of the largest sub-group")
        parser.add_argument("--param-buffer-count", "--param_buffer_count", dest="param_buffer_count", type=int,
                            help="NVMe parameter offload: page-locked swap buffers (offload_param.buffer_count; "
                                 "default 5)")
        parser.add_argument("--param-buffer-size", "--param_buffer_size", dest="param_buffer_size", type=_size,
                            help="NVMe parameter offload: elements per swap buffer (offload_param.buffer_size; "
                                 "default 1e8)")
        parser.add_argument("--max-in-cpu", "--max_in_cpu", dest="max_in_cpu", type=_size_or_zero,
                            help="NVMe parameter offload: partition elements kept in host memory "
                                 "(offload_param.max_in_cpu; default 1e9)")
        parser.add_argument("--checkpointing", "--activation-checkpointing", dest="checkpointing",
                            type=_bool, nargs="?", const=True, default=False, metavar="true|false",
                            help="activation checkpointing (default off; the flag alone turns it on)")
        parser.add_argument("--checkpointing-policy", "--checkpointing_policy", dest="checkpointing_policy",
                            default="full", metavar="full|selective-op|every-N-layers|first-N-layers",
                            help="what activation checkpointing keeps: full (DeepSpeed's and Hugging Face's; default), "
                                 "torchtitan's selective-op or every-N-layers, or first-N-layers (N layers, as "
                                 "Megatron-LM's block method); another policy than full turns checkpointing on")
        parser.add_argument("--reduce-bucket-size", "--reduce_bucket_size", dest="reduce_bucket_size", type=_size,
                            help="reduce_bucket_size in elements (default DeepSpeed's 5e8)")
        parser.add_argument("--overlap-comm", "--overlap_comm", dest="overlap_comm", type=_bool, metavar="true|false",
                            help="overlap_comm (default DeepSpeed's: on at stage 3 only)")
        parser.add_argument("--reduce-scatter", "--reduce_scatter", dest="reduce_scatter", type=_bool,
                            metavar="true|false", help="reduce_scatter (default DeepSpeed's: on; off, stage 3 "
                                                       "allreduces its gradient buckets)")
        parser.add_argument("--communication-data-type", "--communication_data_type", dest="communication_data_type",
                            choices=("fp32", "fp16", "bf16"),
                            help="DeepSpeed's communication_data_type: the precision gradients are reduced in "
                                 "(default: their own)")
        parser.add_argument("--optimizer", metavar="FIT",
                            help="the device optimizer, as the profile's optimizer fit (simtune.optimizers: "
                                 "torch_adamw_fused, torch_adamw_foreach, torch_adamw_for_loop, ...; default the "
                                 "one DeepSpeed runs: its fused Adam on a GPU)")
        parser.add_argument("--algorithm", choices=sorted(ALGORITHMS), default="adamw",
                            help="the optimizer's algorithm (simtune.optimizers: its states and step; "
                                 "sgd_momentum keeps a buffer, sgd none; default adamw)")
        parser.add_argument("--gradient-clipping", "--gradient_clipping", dest="gradient_clipping", type=_bool,
                            nargs="?", const=True, metavar="true|false",
                            help="the loop clips gradients (stage 0 over fp32 gradients; the Hugging Face Trainer "
                                 "clips by default; default off)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def run(self, args: argparse.Namespace) -> int:
        from simtune.hardware.registry import load_profile
        from simtune.prediction.learnt_engine_costs import learnt_engine_costs, with_learnt_engine_costs
        from simtune.prediction.predictor import Predictor, default_precision
        from simtune.workloads.presets import load_workload

        if not args.profile:
            raise InputError("simtune estimate needs --profile NAME: a hardware profile (simtune profiles lists them).")
        for name in ("gpus", "num_nodes", "mbs", "gas", "seq_len"):
            _positive(f"--{name.replace('_', '-') if name != 'num_nodes' else name}", getattr(args, name))
        profile = load_profile(args.profile)
        per_node = profile.device.count_per_node
        gpus = args.gpus if args.gpus is not None else per_node
        if gpus > per_node:
            raise InputError(f"Profile {profile.name} has {per_node} devices per node, so --gpus {gpus} "
                             f"is too many (use --num_nodes for more nodes).")
        world = gpus * args.num_nodes
        workload = load_workload(args.model, seq_len=args.seq_len)
        precision = args.precision or default_precision(profile)
        if args.autocast and precision == "fp32":
            raise InputError("--autocast needs a 16-bit --precision (fp16 or bf16): autocast runs an fp32 model's "
                             "products in 16-bit.")
        # a workload calibration timed the model in DeepSpeed's precision, not under autocast
        source = None if args.autocast else _calibration_for(workload, profile, precision)
        autocast = {"autocast": args.autocast is not None, "deepspeed_autocast": args.autocast == "deepspeed"}
        profile = with_learnt_engine_costs(profile, learnt_engine_costs(profile, precision))
        predictor = Predictor.from_parts(None, source or workload, profile, world_size=world,
                                         precision=precision, nodes=args.num_nodes,
                                         checkpointing_policy=args.checkpointing_policy,
                                         communication_precision=args.communication_data_type,
                                         optimizer_impl=args.optimizer, gradient_clipping=args.gradient_clipping,
                                         pin_memory=args.pin_memory, optimizer=OptimizerChoice(args.algorithm),
                                         nvme_swap=_nvme_swap(args), **autocast)
        knobs = {}
        if args.reduce_bucket_size is not None:
            knobs["reduce_bucket_size"] = args.reduce_bucket_size
        if args.overlap_comm is not None:
            knobs["overlap_comm"] = args.overlap_comm
        if args.reduce_scatter is not None:
            knobs["reduce_scatter"] = args.reduce_scatter
        if args.sub_group_size is not None:
            knobs["sub_group_size"] = args.sub_group_size
        settings = dict(gradient_accumulation_steps=args.gas, zero_knobs=knobs,
                        offload_optimizer=args.offload_optimizer, offload_param=args.offload_param,
                        activation_checkpointing=args.checkpointing or args.checkpointing_policy != "full")
        _check_offload(args)
        stages = (args.stage,) if args.stage is not None else (0, 1, 2, 3)
        largest = {}
        if args.mbs is None:
            for stage in stages:
                if stage == 0 and args.offload_optimizer != "none" or stage != 3 and args.offload_param != "none":
                    largest[stage] = 0
                    continue
                largest[stage] = predictor.max_micro_batch_size(stage, **settings)
        trial = _choose(predictor, stages, args, settings, largest)
        estimate = predictor.predict(trial)
        train = predictor.config(trial)
        _check_swap_buffers(predictor.model, train)
        traffic = (nvme_traffic(predictor.model, train) if train.swaps_optimizer_states or train.swaps_parameters
                   else None)
        # the profile's missing NVMe rates matter only where something is swapped there
        swapped = traffic is not None and bool(traffic.optimizer_buffers_needed or traffic.parameter_partitions)
        config = {
            "model": workload.name, "parameters": predictor.model.parameter_count, "seq_len": workload.seq_len,
            "precision": precision, "autocast": args.autocast or False, "stage": trial.stage,
            "micro_batch_size": trial.micro_batch_size,
            "gradient_accumulation_steps": trial.gradient_accumulation_steps, "gpus_per_node": gpus,
            "num_nodes": args.num_nodes, "world_size": world,
            "train_batch_size": trial.micro_batch_size * trial.gradient_accumulation_steps * world,
            "offload_optimizer": trial.offload_optimizer, "offload_param": trial.offload_param,
            "pin_memory": predictor.offload_pinned[0],
            "activation_checkpointing": trial.activation_checkpointing,
            "checkpointing_policy": predictor.checkpointing_policy if trial.activation_checkpointing else None,
            "communication_data_type": args.communication_data_type,
            "algorithm": predictor.optimizer.algorithm,
            "algorithm_rate": ("measured" if predictor.optimizer_step_measured(trial.offload_optimizer != "none")
                               else "scaled from AdamW"),
            "optimizer": predictor.hardware.optimizer_impl,
            "host_optimizer": (host_optimizer_fit(profile, torch_adamw=torch_steps_on_host(train),
                                                  algorithm=predictor.optimizer.algorithm)
                               if trial.offload_optimizer != "none" else None),
            "gradient_clipping": predictor.gradient_clipping,
            "nvme_uncosted": nvme_rates_missing(predictor.hardware, train) if swapped else None,
            "nvme_swap": dataclasses.asdict(train.nvme) if traffic is not None else None,
            "nvme_traffic": dataclasses.asdict(traffic) if traffic is not None else None,
            **knobs,
            "compute_source": "workload calibration on this hardware" if predictor.measured_compute_used
            else "FLOPs / profile compute curve",
        }
        if args.json:
            document = estimate_document(estimate, config, profile.name, profile.device.usable_memory_bytes)
            if largest:
                document["max_micro_batch_size"] = {str(s): m for s, m in largest.items()}
            print(json.dumps(document, indent=2))
            return 0
        for line in _text(estimate, config, profile, largest):
            print(line)
        return 0


def _nvme_swap(args: argparse.Namespace) -> Any:
    """The NVMe swap settings the flags give (DeepSpeed's defaults for those not given)."""
    from simtune.nvme_settings import NvmeSwapSettings

    values: dict[str, Any] = {}
    if args.nvme_pipeline is not None:
        values.update(pipeline_read=args.nvme_pipeline, pipeline_write=args.nvme_pipeline)
    for flag, name, low in (("--nvme-buffer-count", "optimizer_buffer_count", 1),
                            ("--param-buffer-count", "param_buffer_count", 1),
                            ("--param-buffer-size", "param_buffer_size", 1), ("--max-in-cpu", "max_in_cpu", 0)):
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is None:
            continue
        if value < low:
            raise InputError(f"{flag} must be at least {low}, not {value}.")
        values[name] = value
    return NvmeSwapSettings(**values)


def _check_swap_buffers(model: Any, train: Any) -> None:
    """Refuse NVMe swaps with swap buffers DeepSpeed's swappers cannot run with, naming the flags."""
    from simtune.model.nvme_swap import parameter_buffer_problem, swap_buffers_short, swap_buffers_why

    short = swap_buffers_short(model, train)
    if short is not None:
        have, needed = short
        raise InputError(f"{have} NVMe swap buffers are too few: DeepSpeed's swapper holds {needed} at once here "
                         f"({swap_buffers_why(model, train)}) and stops in the first step, so give "
                         f"--nvme-buffer-count {needed} or more.")
    problem = parameter_buffer_problem(model, train)
    if problem is not None:
        key, value, why = problem
        raise InputError(f"--param-{key.replace('_', '-')} {value} {why}.")


def _check_offload(args: argparse.Namespace) -> None:
    if args.stage is not None and args.offload_param != "none" and args.stage != 3:
        raise InputError(f"--offload-param needs ZeRO stage 3, not stage {args.stage}.")
    if args.stage == 0 and args.offload_optimizer != "none":
        raise InputError("--offload-optimizer needs ZeRO stage 1, 2 or 3, not stage 0.")


def _calibration_for(workload: Any, profile: Any, precision: str) -> Any:
    """The cached workload calibration of these inputs, or None."""
    from simtune.calibration.workload import cache_path, fingerprint, model_identity, read_cached

    key = fingerprint(model_identity(workload), workload.seq_len, precision, profile.name)
    cached = read_cached(cache_path(None, key))
    if cached is not None and cached.fingerprint == key:
        print(f"simtune: using the cached workload calibration of {workload.name} on {profile.name}.",
              file=sys.stderr)
        return cached
    return None


def _choose(predictor: Any, stages: tuple[int, ...], args: argparse.Namespace, settings: dict,
            largest: dict[int, int]) -> Any:
    """The trial to show: the given stage and mbs; else the fastest stage that fits at its
    largest micro-batch size; else (nothing fits) the most memory-frugal one at mbs 1."""
    from simtune.space import Trial

    def trial(stage: int, mbs: int) -> Trial:
        try:
            return Trial(stage=stage, micro_batch_size=mbs, **settings)
        except ValueError as exc:
            raise InputError(f"The configuration is not valid: {exc}.") from None

    candidates = []
    for stage in stages:
        if stage == 0 and args.offload_optimizer != "none" or stage != 3 and args.offload_param != "none":
            continue
        mbs = args.mbs if args.mbs is not None else largest.get(stage, 0)
        if mbs >= 1:
            candidates.append(trial(stage, mbs))
    feasible = [(predictor.predict(t), t) for t in candidates]
    feasible = [(e, t) for e, t in feasible if e.feasible]
    if len(stages) == 1 and candidates:
        return candidates[0]
    if feasible:
        return max(feasible, key=lambda pair: pair[0].metrics.throughput_samples_per_s)[1]
    if candidates:
        return candidates[-1]
    return trial(stages[-1], args.mbs or 1)


def _text(estimate: Any, config: dict[str, Any], profile: Any, largest: dict[int, int]) -> list[str]:
    m, t, metrics = estimate.memory, estimate.time, estimate.metrics
    device = profile.device
    swap = config.get("nvme_swap") or {}
    offload = [f"{what} offload to {_offload_target(config[key], config['stage'])}"
               + ("" if config.get("pin_memory", True) else " (pageable)")
               + (" (pipelined)" if key == "offload_optimizer" and config[key] == "nvme"
                  and (swap.get("pipeline_read") or swap.get("pipeline_write")) else "")
               for what, key in (("optimizer", "offload_optimizer"), ("parameter", "offload_param"))
               if config[key] != "none"]
    lines = [
        f"{config['model']}: {config['parameters']:,} parameters, seq {config['seq_len']}, {config['precision']}"
        + ({"torch": " under torch autocast (fp32 parameters and gradients)",
            "deepspeed": " under DeepSpeed's torch autocast (fp32 states, linear layers communicated in 16-bit)"}
           .get(config.get("autocast") or "", "")),
        f"hardware: {profile.name} ({device.name}), {config['gpus_per_node']} per node x {config['num_nodes']} node(s)",
        f"configuration: ZeRO {config['stage']}, micro-batch {config['micro_batch_size']}, accumulation "
        f"{config['gradient_accumulation_steps']}, global batch {config['train_batch_size']}"
        + (", " + ", ".join(offload) if offload else "")
        + (f", activation checkpointing ({config['checkpointing_policy']})" if config["activation_checkpointing"]
           else "")
        + (f", gradients reduced in {config['communication_data_type']}" if config.get("communication_data_type")
           else "")
        + (", stage 3 allreducing its buckets" if config.get("reduce_scatter") is False and config["stage"] == 3
           else "")
        + _optimizer_text(config)
        + (", gradients clipped" if config.get("gradient_clipping") else ""),
        f"compute times from: {config['compute_source']}",
        "",
        "memory per GPU",
    ]
    for term in MEMORY_TERMS:
        value = getattr(m, f"{term}_bytes")
        if value:
            lines.append(f"  {term.replace('_', ' '):<22} {fmt_bytes(value):>10}")
    verdict = "fits" if estimate.feasible else "DOES NOT FIT"
    lines.append(f"  {'total':<22} {fmt_bytes(m.total_bytes):>10}   "
                 f"of {fmt_bytes(m.limit_bytes)} (device memory limit): {verdict}")
    if m.host_bytes:
        lines.append(f"  {'host (offloaded)':<22} {fmt_bytes(m.host_bytes):>10}")
    lines += ["", "time per optimizer step"]
    for term in TIME_TERMS:
        value = getattr(t, f"{term}_s")
        if abs(value) > 1e-6 * t.step_s:
            label = "hidden by overlap" if term == "hidden_comm" else term.replace("_", " ")
            lines.append(f"  {label:<22} {('-' if term == 'hidden_comm' else '') + fmt_seconds(value):>10}")
    lines.append(f"  {'step':<22} {fmt_seconds(t.step_s):>10}")
    lines += ["", f"throughput {metrics.throughput_samples_per_s:.4g} samples/s, latency {metrics.latency_ms:.4g} ms, "
                  f"{metrics.flops_per_gpu / 1e12:.3g} TFLOP/s per GPU"]
    lines += _nvme_lines(config.get("nvme_traffic"))
    if config.get("nvme_uncosted"):
        lines += ["", f"note: {profile.name} gives no {config['nvme_uncosted']} for the node's NVMe: what "
                      "ZeRO-Infinity swaps there is not costed"]
    if largest:
        lines += ["", "largest micro-batch size predicted to fit, per ZeRO stage:"]
        for stage, mbs in largest.items():
            lines.append(f"  stage {stage}: {mbs if mbs else 'none (one sample does not fit)'}")
    return lines


def _nvme_lines(traffic: Optional[dict[str, Any]]) -> list[str]:
    """What one rank swaps through NVMe in a step, and the swap buffers it takes (``config.nvme_traffic``)."""
    if not traffic:
        return []
    lines = ["", "NVMe swaps per rank and step"]
    if traffic["optimizer_buffers_needed"]:
        lines.append(f"  {'optimizer read':<22} {fmt_bytes(traffic['optimizer_read_bytes']):>10}")
        lines.append(f"  {'optimizer written':<22} {fmt_bytes(traffic['optimizer_written_bytes']):>10}")
    if traffic["parameter_partitions"]:
        lines.append(f"  {'parameters read':<22} {fmt_bytes(traffic['parameter_read_bytes']):>10}")
        lines.append(f"  {'parameters written':<22} {fmt_bytes(traffic['parameter_written_bytes']):>10}   "
                     f"({traffic['parameter_partitions']:,} partitions, {traffic['parameter_elements']:,} elements)")
    if traffic.get("parameters_in_host_why"):
        lines.append(f"  parameters: none on NVMe: {traffic['parameters_in_host_why']}")
    needs = []
    if traffic["optimizer_buffers_needed"]:
        needs.append(f"offload_optimizer.buffer_count at least {traffic['optimizer_buffers_needed']}")
    if traffic["parameter_buffers_needed"]:
        needs.append(f"offload_param.buffer_count {'exactly' if traffic['parameter_buffers_exact'] else 'at least'} "
                     f"{traffic['parameter_buffers_needed']}")
    if needs:
        lines.append("  swap buffers: " + ", ".join(needs))
    return lines


def _offload_target(device: str, stage: int) -> str:
    if device == "nvme" and stage != 3:
        return "nvme (host memory at this stage)"
    return device


def _optimizer_text(config: dict) -> str:
    """The optimizer part of the configuration line: the fit it steps at, on the host when
    offloaded, and for another algorithm than AdamW whether its own rate was measured beside that
    fit or the fit's rate is scaled to its bytes."""
    fit = config.get("host_optimizer") or config.get("optimizer")
    if not fit:
        return ""
    where = " on the host" if config.get("host_optimizer") else ""
    algorithm = config.get("algorithm") or "adamw"
    if algorithm == "adamw":
        return f", optimizer {fit}{where}"
    if config.get("algorithm_rate") == "measured":
        if fit_algorithm(fit) == algorithm:  # its own kernel's fit
            return f", optimizer {algorithm}{where} ({fit}, measured)"
        return f", optimizer {algorithm}{where} (its rate measured beside {fit})"
    return f", optimizer {algorithm}{where} ({fit}'s AdamW rate scaled to its bytes)"
