"""``simtune report``: capacity-planning reports, and the report of a finished search."""

from __future__ import annotations

import argparse
import inspect
import shlex
import sys
from pathlib import Path

from simtune.commands.base import Command
from simtune.errors import InputError, SimtuneError

DEFAULT_GPU_COUNTS = "8,16,64"
DEFAULT_CAPACITY_FOLDER = "simtune_report"
SEARCH_REPORT_FOLDER = "report"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1e10, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _positive_float(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def command_line(args: argparse.Namespace) -> str:
    """The command that regenerates the report, for its subtitle (--out left out)."""
    parts = ["simtune report"]
    for flag, value in (("--model", args.model), ("--results", args.results), ("--profile", args.profile),
                        ("--gpus", args.gpus if args.model else None), ("--seq-len", args.seq_len),
                        ("--tokens", args.tokens), ("--samples", args.samples), ("--price", args.price),
                        ("--precision", args.precision), ("--global-batch", args.global_batch)):
        if value is not None:
            parts.append(f"{flag} {shlex.quote(format(value, 'g') if isinstance(value, float) else str(value))}")
    if getattr(args, "autocast", None):
        parts.append("--autocast" + (" deepspeed" if args.autocast == "deepspeed" else ""))
    return " ".join(parts)


class ReportCommand(Command):
    """Write a capacity-planning report (Markdown + standalone HTML with plots), or a search's report.

    Capacity planning, from the cost model alone (nothing is launched; seconds):
      simtune report --model gpt2-xl --profile dgx2-v100-32gb,dgx-a100-80gb --gpus 16,32,64 --tokens 1e10
    gives the best configuration per profile and GPU count, memory per GPU by term for each ZeRO
    stage, the largest micro-batch size per stage, scaling with GPU count, time, GPU-hours and cost
    (--price) to train the tokens, and the largest model of the family that fits.

    After a search:
      simtune report --results autotuning_results [--profile NAME]
    gives predicted vs measured for every verified configuration, the search history and the
    collective fits of the hardware profile (default output: RESULTS/report).

    Profiles are names from `simtune profiles` or JSON paths. Output: report.md, report.html and
    one PNG per plot in --out. docs/reports.md explains every plot.
    """

    name = "report"

    @classmethod
    def description(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", metavar="PRESET_OR_CONFIG",
                            help="model preset (e.g. gpt2-xl) or Hugging Face config.json: capacity planning")
        parser.add_argument("--profile", metavar="NAME[,NAME...]",
                            help="hardware profile(s), comma-separated; with --results, the profile the search used")
        parser.add_argument("--gpus", default=DEFAULT_GPU_COUNTS, metavar="N[,N...]",
                            help=f"GPU counts to plan for (default {DEFAULT_GPU_COUNTS})")
        parser.add_argument("--seq-len", type=_positive_int, metavar="L",
                            help="tokens per sample (default: the model's)")
        budget = parser.add_mutually_exclusive_group()
        budget.add_argument("--tokens", type=_positive_float, metavar="T",
                            help="training budget in tokens (default: 20 per parameter)")
        budget.add_argument("--samples", type=_positive_float, metavar="S", help="training budget in samples")
        parser.add_argument("--price", type=_positive_float, metavar="USD_PER_GPU_HOUR",
                            help="price of one GPU-hour, for the cost of training")
        parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"),
                            help="training precision (default: bf16 where the profile has it, else fp16)")
        parser.add_argument("--autocast", nargs="?", const="torch", choices=("torch", "deepspeed"),
                            help="plan an fp32 model trained inside torch autocast: torch (the flag alone), as the "
                                 "Hugging Face Trainer's --fp16/--bf16 runs without DeepSpeed; deepspeed, as "
                                 "DeepSpeed's torch_autocast section runs it (capacity planning only)")
        parser.add_argument("--global-batch", type=_positive_int, metavar="B",
                            help="fix the global batch in samples (default: accumulation 1, micro-batch free)")
        parser.add_argument("--results", metavar="DIR", help="results_dir of a finished simtune search")
        parser.add_argument("--out", metavar="DIR", help=f"output folder (default: {DEFAULT_CAPACITY_FOLDER}, or "
                                                         f"DIR/{SEARCH_REPORT_FOLDER} with --results)")

    def run(self, args: argparse.Namespace) -> int:
        from simtune.hardware import load_profile
        from simtune.prediction.learnt_engine_costs import learnt_engine_costs, with_learnt_engine_costs
        from simtune.prediction.predictor import default_precision
        from simtune.report import CapacityRequest, build_document, capacity_study, read_search, write_report
        from simtune.report.capacity import gpu_counts_of
        from simtune.workloads import load_workload

        if not args.model and not args.results:
            raise InputError("Say what to report on: --model PRESET for capacity planning, or --results DIR "
                             "after a search.")
        names = [n.strip() for n in (args.profile or "").split(",") if n.strip()]
        study = search = search_profile = None
        if args.model:
            if not names:
                raise InputError("Capacity planning needs --profile NAME[,NAME...] (see simtune profiles).")
            workload = load_workload(args.model, args.seq_len)
            profiles = tuple(with_learnt_engine_costs(p, learnt_engine_costs(p, args.precision or default_precision(p)))
                             for p in map(load_profile, names))
            request = CapacityRequest(workload, profiles, gpu_counts_of(args.gpus), args.precision, args.tokens,
                                      args.samples, args.price, args.global_batch, autocast=args.autocast is not None,
                                      deepspeed_autocast=args.autocast == "deepspeed")
            if not args.quiet:
                print(f"simtune: planning {workload.name} on {', '.join(names)} at {args.gpus} GPUs...",
                      file=sys.stderr, flush=True)
            study = capacity_study(request)
        if args.results:
            search = read_search(args.results)
            if len(names) > 1 and not args.model:
                raise InputError("With --results alone, --profile names the one profile the search used.")
            # --results alone: --profile names the search's profile; with --model, the search says which it used
            profile_name = (search.profile or (names[0] if names else None)) if args.model else \
                (names[0] if names else search.profile)
            if profile_name:
                try:
                    search_profile = load_profile(profile_name)
                except SimtuneError as exc:
                    if names and not args.model:
                        raise
                    print(f"simtune: warning: the search's profile {profile_name!r} cannot be loaded ({exc})",
                          file=sys.stderr)
        out = args.out or (str(Path(args.results) / SEARCH_REPORT_FOLDER) if args.results and not args.model
                           else DEFAULT_CAPACITY_FOLDER)
        written = write_report(build_document(study, search, search_profile, command_line(args)), out)
        print(f"Wrote {written.markdown_path} and {written.html_path} ({len(written.image_paths)} plots).")
        return 0
