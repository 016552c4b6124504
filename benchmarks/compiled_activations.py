"""What a GPT-2 layer keeps for its backward in eager mode and under torch.compile, on CPU.

llm.c's reference PyTorch script (karpathy/llm.c train_gpt2.py at 4d6f80e, the commit of the
published GPT-2 XL memory rows in benchmarks/published/llmc_pytorch_zero1_a100.json) builds
GPT-2 from its own modules: a tanh GELU written in Python (``NewGELU``), attention through
``scaled_dot_product_attention``, an fp32 model run under ``torch.autocast`` in bf16, compiled
with ``torch.compile`` and then wrapped in DistributedDataParallel. This script builds the same
layer at GPT-2 XL's width and counts the bytes its backward keeps (distinct storages, parameters
and the layer's input left out) three ways:

1. eager, through ``saved_tensors_hooks``;
2. compiled: the graph AOTAutograd partitions with inductor's min-cut rematerialisation
   (``min_cut_rematerialization_partition``, compiler "inductor"); what the backward graph takes
   besides the tangents and the forward's inputs is what the forward keeps for it;
3. compiled inside DDP (one gloo process), as llm.c runs it: dynamo's DDPOptimizer splits the
   graph at DDP's bucket boundaries (25 MB buckets) and each piece is partitioned on its own,
   so a tensor that crosses a boundary is kept whole.

CUDA autocast and CPU autocast differ in one place that matters here: ``pow`` is on CUDA's
fp32 list (its input is cast to fp32, and type promotion keeps the rest of the GELU in fp32),
not on CPU's. The GELU below casts ``pow``'s input to fp32 itself, so the CPU graph carries the
dtypes CUDA's would. Layer norm is on CUDA's fp32 list; its input here is the fp32 residual
stream, which it keeps as is on either device.

    python benchmarks/compiled_activations.py > benchmarks/results/compiled_activations.txt

Then llm.c's loss (its final norm, the tied vocabulary projection and torch's cross-entropy over
all positions) the same two ways, in bytes per token and vocabulary entry.

Only the structure of the graphs is compared (bytes kept per token and hidden element of one
layer); no time is measured. What a backward allocates while it runs (the gradients it makes) is
not in these counts.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import sys
from typing import Any, Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class TorchGELU(nn.Module):
    """torch's tanh GELU, one operator (what a fused GELU keeps, for comparison)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class NewGELU(nn.Module):
    """llm.c's tanh GELU (train_gpt2.py lines 35-38), with CUDA autocast's fp32 ``pow``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cubed = torch.pow(x.float(), 3.0)  # CUDA autocast casts pow's input to fp32
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * cubed)))


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.c_attn, self.c_proj, self.heads = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden), heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    """llm.c's Block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, hidden: int, heads: int, gelu: type[nn.Module]):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(hidden), Attention(hidden, heads), nn.LayerNorm(hidden)
        self.c_fc, self.gelu, self.c_proj = nn.Linear(hidden, 4 * hidden), gelu(), nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(self.gelu(self.c_fc(self.ln_2(x))))


class Layers(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, gelu: type[nn.Module] = NewGELU):
        super().__init__()
        self.h = nn.ModuleList(Block(hidden, heads, gelu) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.h:
            x = block(x)
        return x


class Loss(nn.Module):
    """llm.c's end of the model: ln_f, lm_head (its weight tied to the embedding's) and
    ``F.cross_entropy`` over every position (train_gpt2.py lines 171-180 at 4d6f80e)."""

    def __init__(self, hidden: int, vocab: int):
        super().__init__()
        self.ln_f, self.lm_head = nn.LayerNorm(hidden), nn.Linear(hidden, vocab, bias=False)

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def backward_of(out: torch.Tensor) -> None:
    """The backward from a loss, or from a layer stack's output through a scalar of it."""
    (out if out.dim() == 0 else out.float().square().mean()).backward()


def weight_shapes(model: nn.Module) -> set[tuple[int, ...]]:
    """The shapes of the model's weight matrices and of their transposes."""
    shapes = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}
    return shapes | {shape[::-1] for shape in shapes}


