"""Spec profiles: hardware profiles built from vendor numbers and stated assumptions.

They let the cost model answer for hardware the user does not have. Every number is either a
vendor figure (with its source) or an assumption (named in ``provenance.assumptions`` with its
reason); nothing is measured, so ``provenance.kind`` is "spec". A measured profile of the same
hardware always wins over these (see :mod:`simtune.hardware.registry`).

Regenerate the shipped files with ``python -m simtune.hardware.spec [--out hardware_profiles]``.

Derivations:
- compute: achieved FLOP/s = ``COMPUTE_EFFICIENCY`` x vendor peak, flat over work size;
- intra-node collectives: bus bandwidth = ``LINK_EFFICIENCY`` x NVLink per-direction bandwidth
  (nccl-tests compares busbw to the per-direction figure), latency ``INTRA_NODE_LATENCY_S``;
- inter-node collectives: bus bandwidth = ``LINK_EFFICIENCY`` x the node's compute NICs together
  (NCCL runs one ring per NIC, each carrying its share of the buffer, so the bus bandwidth of a
  group spanning nodes reaches the node's aggregate network bandwidth; nccl-tests: "the bus
  bandwidth should reflect the speed of the hardware bottleneck"), latency ``INTER_NODE_LATENCY_S``;
- memory bandwidth: ``MEMORY_EFFICIENCY`` x HBM bandwidth;
- optimizer step (fused AdamW on the GPU): ``ADAM_BYTES_PER_PARAM`` / achievable HBM bandwidth;
- host<->device: ``LINK_EFFICIENCY`` x the PCIe x16 per-direction bandwidth of the generation;
- host optimizer (DeepSpeedCPUAdam, per parameter of one rank's shard): ``ADAM_BYTES_PER_PARAM``
  x GPUs per node / (``HOST_MEMORY_EFFICIENCY`` x the node's DRAM bandwidth), since every rank of
  the node steps its shard at the same time on the shared memory.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from simtune.hardware.profile import (
    COLLECTIVE_OPS,
    SCHEMA_VERSION,
    CollectiveFit,
    CollectivesProfile,
    ComputeCurve,
    ComputeProfile,
    DeviceInfo,
    HardwareProfile,
    OffloadProfile,
    OptimizerFit,
    OptimizerProfile,
    Provenance,
    RatePoint,
)

GIB = 2**30
SPEC_DATE = "2026-11-21"
COMPUTE_EFFICIENCY = 0.5
LINK_EFFICIENCY = 0.8
MEMORY_EFFICIENCY = 0.8
INTRA_NODE_LATENCY_S = 20e-6
INTER_NODE_LATENCY_S = 50e-6
FIXED_OVERHEAD_BYTES = 2 * GIB
ADAM_BYTES_PER_PARAM = 28
HOST_MEMORY_EFFICIENCY = 0.5
CURVE_WORK_FLOP = (1e9, 1e12)

SOURCES_COMMON = (
    "NVIDIA/nccl-tests doc/PERFORMANCE.md: busbw = algbw x 2(n-1)/n for allreduce, (n-1)/n for allgather and "
    "reduce-scatter (of the total array), 1 for broadcast; compare busbw with the per-direction link bandwidth",
    "https://www.deepspeed.ai/2020/05/18/bert-record.html: 64-66 TFLOPS per V100, 52% of hardware peak (fp16)",
    "Megatron-LM README: 56.3% MFU on A100 (1T parameters)",
    "https://www.sciencestack.ai/paper/2311.00257 (AMSP): 52% MFU on 1024 GPUs",
)


@dataclass(frozen=True)
class SpecSheet:
    """Vendor numbers for one machine type (per GPU unless named otherwise)."""

    name: str
    device_name: str
    gpus_per_node: int
    memory_bytes: int
    peak_flop_per_s: dict
    hbm_bytes_per_s: float
    nvlink_per_direction_bytes_per_s: float
    nic_bits_per_s: float
    """One compute-fabric NIC's line rate."""
    nics_per_node: int
    nic_is_assumed: bool
    pcie_per_direction_bytes_per_s: float
    pcie_generation: str
    host_memory_bytes: int
    host_memory_bytes_per_s: float
    host_description: str
    sources: tuple[str, ...]
    notes: tuple[str, ...] = ()


