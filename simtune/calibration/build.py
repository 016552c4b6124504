"""Turn the raw output of ``simtune.calib.run_all`` into a measured :class:`HardwareProfile`.

Pure apart from reading the clock for the date: the raw JSON in, a validated profile out.
Every fit uses the fastest repeat of each point (``min_s``): the cost model predicts what the
hardware achieves, and on a shared machine the median mixes in other processes' interference
(medians and maxima stay in the profile next to each fit; see docs/calibration.md).

- compute curve (per dtype): x = FLOPs of one matmul (``2 * tokens * hidden * out``), y = the
  FLOPs of forward and backward (3x that) over the forward + backward time;
- peak FLOP/s: the vendor peak of a spec profile of the same device when one is known (or the
  highest rate measured, if that is higher), else the highest rate measured (CPUs);
- matmul weights (CPU): the pairs of linear layers of equal FLOPs over a large and a small
  weight, kept as measured (the cost model reads their difference per weight byte);
- element-wise ops and the optimizer step: :func:`fit_line` of time against size;
- framework: the host's dispatch cost per op, forward and backward, from the timed chain of tiny
  ops (the engine's own costs are not measured here: 0);
- collectives: :func:`fit_collective` (latency and bus bandwidth) of each measured group (a
  CPU calibration's larger tail message is kept beside the line, not in it): a
  group within one node gives the intra-node fits, a group spanning nodes (the world of a
  multi-node launch) the inter-node fits;
- copies: the slope of time against bytes; a copy of N bytes reads N and writes N, so the
  memory bandwidth (bytes moved per second) is 2 / slope and the copy rate 1 / slope;
- memory: CUDA: fixed overhead = total - free after the context and the communicator exist,
  plus the caching allocator's slack; CPU: the RAM share of one rank (total / ranks on the host),
  fixed overhead = the largest baseline RSS of a rank.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from typing import Mapping, Optional

from simtune.calibration.fit import FitError, fit_collective, fit_line, stats_from_dict
from simtune.errors import SimtuneError
from simtune.hardware.profile import (
    SCHEMA_VERSION,
    AttentionRate,
    CollectiveFit,
    CollectivePoint,
    CollectivesProfile,
    ComputeCurve,
    ComputeProfile,
    CopyPoint,
    DeviceInfo,
    ElementwiseFit,
    ElementwisePoint,
    FrameworkProfile,
    HardwareProfile,
    MatmulMeasurement,
    OffloadProfile,
    OptimizerFit,
    OptimizerProfile,
    ProductWake,
    Provenance,
    RatePoint,
    SizePoint,
    ThreadPoolWake,
)
from simtune.hardware.spec import nccl_sm_share

RAW_SCHEMA = 1
HOST_OPTIMIZER_PREFERENCE = (
    "deepspeed_cpu_adam",
    "torch_adamw_foreach_host",
    "torch_adamw_fused",
    "torch_adamw_foreach",
    "torch_adamw_for_loop",
)


class RawOutputError(SimtuneError):
    """The calibration program's output is not what this simtune expects."""


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9._-]+", "-", text.lower())).strip("-.") or "unknown"


def default_name(raw: Mapping) -> str:
    """``cpu-2proc-<host>`` on CPU; ``<gpu>-<n>gpu-<host>`` (``<nodes>x<n>gpu``) on GPUs."""
    env = raw["environment"]
    per_node, nodes, host = env["ranks_per_node"], env["nodes"], _slug(env["host"])
    count = f"{nodes}x{per_node}" if nodes > 1 else f"{per_node}"
    if env["device_kind"] == "cpu":
        return f"cpu-{count}proc-{host}"
    return f"{_slug(env['device_name'])}-{count}gpu-{host}"


