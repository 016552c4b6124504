"""A collective beside the compute, against kernel-level measurements others published
(benchmarks/published/overlap/).

Run from the repository root (pure prediction, no torch, under a second):

    python benchmarks/overlap_published.py > benchmarks/results/overlap_published.txt

Each file there is one source: a matrix product and an NCCL collective on one node, timed one after
the other and side by side (``matmul``, ``side_by_side``, ``measured_ms``), or a kernel's time alone
and beside a collective (``alone_ms``, ``beside_ms``: a ratio, the kernel's shape not given).
Predicted from the GPU's spec profile as a training step's phases are (docs/cost-model.md 3.3):

- the product: 2 m n k FLOPs through the profile's curve at its dtype;
- the collective: one call over the node's ring (:func:`simtune.model.links.ring_collectives`),
  latency plus bytes over the bus bandwidth; an all-gather's array is every rank's input;
- f, the share of the device the collective takes from the compute beside it
  (:func:`simtune.model.overlap.collective_share`): the larger of NCCL's SMs and the memory
  bandwidth its traffic takes, that scaled by the part of the call that moves bytes (a size not
  given is taken as large);
- one after the other: product + collective; side by side, both starting together:
  :func:`simtune.model.overlap.side_by_side` (product, collective, no last call, f); a kernel
  wholly beside a collective that outlasts it: 1 / (1 - f) times as long.

Beside each prediction the two simpler models the measurement tells apart: f as NCCL's SMs' share
alone, and nothing taken (the collective hidden for free).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simtune.hardware import load_profile
from simtune.hardware.profile import bus_factor
from simtune.model.adapters import hardware_spec
from simtune.model.inputs import HardwareSpec, TrainConfig
from simtune.model.links import ring_collectives
from simtune.model.overlap import collective_share, side_by_side
from simtune.prediction.predictor import layout_hardware

sys.path.insert(0, str(Path(__file__).parent))
from published import profile_of  # noqa: E402

DATA = Path(__file__).parent / "published" / "overlap"


@dataclass(frozen=True)
class Collective:
    """One call of a collective on one node, as the model costs it."""

    seconds: float
    moving_s: float
    """The part of ``seconds`` spent on bytes (the rest is the call's latency)."""
    bus_bytes_per_s: float
    total_bytes: float | None


@dataclass(frozen=True)
class Predicted:
    """One measurement's prediction, in the measurement's unit (ms, or a ratio to the kernel alone)."""

    unit: str
    published: float
    predicted: float
    sms_only: float
    hidden_free: float
    share: float
    sms_share: float
    matmul_s: float | None
    collective: Collective

    def error(self, value: float) -> float:
        """``value`` (one of the three predictions) against the published figure."""
        return value / self.published - 1


@functools.lru_cache(maxsize=None)
def node_hardware(gpu: str, gpus: int) -> HardwareSpec:
    """The spec profile of ``gpu``, laid out over ``gpus`` GPUs on one node (read once)."""
    name = profile_of(gpu)
    if name is None:
        raise SystemExit(f"No spec profile for GPU {gpu!r}.")
    return layout_hardware(hardware_spec(load_profile(name)), gpus)


def node(source: dict[str, Any]) -> tuple[HardwareSpec, int]:
    """The source's node: its GPU's spec profile over its GPUs, and their count."""
    gpus = int(source["hardware"]["gpus"])
    return node_hardware(source["hardware"]["gpu"], gpus), gpus


def collective_call(hw: HardwareSpec, gpus: int, spec: dict[str, Any]) -> Collective:
    """One call of ``spec['op']`` over the node's ring; ``bytes_per_rank`` None: large messages."""
    ring = ring_collectives(hw, gpus)
    op = spec["op"]
    cost = getattr(ring, op)
    factor = bus_factor(op, gpus)
    per_rank = spec.get("bytes_per_rank")
    if per_rank is None:
        return Collective(0.0, 0.0, cost.bandwidth_bytes_per_s, None)
    total = float(per_rank) * (gpus if op == "allgather" else 1)
    seconds = cost.call_s(total, factor)
    moving = dataclasses.replace(cost, latency_s=0.0).call_s(total, factor)
    return Collective(seconds, moving, cost.bandwidth_bytes_per_s, total)


def matmul_s(hw: HardwareSpec, spec: dict[str, Any]) -> float:
    flop = 2.0 * spec["m"] * spec["n"] * spec["k"]
    return flop / hw.compute.for_precision(spec["dtype"]).flop_per_s(flop)


def predict(row: dict[str, Any], source: dict[str, Any]) -> Predicted:
    hw, gpus = node(source)
    call = collective_call(hw, gpus, row["collective"])
    moving = call.moving_s / call.seconds if call.seconds > 0 else 1.0
    share = collective_share(hw, TrainConfig(stage=0, micro_batch_size=1, dp_degree=gpus), moving)
    sms = hw.collective_compute_share
    if "matmul" in row:
        compute = matmul_s(hw, row["matmul"])
        if not row["side_by_side"]:
            alone = (compute + call.seconds) * 1e3
            return Predicted("ms", row["measured_ms"], alone, alone, alone, share, sms, compute, call)
        return Predicted("ms", row["measured_ms"], side_by_side(compute, call.seconds, 0.0, share) * 1e3,
                         side_by_side(compute, call.seconds, 0.0, sms) * 1e3,
                         max(compute, call.seconds) * 1e3, share, sms, compute, call)
    return Predicted("x alone", row["beside_ms"] / row["alone_ms"], 1 / (1 - share), 1 / (1 - sms), 1.0,
                     share, sms, None, call)


def sources() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DATA.glob("*.json"))}