_TF32_NOTE = "fp32 uses the CUDA-core peak: torch leaves TF32 matmuls off by default."
_DGX_H100_NIC_SOURCE = (
    "docs.nvidia.com/dgx-basepod (core components): DGX H100/H200 has eight single-port ConnectX-7, "
    "up to 400 Gb/s InfiniBand"
)

_DGX_H100 = SpecSheet(
    name="dgx-h100-80gb",
    device_name="NVIDIA H100 80GB HBM3",
    gpus_per_node=8,
    memory_bytes=80 * GIB,
    peak_flop_per_s={"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 66.9e12},
    hbm_bytes_per_s=3.35e12,
    nvlink_per_direction_bytes_per_s=450e9,
    nic_bits_per_s=400e9,
    nics_per_node=8,
    nic_is_assumed=False,
    pcie_per_direction_bytes_per_s=63e9,
    pcie_generation="PCIe 5.0 x16",
    host_memory_bytes=2048 * GIB,
    host_memory_bytes_per_s=614.4e9,
    host_description="2 x Xeon Platinum 8480C, 8 DDR5-4800 channels each (2 x 307.2 GB/s), 2 TB",
    sources=(
        "glennklockwood.com/garden/processors/h100: 989.4 TFLOPS bf16 dense, 66.9 TFLOPS fp32, 3.35 TB/s HBM3, "
        "NVLink4 900 GB/s bidirectional (450 per direction)",
        _DGX_H100_NIC_SOURCE,
    ),
    notes=(_TF32_NOTE,),
)

SHEETS = (
    SpecSheet(
        name="dgx2-v100-32gb",
        device_name="Tesla V100-SXM3-32GB",
        gpus_per_node=16,
        memory_bytes=32 * GIB,
        peak_flop_per_s={"fp16": 125e12, "fp32": 15.7e12},
        hbm_bytes_per_s=900e9,
        nvlink_per_direction_bytes_per_s=150e9,
        nic_bits_per_s=100e9,
        nics_per_node=8,
        nic_is_assumed=False,
        pcie_per_direction_bytes_per_s=15.75e9,
        pcie_generation="PCIe 3.0 x16",
        host_memory_bytes=1536 * GIB,
        host_memory_bytes_per_s=256e9,
        host_description="2 x Xeon Platinum 8168, 6 DDR4-2666 channels each (2 x 128 GB/s), 1.5 TB",
        sources=(
            "developer.nvidia.com/programming-tensor-cores-cuda-9-0: V100 125 TFLOPS fp16 tensor",
            "V100 FP32 15.7 TFLOPS (grokipedia V100 page)",
            "OLCF Summit V100 page: 900 GB/s HBM2, NVLink 25 GB/s per link per direction (6 links: 150 GB/s)",
            "developer.nvidia.com/blog/nvswitch-accelerates-nvidia-dgx2: 16 V100-32GB on NVSwitch, 300 GB/s "
            "to any GPU (bidirectional)",
            "pcper.com/2018/03/nvidia-announces-dgx-2-with-16-gv100s-8-100gb-nics: eight EDR InfiniBand NICs "
            "(100 Gb/s each), 1600 Gb/s bidirectional",
        ),
        notes=(
            "No bf16 on V100: only fp16 and fp32 curves.",
            "DGX-2 GPUs may be SXM3 parts with other clocks than SXM2; the peak assumes the V100 datasheet "
            "(derive it from SMs x clock with nvidia-smi to check).",
        ),
    ),
    SpecSheet(
        name="dgx-a100-80gb",
        device_name="NVIDIA A100-SXM4-80GB",
        gpus_per_node=8,
        memory_bytes=80 * GIB,
        peak_flop_per_s={"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
        hbm_bytes_per_s=2.039e12,
        nvlink_per_direction_bytes_per_s=300e9,
        nic_bits_per_s=200e9,
        nics_per_node=8,
        nic_is_assumed=True,
        pcie_per_direction_bytes_per_s=31.5e9,
        pcie_generation="PCIe 4.0 x16",
        host_memory_bytes=1024 * GIB,
        host_memory_bytes_per_s=409.6e9,
        host_description="2 x AMD EPYC 7742, 8 DDR4-3200 channels each (2 x 204.8 GB/s), 1 TB",
        sources=(
            "glennklockwood.com/garden/processors/A100 (from the NVIDIA datasheet): 312 TFLOPS fp16/bf16 dense, "
            "19.5 TFLOPS fp32, 2.039 TB/s HBM2e (80 GB), NVLink3 600 GB/s bidirectional (300 per direction)",
        ),
        notes=(_TF32_NOTE,),
    ),
    _DGX_H100,
    # The H200 is an H100 with more and faster HBM: the same compute, links and host.
    dataclasses.replace(
        _DGX_H100,
        name="hgx-h200-141gb",
        device_name="NVIDIA H200",
        memory_bytes=141 * GIB,
        hbm_bytes_per_s=4.8e12,
        sources=(
            "lzwjava.github.io/nvidia-h200-gpu-specs-en and saulelectric.com/nvidia-h200.html: 141 GB HBM3e, "
            "4.8 TB/s, same compute as H100 (989 TFLOPS bf16 dense; 1979 is the sparse figure)",
            "glennklockwood.com/garden/processors/h100: NVLink4 900 GB/s bidirectional (450 per direction)",
            _DGX_H100_NIC_SOURCE,
        ),
    ),
)


def _collective_table(ranks: int, dtype: str, latency_s: float, bus_bytes_per_s: float) -> dict:
    return {
        op: CollectiveFit(
            op=op, ranks=ranks, dtype=dtype, latency_s=latency_s, bandwidth_bytes_per_s=bus_bytes_per_s, r2=None,
            points=(),
        )
        for op in COLLECTIVE_OPS
    }


def _assumptions(sheet: SpecSheet) -> dict[str, str]:
    nic = (f"{sheet.nics_per_node} x {sheet.nic_bits_per_s / 1e9:.0f} Gb/s InfiniBand per node of "
           f"{sheet.gpus_per_node} GPUs; bus bandwidth across nodes = link_efficiency x all of them together")
    return {
        "compute_efficiency": f"{COMPUTE_EFFICIENCY} of peak for every dtype and size (training reaches about "
        "40-57% MFU: DeepSpeed BERT 52%, Megatron-LM 56.3%, AMSP 52%; no size dependence is known)",
        "link_efficiency": f"{LINK_EFFICIENCY} of the per-direction link bandwidth as NCCL bus bandwidth "
        "(NVLink, InfiniBand and PCIe)",
        "memory_efficiency": f"{MEMORY_EFFICIENCY} of HBM bandwidth is achievable by streaming kernels",
        "intra_node_latency_s": f"{INTRA_NODE_LATENCY_S} (order of nccl-tests small-message times on NVLink)",
        "inter_node_latency_s": f"{INTER_NODE_LATENCY_S} (order of small-message times over InfiniBand)",
        "inter_node_network": nic
        + (" (assumed: a typical configuration; check your cluster)" if sheet.nic_is_assumed else ""),
        "fixed_overhead_bytes": f"{FIXED_OVERHEAD_BYTES} (CUDA context, NCCL buffers and allocator slack; "
        "measure it with simtune calibrate)",
        "memory_bytes": "the marketed capacity in GiB; the runtime reports slightly less",
        "optimizer": f"fused AdamW is memory-bound at {ADAM_BYTES_PER_PARAM} bytes per parameter (read fp32 "
        "parameter, gradient and two moments, write parameter and two moments) at the achievable HBM bandwidth",
        "host": f"{sheet.host_description} (a typical host of this machine type; check yours)",
        "cpu_adam": f"DeepSpeedCPUAdam is memory-bound at {ADAM_BYTES_PER_PARAM} bytes per parameter at "
        f"{HOST_MEMORY_EFFICIENCY} of the node's DRAM bandwidth, shared by its {sheet.gpus_per_node} ranks",
        "host_link": f"{sheet.pcie_generation}, {sheet.pcie_per_direction_bytes_per_s / 1e9:g} GB/s per direction "
        "(PCI-SIG), times link_efficiency",
    }


def build(sheet: SpecSheet) -> HardwareProfile:
    """The spec profile of one machine type."""
    memory_bw = MEMORY_EFFICIENCY * sheet.hbm_bytes_per_s
    curves = {
        dtype: ComputeCurve(
            dtype=dtype, points=tuple(RatePoint(w, COMPUTE_EFFICIENCY * peak) for w in CURVE_WORK_FLOP)
        )
        for dtype, peak in sheet.peak_flop_per_s.items()
    }
    comm_dtype = "bf16" if "bf16" in sheet.peak_flop_per_s else "fp16"
    intra = _collective_table(
        sheet.gpus_per_node, comm_dtype, INTRA_NODE_LATENCY_S, LINK_EFFICIENCY * sheet.nvlink_per_direction_bytes_per_s
    )
    inter = _collective_table(
        2 * sheet.gpus_per_node, comm_dtype, INTER_NODE_LATENCY_S,
        LINK_EFFICIENCY * sheet.nics_per_node * sheet.nic_bits_per_s / 8
    )
    host_link = LINK_EFFICIENCY * sheet.pcie_per_direction_bytes_per_s
    return HardwareProfile(
        schema_version=SCHEMA_VERSION,
        name=sheet.name,
        device=DeviceInfo(
            name=sheet.device_name,
            kind="cuda",
            count_per_node=sheet.gpus_per_node,
            nodes=1,
            memory_bytes=sheet.memory_bytes,
            usable_memory_bytes=sheet.memory_bytes - FIXED_OVERHEAD_BYTES,
            fixed_overhead_bytes=FIXED_OVERHEAD_BYTES,
            memory_bandwidth_bytes_per_s=memory_bw,
            peak_flop_per_s=dict(sheet.peak_flop_per_s),
        ),
        compute=ComputeProfile(curves=curves, elementwise=(), matmul_points=(), unsupported_dtypes=(
            {} if "bf16" in sheet.peak_flop_per_s else {"bf16": "not supported by this GPU"}
        )),
        optimizer=OptimizerProfile(
            fits={
                "torch_adamw_fused": OptimizerFit(
                    impl="torch_adamw_fused", device="cuda", intercept_s=0.0,
                    s_per_param=ADAM_BYTES_PER_PARAM / memory_bw, r2=None, points=(),
                )
            },
            unavailable={},
        ),
        collectives=CollectivesProfile(
            applicable=True,
            note="spec: NCCL ring bus bandwidth from the link figures times link_efficiency",
            backend=None,
            intra_node=intra,
            inter_node=inter,
        ),
        offload=OffloadProfile(
            kind="spec",
            h2d_bytes_per_s=host_link,
            d2h_bytes_per_s=host_link,
            host_memcpy_bytes_per_s=None,
            cpu_adam_s_per_param=ADAM_BYTES_PER_PARAM * sheet.gpus_per_node
            / (HOST_MEMORY_EFFICIENCY * sheet.host_memory_bytes_per_s),
            cpu_adam_impl="spec",
            host_memory_bytes=sheet.host_memory_bytes,
            points=(),
        ),
        provenance=Provenance(
            kind="spec",
            date=SPEC_DATE,
            command="python -m simtune.hardware.spec",
            host=None,
            device_name=sheet.device_name,
            device_count=sheet.gpus_per_node,
            torch_version=None,
            cuda_version=None,
            nccl_version=None,
            deepspeed_version=None,
            sources=tuple(sheet.sources) + SOURCES_COMMON,
            assumptions=_assumptions(sheet),
            notes=tuple(sheet.notes),
        ),
    )


def spec_profiles() -> list[HardwareProfile]:
    return [build(sheet) for sheet in SHEETS]


def main(argv: Optional[list[str]] = None) -> int:
    from simtune.hardware.registry import SHIPPED_DIR, save_profile

    parser = argparse.ArgumentParser(prog="python -m simtune.hardware.spec", description="Write the spec profiles.")
    parser.add_argument("--out", default=str(SHIPPED_DIR), help="folder to write NAME.json into")
    args = parser.parse_args(argv)
    for profile in spec_profiles():
        print(save_profile(profile, Path(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
