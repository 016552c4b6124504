"""Measure many DeepSpeed engines in one process: step time and peak memory per configuration.

    python benchmarks/gpu/sweep.py PLAN.json GROUP RESULTS.jsonl [--steps N] [--warmup N]
        [--largest-attempts N]

Runs the plan's cases of GROUP (``main``: stages 0-2; ``stage3``) one after another as a single
rank (world size 1, the process group set up here), appending one JSON line per case to
RESULTS.jsonl as soon as it is measured, so a process killed at its deadline keeps what it did.
A case already in RESULTS.jsonl is skipped (a rerun continues).

Regime, and why: the model is built (as the built-in training program builds it: random weights,
partitioned under ZeRO-3, checkpointing switched on when asked) and ``deepspeed.initialize`` runs
inside the memory reading; then ``warmup`` optimizer steps (allocations, kernel choice, the first
steps of Adam), then ``steps`` timed steps, each synchronised on the device and timed with
``time.perf_counter`` boundary to boundary. Peak memory: CUDA ``max_memory_allocated`` and
``max_memory_reserved`` after ``reset_peak_memory_stats`` with the cache emptied, less what was
allocated before; on CPU the resident high-water mark (the rehearsal's reading). Between cases the
engine is deleted, garbage collected and the cache emptied. An out-of-memory error is a result
(``oom``), as is any other failure (``failed`` with the error's last line).

After its timed steps a case runs ``--split-steps`` more with the device synchronised around
each engine call (forward, backward, step: the model's split), and the first case of each
process (``--profile-first``) two more under torch.profiler: per phase its host and device time,
and the operators with the most host and device time.

A ``largest`` case starts at the predicted largest size and runs two steps per size: upward
(doubling) until a size fails, then bisection, within ``--largest-attempts`` sizes in all.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _entry in (str(HERE), str(ROOT)):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

from cases import render_for  # noqa: E402


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan")
    parser.add_argument("group")
    parser.add_argument("results")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--largest-attempts", type=int, default=6)
    parser.add_argument("--split-steps", type=int, default=2,
                        help="steps timed per engine call after the timed steps (0: none)")
    parser.add_argument("--profile-first", type=int, default=1,
                        help="profile the first N configurations this process measures (torch.profiler)")
    return parser.parse_args(argv)


class Memory:
    """Peak memory above the starting point: allocated and reserved on CUDA, resident on CPU."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.cuda = device.type == "cuda"

    def __enter__(self) -> "Memory":
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()
            self.start = self.torch.cuda.memory_allocated()
            self.start_reserved = self.torch.cuda.memory_reserved()
        else:
            from simtune.calib.workload_measure import PeakMemory

            self._cpu = PeakMemory(self.device).__enter__()
        return self

    def read(self) -> dict[str, Any]:
        if self.cuda:
            self.torch.cuda.synchronize()
            return {"kind": "cuda", "allocated_bytes": self.torch.cuda.max_memory_allocated() - self.start,
                    "reserved_bytes": self.torch.cuda.max_memory_reserved() - self.start_reserved}
        self._cpu.__exit__(None, None, None)
        return {"kind": "rss", "allocated_bytes": self._cpu.peak_bytes, "reserved_bytes": None}

    def __exit__(self, *exc: Any) -> None:
        pass


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def release() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


PHASES = ("forward", "backward", "step")
"""The engine calls of one optimizer step, as simtune's model splits its time."""


def optimizer_step(engine: Any, data: Any, around: Optional[Callable[[str], Any]] = None,
                   autocast: Optional[Callable[[], Any]] = None) -> None:
    """One optimizer step (every accumulation micro-step's forward, backward and step), each
    engine call inside ``around(phase)`` (a context manager) when given, the forward inside
    ``autocast()`` when given (as the Hugging Face Trainer runs its mixed precision)."""
    state: dict[str, Any] = {}

    def forward() -> None:
        with (autocast() if autocast is not None else contextlib.nullcontext()):
            state.update(loss=engine(**data.next()).loss)

    calls = {"forward": forward, "backward": lambda: engine.backward(state["loss"]), "step": engine.step}
    for _ in range(engine.gradient_accumulation_steps()):
        for phase in PHASES:
            if around is None:
                calls[phase]()
            else:
                with around(phase):
                    calls[phase]()


