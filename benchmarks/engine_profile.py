"""Where DeepSpeed's engine spends a training step on CPU: torch.profiler over real engines.

Run from the repository root (no GPU needed; DS_ACCELERATOR=cpu is set here):

    python benchmarks/engine_profile.py > benchmarks/results/engine_profile.txt
    python benchmarks/engine_profile.py --case gpt2:32:1:2     # one case of your own
    python benchmarks/engine_profile.py --case gpt2:32:1:2 --faults-in scaled_global_norm   # a call's pages
    python benchmarks/engine_profile.py --top 40 --case bert-tiny:128:0:1:4 --case bert-tiny:128:3:1:4 \
        --case bert-tiny:128:0:2:4 --case bert-tiny:128:3:2:4 > benchmarks/results/engine_profile_bert_threads.txt

For each case (model, sequence length, ZeRO stage, processes) it launches simtune's training
program's model and DeepSpeed's engine through the DeepSpeed launcher, trains three steps
untimed, profiles two (each engine call under its own label), then times three more without the
profiler, and prints rank 0's forward / backward / step times, the memory it touched first in each
call (its minor page faults: what the model's memory mapped afresh should count, docs/cost-model.md
3.5; the backward's gradient reduction and the collectives inside it also apart) and the
operators that took the most time. The cases are the reference's heavy twin (gpt2-tiny-heavy: its extra parameters in one
8.4M-element position table) at ZeRO-0 and ZeRO-1 and gpt2 at ZeRO-0, on two processes: what the
twin's engines cost per parameter and what a large model's cost (docs/cost-model.md 3.3, 3.5).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MICRO_BATCH = 2
"""A case's micro-batch size unless it gives one."""
CASES = [("gpt2-tiny-heavy", 64, 0, 2, MICRO_BATCH, 1), ("gpt2-tiny-heavy", 64, 1, 2, MICRO_BATCH, 1),
         ("gpt2", 32, 0, 2, MICRO_BATCH, 1)]
TOP_OPS = 12
TOP_SHAPES = 6
COPYING = ("aten::cat", "aten::copy_", "aten::add_", "aten::zero_", "aten::fill_")


PAGE = os.sysconf("SC_PAGE_SIZE")


