"""Spec profiles: hardware profiles built from vendor numbers and stated assumptions.

They let the cost model answer for hardware the user does not have. Every number is either a
vendor figure (with its source) or an assumption (named in ``provenance.assumptions`` with its
reason); nothing is measured, so ``provenance.kind`` is "spec". A measured profile of the same
hardware always wins over these (see :mod:`simtune.hardware.registry`).

Regenerate the shipped files with ``python -m simtune.hardware.spec [--out hardware_profiles]``.

Derivations:
- compute: achieved FLOP/s of one matmul = a published fraction of the vendor peak at that
  matmul's FLOPs (``SpecSheet.matmul_efficiency``, from measured GEMM tables: small products are
  bound by a fixed few microseconds per kernel, large ones reach 0.77-0.87 of peak); the rest
  of a training step (memory-bound operators, kernel dispatch, the engine's hooks) is costed by
  the model from the memory bandwidth and ``FRAMEWORK``;
- framework: host seconds per kernel dispatch, per stage-3 module fetch, per reduction bucket,
  per gradient hook and per engine step (``SpecSheet.framework``, published figures);
- intra-node collectives: bus bandwidth = ``LINK_EFFICIENCY`` x NVLink per-direction bandwidth
  (nccl-tests compares busbw to the per-direction figure), latency ``INTRA_NODE_LATENCY_S``;
- inter-node collectives: bus bandwidth = ``LINK_EFFICIENCY`` x the node's compute NICs together
  (NCCL runs one ring per NIC, each carrying its share of the buffer, so the bus bandwidth of a
  group spanning nodes reaches the node's aggregate network bandwidth; nccl-tests: "the bus
  bandwidth should reflect the speed of the hardware bottleneck"), latency ``INTER_NODE_LATENCY_S``;
- memory bandwidth: ``MEMORY_EFFICIENCY`` x HBM bandwidth;
- optimizer step on the GPU, per implementation of ``SPEC_OPTIMIZERS``: its bytes per parameter
  (:data:`simtune.optimizers.ADAM_KERNELS`: 28 fused, 84 foreach and for-loop) / achievable HBM
  bandwidth;
- host<->device: ``LINK_EFFICIENCY`` x the PCIe x16 per-direction bandwidth of the generation;
- host optimizer (DeepSpeedCPUAdam, per parameter of one rank's shard): ``ADAM_BYTES_PER_PARAM``
  x GPUs per node / (``HOST_MEMORY_EFFICIENCY`` x the node's DRAM bandwidth), since every rank of
  the node steps its shard at the same time on the shared memory;
- host copies (one rank's cast of its offloaded partition): ``HOST_MEMORY_EFFICIENCY`` x the
  node's DRAM bandwidth / (2 x GPUs per node), a copied byte being read once and written once;
- pageable copies: not specified (no vendor figure); the model uses the pinned link's rate.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from simtune.hardware.profile import (
    COLLECTIVE_OPS,
    DTYPE_BYTES,
    SCHEMA_VERSION,
    AttentionRate,
    CollectiveFit,
    CollectivesProfile,
    ComputeCurve,
    ComputeProfile,
    DeviceInfo,
    ElementwiseFit,
    FrameworkProfile,
    HardwareProfile,
    OffloadProfile,
    OptimizerFit,
    OptimizerProfile,
    Provenance,
    RatePoint,
)
from simtune.optimizers import ADAM_KERNELS

GIB = 2**30
SPEC_DATE = "2026-11-21"
LINK_EFFICIENCY = 0.8
MEMORY_EFFICIENCY = 0.8
INTRA_NODE_LATENCY_S = 20e-6
INTER_NODE_LATENCY_S = 50e-6
FIXED_OVERHEAD_BYTES = 2 * GIB
ADAM_BYTES_PER_PARAM = ADAM_KERNELS["torch_adamw_fused"].bytes_per_param
SPEC_OPTIMIZERS = ("torch_adamw_fused", "torch_adamw_foreach", "torch_adamw_for_loop")
"""The device optimizers a spec profile carries fits for (their bytes: simtune.optimizers)."""
HOST_MEMORY_EFFICIENCY = 0.5

MATMUL_SOURCES = (
    "openxla/xla xla/service/gpu/model/hlo_op_profiles / default_matmul_perf_table.txtpb (sm_90): measured H100 "
    "matmul kernel times, bf16 square 256^3..4096^3 at 0.007/0.044/0.26/0.65/0.79 of 989 TFLOPS",
    "github.com/stas00/ml-engineering compute/accelerator, maximum achievable matmul FLOPS table: H100 bf16 "
    "0.80-0.81 of peak, A100 bf16 0.83-0.87",
    "github.com/zzc0721/torch-performance-test-data issues 79, 108, 140: torch.mm on V100-SXM2 fp16 cubes "
    "1024-8192 at 0.46/0.63/0.77/0.78 of 125 TFLOPS, fp32 0.67-0.92 of 15.7",
    "te42kyfo/gpu-benches (stream): copy kernels reach 0.85-0.92 of HBM bandwidth on V100, A100 and H100",
)
ATTENTION_SOURCES = (
    "Shah et al. 2024, FlashAttention-3 (arXiv 2407.08608), Figures 5-6, H100 SXM5 bf16, head dim 128, 16k "
    "tokens per batch: FlashAttention-2 forward 298 TFLOPS causal / 362 non-causal, backward 291, at 2k tokens "
    "(cuDNN 484 / 617 / 465, FlashAttention-3 521 / 625 / 501); FLOPs counted as 4 * s^2 * head_dim * heads "
    "forward (half when causal), 2.5 times that backward",
    "Dao 2023, FlashAttention-2 (arXiv 2307.08691), abstract and section 4.1: 50-73% of the A100's peak, "
    "the forward highest and the backward below it",
)
FRAMEWORK_SOURCES = (
    "PyTorch eager dispatch per op: Horace He, 'Making Deep Learning Go Brrrr From First Principles' (~280k "
    "ops/s); pytorch/pytorch#41383 (2 us per op, 5-7 us with autograd recording); Meta Holistic Trace Analysis "
    "docs (CPU-side launch 5-20 us)",
    "kernels per transformer layer: ~1800 kernels per BERT-large training step (adityaagrawal.net/blog, "
    "NVIDIA BERT), i.e. ~75 per layer forward and backward",
    "ZeRO-3 per-module fetch: deepspeedai/DeepSpeed#1069 (~0.5 ms per allgather: 130 us pre-launch, 250 us "
    "launch, BERT-5B on 8 A100), #1174 and PR #1188 (ZeRO-3 forward 470 -> 270 ms against 60 ms at ZeRO-2), "
    "LianjiaTech/BELLE#402 (ZeRO-3 over ZeRO-1 ~260 ms per step for BLOOM-560M and BLOOM-1.1B alike, 148 "
    "modules: 0.6-0.9 ms per module and pass, 2 TITAN RTX, DeepSpeed before 0.10), PR #3622 (per-parameter "
    "Python work of the coordinator cut, 20-35% faster steps) and PR #6694 (leaf-module fetch/release halves "
    "its CPU time) since; measured on one H200 (benchmarks/results/gpu, DeepSpeed 0.19.8, world size 1): "
    "0.6-0.85 ms per module and pass on a host dispatching an op in 11 us, about twice the spec hosts' 5-8 us",
    "stage 1/2 per bucket and hook: deepspeedai/DeepSpeed PR #7886 (0.5 ms per gradient hook when it walked the "
    "graph), #2463/#2500 (a device sync per bucket, since removed)",
    "engine step: deepspeedai/DeepSpeed PR #4512 and #5115 (the fp16 overflow check reduces all gradients "
    "and synchronises with the host)",
)

BACKWARD_DISPATCH_SHARE = 0.6
"""A backward kernel's dispatch over a forward one's: autograd's C++ engine launches backward
kernels without Python (about 3 us against 5; pytorch/pytorch#41383 puts half of an op's cost in
Python)."""
ZERO3_MODULE_S = 3e-4
REDUCE_BUCKET_S = 3e-4
GRADIENT_HOOK_S = 3e-5
ENGINE_STEP_S = 2e-3
ENGINE_MICRO_STEP_S = 1e-4
GATHER_CALL_S = 5e-5
ENGINE_COSTS = {"zero3_module_s": ZERO3_MODULE_S, "zero3_module_backward_s": ZERO3_MODULE_S,
                "reduce_bucket_s": REDUCE_BUCKET_S,
                "gradient_hook_s": GRADIENT_HOOK_S, "engine_step_s": ENGINE_STEP_S,
                "engine_micro_step_s": ENGINE_MICRO_STEP_S, "gather_call_s": GATHER_CALL_S}
"""DeepSpeed's own costs per call in the spec profiles (derived from the published figures of
:data:`FRAMEWORK_SOURCES`, which give ZeRO-3's per module and pass: both passes take it); they
also stand in on a GPU profile calibrated without engines
(:func:`simtune.model.adapters.framework_costs`)."""

SOURCES_COMMON = (
    "NVIDIA/nccl-tests doc/PERFORMANCE.md: busbw = algbw x 2(n-1)/n for allreduce, (n-1)/n for allgather and "
    "reduce-scatter (of the total array), 1 for broadcast; compare busbw with the per-direction link bandwidth",
) + MATMUL_SOURCES + FRAMEWORK_SOURCES


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
    matmul_efficiency: dict
    """dtype -> ((FLOPs of one matmul, fraction of peak), ...), from MATMUL_SOURCES."""
    forward_kernel_s: float
    """Host dispatch per forward kernel: PyTorch eager on this generation's host CPUs."""
    sms: int
    """Streaming multiprocessors per GPU (vendor figure)."""
    notes: tuple[str, ...] = ()
    streaming_16bit_efficiency: float = 0.8
    """The fraction of HBM bandwidth PyTorch's memory-bound kernels reach over 16-bit elements
    (fp32 reaches MEMORY_EFFICIENCY)."""
    attention_efficiency: Optional[dict] = None
    """16-bit dtype -> (forward, backward) fraction of peak a fused attention kernel reaches
    (FlashAttention-2, from ATTENTION_SOURCES); None where none is published (Volta: no
    FlashAttention-2, the memory-efficient kernel runs at the matmul curve's rate here)."""
    nvme_read_bytes_per_s: Optional[float] = None
    nvme_write_bytes_per_s: Optional[float] = None
    """The node's NVMe storage, where a source gives it (its own entry in ``sources``); None
    leaves ZeRO-Infinity's swaps uncosted on this profile."""


