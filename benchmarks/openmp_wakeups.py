"""Why ZeRO-3 costs twice as much per step on a CPU rank with two threads as with one.

torch's CPU kernels run their parallel regions on GNU OpenMP (libgomp), whose idle workers spin
for about 300,000 iterations before they sleep, unless the process has more OpenMP threads than
CPUs: then every wait spins 100 iterations and sleeps (``do_spin`` in libgomp's
config/linux/wait.h; the counts set in env.c for an unset OMP_WAIT_POLICY). A gloo collective
that runs tensor operations on the process group's own thread starts a second OpenMP team there,
which stays alive with that thread. From then on every parallel region of the training thread
wakes its worker from a futex sleep. A rank with one thread has no worker to wake.

Each case in a fresh process:

1. A 65,536-element copy at two threads, alone and once a second thread holds an OpenMP team,
   with a gap of busy Python between copies (the median of 400).
1b. Matrix products of bert-tiny's linear layers (and one larger) at two threads, alone and after
   a gloo all-gather, and at one thread: what waking the pool costs a product, which the
   calibration (simtune.calib.thread_pool) times with the copy only.
1c. The calibration's own reading (simtune.calib.thread_pool.wake_cost, as a calibration launch
   runs it on rank 0): the copy and three products alone and then throttled in one process, the
   rate the model charges a parallel kernel and a product; one row per fresh process.
2. One rank (no launcher, train.py's model, data and loop) of bert-tiny at 128 tokens,
   micro-batch 4, ZeRO stage 0 and 3, at one and two threads, with OpenMP's default wait policy
   and with OMP_WAIT_POLICY=ACTIVE (workers spin 1,000 iterations when throttled): milliseconds
   per step over 40 steps after 10, and how often per step the training thread and the busiest
   other thread went to sleep (voluntary context switches, /proc/self/task/*/status).

Run from the repository root (no GPU needed; DS_ACCELERATOR=cpu is set here):

    python benchmarks/openmp_wakeups.py --rounds 2 > benchmarks/results/openmp_wakeups.txt
    python benchmarks/openmp_wakeups.py --rounds 2 --part 1c > benchmarks/results/openmp_wakeups_calibration.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from simtune.calib.thread_pool import ELEMENTS, timed_copies

MODEL, SEQ_LEN, MICRO_BATCH = "bert-tiny", 128, 4
WARM_UP, TIMED = 10, 40
GAPS_US = (0, 20, 100, 1000, 3000)


def _switches() -> dict[int, tuple[str, int]]:
    """Each thread of this process: its name and voluntary context switches so far."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            status = (task / "status").read_text().splitlines()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        count = next(int(line.split()[1]) for line in status if line.startswith("voluntary_ctxt_switches"))
        out[int(task.name)] = (name, count)
    return out


COPY_CASES = ("alone", "second_thread", "all_gather", "reduce_scatter", "all_reduce")
"""What runs once before the copies: nothing; a parallel region on a second Python thread that
then waits (its team stays alive); or one gloo collective of 65,536 elements in a world of one."""


def copy_case(kind: str) -> dict[str, float]:
    """Part 1, in this (fresh) process at two threads: the copy's median per gap, in us."""
    import torch

    torch.set_num_threads(2)
    x, y = torch.ones(ELEMENTS), torch.ones(ELEMENTS)
    release = threading.Event()
    holder = None
    if kind == "second_thread":
        def second_team() -> None:
            torch.ones(ELEMENTS).add_(1)  # a parallel region on this thread: libgomp gives it a team
            release.wait()

        holder = threading.Thread(target=second_team)
        holder.start()
        time.sleep(0.2)
    elif kind != "alone":
        import torch.distributed as dist

        from simtune.runner.launcher import free_port

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        dist.init_process_group("gloo", rank=0, world_size=1)
        tensor, out = torch.ones(ELEMENTS), torch.empty(ELEMENTS)
        {"all_gather": lambda: dist.all_gather_into_tensor(out, tensor),
         "reduce_scatter": lambda: dist.reduce_scatter_tensor(out, tensor),
         "all_reduce": lambda: dist.all_reduce(tensor)}[kind]()
    result = {str(gap): statistics.median(timed_copies(x, y, 400, (gap * 1e-6,))) * 1e6 for gap in GAPS_US}
    result["threads"] = len(os.listdir("/proc/self/task"))
    release.set()
    if holder is not None:
        holder.join()
    return result