def _compute(raw: Mapping, reference_peaks: Mapping[str, float]) -> tuple[ComputeProfile, dict, list[str]]:
    def measurement(m: Mapping) -> MatmulMeasurement:
        return MatmulMeasurement(
            dtype=m["dtype"],
            tokens=int(m["tokens"]),
            hidden=int(m["hidden"]),
            out_features=int(m["out_features"]),
            fwd_flop=float(m["fwd_flop"]),
            fwd=stats_from_dict(m["fwd"]),
            bwd=stats_from_dict(m["bwd"]),
        )

    matmul = tuple(measurement(m) for m in raw["matmul"])
    weights = tuple(measurement(m) for m in raw.get("matmul_weights", ()))
    rates: dict[str, dict[float, float]] = {}
    for m in matmul:
        rate = 3.0 * m.fwd_flop / (m.fwd.min_s + m.bwd.min_s)
        per_dtype = rates.setdefault(m.dtype, {})
        per_dtype[m.fwd_flop] = max(rate, per_dtype.get(m.fwd_flop, 0.0))
    curves = {
        dtype: ComputeCurve(dtype=dtype, points=tuple(RatePoint(w, r) for w, r in sorted(points.items())))
        for dtype, points in rates.items()
    }
    peaks, notes = {}, []
    for dtype, curve in curves.items():
        best = max(p.flop_per_s for p in curve.points)
        vendor = reference_peaks.get(dtype)
        if vendor is None:
            peaks[dtype] = best
            notes.append(f"peak_flop_per_s[{dtype}] is the highest rate measured (no vendor peak known).")
        elif best > vendor:
            peaks[dtype] = best
            notes.append(
                f"peak_flop_per_s[{dtype}]: measured {best:.4g} exceeds the spec peak {vendor:.4g}; kept the measured."
            )
        else:
            peaks[dtype] = vendor
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in raw["elementwise"]:
        groups.setdefault((e["op"], e["dtype"]), []).append(e)
    elementwise = []
    for (op, dtype), entries in sorted(groups.items()):
        entries.sort(key=lambda e: e["elements"])
        points = tuple(
            ElementwisePoint(int(e["elements"]), stats_from_dict(e["fwd"]), stats_from_dict(e["bwd"])) for e in entries
        )
        try:
            line = fit_line(
                [p.elements for p in points], [p.fwd.min_s + p.bwd.min_s for p in points], what=f"{op} ({dtype})"
            )
        except FitError as exc:
            # The time model does not use these fits yet: a noisy one is left out, not fatal.
            notes.append(f"element-wise {op} ({dtype}) not fitted: {exc}")
            continue
        elementwise.append(ElementwiseFit(op, dtype, line.intercept, line.slope, line.r2, points))
    unsupported = {d: why for d, why in raw["dtypes"].items() if why != "ok"}
    return (ComputeProfile(curves, tuple(elementwise), matmul, unsupported, weights,
                           attention=_attention(raw.get("attention", ()), peaks, notes)), peaks, notes)


def thread_pool_wake(raw: object) -> Optional[ThreadPoolWake]:
    """The throttled OpenMP pool's measurement (``simtune.calib.thread_pool``); None without one."""
    if not isinstance(raw, Mapping):
        return None
    products = tuple(ProductWake(rows=int(p["rows"]), depth=int(p["depth"]), cols=int(p["cols"]),
                                 alone=stats_from_dict(p["alone"]), throttled=stats_from_dict(p["throttled"]))
                     for p in raw.get("products", ()))
    return ThreadPoolWake(threads=int(raw["threads"]), elements=int(raw["elements"]),
                          alone=stats_from_dict(raw["alone"]), throttled=stats_from_dict(raw["throttled"]),
                          products=products)


def _attention(raw: object, peaks: Mapping[str, float], notes: list[str]) -> dict[str, AttentionRate]:
    """Per dtype, the fused attention kernel's rates from its fastest repeats (at most the peak:
    a rate above it is capped, with a note)."""
    rates = {}
    for a in raw if isinstance(raw, (list, tuple)) else ():
        dtype, peak = a["dtype"], peaks.get(a["dtype"])
        if peak is None:
            continue
        forward = float(a["fwd_flop"]) / stats_from_dict(a["fwd"]).min_s
        backward = float(a["bwd_flop"]) / stats_from_dict(a["bwd"]).min_s
        if max(forward, backward) > peak:
            notes.append(f"fused attention ({dtype}) measured above the peak {peak:.4g}; capped at it.")
        rates[dtype] = AttentionRate(
            dtype=dtype, forward_flop_per_s=min(forward, peak), backward_flop_per_s=min(backward, peak),
            basis=f"measured: causal SDPA, batch {a['batch']}, {a['heads']} heads, {a['seq']} tokens, "
                  f"head dim {a['head_dim']}")
    return rates