class Kept(NamedTuple):
    """One tensor a backward keeps: its name in the graph (eager: "saved"), shape, dtype, bytes."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int


def split_kept(tensors: list[Kept], weights: set[tuple[int, ...]]) -> tuple[int, int]:
    """(activation bytes, weight-copy bytes): a kept tensor of a weight's shape is autocast's
    16-bit copy of that weight."""
    copies = sum(k.bytes for k in tensors if k.shape in weights)
    return sum(k.bytes for k in tensors) - copies, copies


def eager_kept(model: nn.Module, *inputs: torch.Tensor) -> list[Kept]:
    """The tensors the backward keeps in eager mode (saved tensors, distinct storages,
    parameters and the inputs left out)."""
    kept: dict[int, Kept] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        kept[storage.data_ptr()] = Kept("saved", tuple(t.shape), str(t.dtype).replace("torch.", ""), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*inputs)
    for leave_out in [*inputs, *model.parameters()]:
        kept.pop(leave_out.untyped_storage().data_ptr(), None)
    backward_of(out)
    return list(kept.values())


GRAPHS = [0]
"""Backward graphs compiled since the last reset."""


def counting_backend(kept: list[Kept]) -> Callable[..., Any]:
    """A dynamo backend that partitions as inductor does and records what each backward graph
    takes from its forward (neither tangents nor the forward's inputs), then runs the graphs."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    def forward_compiler(gm: torch.fx.GraphModule, _: Any) -> Any:
        return make_boxed_func(gm.forward)

    def backward_compiler(gm: torch.fx.GraphModule, _: Any) -> Any:
        GRAPHS[0] += 1
        for node in gm.graph.nodes:
            value = node.meta.get("val")
            if node.op != "placeholder" or not isinstance(value, torch.Tensor):
                continue
            if node.name.startswith(("tangents", "primals")):
                continue
            kept.append(Kept(node.name, tuple(value.shape), str(value.dtype).replace("torch.", ""),
                             value.numel() * value.element_size()))
        return make_boxed_func(gm.forward)

    backend = aot_autograd(fw_compiler=forward_compiler, bw_compiler=backward_compiler,
                           partition_fn=functools.partial(min_cut_rematerialization_partition, compiler="inductor"))
    return backend


def compiled_kept(model: nn.Module, *inputs: torch.Tensor, ddp: bool) -> tuple[list[Kept], int]:
    """The tensors the compiled backward keeps (name, shape, dtype, bytes), and how many graphs
    it was compiled in, the model compiled alone or inside DDP."""
    torch._dynamo.reset()
    GRAPHS[0] = 0
    kept: list[Kept] = []
    compiled: nn.Module = torch.compile(model, backend=counting_backend(kept))  # type: ignore[assignment]
    if ddp:
        compiled = nn.parallel.DistributedDataParallel(compiled)  # llm.c: compile, then wrap
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(*inputs)
    backward_of(out)
    return kept, GRAPHS[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=1600, help="GPT-2 XL's width (25 heads of 64)")
    parser.add_argument("--heads", type=int, default=25)
    parser.add_argument("--tokens", type=int, default=256, help="sequence length (batch 1)")
    parser.add_argument("--vocab", type=int, default=50257, help="GPT-2's vocabulary")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    s, h, layers = args.tokens, args.hidden, args.layers
    model = Layers(layers, h, args.heads)
    x = torch.randn(1, s, h, requires_grad=True)
    unit = s * h * layers

    print("Command: python benchmarks/compiled_activations.py " + " ".join(sys.argv[1:]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}")
    print(f"{layers} GPT-2 layers (llm.c's modules), hidden {h}, {args.heads} heads, MLP {4 * h}, "
          f"{s} tokens x batch 1; fp32 parameters under bf16 autocast, pow in fp32 as on CUDA")
    print("bytes the backward keeps beyond the parameters and the first layer's input, per token x hidden "
          "element of one layer\n")
    weights = weight_shapes(model)
    rows = [("eager", split_kept(eager_kept(model, x), weights))]
    alone, _ = compiled_kept(model, x, ddp=False)
    rows.append(("compiled (min-cut)", split_kept(alone, weights)))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        inside, graphs = compiled_kept(model, x, ddp=True)
    finally:
        torch.distributed.destroy_process_group()
    rows.append((f"compiled inside DDP ({graphs} graphs)", split_kept(inside, weights)))
    torch.manual_seed(0)
    one_op = Layers(layers, h, args.heads, TorchGELU)
    rows.append(("eager, torch's one-op GELU", split_kept(eager_kept(one_op, x), weights)))
    fused, _ = compiled_kept(one_op, x, ddp=False)
    rows.append(("compiled, torch's one-op GELU", split_kept(fused, weights)))
    weight_elements = sum(p.numel() for p in model.parameters() if p.dim() == 2)
    print(f"{'':34s} {'activations':>12s} {'weight copies':>14s}")
    print(f"{'':34s} {'B per s x h':>12s} {'B per weight':>14s}")
    for name, (activations, copies) in rows:
        print(f"{name:34s} {activations / unit:12.1f} {copies / weight_elements:14.2f}")
    print("\nwhat the compiled graphs inside DDP keep besides weight copies (shape, dtype, bytes per token x hidden "
          "element of one layer):")
    for name, shape, dtype, size in inside:
        if shape not in weights:
            print(f"  {name:28s} {str(shape):24s} {dtype:9s} {size / unit:6.2f}")

    torch.manual_seed(0)
    loss = Loss(h, args.vocab)
    targets = torch.randint(0, args.vocab, (1, s))
    vocab_unit = s * args.vocab
    head = weight_shapes(loss)
    eager_loss, _ = split_kept(eager_kept(loss, x, targets), head)
    kept_loss, _ = compiled_kept(loss, x, targets, ddp=False)
    compiled_loss, _ = split_kept(kept_loss, head)
    print("\nllm.c's loss (ln_f, the tied lm_head, torch's cross-entropy), bytes the backward keeps beyond the "
          "weights and the input, per token x vocabulary entry:")
    print(f"  eager {eager_loss / vocab_unit:.2f}, compiled (min-cut) {compiled_loss / vocab_unit:.2f}")
    for name, shape, dtype, size in kept_loss:
        if shape not in head and size >= vocab_unit:
            print(f"  compiled keeps {name:24s} {str(shape):20s} {dtype:9s} {size / vocab_unit:6.2f}")


if __name__ == "__main__":
    main()
