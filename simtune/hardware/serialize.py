"""Hardware profiles to and from JSON-ready dicts, with validation.

:func:`profile_from_dict` is the only way a profile is read, and :func:`profile_to_dict` followed
by :func:`profile_from_dict` is how a built profile is checked before it is saved. Any problem
raises :class:`simtune.errors.ProfileError` with one sentence that names the field (as a dotted
path, e.g. ``collectives.intra_node.allreduce.bandwidth_bytes_per_s``) and its value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Optional

from simtune.errors import ProfileError
from simtune.hardware.profile import (
    COLLECTIVE_OPS,
    DEVICE_KINDS,
    DTYPES,
    PROFILE_KINDS,
    SCHEMA_VERSION,
    AttentionRate,
    CollectiveFit,
    CollectivePoint,
    CollectivesProfile,
    ComputeCurve,
    ComputeProfile,
    CopyPoint,
    FRAMEWORK_COSTS,
    OPTIONAL_FRAMEWORK_COSTS,
    DeviceInfo,
    ElementwiseFit,
    FrameworkProfile,
    ElementwisePoint,
    HardwareProfile,
    MatmulMeasurement,
    OffloadProfile,
    OptimizerFit,
    OptimizerProfile,
    ProductWake,
    Provenance,
    RatePoint,
    SizePoint,
    Stats,
    ThreadPoolWake,
)

_MISSING = object()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def profile_fingerprint(profile: HardwareProfile) -> str:
    """Changes when the profile's numbers change (a recalibration is another model)."""
    text = json.dumps(profile_to_dict(profile), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def profile_to_dict(profile: HardwareProfile) -> dict:
    """A JSON-ready dict of plain dicts, lists and scalars (an empty ``framework.param_pass_s``,
    ``compute.weight_points``, ``compute.attention``, ``collectives.compute_share``, collective
    ``tail_points`` or ``compute.thread_pool.products``, an absent ``compute.thread_pool`` or
    optimizer fit's ``zero_state``, and a
    ``framework.zero3_module_backward_s`` equal to ``zero3_module_s``, is left out, so that
    profiles written before them keep their fingerprint)."""
    data = _plain(dataclasses.asdict(profile))
    collectives = data["collectives"]
    fits = [fit for table in ("intra_node", "inter_node") for fit in collectives[table].values()]
    optimizer_fits = list(data["optimizer"]["fits"].values())
    pool = data["compute"].get("thread_pool") if isinstance(data["compute"], dict) else None
    for owner, key in [(data["framework"], "param_pass_s"), (data["compute"], "weight_points"),
                       (data["compute"], "attention"), (pool, "products"), (data["compute"], "thread_pool"),
                       (collectives, "compute_share"),
                       *((fit, "tail_points") for fit in fits), *((fit, "zero_state") for fit in optimizer_fits)]:
        if isinstance(owner, dict) and not owner.get(key):
            owner.pop(key, None)
    framework = data["framework"]
    if isinstance(framework, dict) and framework.get("zero3_module_backward_s") == framework.get("zero3_module_s"):
        framework.pop("zero3_module_backward_s", None)
    return data


class _Node:
    """One JSON object being read, with its dotted path for messages."""

    def __init__(self, data: Any, path: str, source: str):
        self.path = path
        self.source = source
        if not isinstance(data, dict):
            self.fail_value(path, data, "a JSON object")
        self.data = data

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail_value(self, path: str, value: Any, rule: str):
        shown = repr(value) if not isinstance(value, (dict, list, tuple)) else type(value).__name__
        raise ProfileError(f"Hardware profile {self.source}: {path} is {shown}, but it must be {rule}.")

    def get(self, key: str, optional: bool = False) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if optional:
                return None
            raise ProfileError(f"Hardware profile {self.source} has no field {self._where(key)}.")
        return value

    def text(self, key: str, choices: tuple[str, ...] | None = None, optional: bool = False) -> Optional[str]:
        value = self.get(key, optional)
        if value is None and optional:
            return None
        if not isinstance(value, str) or (choices is None and not value.strip()):
            self.fail_value(self._where(key), value, "a non-empty string")
        if choices is not None and value not in choices:
            self.fail_value(self._where(key), value, f"one of {', '.join(choices)}")
        return value

    def integer(self, key: str, minimum: int) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail_value(self._where(key), value, "an integer")
        if value < minimum:
            self.fail_value(self._where(key), value, "greater than 0" if minimum == 1 else f"at least {minimum}")
        return value

    def number(
        self,
        key: str,
        *,
        positive: bool = False,
        non_negative: bool = False,
        maximum: float | None = None,
        optional: bool = False,
    ) -> Optional[float]:
        value = self.get(key, optional)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail_value(self._where(key), value, "a finite number")
        if positive and value <= 0:
            self.fail_value(self._where(key), value, "greater than 0")
        if non_negative and value < 0:
            self.fail_value(self._where(key), value, "at least 0")
        if maximum is not None and value > maximum:
            self.fail_value(self._where(key), value, f"at most {maximum}")
        return float(value)

    def child(self, key: str) -> "_Node":
        return _Node(self.get(key), self._where(key), self.source)

    def children(self, key: str, optional: bool = False) -> list["_Node"]:
        """The objects of a list field; with ``optional``, none when the field is absent."""
        value = self.get(key, optional)
        if value is None and optional:
            return []
        if not isinstance(value, list):
            self.fail_value(self._where(key), value, "a list")
        return [_Node(item, f"{self._where(key)}[{i}]", self.source) for i, item in enumerate(value)]

    def keyed(self, key: str) -> dict[str, "_Node"]:
        value = self.get(key)
        if not isinstance(value, dict):
            self.fail_value(self._where(key), value, "a JSON object")
        return {name: _Node(item, f"{self._where(key)}.{name}", self.source) for name, item in value.items()}

    def strings(self, key: str) -> dict[str, str]:
        value = self.get(key)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.fail_value(self._where(key), value, "a JSON object of strings")
        return dict(value)

    def string_list(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail_value(self._where(key), value, "a list of strings")
        return tuple(value)


def _stats(node: _Node) -> Stats:
    stats = Stats(
        min_s=node.number("min_s", non_negative=True),
        median_s=node.number("median_s", non_negative=True),
        max_s=node.number("max_s", non_negative=True),
        repeats=node.integer("repeats", 1),
    )
    if not stats.min_s <= stats.median_s <= stats.max_s:
        node.fail_value(f"{node.path}.median_s", stats.median_s, f"between min_s {stats.min_s} and max_s {stats.max_s}")
    return stats


def _r2(node: _Node) -> Optional[float]:
    return node.number("r2", maximum=1.0, optional=True)


def _device(node: _Node) -> DeviceInfo:
    raw_peaks = node.get("peak_flop_per_s")
    if not isinstance(raw_peaks, dict) or not raw_peaks:
        node.fail_value(f"{node.path}.peak_flop_per_s", raw_peaks, "a JSON object with at least one dtype")
    peaks_node = node.child("peak_flop_per_s")
    peaks = {}
    for dtype in raw_peaks:
        if dtype not in DTYPES:
            node.fail_value(peaks_node.path, dtype, f"keyed by dtypes among {', '.join(DTYPES)}")
        peaks[dtype] = peaks_node.number(dtype, positive=True)
    device = DeviceInfo(
        name=node.text("name"),
        kind=node.text("kind", DEVICE_KINDS),
        count_per_node=node.integer("count_per_node", 1),
        nodes=node.integer("nodes", 1),
        memory_bytes=node.integer("memory_bytes", 1),
        usable_memory_bytes=node.integer("usable_memory_bytes", 1),
        fixed_overhead_bytes=node.integer("fixed_overhead_bytes", 0),
        memory_bandwidth_bytes_per_s=node.number("memory_bandwidth_bytes_per_s", positive=True),
        peak_flop_per_s=peaks,
        cache_bytes=0 if node.get("cache_bytes", optional=True) is None else node.integer("cache_bytes", 0),
    )
    if device.usable_memory_bytes > device.memory_bytes:
        node.fail_value(
            f"{node.path}.usable_memory_bytes",
            device.usable_memory_bytes,
            f"at most memory_bytes ({device.memory_bytes})",
        )
    if device.fixed_overhead_bytes >= device.memory_bytes:
        node.fail_value(
            f"{node.path}.fixed_overhead_bytes",
            device.fixed_overhead_bytes,
            f"below memory_bytes ({device.memory_bytes})",
        )
    return device


def _increasing(node: _Node, path: str, values: list[float]) -> None:
    for before, after in zip(values, values[1:]):
        if after <= before:
            node.fail_value(path, after, f"larger than the size before it ({before}): points are sorted by size")


def _compute(node: _Node, peaks: dict[str, float]) -> ComputeProfile:
    curves = {}
    for dtype, curve_node in node.keyed("curves").items():
        if dtype not in peaks:
            node.fail_value(f"{curve_node.path}", dtype, "a dtype that device.peak_flop_per_s lists")
        points = []
        for point_node in curve_node.children("points"):
            point = RatePoint(
                work_flop=point_node.number("work_flop", positive=True),
                flop_per_s=point_node.number("flop_per_s", positive=True),
            )
            efficiency = point.flop_per_s / peaks[dtype]
            if efficiency > 1.0 + 1e-9:
                point_node.fail_value(
                    f"{point_node.path}.flop_per_s",
                    point.flop_per_s,
                    f"at most the peak {peaks[dtype]:.4g} (efficiency {efficiency:.3g} > 1)",
                )
            points.append(point)
        if not points:
            curve_node.fail_value(f"{curve_node.path}.points", [], "a list with at least one point")
        _increasing(curve_node, f"{curve_node.path}.points", [p.work_flop for p in points])
        if curve_node.text("dtype") != dtype:
            curve_node.fail_value(f"{curve_node.path}.dtype", curve_node.get("dtype"), f"{dtype!r} (its key)")
        curves[dtype] = ComputeCurve(dtype=dtype, points=tuple(points))
    if not curves:
        node.fail_value(f"{node.path}.curves", {}, "a JSON object with at least one dtype")
    elementwise = []
    for fit_node in node.children("elementwise"):
        elementwise.append(
            ElementwiseFit(
                op=fit_node.text("op"),
                dtype=fit_node.text("dtype", DTYPES),
                intercept_s=fit_node.number("intercept_s", non_negative=True),
                s_per_element=fit_node.number("s_per_element", positive=True),
                r2=_r2(fit_node),
                points=tuple(
                    ElementwisePoint(
                        elements=p.integer("elements", 1), fwd=_stats(p.child("fwd")), bwd=_stats(p.child("bwd"))
                    )
                    for p in fit_node.children("points")
                ),
            )
        )
    def measurement(m: _Node) -> MatmulMeasurement:
        return MatmulMeasurement(
            dtype=m.text("dtype", DTYPES),
            tokens=m.integer("tokens", 1),
            hidden=m.integer("hidden", 1),
            out_features=m.integer("out_features", 1),
            fwd_flop=m.number("fwd_flop", positive=True),
            fwd=_stats(m.child("fwd")),
            bwd=_stats(m.child("bwd")),
        )

    return ComputeProfile(
        curves=curves,
        elementwise=tuple(elementwise),
        matmul_points=tuple(measurement(m) for m in node.children("matmul_points")),
        unsupported_dtypes=node.strings("unsupported_dtypes"),
        weight_points=tuple(measurement(m) for m in node.children("weight_points", optional=True)),
        attention=_attention(node, peaks),
        thread_pool=_thread_pool(node),
    )


def _thread_pool(node: _Node) -> Optional[ThreadPoolWake]:
    """``compute.thread_pool`` (optional): a parallel kernel alone and with its pool throttled."""
    if node.get("thread_pool", optional=True) is None:
        return None
    pool = node.child("thread_pool")
    products = tuple(ProductWake(rows=p.integer("rows", 1), depth=p.integer("depth", 1), cols=p.integer("cols", 1),
                                 alone=_stats(p.child("alone")), throttled=_stats(p.child("throttled")))
                     for p in pool.children("products", optional=True))
    return ThreadPoolWake(threads=pool.integer("threads", 2), elements=pool.integer("elements", 1),
                          alone=_stats(pool.child("alone")), throttled=_stats(pool.child("throttled")),
                          products=products)


def _attention(node: _Node, peaks: dict[str, float]) -> dict[str, AttentionRate]:
    """``compute.attention`` (optional): per dtype, fused attention rates at most the peak."""
    if node.get("attention", optional=True) is None:
        return {}
    rates = {}
    for dtype, rate_node in node.keyed("attention").items():
        if dtype not in peaks:
            node.fail_value(rate_node.path, dtype, "a dtype that device.peak_flop_per_s lists")
        if rate_node.text("dtype") != dtype:
            rate_node.fail_value(f"{rate_node.path}.dtype", rate_node.get("dtype"), f"{dtype!r} (its key)")
        forward, backward = (rate_node.number(key, positive=True, maximum=peaks[dtype] * (1.0 + 1e-9))
                             for key in ("forward_flop_per_s", "backward_flop_per_s"))
        assert forward is not None and backward is not None
        rates[dtype] = AttentionRate(dtype=dtype, forward_flop_per_s=forward, backward_flop_per_s=backward,
                                     basis=rate_node.text("basis") or "")
    return rates


def _size_points(node: _Node, key: str) -> tuple[SizePoint, ...]:
    points = tuple(SizePoint(size=p.integer("size", 1), stats=_stats(p.child("stats"))) for p in node.children(key))
    _increasing(node, f"{node.path}.{key}", [p.size for p in points])
    return points


def _zero_state(node: _Node) -> Optional[SizePoint]:
    """An optimizer fit's step with moments at 0 (absent in profiles written before it)."""
    if node.get("zero_state", optional=True) is None:
        return None
    point = node.child("zero_state")
    return SizePoint(size=point.integer("size", 1), stats=_stats(point.child("stats")))


def _optimizer(node: _Node) -> OptimizerProfile:
    fits = {}
    for impl, fit_node in node.keyed("fits").items():
        fits[impl] = OptimizerFit(
            impl=fit_node.text("impl"),
            device=fit_node.text("device", DEVICE_KINDS),
            intercept_s=fit_node.number("intercept_s", non_negative=True),
            s_per_param=fit_node.number("s_per_param", positive=True),
            r2=_r2(fit_node),
            points=_size_points(fit_node, "points"),
            zero_state=_zero_state(fit_node),
        )
        if fits[impl].impl != impl:
            fit_node.fail_value(f"{fit_node.path}.impl", fits[impl].impl, f"{impl!r} (its key)")
    return OptimizerProfile(fits=fits, unavailable=node.strings("unavailable"))


def _collective_table(node: _Node, key: str) -> dict[str, CollectiveFit]:
    table = {}
    for op, fit_node in node.keyed(key).items():
        if op not in COLLECTIVE_OPS:
            fit_node.fail_value(fit_node.path, op, f"one of {', '.join(COLLECTIVE_OPS)}")
        def read(key: str, optional: bool = False) -> tuple[CollectivePoint, ...]:
            return tuple(
                CollectivePoint(
                    elements=p.integer("elements", 1), bytes=p.integer("bytes", 1), stats=_stats(p.child("stats"))
                )
                for p in fit_node.children(key, optional)
            )

        points = read("points")
        tail = read("tail_points", optional=True)
        _increasing(fit_node, f"{fit_node.path}.points", [p.bytes for p in points])
        fit = CollectiveFit(
            op=fit_node.text("op", COLLECTIVE_OPS),
            ranks=fit_node.integer("ranks", 2),
            dtype=fit_node.text("dtype", DTYPES),
            latency_s=fit_node.number("latency_s", non_negative=True),
            bandwidth_bytes_per_s=fit_node.number("bandwidth_bytes_per_s", positive=True),
            r2=_r2(fit_node),
            points=points,
            tail_points=tail,
        )
        if fit.op != op:
            fit_node.fail_value(f"{fit_node.path}.op", fit.op, f"{op!r} (its key)")
        table[op] = fit
    return table


def _collectives(node: _Node) -> CollectivesProfile:
    applicable = node.get("applicable")
    if not isinstance(applicable, bool):
        node.fail_value(f"{node.path}.applicable", applicable, "true or false")
    profile = CollectivesProfile(
        applicable=applicable,
        note=_text_or_empty(node, "note"),
        backend=node.text("backend", optional=True),
        intra_node=_collective_table(node, "intra_node"),
        inter_node=_collective_table(node, "inter_node"),
        compute_share=node.number("compute_share", non_negative=True, maximum=0.9, optional=True),
    )
    if applicable and not profile.intra_node and not profile.inter_node:
        node.fail_value(f"{node.path}.intra_node", {}, "non-empty when collectives are applicable")
    return profile


def _text_or_empty(node: _Node, key: str) -> str:
    value = node.get(key)
    if not isinstance(value, str):
        node.fail_value(f"{node.path}.{key}", value, "a string")
    return value


def _offload(node: _Node) -> OffloadProfile:
    points = tuple(
        CopyPoint(direction=p.text("direction"), bytes=p.integer("bytes", 1), stats=_stats(p.child("stats")))
        for p in node.children("points")
    )
    return OffloadProfile(
        kind=node.text("kind", ("pinned_host_device", "cpu_memcpy", "spec")),
        h2d_bytes_per_s=node.number("h2d_bytes_per_s", positive=True),
        d2h_bytes_per_s=node.number("d2h_bytes_per_s", positive=True),
        host_memcpy_bytes_per_s=node.number("host_memcpy_bytes_per_s", positive=True, optional=True),
        cpu_adam_s_per_param=node.number("cpu_adam_s_per_param", positive=True, optional=True),
        cpu_adam_impl=node.text("cpu_adam_impl", optional=True),
        host_memory_bytes=_optional_count(node, "host_memory_bytes"),
        points=points,
        h2d_pageable_bytes_per_s=node.number("h2d_pageable_bytes_per_s", positive=True, optional=True),
        d2h_pageable_bytes_per_s=node.number("d2h_pageable_bytes_per_s", positive=True, optional=True),
        nvme_read_bytes_per_s=node.number("nvme_read_bytes_per_s", positive=True, optional=True),
        nvme_write_bytes_per_s=node.number("nvme_write_bytes_per_s", positive=True, optional=True),
    )


def _framework(node: _Node) -> FrameworkProfile:
    values = {key: float(node.number(key, non_negative=True, optional=key in OPTIONAL_FRAMEWORK_COSTS) or 0.0)
              for key in FRAMEWORK_COSTS}
    if node.get("zero3_module_backward_s", optional=True) is None:  # written when one cost stood for both passes
        values["zero3_module_backward_s"] = values["zero3_module_s"]
    return FrameworkProfile(kind=str(node.text("kind", ("spec", "measured"))), **values,
                            param_pass_s=_param_passes(node))


def _param_passes(node: _Node) -> tuple[tuple[float, float, float], ...]:
    """``param_pass_s``: absent or empty, or 4 rows (stages 0-3) of 3 seconds per parameter >= 0."""
    rows = node.get("param_pass_s", optional=True)
    if rows is None or rows == []:
        return ()
    ok = (isinstance(rows, list) and len(rows) == 4 and all(
        isinstance(row, list) and len(row) == 3 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in row)
        for row in rows))
    if not ok:
        node.fail_value(node._where("param_pass_s"), rows, "4 lists (stages 0-3) of 3 numbers >= 0")
    return tuple((float(row[0]), float(row[1]), float(row[2])) for row in rows)


def _optional_count(node: _Node, key: str) -> Optional[int]:
    if node.get(key) is None:
        return None
    return node.integer(key, 1)


def _optional_text(node: _Node, key: str) -> Optional[str]:
    value = node.get(key)
    if value is not None and not isinstance(value, str):
        node.fail_value(f"{node.path}.{key}", value, "a string or null")
    return value


def _provenance(node: _Node) -> Provenance:
    provenance = Provenance(
        kind=node.text("kind", PROFILE_KINDS),
        date=node.text("date"),
        command=node.text("command"),
        host=_optional_text(node, "host"),
        device_name=node.text("device_name"),
        device_count=node.integer("device_count", 1),
        torch_version=_optional_text(node, "torch_version"),
        cuda_version=_optional_text(node, "cuda_version"),
        nccl_version=_optional_text(node, "nccl_version"),
        deepspeed_version=_optional_text(node, "deepspeed_version"),
        sources=node.string_list("sources"),
        assumptions=node.strings("assumptions"),
        notes=node.string_list("notes"),
    )
    if provenance.kind == "spec" and not provenance.sources:
        node.fail_value(f"{node.path}.sources", [], "a non-empty list for a spec profile")
    return provenance


def profile_from_dict(data: Any, source: str = "<dict>") -> HardwareProfile:
    """Read and validate a profile; ``source`` names it in error messages (a path or a name)."""
    if not isinstance(data, dict):
        raise ProfileError(f"Hardware profile {source} is not a JSON object.")
    root = _Node(data, "", source)
    version = root.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ProfileError(
            f"Hardware profile {source} has schema_version {version!r}, but this simtune reads only "
            f"schema_version {SCHEMA_VERSION} (recalibrate with simtune calibrate to get a current profile)."
        )
    device = _device(root.child("device"))
    profile = HardwareProfile(
        schema_version=SCHEMA_VERSION,
        name=root.text("name"),
        device=device,
        compute=_compute(root.child("compute"), dict(device.peak_flop_per_s)),
        optimizer=_optimizer(root.child("optimizer")),
        collectives=_collectives(root.child("collectives")),
        offload=_offload(root.child("offload")),
        provenance=_provenance(root.child("provenance")),
        framework=_framework(root.child("framework")) if root.get("framework", optional=True) is not None else None,
    )
    return profile


def validate(profile: HardwareProfile) -> HardwareProfile:
    """Check a profile built in code with the same rules as one read from disk."""
    return profile_from_dict(profile_to_dict(profile), source=repr(profile.name))