def _optimizer(raw: Mapping) -> OptimizerProfile:
    fits, unavailable = {}, {}
    for impl, data in raw["impls"].items():
        if "unavailable" in data:
            unavailable[impl] = data["unavailable"] or "unavailable"
            continue
        points = tuple(
            SizePoint(int(p["params"]), stats_from_dict(p)) for p in sorted(data["points"], key=lambda p: p["params"])
        )
        try:
            line = fit_line([p.size for p in points], [p.stats.min_s for p in points], what=f"{impl} optimizer step")
        except FitError as exc:
            unavailable[impl] = f"measured but not fitted: {exc}"
            continue
        zero = data.get("zero_state")
        zero_point = None if zero is None else SizePoint(int(zero["params"]), stats_from_dict(zero))
        fits[impl] = OptimizerFit(impl, data["device"], line.intercept, line.slope, line.r2, points, zero_point)
    return OptimizerProfile(fits=fits, unavailable=unavailable)


def _group_nodes(key: str, group: Mapping, env: Mapping) -> int:
    """Nodes a measured group spans: its recorded layout, else (output without layouts) one for a
    node's group and the launch's nodes for the world."""
    layout = group.get("layout")
    if layout is not None:
        return int(layout["nodes"])
    return 1 if key == "intra_node" else int(env["nodes"])


def _collective_table(group: Mapping) -> dict[str, CollectiveFit]:
    out = {}
    for op, points in group["ops"].items():
        parsed = [CollectivePoint(int(p["elements"]), int(p["bytes"]), stats_from_dict(p)) for p in points]
        tail = tuple(point for point, p in zip(parsed, points) if p.get("tail"))
        line = [point for point, p in zip(parsed, points) if not p.get("tail")]
        out[op] = dataclasses.replace(fit_collective(op, int(group["ranks"]), group["dtype"], line),
                                      tail_points=tail)
    return out


def _collectives(raw: Mapping, env: Mapping) -> CollectivesProfile:
    """Intra-node fits from a group within one node, inter-node fits from a group spanning nodes
    (the world of a multi-node launch: its rings cross the inter-node link)."""
    backend = env.get("backend")
    if not raw.get("applicable"):
        return CollectivesProfile(False, raw.get("reason", "not applicable"), backend, {}, {})
    sms = env.get("multiprocessors") if env.get("device_kind") == "cuda" else None
    share = nccl_sm_share(int(sms)) if sms else None  # docs/cost-model.md 3.3
    intra: dict[str, CollectiveFit] = {}
    inter: dict[str, CollectiveFit] = {}
    for key in ("world", "intra_node"):
        if key in raw:
            (inter if _group_nodes(key, raw[key], env) > 1 else intra).update(_collective_table(raw[key]))
    nodes, per_node = int(env["nodes"]), int(env["ranks_per_node"])
    if nodes == 1:
        return CollectivesProfile(True, f"measured on {env['world_size']} ranks of one node ({backend})", backend,
                                  intra, inter, compute_share=share)
    within = (f"intra-node from each node's {per_node} ranks at once" if intra
              else "intra-node not applicable (one rank per node)")
    grouping = env.get("node_grouping", "hostname")
    note = (f"measured on {nodes} nodes x {per_node} ranks ({backend}, nodes grouped by {grouping}): "
            f"inter-node from all {nodes * per_node} ranks, {within}")
    return CollectivesProfile(True, note, backend, intra, inter, compute_share=share)


