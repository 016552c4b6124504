"""Forward and backward time of transformer-shaped work.

Matmul: a linear layer of a transformer MLP, ``y = x W^T`` with ``x: [tokens, hidden]`` and
``W: [4 hidden, hidden]``. The forward is one matmul of ``2 * tokens * hidden * 4 hidden`` FLOPs
(2 FLOPs per multiply-add); the backward is two matmuls of the same size (input gradient and
weight gradient), so 2x the forward FLOPs. The backward is timed with ``torch.autograd.grad`` on
a retained graph, i.e. the real backward kernels.

Weights: on CPU, a linear layer of few tokens over a large weight runs below the curve's rate at
its FLOPs (the kernel reads, packs and, backward, writes the whole weight whatever the tokens), so
``[64, 1024] x [1024, out]`` over weights of 16 to 160 MiB (fp32) is timed in turn with a product
of the same FLOPs over a 4 MiB weight (``[64 out / 1024, 1024] x [1024, 1024]``): the difference
per weight byte is the model's weight term, and taking the two in turn keeps a busy machine from
slowing one of them alone.

Element-wise: GELU, layer norm (over the last dimension), softmax (over the last dimension) and
dropout (p = 0.1) on ``[rows, width]`` tensors, forward and backward. These are memory-bound
(dropout's random numbers can cost more than its bytes: on CPU they do), so they are reported
per element, not per FLOP.

Attention: one causal ``torch.nn.functional.scaled_dot_product_attention`` call over
``[batch, heads, seq, head_dim]`` tensors (the fused kernel SDPA picks there: flash or
memory-efficient on CUDA, the flash kernel on CPU), forward and backward; its FLOPs are counted
as FlashAttention's benchmarks count them (forward ``4 batch heads seq^2 head_dim`` halved for
causal, backward 2.5 times that), so the rates read straight into the model.

Dispatch: the host's cost of one op in PyTorch eager, timed as a chain of ``DISPATCH_OPS``
multiplications of an 8-element tensor that autograd records (forward) and the backward through
that chain: tiny tensors leave nothing but dispatch and launch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simtune.calib.device import TORCH_DTYPES, Device
from simtune.calib.timing import measure, measure_in_turn
from simtune.model.operators import FUSED_ATTENTION_BACKWARD

CPU_MATMUL_SHAPES = [(32, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
CPU_MATMUL_SHAPES_QUICK = [(64, 128), (256, 256), (512, 512)]
CUDA_MATMUL_SHAPES = [(512, 512), (1024, 1024), (2048, 2048), (4096, 4096), (8192, 4096), (8192, 8192)]
CUDA_MATMUL_SHAPES_QUICK = [(1024, 1024), (4096, 4096), (8192, 8192)]

WEIGHT_TOKENS = 64
WEIGHT_DEPTH = 1024
CPU_WEIGHT_OUT_FEATURES = [2048, 4096, 16384, 40960]
CPU_WEIGHT_OUT_FEATURES_QUICK = [8192]

CPU_ELEMENTS = [2**12, 2**15, 2**18, 2**21]
CPU_ELEMENTS_QUICK = [2**14, 2**18, 2**21]
CUDA_ELEMENTS = [2**20, 2**23, 2**26, 2**28]
CUDA_ELEMENTS_QUICK = [2**20, 2**24, 2**28]

ELEMENTWISE_OPS = ("gelu", "layer_norm", "softmax", "dropout")
CUDA_ATTENTION_SHAPE = (8, 16, 2048, 128)
"""batch, heads, sequence, head dim: 16k tokens of head dim 128 at 2k, as FlashAttention-3's
benchmarks run them."""
CPU_ATTENTION_SHAPE = (2, 4, 256, 64)
DISPATCH_OPS = 64


def _matmul_point(device: Device, dtype_name: str, tokens: int, hidden: int, warmup: int, repeats: int) -> dict:
    dtype = TORCH_DTYPES[dtype_name]
    x = torch.randn(tokens, hidden, dtype=dtype, device=device.torch_device, requires_grad=True)
    w = torch.randn(4 * hidden, hidden, dtype=dtype, device=device.torch_device, requires_grad=True)
    with torch.no_grad():
        w.mul_(hidden**-0.5)
    y = F.linear(x, w)
    grad_y = torch.randn_like(y)
    min_repeat_s = 2e-3
    with torch.no_grad():
        fwd = measure(lambda: F.linear(x, w), device.sync, warmup, repeats, min_repeat_s)
    bwd = measure(
        lambda: torch.autograd.grad(y, (x, w), grad_y, retain_graph=True), device.sync, warmup, repeats, min_repeat_s
    )
    return {
        "dtype": dtype_name,
        "tokens": tokens,
        "hidden": hidden,
        "out_features": 4 * hidden,
        "fwd_flop": 2 * tokens * hidden * 4 * hidden,
        "bwd_flop": 4 * tokens * hidden * 4 * hidden,
        "fwd": fwd,
        "bwd": bwd,
    }


def _weight_pair(device: Device, out_features: int, warmup: int, repeats: int) -> list[dict]:
    """``[64, 1024] x [1024, out]`` and the same FLOPs over a ``[1024, 1024]`` weight, forward and
    backward, all four taken in turn within each round (fp32)."""
    shapes = ((WEIGHT_TOKENS, out_features), (WEIGHT_TOKENS * out_features // WEIGHT_DEPTH, WEIGHT_DEPTH))
    fns, entries = [], []
    for tokens, out in shapes:
        x = torch.randn(tokens, WEIGHT_DEPTH, device=device.torch_device, requires_grad=True)
        w = torch.empty(out, WEIGHT_DEPTH, device=device.torch_device).normal_(0.0, WEIGHT_DEPTH**-0.5)
        w.requires_grad_()
        y = F.linear(x, w)
        grad_y = torch.randn_like(y)

        def forward(x=x, w=w) -> None:
            with torch.no_grad():
                F.linear(x, w)

        fns += [forward, lambda y=y, x=x, w=w, g=grad_y: torch.autograd.grad(y, (x, w), g, retain_graph=True)]
        entries.append({"dtype": "fp32", "tokens": tokens, "hidden": WEIGHT_DEPTH, "out_features": out,
                        "fwd_flop": 2 * tokens * WEIGHT_DEPTH * out, "bwd_flop": 4 * tokens * WEIGHT_DEPTH * out})
    timed = measure_in_turn(fns, device.sync, warmup, repeats)
    for i, entry in enumerate(entries):
        entry["fwd"], entry["bwd"] = timed[2 * i], timed[2 * i + 1]
    return entries


def _elementwise_fn(op: str, width: int):
    if op == "gelu":
        return F.gelu
    if op == "layer_norm":
        return lambda t: F.layer_norm(t, (width,))
    if op == "softmax":
        return lambda t: torch.softmax(t, dim=-1)
    if op == "dropout":
        return lambda t: F.dropout(t, 0.1, training=True)
    raise ValueError(op)


def _elementwise_point(
    device: Device, dtype_name: str, op: str, elements: int, width: int, warmup: int, repeats: int
) -> dict:
    dtype = TORCH_DTYPES[dtype_name]
    rows = max(1, elements // width)
    x = torch.randn(rows, width, dtype=dtype, device=device.torch_device, requires_grad=True)
    fn = _elementwise_fn(op, width)
    y = fn(x)
    grad_y = torch.randn_like(y)
    with torch.no_grad():
        fwd = measure(lambda: fn(x), device.sync, warmup, repeats, 1e-3)
    bwd = measure(lambda: torch.autograd.grad(y, (x,), grad_y, retain_graph=True), device.sync, warmup, repeats, 1e-3)
    return {"op": op, "dtype": dtype_name, "elements": rows * width, "width": width, "fwd": fwd, "bwd": bwd}


def _attention_point(device: Device, dtype_name: str, warmup: int, repeats: int) -> dict:
    batch, heads, seq, head_dim = CUDA_ATTENTION_SHAPE if device.kind == "cuda" else CPU_ATTENTION_SHAPE
    q, k, v = (torch.randn(batch, heads, seq, head_dim, dtype=TORCH_DTYPES[dtype_name], device=device.torch_device,
                           requires_grad=True) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    grad = torch.randn_like(out)
    with torch.no_grad():
        fwd = measure(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), device.sync, warmup, repeats,
                      1e-3)
    bwd = measure(lambda: torch.autograd.grad(out, (q, k, v), grad, retain_graph=True), device.sync, warmup, repeats,
                  1e-3)
    fwd_flop = 4 * batch * heads * seq * seq * head_dim / 2
    return {"dtype": dtype_name, "batch": batch, "heads": heads, "seq": seq, "head_dim": head_dim, "causal": True,
            "fwd_flop": fwd_flop, "bwd_flop": FUSED_ATTENTION_BACKWARD * fwd_flop, "fwd": fwd, "bwd": bwd}


def dispatch(device: Device, warmup: int, repeats: int) -> dict:
    """Seconds for a chain of DISPATCH_OPS recorded ops, forward and backward (one kernel each)."""
    x = torch.zeros(8, device=device.torch_device, requires_grad=True)

    def chain() -> torch.Tensor:
        y = x
        for _ in range(DISPATCH_OPS):
            y = y * 1.0001
        return y

    out = chain()
    grad = torch.ones_like(out)
    fwd = measure(chain, device.sync, warmup, repeats, 1e-3)
    bwd = measure(lambda: torch.autograd.grad(out, (x,), grad, retain_graph=True), device.sync, warmup, repeats, 1e-3)
    return {"ops": DISPATCH_OPS, "fwd": fwd, "bwd": bwd}


def run(device: Device, dtypes: dict[str, str], quick: bool) -> dict:
    """Matmul and element-wise timings for every supported dtype."""
    cuda = device.kind == "cuda"
    if cuda:
        shapes = CUDA_MATMUL_SHAPES_QUICK if quick else CUDA_MATMUL_SHAPES
        sizes = CUDA_ELEMENTS_QUICK if quick else CUDA_ELEMENTS
        width = 1024
    else:
        shapes = CPU_MATMUL_SHAPES_QUICK if quick else CPU_MATMUL_SHAPES
        sizes = CPU_ELEMENTS_QUICK if quick else CPU_ELEMENTS
        width = 256
    warmup, repeats = (1, 3) if quick else (2, 5)
    matmul, elementwise, weights, attention = [], [], [], []
    for dtype_name, support in dtypes.items():
        if support != "ok":
            continue
        for tokens, hidden in shapes:
            matmul.append(_matmul_point(device, dtype_name, tokens, hidden, warmup, repeats))
        attention.append(_attention_point(device, dtype_name, warmup, repeats))
        for op in ELEMENTWISE_OPS:
            for elements in sizes:
                elementwise.append(_elementwise_point(device, dtype_name, op, elements, width, warmup, repeats))
    if not cuda:  # fp32: the model scales the term by the element size
        for out_features in (CPU_WEIGHT_OUT_FEATURES_QUICK if quick else CPU_WEIGHT_OUT_FEATURES):
            weights += _weight_pair(device, out_features, warmup, repeats)
    if cuda:
        torch.cuda.empty_cache()
    return {"dtypes": dtypes, "matmul": matmul, "elementwise": elementwise, "matmul_weights": weights,
            "attention": attention,
            "dispatch": dispatch(device, warmup, repeats)}
