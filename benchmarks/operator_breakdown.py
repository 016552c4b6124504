"""Where the closed-form compute model parts from a measured pass: per operator class, forward
and backward, predicted against torch's profiler.

For each preset, one process at one intra-op thread (what a rank of a 2-process launch on 2
cores gets) builds the model as the workload calibration builds it, times forward and backward
(the median of ``--repeats`` after warm-up, no profiler), then profiles ``--profiled`` more
passes with ``torch.profiler`` and sums each ATen operator's self CPU time into classes:

- ``matmul``: addmm, mm, bmm, baddbmm (the products; the bias add inside addmm included);
- ``memory-bound``: every other operator that does arithmetic or moves tensors;
- ``rest``: what the pass took beyond its operators' self times (Python, autograd's engine, the
  dispatcher).

The profiler's own cost (8-15% of a pass here) lands partly in the operators' self times and
partly between them, so each measured class is printed as a range: from its profiled self time
scaled by the unprofiled over the profiled pass (all of that cost inside the operators) to the
self time as profiled (none of it); the rest runs the other way.

The model's side is ``simtune.model.compute_time``'s ``PassTime`` on the hardware profile given
(matmul, streaming, host). The top operators by self time are printed for each pass, so a class
that parts from the model can be traced to its kernels; then GPT-2's NewGELU is timed alone and
its backward's kernels listed (the counts ``simtune.model.operators.GELU_NEW_PASSES`` holds).

Run from the repository root on a quiet machine, with a profile of this machine (e.g. one
``simtune calibrate --gpus 2`` saved):

    python benchmarks/operator_breakdown.py --profile PATH > benchmarks/results/operator_breakdown.txt
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import statistics
import sys
import time

MATMULS = {"aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm"}
VIEWS = {"aten::view", "aten::reshape", "aten::t", "aten::transpose", "aten::permute", "aten::expand",
         "aten::as_strided", "aten::unsqueeze", "aten::squeeze", "aten::slice", "aten::select", "aten::detach",
         "aten::_unsafe_view", "aten::alias", "aten::split", "aten::chunk", "aten::unbind", "aten::narrow",
         "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::resolve_conj", "aten::resolve_neg",
         "aten::lift_fresh", "aten::result_type"}


def _timed(model, batch, repeats: int) -> tuple[float, float]:
    """Median seconds of the forward (loss included) and of the backward."""
    from simtune.calib.workload_measure import timed_once

    passes = [timed_once(model, batch, lambda out: out.loss, lambda: None) for _ in range(repeats)]
    return statistics.median(p[0] for p in passes), statistics.median(p[1] for p in passes)


def _profiled(model, batch, passes: int) -> dict[str, dict[str, float]]:
    """Per pass ('forward', 'backward'): seconds of each ATen operator's self CPU time per pass,
    and '<wall>' the pass's own wall time under the profiler."""
    from torch.profiler import ProfilerActivity, profile, record_function

    walls = {"forward": 0.0, "backward": 0.0}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(passes):
            t0 = time.perf_counter()
            with record_function("simtune.forward"):
                loss = model(**batch).loss
            t1 = time.perf_counter()
            with record_function("simtune.backward"):
                loss.backward()
            t2 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            walls["forward"] += t1 - t0
            walls["backward"] += t2 - t1
    spans = {e.name: [] for e in prof.events() if e.name in ("simtune.forward", "simtune.backward")}
    for e in prof.events():
        if e.name in spans:
            spans[e.name].append((e.time_range.start, e.time_range.end))
    out: dict[str, dict[str, float]] = {"forward": collections.Counter(), "backward": collections.Counter()}
    for e in prof.events():
        if not e.name.startswith("aten::"):
            continue
        start = e.time_range.start
        # autograd's backward ops run on the engine's thread, outside the record_function span
        where = "forward" if any(a <= start <= b for a, b in spans["simtune.forward"]) else "backward"
        out[where][e.name] += e.self_cpu_time_total / 1e6 / passes
    for where in out:
        out[where]["<wall>"] = walls[where] / passes
    return out


