"""``simtune profiles``: list the hardware profiles, or show one."""

from __future__ import annotations

import argparse
import inspect
import json
import sys

from simtune.commands.base import Command
from simtune.commands.calibrate import format_bytes, summary_lines


class ProfilesCommand(Command):
    """List the hardware profiles (spec and measured), or show one with `profiles show NAME`.

    Profiles are searched in $SIMTUNE_PROFILE_PATH, then ~/.simtune/profiles, then the shipped
    hardware_profiles/ folder. For the same hardware (device name and count) a measured profile
    wins over a spec one; the list marks the spec one as superseded.
    Examples: simtune profiles; simtune profiles show dgx-a100-80gb; simtune profiles show NAME --json
    """

    name = "profiles"

    @classmethod
    def description(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", nargs="?", choices=("list", "show"), default="list",
                            help="list (default) or show NAME")
        parser.add_argument("profile", nargs="?", metavar="NAME", help="profile name or JSON path (for show)")
        parser.add_argument("--json", action="store_true", help="show: print the profile's JSON")

    def run(self, args: argparse.Namespace) -> int:
        if args.action == "show":
            return self._show(args)
        return self._list(args)

    def _list(self, args: argparse.Namespace) -> int:
        from simtune.hardware import list_profiles, profile_problems

        entries = list_profiles()
        rows = [("NAME", "KIND", "DEVICE", "COUNT", "MEMORY", "WHERE")]
        for e in entries:
            kind = e.kind if e.superseded_by is None else f"{e.kind} (superseded by {e.superseded_by})"
            rows.append((e.name, kind, e.device_name, str(e.device_count), format_bytes(e.memory_bytes), str(e.path)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
        if not entries:
            print("(no hardware profiles found)")
        for problem in profile_problems():
            print(f"simtune: warning: skipped {problem.path}: {problem.message}", file=sys.stderr)
        return 0

    def _show(self, args: argparse.Namespace) -> int:
        from simtune.errors import InputError
        from simtune.hardware import load_profile, profile_to_dict

        if not args.profile:
            raise InputError("Say which profile to show: simtune profiles show NAME.")
        profile = load_profile(args.profile)
        if args.json:
            print(json.dumps(profile_to_dict(profile), indent=2))
            return 0
        for line in describe(profile):
            print(line)
        return 0


def framework_lines(profile) -> list[str]:
    """The software stack's costs per call (the profile's framework section), with the engine
    costs searches learnt on this profile (``engine_costs/<profile>.json``) in place of its own."""
    from simtune.hardware.profile import FRAMEWORK_COSTS
    from simtune.hardware.spec import ENGINE_COSTS
    from simtune.model.adapters import spec_engine_costs_stand_in
    from simtune.prediction.learnt_engine_costs import learnt_costs_path, learnt_engine_costs

    learnt = {}
    for precision in ("fp32", "bf16", "fp16"):
        found = learnt_engine_costs(profile, precision)
        if found is not None and found.sources not in {v.sources for v in learnt.values()}:
            learnt[precision] = found
    lines = []
    if profile.framework is not None:
        costs = ", ".join(f"{name[:-2]} {getattr(profile.framework, name) * 1e6:.1f} us" for name in FRAMEWORK_COSTS)
        lines.append(f"  framework           {costs} ({profile.framework.kind})")
    if not learnt and spec_engine_costs_stand_in(profile):
        costs = ", ".join(f"{name[:-2]} {value * 1e6:.1f} us" for name, value in ENGINE_COSTS.items())
        lines.append(f"  engine costs        none measured or learnt on this GPU profile: the spec profiles' "
                     f"published estimates stand in ({costs})")
    for found in learnt.values():
        costs = ", ".join(f"{name[:-2]} {value * 1e6:.1f} us" for name, value in found.costs.items())
        lines.append(f"  engine costs learnt {costs} ({found.describe()}; {learnt_costs_path(profile.name)})")
        if found.param_pass_s:
            per_param = "; ".join(f"z{stage} " + " ".join(f"{v * 1e9:.2f}" for v in row)
                                  for stage, row in enumerate(found.param_pass_s))
            lines.append(f"  per parameter (ns)  forward backward step: {per_param} (z3's step per parameter of "
                         f"a rank's shard)")
    return lines


def describe(profile) -> list[str]:
    """A readable page about one profile: what it is, where its numbers come from, the fits."""
    device, prov = profile.device, profile.provenance
    lines = [
        f"{profile.name}  ({prov.kind}, schema {profile.schema_version})",
        f"  device              {device.name} ({device.kind}) x {device.count_per_node} per node"
        f" x {device.nodes} node(s)",
        f"  date                {prov.date}",
        f"  command             {prov.command}",
    ]
    if prov.host:
        lines.append(f"  host                {prov.host}")
    versions = ", ".join(f"{label} {value}" for label, value in (
        ("torch", prov.torch_version), ("CUDA", prov.cuda_version), ("NCCL", prov.nccl_version),
        ("DeepSpeed", prov.deepspeed_version)) if value)
    if versions:
        lines.append(f"  versions            {versions}")
    lines += summary_lines(profile)
    offload = profile.offload
    link = "RAM copy (no host-device link)" if offload.kind == "cpu_memcpy" else offload.kind
    lines.append(f"  host<->device       h2d {offload.h2d_bytes_per_s / 1e9:.1f} GB/s, "
                 f"d2h {offload.d2h_bytes_per_s / 1e9:.1f} GB/s ({link})")
    if offload.h2d_pageable_bytes_per_s is not None and offload.d2h_pageable_bytes_per_s is not None:
        lines.append(f"  pageable            h2d {offload.h2d_pageable_bytes_per_s / 1e9:.1f} GB/s, "
                     f"d2h {offload.d2h_pageable_bytes_per_s / 1e9:.1f} GB/s")
    if offload.host_memcpy_bytes_per_s is not None and offload.kind != "cpu_memcpy":
        lines.append(f"  host copy           {offload.host_memcpy_bytes_per_s / 1e9:.1f} GB/s")
    if offload.cpu_adam_s_per_param is not None:
        lines.append(
            f"  host optimizer      {offload.cpu_adam_s_per_param * 1e9:.3g} ns/param ({offload.cpu_adam_impl})"
        )
    if offload.host_memory_bytes:
        lines.append(f"  host memory         {format_bytes(offload.host_memory_bytes)} per node")
    lines += framework_lines(profile)
    if profile.compute.unsupported_dtypes:
        for dtype, why in profile.compute.unsupported_dtypes.items():
            lines.append(f"  dtype {dtype:<13} {why}")
    if prov.assumptions:
        lines.append("  assumptions:")
        lines += [f"    {key}: {value}" for key, value in prov.assumptions.items()]
    if prov.sources:
        lines.append("  sources:")
        lines += [f"    - {source}" for source in prov.sources]
    if prov.notes:
        lines.append("  notes:")
        lines += [f"    - {note}" for note in prov.notes]
    return lines