PRODUCT_SHAPES = ((512, 128, 128), (512, 128, 512), (512, 512, 128), (512, 512, 512))
"""(rows, depth, cols) of the products of part 1b: bert-tiny's linear layers at micro-batch 4 and 128
tokens (512 rows; hidden 128, MLP 512), and a larger one."""
PRODUCT_GAPS_S = (20e-6, 200e-6)


def product_case(kind: str) -> dict[str, dict[str, float]]:
    """Part 1b, in this (fresh) process: each product's median seconds at two threads, before
    (``alone``) or after (``all_gather``) a gloo all-gather in a world of one, and at one thread."""
    import torch

    from simtune.calib.thread_pool import timed_calls

    torch.set_num_threads(2)
    operands = {f"{r}x{d}x{c}": (torch.randn(r, d), torch.randn(c, d)) for r, d, c in PRODUCT_SHAPES}
    if kind == "all_gather":
        import torch.distributed as dist

        from simtune.runner.launcher import free_port

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        dist.init_process_group("gloo", rank=0, world_size=1)
        dist.all_gather_into_tensor(torch.empty(ELEMENTS), torch.ones(ELEMENTS))

    def medians() -> dict[str, float]:
        out = {}
        for name, (a, w) in operands.items():
            timed_calls(lambda: torch.mm(a, w.t()), 30, PRODUCT_GAPS_S)
            out[name] = statistics.median(timed_calls(lambda: torch.mm(a, w.t()), 300, PRODUCT_GAPS_S))
        return out

    two = medians()
    torch.set_num_threads(1)
    return {"two_threads": two, "one_thread": medians()}


def calibration_case() -> dict:
    """Part 1c, in this (fresh) process: ``wake_cost`` on a gloo world of one, as rank 0 of a
    calibration launch runs it (full counts, not ``--quick``)."""
    import torch.distributed as dist

    from simtune.calib.device import current_device
    from simtune.calib.thread_pool import wake_cost
    from simtune.runner.launcher import free_port

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    result = wake_cost(dist, current_device(0), 0, quick=False)
    if result is None:
        raise SystemExit("the calibration times no wake-up here (one usable core, or not a CPU)")
    return result


def engine_case(stage: int, threads: int) -> dict:
    """Part 2, in this (fresh) process: one rank of the built-in program's model and loop."""
    os.environ["DS_ACCELERATOR"] = "cpu"
    import torch

    torch.set_num_threads(threads)
    import deepspeed

    from simtune.workloads import DEFAULT_OPTIMIZER, load_workload
    from simtune.workloads import train

    config = {"train_micro_batch_size_per_gpu": MICRO_BATCH, "gradient_accumulation_steps": 1,
              "optimizer": DEFAULT_OPTIMIZER, "zero_optimization": {"stage": stage},
              "steps_per_print": 10**9}
    workload = load_workload(MODEL, seq_len=SEQ_LEN)
    port = train._ensure_process_group_env()
    deepspeed.init_distributed()
    model, keep_alive = train.build_training_model(workload, config, False)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()), config=config)
    data = train.SyntheticTokens(workload, MICRO_BATCH, engine.device, seed=1)
    batches = [data.next() for _ in range(WARM_UP + TIMED)]

    def step(batch: dict) -> None:
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()

    for batch in batches[:WARM_UP]:
        step(batch)
    before = _switches()
    started = time.perf_counter()
    for batch in batches[WARM_UP:]:
        step(batch)
    seconds = time.perf_counter() - started
    after = _switches()
    main_id = threading.get_native_id()
    others = [(after[t][1] - before[t][1], after[t][0]) for t in after if t in before and t != main_id]
    busiest = max(others, default=(0, ""))
    del keep_alive
    torch.distributed.destroy_process_group()
    if port is not None:
        train._remove_shared_memory_buffers(port)
    return {"ms_per_step": seconds / TIMED * 1e3,
            "main_sleeps_per_step": (after[main_id][1] - before[main_id][1]) / TIMED,
            "busiest_other_sleeps_per_step": busiest[0] / TIMED, "busiest_other_name": busiest[1],
            "threads": len(after)}