def split_step(engine: Any, data: Any, sync: Callable[[], None],
               autocast: Optional[Callable[[], Any]] = None) -> dict[str, float]:
    """One optimizer step with the device synchronised around each engine call: seconds per
    phase (summed over accumulation), the same split as the model's forward, backward and step
    phases. Synchronising removes the overlap of one call's host work with the last's kernels,
    so the parts add up to a little more than a step run freely."""
    spent = dict.fromkeys(PHASES, 0.0)

    @contextlib.contextmanager
    def timed(phase: str) -> Iterator[None]:
        sync()
        t0 = time.perf_counter()
        yield
        sync()
        spent[phase] += time.perf_counter() - t0

    optimizer_step(engine, data, timed, autocast)
    return spent


def profile_steps(engine: Any, data: Any, sync: Callable[[], None], steps: int = 2, top: int = 15,
                  autocast: Optional[Callable[[], Any]] = None) -> dict[str, Any]:
    """torch.profiler over ``steps`` optimizer steps, each engine call in a named range: per
    phase its host and device milliseconds per step, and the operators that take the most host
    time and the most device time (self times, per step). Where the fixed cost of a step comes
    from: host dispatch, a synchronisation, or device work."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    sync()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            optimizer_step(engine, data, lambda phase: record_function(f"simtune.{phase}"), autocast)
        sync()

    def ms(event: Any, *names: str) -> float:
        for name in names:
            value = getattr(event, name, None)
            if value is not None:
                return round(float(value) / 1e3 / steps, 3)
        return 0.0

    events = prof.key_averages()
    phases = {e.key.split(".", 1)[1]: {"host_ms": ms(e, "cpu_time_total"),
                                       "device_ms": ms(e, "device_time_total", "cuda_time_total")}
              for e in events if e.key.startswith("simtune.")}
    ops = [e for e in events if not e.key.startswith("simtune.") and not e.key.startswith("ProfilerStep")]

    def ranked(*names: str) -> list[dict[str, Any]]:
        rows = sorted(ops, key=lambda e: ms(e, *names), reverse=True)[:top]
        return [{"name": e.key[:120], "calls_per_step": round(e.count / steps, 1), "ms_per_step": ms(e, *names)}
                for e in rows if ms(e, *names) > 0]

    return {"steps": steps, "phases": phases,
            "operators_per_step": round(sum(e.count for e in ops) / steps),
            "top_host": ranked("self_cpu_time_total"),
            "top_device": ranked("self_device_time_total", "self_cuda_time_total")}


def run_engine(workload: Any, ds_config: dict, checkpointing: bool, steps: int, warmup: int,
               device: Any, sync: Callable[[], None], split_steps: int = 0,
               profile: bool = False, autocast_dtype: Optional[str] = None) -> dict[str, Any]:
    """Build one engine, run ``warmup`` then ``steps`` optimizer steps; its times and memory;
    then ``split_steps`` steps timed per engine call, and with ``profile`` two profiled steps.
    With ``autocast_dtype`` every forward runs inside ``torch.autocast`` in that dtype."""
    import deepspeed
    import torch

    autocast = None
    if autocast_dtype is not None:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[autocast_dtype]
        autocast = lambda: torch.autocast(device.type, dtype=dtype)  # noqa: E731

    from simtune.workloads.train import SyntheticTokens, build_training_model, with_optimizer

    ds_config, _ = with_optimizer(ds_config, device.type)  # torch's Adam on CPU, as the built-in program
    engine = model = keep_alive = None
    try:
        with Memory(device) as memory:
            started = time.perf_counter()
            model, keep_alive = build_training_model(workload, ds_config, checkpointing)
            engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters()
                                                                                if p.requires_grad],
                                              config=ds_config)
            init_s = time.perf_counter() - started
            data = SyntheticTokens(workload, engine.train_micro_batch_size_per_gpu(), engine.device, seed=7)
            times = []
            for index in range(warmup + steps):
                sync()
                t0 = time.perf_counter()
                optimizer_step(engine, data, autocast=autocast)
                sync()
                if index >= warmup:
                    times.append(time.perf_counter() - t0)
            peak = memory.read()
        result: dict[str, Any] = {"status": "ok", "step_s": statistics.median(times) if times else None,
                                  "step_times_s": times, "init_s": init_s, "peak": peak}
        if split_steps:
            splits = [split_step(engine, data, sync, autocast) for _ in range(split_steps)]
            result["split_s"] = {phase: statistics.median(s[phase] for s in splits) for phase in PHASES}
        if profile:
            try:
                result["profile"] = profile_steps(engine, data, sync, autocast=autocast)
            except Exception as exc:  # noqa: BLE001 - a profiler that cannot run must not cost the case
                result["profile"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        return result
    finally:
        del engine, model, keep_alive
        release()


def outcome_of(exc: BaseException) -> dict[str, Any]:
    last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
    return {"status": "oom" if is_oom(exc) else "failed", "reason": f"{type(exc).__name__}: {last}"}


def measure(workload: Any, row: dict, size: int, args: argparse.Namespace, device: Any, sync: Callable,
            steps: Optional[int] = None, warmup: Optional[int] = None, split_steps: int = 0,
            profile: bool = False) -> dict[str, Any]:
    config = render_for(row["ds_config"], size)
    try:
        result = run_engine(workload, config, row["case"]["checkpointing"], args.steps if steps is None else steps,
                            args.warmup if warmup is None else warmup, device, sync, split_steps, profile,
                            row.get("autocast_dtype"))
    except Exception as exc:  # noqa: BLE001 - every failure is a recorded result
        result = outcome_of(exc)
        if result["status"] == "failed":
            result["trace"] = traceback.format_exc(limit=3)[-1500:]
    # Outside the handler: the exception's frames (and the tensors they hold) are gone by now.
    release()
    result["micro_batch_size"] = size
    return result


def find_largest(workload: Any, row: dict, args: argparse.Namespace, device: Any, sync: Callable) -> dict:
    """Sizes tried from the predicted largest: doubling while they run, then bisection."""
    tried: dict[int, dict] = {}

    def attempt(size: int) -> bool:
        tried[size] = measure(workload, row, size, args, device, sync, steps=1, warmup=1)
        print(f"sweep: {row['key']} mbs {size}: {tried[size]['status']}", flush=True)
        return tried[size]["status"] == "ok"

    low, high = 0, None  # largest known to run, smallest known to fail
    size = row["micro_batch_size"]
    while len(tried) < args.largest_attempts:
        if attempt(size):
            low = size
        else:
            high = size
            if tried[size]["status"] != "oom":
                break  # a failure that is not memory says nothing about the size
        if high is None:
            size *= 2
        elif low == 0:
            size = max(1, high // 2)
            if size in tried:
                break
        elif high - low <= max(1, low // 16):
            break
        else:
            size = (low + high) // 2
    best = tried.get(low, {})
    return {"status": "ok" if low else "failed", "measured_largest": low, "smallest_failing": high,
            "attempts": [{"micro_batch_size": s, "status": r["status"], "step_s": r.get("step_s"),
                          "peak": r.get("peak"), "reason": r.get("reason")} for s, r in sorted(tried.items())],
            "step_s": best.get("step_s"), "peak": best.get("peak"), "micro_batch_size": low}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    plan = json.loads(Path(args.plan).read_text())
    rows = [r for r in plan["cases"] if r["group"] == args.group]
    results = Path(args.results)
    done = set()
    if results.exists():
        done = {json.loads(line)["key"] for line in results.read_text().splitlines() if line.strip()}

    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator

    from simtune.calib.workload_measure import device_sync
    from simtune.workloads import load_workload
    from simtune.workloads.train import _ensure_process_group_env, limit_threads

    limit_threads()
    _ensure_process_group_env()
    deepspeed.init_distributed()
    get_accelerator().set_device(0)
    device = torch.device(get_accelerator().device_name(0))
    sync = device_sync(device)
    profiled = 0
    for row in rows:
        if row["key"] in done:
            continue
        case = row["case"]
        workload = load_workload(case["preset"], seq_len=case["seq_len"])
        if case["offload_optimizer"] != "none" and plan.get("cpu_adam") is False:
            result = {"status": "skipped", "reason": "DeepSpeed's CPUAdam op was not built",
                      "micro_batch_size": row["micro_batch_size"]}
        elif case["largest"]:
            result = find_largest(workload, row, args, device, sync)
        else:
            result = measure(workload, row, row["micro_batch_size"], args, device, sync,
                             split_steps=args.split_steps, profile=profiled < args.profile_first)
            profiled += 1
        result["key"] = row["key"]
        with results.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")
        print(f"sweep: {row['key']}: {result['status']}"
              + (f" {result['step_s'] * 1e3:.1f} ms" if result.get("step_s") else ""), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip teardown: ZeRO-3's leftover state can abort the interpreter at exit