def _copy_rate(points: tuple[CopyPoint, ...], direction: str, notes: list[str]) -> Optional[float]:
    """Bytes per second of the copies in ``direction``: the inverse slope of their fastest times
    over their sizes. Where the times did not grow with size (a busy machine: a quick calibration
    times two sizes three times each), the largest copy's own rate stands in (its latency counted
    in, so a little low), with a note, rather than failing the whole calibration."""
    chosen = [p for p in points if p.direction == direction]
    if len(chosen) < 2:
        return chosen[0].bytes / chosen[0].stats.min_s if chosen else None
    try:
        return 1.0 / fit_line([p.bytes for p in chosen], [p.stats.min_s for p in chosen], what=f"{direction} copy").slope
    except FitError as exc:
        largest = max(chosen, key=lambda p: p.bytes)
        notes.append(f"{exc} The largest {direction} copy's own rate stands in.")
        return largest.bytes / largest.stats.min_s


def _offload_and_bandwidth(
    raw_copy: Mapping, optimizer: OptimizerProfile, host_memory_bytes: Optional[int],
    notes: Optional[list[str]] = None,
) -> tuple[OffloadProfile, float]:
    notes = [] if notes is None else notes
    points = tuple(
        CopyPoint(p["direction"], int(p["bytes"]), stats_from_dict(p))
        for p in sorted(raw_copy["points"], key=lambda p: (p["direction"], p["bytes"]))
    )
    host_impl = next(
        (impl for impl in HOST_OPTIMIZER_PREFERENCE if impl in optimizer.fits and optimizer.fits[impl].device == "cpu"),
        None,
    )
    cpu_adam = optimizer.fits[host_impl].s_per_param if host_impl else None
    if raw_copy["kind"] == "pinned_host_device":
        memory_bw = 2.0 * _copy_rate(points, "d2d", notes)
        offload = OffloadProfile(
            "pinned_host_device", _copy_rate(points, "h2d", notes), _copy_rate(points, "d2h", notes),
            _copy_rate(points, "host_memcpy", notes), cpu_adam, host_impl, host_memory_bytes, points,
            h2d_pageable_bytes_per_s=_copy_rate(points, "h2d_pageable", notes),
            d2h_pageable_bytes_per_s=_copy_rate(points, "d2h_pageable", notes),
        )
    else:
        copy_rate = _copy_rate(points, "host_memcpy", notes)
        memory_bw = 2.0 * copy_rate
        offload = OffloadProfile(
            "cpu_memcpy", copy_rate, copy_rate, copy_rate, cpu_adam, host_impl, host_memory_bytes, points
        )
    return offload, memory_bw


def _with_nvme(offload: OffloadProfile, raw_nvme: Optional[Mapping], notes: list[str]) -> OffloadProfile:
    """The node's NVMe rates where the calibration timed its storage (``--nvme-path``)."""
    if not raw_nvme:
        return offload
    notes.append(f"NVMe: {raw_nvme['ranks']} rank(s) at once each wrote and read {raw_nvme['bytes_per_rank'] >> 20} MiB "
                 f"under {raw_nvme['path']} in 1 MiB blocks from 8 threads"
                 + (" (O_DIRECT)" if raw_nvme["direct"] else " (through the page cache: O_DIRECT was refused)"))
    return dataclasses.replace(offload, nvme_read_bytes_per_s=float(raw_nvme["read_bytes_per_s"]),
                               nvme_write_bytes_per_s=float(raw_nvme["write_bytes_per_s"]))


def _device(raw_memory: Mapping, env: Mapping, peaks: dict, memory_bw: float, raw_copy: Mapping) -> DeviceInfo:
    per_node, nodes = int(env["ranks_per_node"]), int(env["nodes"])
    if raw_memory["kind"] == "cuda":
        total = int(raw_memory["device_total_bytes"])
        fixed = total - int(raw_memory["device_free_bytes"]) + int(raw_memory.get("allocator_slack_bytes", 0))
    else:  # the ranks sharing rank 0's host share its RAM, whatever nodes they are grouped into
        total = int(raw_memory["host_total_bytes"]) // int(env.get("ranks_per_host", per_node))
        fixed = max(int(b) for b in raw_memory["rss_bytes_per_rank"])
    return DeviceInfo(
        name=env["device_name"],
        kind=raw_memory["kind"],
        count_per_node=per_node,
        nodes=nodes,
        memory_bytes=total,
        usable_memory_bytes=total - fixed,
        fixed_overhead_bytes=fixed,
        memory_bandwidth_bytes_per_s=memory_bw,
        peak_flop_per_s=peaks,
        cache_bytes=int(raw_copy.get("cache_bytes", 0)) // int(env.get("ranks_per_host", per_node)),
    )