def minor_faults() -> int:
    """This process's minor page faults so far: pages it touched first (mapped afresh)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def counted(call, into: list[dict[str, int]], key: str, when=lambda: True):  # type: ignore[no-untyped-def]
    """``call``, adding the pages each call of it touches first to ``into[-1][key]`` (the step
    being timed) while ``when()`` holds."""
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        before = minor_faults()
        try:
            return call(*args, **kwargs)
        finally:
            if into and when():
                into[-1][key] = into[-1].get(key, 0) + minor_faults() - before
    return wrapper


REDUCTION, COLLECTIVES = "reduction", "collectives"


def count_reduction_faults(engine: object, into: list[dict[str, int]]) -> None:
    """Count the pages the engine's gradient reduction touches first (:data:`REDUCTION`), and
    those the collectives it calls touch (deepspeed.comm's all_reduce, reduce_scatter and
    allgather into one tensor: :data:`COLLECTIVES`; not the step's allgather), in ``into[-1]``."""
    from deepspeed import comm

    reducing = [False]
    reduce = engine.allreduce_gradients  # type: ignore[attr-defined]

    def reduction(*args, **kwargs):  # type: ignore[no-untyped-def]
        reducing[0] = True
        try:
            return reduce(*args, **kwargs)
        finally:
            reducing[0] = False

    engine.allreduce_gradients = counted(reduction, into, REDUCTION)  # type: ignore[attr-defined]
    for name in ("all_reduce", "reduce_scatter_tensor", "all_gather_into_tensor"):
        setattr(comm, name, counted(getattr(comm, name), into, COLLECTIVES, when=lambda: reducing[0]))


FAULTS_IN_ENV = "SIMTUNE_PROFILE_FAULTS_IN"
"""How main passes ``--faults-in`` to the ranks (the training program's arguments are its own)."""
TOP_OPS_ENV = "SIMTUNE_PROFILE_TOP_OPS"
"""How main passes ``--top``, the operators rank 0 lists (:data:`TOP_OPS` unless set)."""


def count_faults_in(engine: object, names: list[str], into: list[dict[str, int]]) -> None:
    """Count the pages each named call touches first in ``into[-1][name]``: a method of the
    engine's optimizer (``scaled_global_norm``) or a module's function (``module.path:function``,
    replaced in that module, so its callers there see the counted one)."""
    import importlib

    for name in names:
        module, _, function = name.rpartition(":")
        owner = importlib.import_module(module) if module else getattr(engine, "optimizer")
        call = getattr(owner, function, None)
        if call is None:
            raise SystemExit(f"--faults-in {name}: {type(owner).__name__} has no {function!r}")
        setattr(owner, function, counted(call, into, name))


def median_mib(pages: list[int]) -> float:
    """The median of a few steps' page counts, in MiB."""
    return sorted(pages)[len(pages) // 2] * PAGE / 2**20


def rank_program(argv: list[str]) -> int:
    """One rank: build, train, profile; rank 0 prints its table."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from simtune.workloads.train import (SyntheticTokens, _ensure_process_group_env, build_training_model,
                                         limit_threads, load_workload, parse_args, read_ds_config, with_optimizer)

    args = parse_args(argv)
    threads = limit_threads()
    workload = load_workload(args.model, seq_len=args.seq_len)
    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator
    from torch.profiler import ProfilerActivity, profile, record_function

    ds_config, _ = with_optimizer(read_ds_config(args.deepspeed), get_accelerator().device_name())
    _ensure_process_group_env()
    deepspeed.init_distributed()
    rank = torch.distributed.get_rank()
    model, keep_alive = build_training_model(workload, ds_config, False)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=ds_config)
    data = SyntheticTokens(workload, engine.train_micro_batch_size_per_gpu(), engine.device, seed=2 + rank)

    faults: list[tuple[int, int, int]] = []
    call_faults: list[dict[str, int]] = []  # per step: the pages the counted calls touch first
    count_reduction_faults(engine, call_faults)
    names = [n for n in os.environ.get(FAULTS_IN_ENV, "").split(",") if n]
    count_faults_in(engine, names, call_faults)

    gas = engine.gradient_accumulation_steps()

    def step() -> tuple[float, float, float]:
        """One optimizer step: its micro-steps' forward, backward and step calls, each summed over
        them (DeepSpeed's loop calls ``step`` after every backward; it updates at the boundary)."""
        call_faults.append({})
        times, counts = [0.0, 0.0, 0.0], [0, 0, 0]
        for _ in range(gas):
            f0, t0 = minor_faults(), time.perf_counter()
            loss = engine(**data.next()).loss
            f1, t1 = minor_faults(), time.perf_counter()
            engine.backward(loss)
            f2, t2 = minor_faults(), time.perf_counter()
            engine.step()
            f3, t3 = minor_faults(), time.perf_counter()
            for i, (start, end, fa, fb) in enumerate(((t0, t1, f0, f1), (t1, t2, f1, f2), (t2, t3, f2, f3))):
                times[i] += end - start
                counts[i] += fb - fa
        faults.append((counts[0], counts[1], counts[2]))
        return times[0], times[1], times[2]

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(2 * gas):
            with record_function("engine forward"):
                loss = engine(**data.next()).loss
            with record_function("engine backward"):
                engine.backward(loss)
            with record_function("engine step"):
                engine.step()
    timed = [step() for _ in range(3)]
    if rank == 0:
        fwd, bwd, stp = (sorted(t[i] for t in timed)[1] * 1e3 for i in range(3))
        params = sum(p.numel() for p in model.parameters())
        print(f"{args.model} (seq {args.seq_len}, {params:,} parameters), ZeRO-{ds_config['zero_optimization']['stage']}, "
              f"micro-batch {engine.train_micro_batch_size_per_gpu()}{f' x {gas} micro-steps' if gas > 1 else ''}, "
              f"{torch.distributed.get_world_size()} processes "
              f"of {threads} thread(s): median of 3 steps forward {fwd:.1f} ms, backward {bwd:.1f} ms, step {stp:.1f} ms")
        mib = [median_mib([f[i] for f in faults[-3:]]) for i in range(3)]
        print(f"pages first touched (this rank's minor faults x {PAGE // 1024} KiB, median of the 3 timed steps): "
              f"forward {mib[0]:.0f} MiB, backward {mib[1]:.0f} MiB, step {mib[2]:.0f} MiB")
        within = {key: median_mib([f.get(key, 0) for f in call_faults[-3:]]) for key in (REDUCTION, COLLECTIVES, *names)}
        print(f"  of the backward's: gradient reduction (engine.allreduce_gradients) {within[REDUCTION]:.0f} MiB, "
              f"of which inside the collectives {within[COLLECTIVES]:.0f} MiB")
        if names:
            print("  in named calls (median per step): " + ", ".join(f"{n} {within[n]:.0f} MiB" for n in names))
        print("operators by their own time over the 2 profiled steps (the engine calls' own rows are the time spent "
              "outside operators: Python, waits, collectives run outside torch):")
        top = int(os.environ.get(TOP_OPS_ENV) or TOP_OPS)
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
        for e in rows:
            print(f"  {e.key:<44} {e.self_cpu_time_total / 1e3 / 2:9.1f} ms per step  {e.count // 2:5d} calls per step")
        print(f"the {TOP_SHAPES} largest calls of the copying operators by input shapes (first shapes shown):")
        copies = [e for e in prof.key_averages(group_by_input_shape=True) if e.key in COPYING]
        for e in sorted(copies, key=lambda e: e.self_cpu_time_total, reverse=True)[:TOP_SHAPES]:
            shapes = str(e.input_shapes)[:60]
            print(f"  {e.key:<12} {shapes:<60} {e.self_cpu_time_total / 1e3 / 2:9.1f} ms per step  "
                  f"{e.count // 2:5d} calls per step")
        print(flush=True)
    del keep_alive
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


def parse_case(text: str) -> tuple[str, int, int, int, int, int]:
    """MODEL:SEQ:STAGE:RANKS[:MICRO_BATCH[:GAS]] (:data:`MICRO_BATCH` and one micro-step per
    optimizer step unless given)."""
    model, seq, stage, ranks, *rest = text.split(":")
    if len(rest) > 2:
        raise ValueError(f"a case has at most six fields, not {text!r}")
    mbs = int(rest[0]) if rest else MICRO_BATCH
    return model, int(seq), int(stage), int(ranks), mbs, int(rest[1]) if len(rest) > 1 else 1


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", type=parse_case, metavar="MODEL:SEQ:STAGE:RANKS[:MBS[:GAS]]",
                        help="a case to profile instead of the default ones (repeatable), e.g. gpt2:32:1:2 "
                             "(micro-batch 2 unless a fifth field gives it; a sixth, the micro-steps per "
                             "optimizer step, 1 unless given)")
    parser.add_argument("--faults-in", action="append", default=[], metavar="NAME",
                        help="also count the pages a call touches first (repeatable): a method of the engine's "
                             "optimizer, e.g. scaled_global_norm, or module:function, e.g. "
                             "deepspeed.runtime.zero.stage_1_and_2:all_gather_dp_groups")
    parser.add_argument("--top", type=int, default=TOP_OPS, help=f"operators listed per case (default {TOP_OPS})")
    args = parser.parse_args(argv)
    print(f"# command: python benchmarks/engine_profile.py{''.join(' ' + a for a in argv)}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{datetime.datetime.now().isoformat(timespec='seconds')}; load average {os.getloadavg()[0]:.2f}\n")
    env = dict(os.environ, DS_ACCELERATOR="cpu", **{FAULTS_IN_ENV: ",".join(args.faults_in), TOP_OPS_ENV: str(args.top)})
    deepspeed = Path(sys.executable).with_name("deepspeed")
    for model, seq, stage, ranks, mbs, gas in args.case or CASES:
        with tempfile.TemporaryDirectory() as tmp, socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            config = Path(tmp) / "ds_config.json"
            config.write_text(json.dumps({
                "train_micro_batch_size_per_gpu": mbs, "gradient_accumulation_steps": gas,
                "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.0, "torch_adam": True}},
                "zero_optimization": {"stage": stage}}))
            sock.close()
            run = subprocess.run([str(deepspeed), "--num_accelerators", str(ranks), "--master_port", str(port),
                                  __file__, "--rank-program", "--model", model, "--seq-len", str(seq),
                                  "--deepspeed", str(config)], env=env, capture_output=True, text=True, timeout=900)
        table = [line for line in run.stdout.splitlines() if not line.startswith(("[20", "USDT"))
                 and ("ms" in line or line.startswith(("operators", "pages", "  of the", "  in named")))]
        if run.returncode != 0 or not table:
            print(f"{model} ZeRO-{stage} on {ranks} processes failed (exit {run.returncode}): "
                  f"{(run.stderr.strip().splitlines() or ['no output'])[-1]}\n")
            continue
        print("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    if "--rank-program" in sys.argv:
        sys.argv.remove("--rank-program")
        sys.exit(rank_program(sys.argv[1:]))
    sys.exit(main(sys.argv[1:]))