_TF32_NOTE = "fp32 uses the CUDA-core peak: torch leaves TF32 matmuls off by default."
_DGX_H100_NIC_SOURCE = (
    "docs.nvidia.com/dgx-basepod (core components): DGX H100/H200 has eight single-port ConnectX-7, "
    "up to 400 Gb/s InfiniBand"
)

NCCL_BLOCKS = 24
"""Thread blocks (one per channel, each holding an SM) an NCCL allgather launched beside a GEMM
on an H100 in an FSDP-like overlap (NCCL_SOURCES); the GEMM then ran slower for as long as the
collective ran. The same count is assumed on the other GPUs."""


def nccl_sm_share(sms: int) -> float:
    """The share of a GPU's ``sms`` SMs NCCL's :data:`NCCL_BLOCKS` hold while a collective runs."""
    return NCCL_BLOCKS / sms


NCCL_SOURCES = (
    "forums.developer.nvidia.com/t/337991 ('Compute-Communication Overlap Causes Severe GEMM Performance "
    "Degradation'): on an H100 (132 SMs) an ncclAllGather beside a one-wave GEMM launched 24 blocks, the GEMM's "
    "time nearly doubled (MFU 80% -> 47%) as its blocks no longer fit one wave",
    "SMs per GPU: V100 80, A100 108, H100/H200 SXM 132 (NVIDIA Volta, Ampere and Hopper architecture whitepapers)",
    "arXiv 2507.03114 (Characterizing Compute-Communication Overlap in GPU-Accelerated Distributed Deep Learning), "
    "abstract: on GPT and Llama models over 4 A100, H100, MI250 or MI210, overlapped communication slowed the "
    "computation by 18.9% on average, 40.0% at most",
    "Echo (Feng et al., arXiv 2412.12487), Table 2: one 8-GPU A100 node under PyTorch DDP, a GEMM beside a 25 MB "
    "all-reduce ran 1.269 times as long as alone (24/108 SMs gives 1.29), the common kernels 1.378 on average "
    "(sum 1.508, gradient 1.613); Table 3: the GEMM 1.134-1.178 on an A800 by CUDA version",
    "NVIDIA/nccl issue #1428: on A100-SXM4-80GB a GEMM overlapped with an all-gather in GPT training took 2.08 ms "
    "against 1.18 ms alone; NCCL's maintainer puts it in memory bandwidth (NVLink traffic costs 2-3x as much HBM "
    "traffic)",
)
HOPPER_STREAMING_16BIT = 0.65
"""simtune calibrate on one H200 (benchmarks/results/gpu/h200-2026-12-04-kit and -search): the
GELU forward+backward moved 3.0-3.2 TB/s in bf16/fp16 against 4.2-4.3 in fp32, of 4.8 (0.63-0.67
against 0.88-0.89): a Hopper part needs more bytes in flight than PyTorch's 16-bit kernels keep.
No measurement of an A100 or V100 is at hand, so those keep fp32's fraction."""