def _framework(raw: Optional[Mapping]) -> Optional[FrameworkProfile]:
    if not raw:
        return None
    ops = int(raw["ops"])
    return FrameworkProfile(kind="measured", forward_kernel_s=stats_from_dict(raw["fwd"]).min_s / ops,
                            backward_kernel_s=stats_from_dict(raw["bwd"]).min_s / ops, zero3_module_s=0.0,
                            reduce_bucket_s=0.0, gradient_hook_s=0.0, engine_step_s=0.0)


def build_profile(
    raw: Mapping,
    *,
    name: Optional[str] = None,
    command: str = "simtune calibrate",
    reference_peaks: Optional[Mapping[str, float]] = None,
    reference_name: Optional[str] = None,
    date: Optional[str] = None,
) -> HardwareProfile:
    """A measured profile from ``simtune.calib.run_all`` output (not yet validated or saved)."""
    if not isinstance(raw, Mapping) or raw.get("calib_schema") != RAW_SCHEMA:
        found = raw.get("calib_schema") if isinstance(raw, Mapping) else type(raw).__name__
        raise RawOutputError(f"The calibration output has calib_schema {found!r}; this simtune reads {RAW_SCHEMA}.")
    try:
        env = raw["environment"]
        compute, peaks, notes = _compute(raw["compute"], reference_peaks or {})
        compute = dataclasses.replace(compute, thread_pool=thread_pool_wake(raw.get("thread_pool")))
        optimizer = _optimizer(raw["optimizer"])
        host_memory = raw["memory"].get("host_total_bytes")
        offload, memory_bw = _offload_and_bandwidth(raw["copy"], optimizer, int(host_memory) if host_memory else None,
                                                    notes)
        offload = _with_nvme(offload, raw.get("nvme"), notes)
        device = _device(raw["memory"], env, peaks, memory_bw, raw["copy"])
        collectives = _collectives(raw["collectives"], env)
    except (KeyError, TypeError, ValueError) as exc:
        raise RawOutputError(
            f"The calibration output lacks or garbles a field ({type(exc).__name__}: {exc})."
        ) from None
    if device.kind == "cpu":
        notes.append(
            "CPU: memory_bytes is the RAM share of one rank; fixed_overhead_bytes the baseline RSS of a rank; "
            "memory bandwidth and offload.host_memcpy_bytes_per_s come from a RAM-to-RAM copy (no host-device link)."
        )
    if raw.get("quick"):
        notes.append("Calibrated with --quick: fewer sizes and repeats.")
    sources = ["measured by simtune.calib.run_all on every rank of one launch"]
    if reference_name:
        sources.append(f"vendor peak FLOP/s from the spec profile {reference_name}")
    provenance = Provenance(
        kind="measured",
        date=date or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        command=command,
        host=env.get("host"),
        device_name=device.name,
        device_count=device.count,
        torch_version=env.get("torch"),
        cuda_version=env.get("cuda"),
        nccl_version=env.get("nccl"),
        deepspeed_version=env.get("deepspeed"),
        sources=tuple(sources),
        assumptions={
            "omp_num_threads": str(env.get("omp_num_threads")),
            "cuda_matmul_allow_tf32": str(env.get("cuda_matmul_allow_tf32")),
        },
        notes=tuple(notes),
    )
    return HardwareProfile(
        framework=_framework(raw["compute"].get("dispatch")),
        schema_version=SCHEMA_VERSION,
        name=name or default_name(raw),
        device=device,
        compute=compute,
        optimizer=optimizer,
        collectives=collectives,
        offload=offload,
        provenance=provenance,
    )