def _run(args: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"case {args} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


PARTS = ("1", "1b", "1c", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every case (default 2)")
    parser.add_argument("--case", nargs=2, metavar=("STAGE", "THREADS"), type=int, help=argparse.SUPPRESS)
    parser.add_argument("--copy", choices=COPY_CASES, help=argparse.SUPPRESS)
    parser.add_argument("--products", choices=("alone", "all_gather"), help=argparse.SUPPRESS)
    parser.add_argument("--calibration", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=PARTS, action="append",
                        help="run only these parts (default: all; 1c runs 2 x rounds + 1 processes)")
    args = parser.parse_args(argv)
    if args.calibration:
        print(json.dumps(calibration_case()))
        return 0
    if args.copy:
        print(json.dumps(copy_case(args.copy)))
        return 0
    if args.products:
        print(json.dumps(product_case(args.products)))
        return 0
    if args.case:
        print(json.dumps(engine_case(*args.case)))
        return 0

    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    base["DS_ACCELERATOR"] = "cpu"
    parts = args.part or list(PARTS)
    print(f"# command: python benchmarks/openmp_wakeups.py --rounds {args.rounds}"
          + "".join(f" --part {p}" for p in args.part or ()))
    print(f"# host {platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"load average at start {os.getloadavg()[0]:.2f}; nothing else running")

    if "1" in parts:
        copy_part(args.rounds, base)
    if "1b" in parts:
        product_part(args.rounds, base)
    if "1c" in parts:
        calibration_part(2 * args.rounds + 1, base)
    if "2" in parts:
        engine_part(args.rounds, base)
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


def copy_part(rounds: int, base: dict[str, str]) -> None:
    copies = {kind: [_run(["--copy", kind], base) for _ in range(rounds)] for kind in COPY_CASES}
    print(f"\n## 1. A {ELEMENTS:,}-element copy at 2 threads: median us over 400, one row per process\n")
    print("| run once before the copies | threads in the process | "
          + " | ".join(f"busy gap {g} us" for g in GAPS_US) + " |")
    print("|:--|--:|" + "--:|" * len(GAPS_US))
    labels = {"alone": "nothing", "second_thread": "a parallel region on a second thread, which then waits",
              "all_gather": f"gloo all_gather_into_tensor of {ELEMENTS:,} elements (world of one)",
              "reduce_scatter": f"gloo reduce_scatter_tensor of {ELEMENTS:,} elements (world of one)",
              "all_reduce": f"gloo all_reduce of {ELEMENTS:,} elements (world of one)"}
    for kind in COPY_CASES:
        for c in copies[kind]:
            print(f"| {labels[kind]} | {c['threads']:.0f} | " + " | ".join(f"{c[str(g)]:.1f}" for g in GAPS_US) + " |")


def product_part(rounds: int, base: dict[str, str]) -> None:
    products = {kind: [_run(["--products", kind], base) for _ in range(rounds)] for kind in ("alone", "all_gather")}
    print("\n## 1b. Matrix products at 2 threads, alone and after a gloo all-gather (world of one), and at 1 thread: "
          "median us over 300, busy gaps of 20 and 200 us in turn; one row per pair of processes\n")
    print("| product (rows x depth x cols) | 1 thread | 2 threads alone | 2 threads after the all-gather | "
          "after less alone |")
    print("|:--|--:|--:|--:|--:|")
    for alone, after in zip(products["alone"], products["all_gather"]):
        for name, seconds in alone["two_threads"].items():
            throttled = after["two_threads"][name]
            print(f"| {name} | {alone['one_thread'][name] * 1e6:.1f} | {seconds * 1e6:.1f} | {throttled * 1e6:.1f} | "
                  f"{(throttled - seconds) * 1e6:+.1f} |")


def calibration_part(processes: int, base: dict[str, str]) -> None:
    from simtune.calib.thread_pool import PRODUCT_SHAPES
    from simtune.calibration.build import thread_pool_wake

    print(f"\n## 1c. The calibration's reading (simtune.calib.thread_pool.wake_cost, full counts), at 2 threads: "
          f"throttled less alone, medians in us; one row per process\n")
    names = [f"{r}x{d}x{c}" for r, d, c in PRODUCT_SHAPES]
    print("| copy alone | copy's wake | " + " | ".join(f"{n} alone | {n}'s wake" for n in names)
          + " | products' wake (their median) |")
    print("|--:|--:|" + "--:|--:|" * len(names) + "--:|")
    us = lambda seconds: f"{seconds * 1e6:.1f}"  # noqa: E731
    for _ in range(processes):
        pool = thread_pool_wake(_run(["--calibration"], base))
        assert pool is not None and pool.product_wake_s is not None
        cells = [us(pool.alone.median_s), us(pool.wake_s)]
        for product in pool.products:
            cells += [us(product.alone.median_s), us(product.wake_s)]
        print("| " + " | ".join(cells) + f" | {us(pool.product_wake_s)} |")


def engine_part(rounds: int, base: dict[str, str]) -> None:
    cases = [(stage, threads, policy) for policy in ("default", "ACTIVE") for threads in (1, 2) for stage in (0, 3)
             if not (policy == "ACTIVE" and threads == 1)]
    results: dict[tuple[int, int, str], list[dict]] = {case: [] for case in cases}
    for round_index in range(rounds):
        for case in (cases if round_index % 2 == 0 else list(reversed(cases))):
            stage, threads, policy = case
            env = dict(base, OMP_NUM_THREADS=str(threads))
            if policy == "ACTIVE":
                env["OMP_WAIT_POLICY"] = "ACTIVE"
            results[case].append(_run(["--case", str(stage), str(threads)], env))

    print(f"\n## 2. One rank, {MODEL} at {SEQ_LEN} tokens, micro-batch {MICRO_BATCH}, AdamW fp32: "
          f"{TIMED} steps after {WARM_UP}; medians over {rounds} processes\n")
    print("| OpenMP wait policy | threads | stage | ms/step | training thread sleeps/step "
          "| busiest other thread sleeps/step | runs (ms/step) |")
    print("|:--|--:|--:|--:|--:|--:|:--|")
    median = {}
    for case in cases:
        stage, threads, policy = case
        runs = results[case]
        ms = statistics.median(r["ms_per_step"] for r in runs)
        median[case] = ms
        print(f"| {policy} | {threads} | {stage} | {ms:.1f} "
              f"| {statistics.median(r['main_sleeps_per_step'] for r in runs):.0f} "
              f"| {statistics.median(r['busiest_other_sleeps_per_step'] for r in runs):.0f} "
              f"| {', '.join(format(r['ms_per_step'], '.1f') for r in runs)} |")
    print()
    for threads, policy in ((1, "default"), (2, "default"), (2, "ACTIVE")):
        extra = median[(3, threads, policy)] - median[(0, threads, policy)]
        print(f"stage 3 over stage 0 at {threads} thread{'s' if threads > 1 else ''}, {policy} policy: {extra:+.1f} ms/step")


if __name__ == "__main__":
    raise SystemExit(main())