_H100_ATTENTION = {"bf16": (0.30, 0.29), "fp16": (0.30, 0.29)}
"""FlashAttention-2 on an H100 at 2k tokens, head dim 128: 298 TFLOPS forward (causal; the
decoders people train), 291 backward, of 989 (ATTENTION_SOURCES)."""
_A100_ATTENTION = {"bf16": (0.65, 0.55), "fp16": (0.65, 0.55)}
"""FlashAttention-2 on an A100 at 2k tokens: within the 50-73% the paper reports, the forward
above the backward (ATTENTION_SOURCES); read from that range, not one figure."""

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
    matmul_efficiency={
        "bf16": ((1e8, 0.02), (1e9, 0.14), (1e10, 0.55), (1e11, 0.78)),
        "fp16": ((1e8, 0.02), (1e9, 0.14), (1e10, 0.55), (1e11, 0.78)),
        "fp32": ((1e8, 0.15), (1e9, 0.50), (1e10, 0.72), (1e11, 0.77)),
    },
    forward_kernel_s=5e-6,
    notes=(_TF32_NOTE,),
    attention_efficiency=_H100_ATTENTION,
    streaming_16bit_efficiency=HOPPER_STREAMING_16BIT,
    sms=132,
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
            "deepspeed.ai/assets/files/SC21-ZeRO-Infinity.pdf (the ZeRO-Infinity authors' SC'21 slides 8-9): "
            "NVMe to GPU 28 GB/s per DGX-2 node (1.8 TB/s over 64 nodes); no write rate given",
        ),
        nvme_read_bytes_per_s=28e9,
        notes=(
            "No bf16 on V100: only fp16 and fp32 curves.",
            "DGX-2 GPUs may be SXM3 parts with other clocks than SXM2; the peak assumes the V100 datasheet "
            "(derive it from SMs x clock with nvidia-smi to check).",
        ),
        matmul_efficiency={
            "fp16": ((1e8, 0.08), (2e9, 0.46), (2e10, 0.63), (1.4e11, 0.77)),
            "fp32": ((1e8, 0.35), (2e9, 0.67), (2e10, 0.81), (1.4e11, 0.90)),
        },
        forward_kernel_s=8e-6,
        sms=80,
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
        matmul_efficiency={
            "bf16": ((1e8, 0.06), (1e9, 0.35), (1e10, 0.72), (1e11, 0.83)),
            "fp16": ((1e8, 0.06), (1e9, 0.35), (1e10, 0.72), (1e11, 0.83)),
            "fp32": ((1e8, 0.35), (1e9, 0.50), (1e10, 0.75), (1e11, 0.92)),
        },
        forward_kernel_s=6e-6,
        notes=(_TF32_NOTE,),
        attention_efficiency=_A100_ATTENTION,
        sms=108,
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
            "github.com/deepspeedai/DeepSpeed blogs/deepnvme/06-2025/README.md ('I/O performance scaling'): "
            "Azure ND-H200-v5 (HGX H200), 8 PCIe Gen5 NVMe in RAID-0, 1 GB transfers between NVMe and host "
            "memory with DeepSpeed's ds_io (libaio): about 46 GB/s read, 26 GB/s write (measured)",
        ),
        nvme_read_bytes_per_s=46e9,
        nvme_write_bytes_per_s=26e9,
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
    attention = ("fused attention (FlashAttention-2) at a fraction of peak forward/backward: "
                 + "; ".join(f"{dtype} {f}/{b}" for dtype, (f, b) in sheet.attention_efficiency.items())
                 + " (published kernel benchmarks at 2k tokens, head dim 128, see sources)"
                 if sheet.attention_efficiency else
                 "fused attention runs at the matmul curve's rate (no published FlashAttention-2 figure for "
                 "this GPU)")
    return {
        "fused_attention": attention,
        "compute_efficiency": "per dtype, the fraction of peak one matmul reaches at its FLOPs: "
        + "; ".join(f"{dtype} " + ", ".join(f"{w:.0e}:{f}" for w, f in points)
                    for dtype, points in sheet.matmul_efficiency.items())
        + " (measured GEMM tables, see sources; aligned shapes: misaligned ones run slower)",
        "framework": f"PyTorch eager dispatch {sheet.forward_kernel_s * 1e6:g} us per forward kernel on this "
        f"host, {BACKWARD_DISPATCH_SHARE} of it per backward kernel; DeepSpeed ZeRO-3 {ZERO3_MODULE_S * 1e6:g} us "
        f"per parameter-holding module per pass (range 150-900), {REDUCE_BUCKET_S * 1e6:g} us per reduction "
        f"bucket, {GRADIENT_HOOK_S * 1e6:g} us per gradient hook (stages 2-3), {ENGINE_STEP_S * 1e3:g} ms per "
        f"engine step, {ENGINE_MICRO_STEP_S * 1e6:g} us for the engine's forward and backward calls per "
        f"micro-step, {GATHER_CALL_S * 1e6:g} us per persistent-parameter allgather after a ZeRO-3 step "
        "(figures derived from the DeepSpeed issues and PyTorch sources cited; an estimate, "
        "not a measurement of this machine)",
        "link_efficiency": f"{LINK_EFFICIENCY} of the per-direction link bandwidth as NCCL bus bandwidth "
        "(NVLink, InfiniBand and PCIe)",
        "memory_efficiency": f"{MEMORY_EFFICIENCY} of HBM bandwidth is achievable by streaming kernels over fp32 "
        f"elements, {sheet.streaming_16bit_efficiency} over 16-bit ones"
        + (" (measured by simtune calibrate on an H200: bf16/fp16 GELU 0.63-0.67, fp32 0.88-0.89)"
           if sheet.streaming_16bit_efficiency != MEMORY_EFFICIENCY else " (no 16-bit measurement: as fp32)")
        + "; stated as GELU forward+backward rates (5 elements moved per element)",
        "collective_compute_share": f"{NCCL_BLOCKS} NCCL blocks of the GPU's {sheet.sms} SMs "
        f"({nccl_sm_share(sheet.sms):.2f}) (the block count measured on an H100, assumed elsewhere); compute "
        "beside a running collective runs slower by the larger of it and the share of the memory bandwidth "
        "the collective's traffic takes, 3 bytes of HBM per byte of bus bandwidth (simtune.model.overlap)",
        "intra_node_latency_s": f"{INTRA_NODE_LATENCY_S} (order of nccl-tests small-message times on NVLink)",
        "inter_node_latency_s": f"{INTER_NODE_LATENCY_S} (order of small-message times over InfiniBand)",
        "inter_node_network": nic
        + (" (assumed: a typical configuration; check your cluster)" if sheet.nic_is_assumed else ""),
        "fixed_overhead_bytes": f"{FIXED_OVERHEAD_BYTES} (CUDA context, NCCL buffers and allocator slack; "
        "measure it with simtune calibrate)",
        "memory_bytes": "the marketed capacity in GiB; the runtime reports slightly less",
        "optimizer": "torch's AdamW is memory-bound at the achievable HBM bandwidth: fused at "
        f"{ADAM_KERNELS['torch_adamw_fused'].bytes_per_param} bytes per parameter (read the fp32 parameter, "
        "gradient and two moments, write the parameter and two moments), foreach and for-loop at "
        f"{ADAM_KERNELS['torch_adamw_foreach'].bytes_per_param} (eight elementwise passes: simtune.optimizers)",
        "host": f"{sheet.host_description} (a typical host of this machine type; check yours)",
        "cpu_adam": f"DeepSpeedCPUAdam is memory-bound at {ADAM_BYTES_PER_PARAM} bytes per parameter at "
        f"{HOST_MEMORY_EFFICIENCY} of the node's DRAM bandwidth, shared by its {sheet.gpus_per_node} ranks",
        "host_memcpy": f"a copy within host memory (a rank casting its offloaded partition) reads and writes at "
        f"{HOST_MEMORY_EFFICIENCY} of the node's DRAM bandwidth, shared by its {sheet.gpus_per_node} ranks",
        "host_link": f"{sheet.pcie_generation}, {sheet.pcie_per_direction_bytes_per_s / 1e9:g} GB/s per direction "
        "(PCI-SIG), times link_efficiency",
    }