def gelu_new_alone(repeats: int) -> None:
    """GPT-2's NewGELU on its own: forward and backward ms at two sizes, against torch's one-kernel
    GELU, and the ATen kernels its backward launches (the model's GELU_NEW_PASSES)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers.activations import NewGELUActivation

    from simtune.model.operators import GELU_NEW_PASSES

    act = NewGELUActivation()
    print(f"\n## GPT-2's NewGELU alone (fp32, {torch.get_num_threads()} thread(s)); the model counts "
          f"(forward passes, backward passes, forward kernels, backward kernels) = {GELU_NEW_PASSES}")
    print("| elements | NewGELU forward | backward | backward / forward | F.gelu forward | backward |")
    print("|--:|--:|--:|--:|--:|--:|")
    for n in (2**19, 2**21):
        x = torch.randn(n, requires_grad=True)
        grad = torch.randn(n)

        def timed(fn) -> tuple[float, float]:
            forwards, backwards = [], []
            for _ in range(repeats + 3):
                t0 = time.perf_counter()
                y = fn(x)
                t1 = time.perf_counter()
                y.backward(grad)
                t2 = time.perf_counter()
                x.grad = None
                forwards.append(t1 - t0)
                backwards.append(t2 - t1)
            return statistics.median(forwards[3:]) * 1e3, statistics.median(backwards[3:]) * 1e3

        new_f, new_b = timed(act)
        one_f, one_b = timed(torch.nn.functional.gelu)
        print(f"| {n} | {new_f:.2f} | {new_b:.2f} | {new_b / new_f:.2f} | {one_f:.2f} | {one_b:.2f} |")
    x = torch.randn(2**19, requires_grad=True)
    y, grad = act(x), torch.randn(2**19)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        y.backward(grad)
    kernels = collections.Counter(e.name.removeprefix("aten::") for e in prof.events()
                                  if e.name.startswith("aten::") and e.name not in VIEWS
                                  and e.name not in ("aten::to", "aten::_to_copy", "aten::copy_", "aten::fill_",
                                                     "aten::ones_like", "aten::result_type"))
    print("  backward kernels: " + ", ".join(f"{k} x{v}" for k, v in sorted(kernels.items())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, help="a hardware profile of this machine (name or path)")
    parser.add_argument("--models", default="gpt2-tiny,bert-tiny")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--ranks", type=int, default=2, help="ranks sharing the profile's node (threads per rank)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--profiled", type=int, default=5)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import torch

    from simtune.calib.workload_measure import build_measured_model, token_batches
    from simtune.hardware import load_profile
    from simtune.model.adapters import hardware_spec, model_spec
    from simtune.model.compute_time import pass_time
    from simtune.model.inputs import TrainConfig
    from simtune.prediction.predictor import layout_hardware
    from simtune.workloads import load_workload

    profile = load_profile(args.profile)
    hardware = layout_hardware(hardware_spec(profile), args.ranks)
    threads = hardware.threads_per_rank or 1
    torch.set_num_threads(threads)
    print(f"# command: python benchmarks/operator_breakdown.py --profile {args.profile} --models {args.models} "
          f"--seq-len {args.seq_len} --micro-batch {args.micro_batch} --ranks {args.ranks}")
    print(f"# host {platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}, torch "
          f"{torch.__version__}; load average at start {os.getloadavg()[0]:.2f}; profile {profile.name}; "
          f"{threads} thread(s); ms per pass")
    config = TrainConfig(stage=0, micro_batch_size=args.micro_batch, dp_degree=1, precision="fp32")
    for name in args.models.split(","):
        workload = load_workload(name, seq_len=args.seq_len)
        spec = model_spec(workload)
        model = build_measured_model(workload, "fp32", torch.device("cpu"))
        batch = token_batches(workload, torch.device("cpu"))(args.micro_batch)
        _timed(model, batch, 5)
        forward_s, backward_s = _timed(model, batch, args.repeats)
        profiled = _profiled(model, batch, args.profiled)
        print(f"\n## {name}, {args.seq_len} tokens, micro-batch {args.micro_batch}")
        print("| pass | measured | predicted | matmul m / p | memory-bound m / p | rest m / p (model: host) |")
        print("|:--|--:|--:|--:|--:|--:|")
        for where, measured in (("forward", forward_s), ("backward", backward_s)):
            ops = profiled[where]
            wall = ops.pop("<wall>")
            matmul = sum(v for k, v in ops.items() if k in MATMULS)
            memory = sum(v for k, v in ops.items() if k not in MATMULS and k not in VIEWS)
            scale = measured / wall if wall else 1.0
            p = pass_time(spec, hardware, config, backward=where == "backward")

            def span(value: float) -> str:  # as profiled .. less the profiler's own cost in proportion
                return f"{value * scale * 1e3:.2f}..{value * 1e3:.2f}"

            rest = f"{(measured - matmul - memory) * 1e3:.2f}..{(measured - (matmul + memory) * scale) * 1e3:.2f}"
            print(f"| {where} | {measured * 1e3:.2f} | {p.total_s * 1e3:.2f} | {span(matmul)} / {p.matmul_s * 1e3:.2f} | "
                  f"{span(memory)} / {p.streaming_s * 1e3:.2f} | {rest} / {p.host_s * 1e3:.2f} |")
            profiled[where]["<scale>"] = scale
        for where in ("forward", "backward"):
            ops = profiled[where]
            scale = ops.pop("<scale>")
            top = sorted(((v, k) for k, v in ops.items() if k not in VIEWS), reverse=True)[:args.top]
            print(f"  {where} top operators (self ms, scaled): "
                  + ", ".join(f"{k.removeprefix('aten::')} {v * scale * 1e3:.2f}" for v, k in top))
    gelu_new_alone(args.repeats)
    print(f"\n# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
