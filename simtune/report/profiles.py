"""The provenance of a hardware profile, as a report section: what it is, where each number comes
from (spec sources and assumptions, or the measurement's date, command and versions)."""

from __future__ import annotations

from simtune.hardware.profile import HardwareProfile
from simtune.model.adapters import spec_engine_costs_stand_in
from simtune.report.document import BulletList, Paragraph, Section
from simtune.report.units import flop_rate, gib


def profile_facts(profile: HardwareProfile) -> tuple[str, ...]:
    device, prov = profile.device, profile.provenance
    kind = ("spec: derived from vendor numbers and stated assumptions, nothing measured" if prov.kind == "spec"
            else "measured by `simtune calibrate`")
    peaks = ", ".join(f"{dtype} {flop_rate(value)}" for dtype, value in sorted(device.peak_flop_per_s.items()))
    facts = [
        f"Kind: {kind}.",
        f"Device: {device.name} ({device.kind}), {device.count_per_node} per node, {device.nodes} node(s) described.",
        f"Memory per device: {gib(device.memory_bytes)}, usable {gib(device.usable_memory_bytes)}, fixed overhead "
        f"{gib(device.fixed_overhead_bytes)}.",
        f"Peak dense FLOP/s: {peaks}.",
        f"Date: {prov.date}. Command: `{prov.command}`." + (f" Host: {prov.host}." if prov.host else ""),
    ]
    versions = ", ".join(f"{label} {value}" for label, value in (
        ("torch", prov.torch_version), ("CUDA", prov.cuda_version), ("NCCL", prov.nccl_version),
        ("DeepSpeed", prov.deepspeed_version)) if value)
    if versions:
        facts.append(f"Versions: {versions}.")
    if spec_engine_costs_stand_in(profile):
        facts.append("DeepSpeed's own costs (ZeRO-3 fetches, buckets, the engine's step): none measured or learnt on "
                     "this profile, so the spec profiles' published estimates stand in (docs/cost-model.md 3.3).")
    if profile.collectives.applicable:
        fits = profile.collectives
        for scope, table in (("intra-node", fits.intra_node), ("inter-node", fits.inter_node)):
            if "allreduce" in table:
                f = table["allreduce"]
                facts.append(f"{scope} allreduce: latency {f.latency_s * 1e6:.3g} us, bus bandwidth "
                             f"{f.bandwidth_bytes_per_s / 1e9:.3g} GB/s ({f.ranks} ranks).")
    return tuple(facts)


def profile_section(profile: HardwareProfile) -> Section:
    prov = profile.provenance
    blocks: list = [BulletList(profile_facts(profile))]
    if prov.sources:
        blocks += [Paragraph("Sources:"), BulletList(tuple(prov.sources))]
    if prov.assumptions:
        blocks += [Paragraph("Assumptions:"), BulletList(tuple(f"{k}: {v}" for k, v in prov.assumptions.items()))]
    if prov.notes:
        blocks += [Paragraph("Notes:"), BulletList(tuple(prov.notes))]
    return Section(f"Profile `{profile.name}`", tuple(blocks), level=3)