def main() -> int:
    print("# command: python benchmarks/overlap_published.py")
    print("# spec profiles; f = the share of the device the collective takes from the compute beside it\n")
    header = (f"{'source':24s}{'id':26s}{'GPU':16s}{'n':>2s} {'unit':8s}{'published':>10s}{'predicted':>10s}"
              f"{'error':>7s} | {'SMs only':>9s}{'error':>7s} | {'hidden free':>11s}{'error':>7s}")
    print(header)
    print("-" * len(header))
    errors: dict[str, list[float]] = {"model": [], "sms": [], "free": []}
    details = []
    for name, source in sources().items():
        for row in source["measurements"]:
            p = predict(row, source)
            for key, value in (("model", p.predicted), ("sms", p.sms_only), ("free", p.hidden_free)):
                errors[key].append(p.error(value))
            print(f"{name:24s}{row['id']:26s}{source['hardware']['gpu']:16s}{source['hardware']['gpus']:2d} "
                  f"{p.unit:8s}{p.published:10.2f}{p.predicted:10.2f}{p.error(p.predicted):+7.0%} | {p.sms_only:9.2f}"
                  f"{p.error(p.sms_only):+7.0%} | {p.hidden_free:11.2f}{p.error(p.hidden_free):+7.0%}")
            call = p.collective
            size = (f"{row['collective']['op']} of {call.total_bytes / 2**20:.0f} MiB in {call.seconds * 1e3:.3f} ms"
                    if call.total_bytes else f"{row['collective']['op']} of a size not given (large)")
            product = f"product {p.matmul_s * 1e3:.3f} ms; " if p.matmul_s is not None else ""
            details.append(f"  {name} {row['id']}: {product}{size}, bus {call.bus_bytes_per_s / 1e9:.0f} GB/s; "
                           f"f {p.share:.2f} (NCCL's SMs {p.sms_share:.2f})")
    print("\nwhat each prediction is made of:")
    print("\n".join(details))
    print("\nmedian |error| over the rows: "
          + ", ".join(f"{label} {statistics.median(abs(e) for e in errors[key]):.0%}"
                      for key, label in (("model", "the model"), ("sms", "NCCL's SMs only"),
                                         ("free", "hidden free"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