def build(sheet: SpecSheet) -> HardwareProfile:
    """The spec profile of one machine type."""
    memory_bw = MEMORY_EFFICIENCY * sheet.hbm_bytes_per_s
    curves = {
        dtype: ComputeCurve(
            dtype=dtype, points=tuple(RatePoint(w, fraction * peak) for w, fraction in sheet.matmul_efficiency[dtype])
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
    # one rank's share of the node's achievable DRAM bandwidth: every rank works on it at once
    host_share = HOST_MEMORY_EFFICIENCY * sheet.host_memory_bytes_per_s / sheet.gpus_per_node
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
        compute=ComputeProfile(curves=curves, elementwise=tuple(
            ElementwiseFit(op="gelu", dtype=dtype, intercept_s=0.0, r2=None, points=(),
                           s_per_element=5 * DTYPE_BYTES[dtype] / (
                               (MEMORY_EFFICIENCY if dtype == "fp32" else sheet.streaming_16bit_efficiency)
                               * sheet.hbm_bytes_per_s))
            for dtype in sheet.peak_flop_per_s), matmul_points=(), unsupported_dtypes=(
            {} if "bf16" in sheet.peak_flop_per_s else {"bf16": "not supported by this GPU"}
        ), attention={
            dtype: AttentionRate(dtype=dtype, forward_flop_per_s=f * sheet.peak_flop_per_s[dtype],
                                 backward_flop_per_s=b * sheet.peak_flop_per_s[dtype],
                                 basis=f"FlashAttention-2, {f} / {b} of peak (ATTENTION_SOURCES in provenance)")
            for dtype, (f, b) in (sheet.attention_efficiency or {}).items()
        }),
        optimizer=OptimizerProfile(
            fits={impl: OptimizerFit(impl=impl, device="cuda", intercept_s=0.0,
                                     s_per_param=ADAM_KERNELS[impl].bytes_per_param / memory_bw, r2=None, points=())
                  for impl in SPEC_OPTIMIZERS},
            unavailable={},
        ),
        collectives=CollectivesProfile(
            applicable=True,
            note="spec: NCCL ring bus bandwidth from the link figures times link_efficiency",
            backend=None,
            intra_node=intra,
            inter_node=inter,
            compute_share=nccl_sm_share(sheet.sms),
        ),
        offload=OffloadProfile(
            kind="spec",
            h2d_bytes_per_s=host_link,
            d2h_bytes_per_s=host_link,
            host_memcpy_bytes_per_s=host_share / 2,  # a copied byte is read once and written once
            cpu_adam_s_per_param=ADAM_BYTES_PER_PARAM / host_share,
            cpu_adam_impl="spec",
            host_memory_bytes=sheet.host_memory_bytes,
            points=(),
            nvme_read_bytes_per_s=sheet.nvme_read_bytes_per_s,
            nvme_write_bytes_per_s=sheet.nvme_write_bytes_per_s,
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
            sources=tuple(sheet.sources) + SOURCES_COMMON + (ATTENTION_SOURCES if sheet.attention_efficiency else ())
            + NCCL_SOURCES,
            assumptions=_assumptions(sheet),
            notes=tuple(sheet.notes),
        ),
        framework=FrameworkProfile(
            kind="spec", forward_kernel_s=sheet.forward_kernel_s,
            backward_kernel_s=BACKWARD_DISPATCH_SHARE * sheet.forward_kernel_s, **ENGINE_COSTS,
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
