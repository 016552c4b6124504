"""Transfer on CPU: predict a workload never run on this machine from another one that was measured.

Run from the repository root on a quiet machine (no GPU needed; DS_ACCELERATOR=cpu is set here):

    python benchmarks/transfer.py > benchmarks/results/transfer.txt

1. calibrates this machine (``simtune calibrate --gpus 2``: one launch, which now also times the
   host's dispatch per op and dropout's random numbers) and workload A (default gpt2-tiny at
   sequence 128: its model timed, and real engines at every ZeRO stage);
2. reads what the engines cost per unit off A (:mod:`simtune.prediction.engine_costs`: per
   stage-3 module, per gradient hook, per bucket, per step, the model's Python per module) and
   A's process memory (the training program and ZeRO's runtime: the same program runs B); with
   ``--heavy`` (A's twin of the same shape and more parameters, e.g. gpt2-tiny-heavy), measured
   too, what they cost per parameter, read off the pair as ``simtune calibrate`` does;
3. predicts workload B (default bert-tiny: another family, another vocabulary) from its closed form
   only (operators through the profile's curve, bandwidth and dispatch; activation formula), at 2
   processes and at 1, without running B;
4. runs B for real through simtune's runner (every stage at three micro-batch sizes, every stage
   with activation checkpointing, and every stage at 1 process; each configuration in ``--rounds``
   launches, rounds in alternating order, measured as the medians over them as
   benchmarks/accuracy.py does) and prints predicted against measured step time and peak memory, MAPE, Kendall's tau, and for
   each group of configurations that differ only in the stage whether the stages are ordered as
   measured. The same runs are also predicted from the profile alone (no A), for contrast;
5. and as ``simtune search`` predicts B on this machine once A's engine costs are saved
   (:mod:`simtune.prediction.learnt_engine_costs`): B's model measured without engines (forward,
   backward and activations, before B's runs, with the time it took), its engines costed per unit
   with A's costs; and, for contrast, with B's own engines measured (the time that measurement
   takes is the saving; ``--skip-own-engines`` leaves it out, for a large B where it takes longest).

The machine's own speed is timed before the calibrations and before and after B's runs (a fixed
single-thread matmul and GELU loop, benchmarks/machine_speed.py): a VM whose speed drifts between the
calibration and the runs moves every error by the same factor, so the errors are also printed
with the predictions scaled by that drift (the probe's time during B's runs over its time at
calibration), beside the raw ones.

Targets (issue: a cost model that transfers): step MAPE <= 10%, tau >= 0.8, every per-stage
ordering right, memory MAPE <= 5%. The orderings are printed by the configurations' medians and
judged by the rounds: every round runs each configuration once, in turn, so two stages of one group
are compared by their per-round differences (a drifting machine moves both alike); where the 95%
Student-t interval of those differences excludes 0 the rounds resolve the pair and the prediction
must order it the same way; where it does not, the two stages are a tie as measured and the
predicted difference must lie inside the interval (a model that predicts a wide gap where the
measurement finds none is wrong too). A group is right when all its pairs are. Launches where other processes used more than
``--max-others`` cores are run again (benchmarks/accuracy.py explains the watch).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import itertools
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

_spec = importlib.util.spec_from_file_location("accuracy", Path(__file__).with_name("accuracy.py"))
assert _spec is not None and _spec.loader is not None
accuracy = importlib.util.module_from_spec(_spec)
sys.modules["accuracy"] = accuracy
_spec.loader.exec_module(accuracy)
from machine_speed import speed_probe  # noqa: E402  (this script's folder is on sys.path, as run or loaded)

TARGET_MAPE = 0.10
TARGET_TAU = 0.8
TARGET_MEMORY = 0.05


@dataclasses.dataclass(frozen=True)
class Case:
    world: int
    stage: int
    mbs: int
    checkpointing: bool = False

    @property
    def group(self) -> tuple[int, int, bool]:
        return self.world, self.mbs, self.checkpointing


def cases() -> list[Case]:
    """20 configurations: 12 at 2 processes (every stage at micro-batch 2, 4, 8), 4 with activation
    checkpointing (micro-batch 4), 4 at 1 process (micro-batch 4)."""
    out = [Case(2, s, m) for m in (2, 4, 8) for s in range(4)]
    out += [Case(2, s, 4, checkpointing=True) for s in range(4)]
    out += [Case(1, s, 4) for s in range(4)]
    return out


def ds_config() -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.0, "torch_adam": True}},
        "zero_optimization": {"stage": "all"},
        "autotuning": {"fast": False, "tune_activation_checkpointing": True,
                       "arg_mappings": {"activation_checkpointing": "--gradient_checkpointing"}},
    }


def transferred(predictor: Any, framework: Any, calibration: Any) -> Any:
    """``predictor`` (closed form of B) with A's engine costs and A's process memory."""
    from simtune.model.inputs import MeasuredMemory
    from simtune.prediction.predictor import Predictor

    model = dataclasses.replace(predictor.model, measured_memory=MeasuredMemory(
        (), process_overhead_bytes=calibration.program_overhead_bytes,
        zero_runtime_bytes=calibration.zero_runtime_bytes))
    laid_out = predictor.hardware
    root = laid_out.calibrated or laid_out  # the costs are the calibrated layout's; laid out again
    hardware = dataclasses.replace(root, framework=framework).with_ranks_per_node(laid_out.ranks_per_node,
                                                                                 laid_out.nodes)
    return Predictor(model, hardware, dp_degree=predictor.dp_degree, precision=predictor.precision,
                     space=predictor.space, profile=predictor.profile)


def without_first_touch(profile: Any) -> Any:
    """``profile`` without its fresh-copy points: the cost model then charges no page faults."""
    from simtune.model.adapters import FRESH_COPY_DIRECTION

    points = tuple(p for p in profile.offload.points if p.direction != FRESH_COPY_DIRECTION)
    return dataclasses.replace(profile, offload=dataclasses.replace(profile.offload, points=points))


def compute_without(profile: Any, **emptied: Any) -> Any:
    """``profile`` with these compute measurements emptied or replaced: ``thread_pool=None``
    (parallel kernels then wake no one), one without ``products`` (products then pay the copy's
    wake), ``weight_points=()`` (linear layers then cost their FLOPs alone)."""
    return dataclasses.replace(profile, compute=dataclasses.replace(profile.compute, **emptied))


def without_tail_points(profile: Any) -> Any:
    """``profile`` without its collectives' tail points: one regime, the fitted line, at every size."""
    c = profile.collectives
    strip = lambda table: {op: dataclasses.replace(fit, tail_points=()) for op, fit in table.items()}  # noqa: E731
    return dataclasses.replace(profile, collectives=dataclasses.replace(
        c, intra_node=strip(c.intra_node), inter_node=strip(c.inter_node)))


def as_measured(predictor: Any) -> Any:
    """``predictor`` with the model's measured times taken as measured at every rank count (not
    carried to another layout's threads by ``compute_time.measured_scale``)."""
    from simtune.prediction.predictor import Predictor

    mc = predictor.model.measured_compute
    if mc is None:
        return predictor
    model = dataclasses.replace(predictor.model, measured_compute=dataclasses.replace(mc, threads=None))
    return Predictor(model, predictor.hardware, dp_degree=predictor.dp_degree, precision=predictor.precision,
                     space=predictor.space, profile=predictor.profile)


@dataclasses.dataclass(frozen=True)
class StagePair:
    """Two stages of one group, ``faster`` the one with the lower median step time: the mean of
    their per-round differences (slower less faster) with its paired interval
    (:func:`accuracy.paired_difference`), and the predicted difference."""

    faster: int
    slower: int
    measured_s: float
    low_s: float
    high_s: float
    predicted_s: float

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: the rounds tell the two stages' order."""
        return self.low_s > 0 or self.high_s < 0

    @property
    def right(self) -> bool:
        """A resolved pair predicted in the measured order; an unresolved one (a tie as measured)
        predicted to differ by no more than the interval allows."""
        if self.resolved:
            return (self.predicted_s > 0) == (self.measured_s > 0)
        return self.low_s <= self.predicted_s <= self.high_s

    def text(self) -> str:
        return (f"z{self.slower} - z{self.faster}: measured {self.measured_s * 1e3:+.1f} ms "
                f"[{self.low_s * 1e3:+.1f}, {self.high_s * 1e3:+.1f}], predicted {self.predicted_s * 1e3:+.1f}"
                f"{'' if self.resolved else ' (a tie as measured)'}{'' if self.right else '  <- wrong'}")


@dataclasses.dataclass(frozen=True)
class GroupOrder:
    """One group of rows differing only in the stage: the stages by median step time, measured and
    predicted, and every pair of them by the rounds."""

    group: tuple[int, int, bool]
    measured: str
    predicted: str
    pairs: tuple[StagePair, ...]

    @property
    def same(self) -> bool:
        return self.measured == self.predicted

    @property
    def right(self) -> bool:
        return all(p.right for p in self.pairs)


def orderings(rows: list[dict]) -> list[GroupOrder]:
    """Per group of rows differing only in the stage, its :class:`GroupOrder`. A row's
    ``meas_rounds_s`` are its step times in round order."""
    out = []
    for group, members in itertools.groupby(sorted(rows, key=lambda r: r["case"].group), key=lambda r: r["case"].group):
        members = list(members)
        measured = sorted(members, key=lambda r: r["meas_step_s"])
        predicted = sorted(members, key=lambda r: r["pred_step_s"])
        text = lambda order: " < ".join(f"z{r['case'].stage}" for r in order)  # noqa: E731
        pairs = []
        for i, a in enumerate(measured):
            for b in measured[i + 1:]:
                mean, low, high = accuracy.paired_difference(b["meas_rounds_s"], a["meas_rounds_s"])
                pairs.append(StagePair(a["case"].stage, b["case"].stage, mean, low, high,
                                       b["pred_step_s"] - a["pred_step_s"]))
        out.append(GroupOrder(group, text(measured), text(predicted), tuple(pairs)))
    return out


def summary(rows: list[dict]) -> dict[str, float]:
    time_errors = [abs(r["pred_step_s"] / r["meas_step_s"] - 1) for r in rows]
    mem_errors = [abs(r["pred_mem"] / r["meas_mem"] - 1) for r in rows]
    groups = orderings(rows)
    pairs = [p for g in groups for p in g.pairs]
    return {"mape": statistics.fmean(time_errors), "max": max(time_errors),
            "tau": accuracy.kendall_tau([r["pred_tp"] for r in rows], [r["meas_tp"] for r in rows]),
            "mem_mape": statistics.fmean(mem_errors), "mem_max": max(mem_errors),
            "ordered": sum(1 for g in groups if g.same), "groups": len(groups), "n": len(rows),
            "right": sum(1 for g in groups if g.right), "pairs": len(pairs),
            "resolved": sum(1 for p in pairs if p.resolved)}


def ordering_text(s: dict[str, float]) -> str:
    """The short form of both orderings: by the medians, and by the rounds."""
    return f"ordering {s['ordered']}/{s['groups']} ({s['right']}/{s['groups']} by the rounds)"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-a", default="gpt2-tiny")
    parser.add_argument("--seq-a", type=int, default=128)
    parser.add_argument("--model-b", default="bert-tiny")
    parser.add_argument("--seq-b", type=int, default=128)
    parser.add_argument("--heavy", metavar="PRESET",
                        help="A's heavy twin (the same modules and tensors, more parameters, e.g. gpt2-tiny-heavy for "
                             "gpt2-tiny), measured with its engines at --seq-a: the engine costs per parameter are "
                             "read off the pair, as simtune calibrate does")
    parser.add_argument("--skip-own-engines", action="store_true",
                        help="do not measure B with its own engines (for a large B, where they take longest)")
    accuracy.add_run_arguments(parser, "simtune-transfer")
    args = parser.parse_args(argv)
    accuracy.launch_on_cpu()

    from simtune.calibration.workload import MeasureScope
    from simtune.model.adapters import first_touch_cost
    from simtune.calibration.workload_launch import calibrate_workload
    from simtune.prediction.learnt_engine_costs import LEARNT, LearntEngineCosts, with_learnt_engine_costs
    from simtune.naming import experiment_name
    from simtune.prediction.engine_costs import framework_costs_of, param_pass_costs
    from simtune.prediction.predictor import Predictor
    from simtune.runner import Resources, Runner
    from simtune.runner.experiment import Experiment
    from simtune.space import Trial, TuningSpace
    from simtune.workloads import TRAIN_PROGRAM, load_workload

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"Command: python benchmarks/transfer.py {shlex.join(argv if argv is not None else sys.argv[1:])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"date {datetime.datetime.now().isoformat(timespec='seconds')}; load average {accuracy.load_average()}")
    started = time.perf_counter()
    probe_at_calibration = speed_probe()
    profile = accuracy.machine_profile(args, work, "cpu-2proc-transfer")

    workload_a = load_workload(args.model_a, seq_len=args.seq_a)
    calibration, others = accuracy.retried("workload A calibration", lambda: calibrate_workload(
        workload_a, profile, precision="fp32", cache_dir=work / "cache", refresh=not args.profile,
        log=lambda m: print(f"# {m}", file=sys.stderr)), args.max_others, args.retries)
    touch = first_touch_cost(profile)
    if touch is not None:
        print(f"page faults of memory mapped afresh (calibration's fresh copy): {touch * 1e9:.3f} ns per byte")
    pool = profile.compute.thread_pool
    if pool is not None:
        products = ("" if pool.product_wake_s is None
                    else f", {pool.product_wake_s * 1e6:.1f} us per matrix product (its products)")
        print(f"a throttled OpenMP pool's wake-up (calibration's parallel copy at {pool.threads} "
              f"threads): {pool.wake_s * 1e6:.1f} us per parallel kernel{products}")
    print(f"workload A: {workload_a.name}, seq {workload_a.seq_len}, fp32, calibrated in {calibration.seconds:.1f} s"
          f"{' (cached)' if calibration.from_cache else ''}, others {others:.2f} cores")
    config = ds_config()
    space_a = TuningSpace.from_config(config, world_size=2)
    measured_heavy = None
    if args.heavy:
        heavy = load_workload(args.heavy, seq_len=args.seq_a)
        measured_heavy, others = accuracy.retried("heavy twin calibration", lambda: calibrate_workload(
            heavy, profile, precision="fp32", cache_dir=work / "cache-heavy", refresh=not args.profile,
            scope=MeasureScope(checkpointing=False, bucket_engines=False),
            log=lambda m: print(f"# {m}", file=sys.stderr)), args.max_others, args.retries)
        print(f"A's heavy twin: {heavy.name}, seq {heavy.seq_len}, fp32, calibrated in {measured_heavy.seconds:.1f} s"
              f"{' (cached)' if measured_heavy.from_cache else ''}, others {others:.2f} cores")

    def engine_costs(hw_profile: Any) -> tuple[Any, tuple[tuple[float, float, float], ...]]:
        """A's engine costs per unit and, with the twin, per parameter, read on ``hw_profile``."""
        predictor_a = Predictor.from_parts(space_a, calibration, hw_profile, world_size=2, precision="fp32")
        per_param: tuple[tuple[float, float, float], ...] = ()
        if measured_heavy is not None:
            per_param = param_pass_costs(predictor_a.model, Predictor.from_parts(
                space_a, measured_heavy, hw_profile, world_size=2, precision="fp32").model, 2)
        return framework_costs_of(predictor_a.model, predictor_a.hardware, "fp32", per_param), per_param

    framework, per_param = engine_costs(profile)
    if per_param:
        print("engine costs per parameter read off A and its twin (ns; forward, backward, step): " + "; ".join(
            f"z{stage} " + " ".join(f"{v * 1e9:.2f}" for v in row) for stage, row in enumerate(per_param)))
    print("engine costs read off A (us): " + ", ".join(
        f"{f.name} {getattr(framework, f.name) * 1e6:.1f}" for f in dataclasses.fields(framework)
        if f.name != "param_pass_s"))
    print(f"process memory read off A: program {accuracy.mib(calibration.program_overhead_bytes)} MiB, ZeRO runtime "
          f"{accuracy.mib(calibration.zero_runtime_bytes)} MiB")

    workload_b = load_workload(args.model_b, seq_len=args.seq_b)
    measured_b: dict[str, Any] = {}
    scopes = [("without engines", MeasureScope(engines=False)), ("with its engines", MeasureScope())]
    for label, scope in scopes[:1] if args.skip_own_engines else scopes:
        measured_b[label], others = accuracy.retried(f"workload B calibration {label}", lambda: calibrate_workload(
            workload_b, profile, precision="fp32", cache_dir=work / f"cache-b-{scope.engines}",
            refresh=not args.profile, scope=scope, log=lambda m: print(f"# {m}", file=sys.stderr)),
            args.max_others, args.retries)
        print(f"workload B measured {label} in {measured_b[label].seconds:.1f} s, others {others:.2f} cores")

    def learnt_on(hw_profile: Any, costs: Any, per_parameter: tuple[tuple[float, float, float], ...]) -> Any:
        return with_learnt_engine_costs(hw_profile, LearntEngineCosts(
            (f"{workload_a.name}@{workload_a.seq_len}",), {name: float(getattr(costs, name)) for name in LEARNT},
            per_parameter))

    searched_profile = learnt_on(profile, framework, per_param)

    probe_before_runs = speed_probe()
    config_path = work / "ds_config.json"
    config_path.write_text(json.dumps(config))
    program = (str(TRAIN_PROGRAM), ["--model", args.model_b, "--seq-len", str(args.seq_b), "--deepspeed",
                                    str(config_path)])
    all_cases = cases()
    spaces = [TuningSpace.from_config(config, world_size=case.world) for case in all_cases]
    trials = [Trial(stage=case.stage, micro_batch_size=case.mbs, activation_checkpointing=case.checkpointing)
              for case in all_cases]
    names = [f"w{case.world}_{space.name(trial)}" for case, space, trial in zip(all_cases, spaces, trials)]

    def launch(index: int, results: Path, overwrite: bool) -> Any:
        space, trial = spaces[index], trials[index]
        runner = Runner(program, Resources.resolve(num_gpus=all_cases[index].world), results, work / "exps",
                        arg_mappings=space.autotuning.arg_mappings, timeout_s=300, overwrite=overwrite,
                        start_profile_step=args.start_step, end_profile_step=args.end_step)
        return runner.run([Experiment(names[index], trial, space.render(trial))])[0]

    runs = accuracy.WatchedRuns(args, work)
    outcomes = accuracy.measured_in_rounds(runs, names, args.rounds, work, launch)
    measured: list[tuple[Case, Trial, dict, Optional[float]]] = [
        (case, trial, *outcome) for case, trial, outcome in zip(all_cases, trials, outcomes) if outcome is not None]

    probe_after_runs = speed_probe()
    drift = (probe_before_runs + probe_after_runs) / 2 / probe_at_calibration

    def rows_with(with_a: bool, scale: float = 1.0, source: Any = None, carried: bool = True,
                  on: Any = None) -> list[dict]:
        hw_profile, costs, learnt_profile = on or (profile, framework, searched_profile)
        rows = []
        for case, trial, m, others in measured:
            space = TuningSpace.from_config(config, world_size=case.world)
            if source is not None:  # B's own measurement, on the profile with A's costs per unit
                predictor = Predictor.from_parts(space, source, learnt_profile, world_size=case.world,
                                                 precision="fp32")
            else:
                predictor = Predictor.from_parts(space, workload_b, hw_profile, world_size=case.world,
                                                 precision="fp32")
            if with_a and source is None:
                predictor = transferred(predictor, costs, calibration)
            if not carried:
                predictor = as_measured(predictor)
            e = predictor.predict(trial)
            rows.append({"case": case, "name": f"w{case.world} {experiment_name(trial)}"
                         + (" ckpt" if case.checkpointing else ""),
                         "pred_step_s": e.time.step_s * scale, "meas_step_s": m["step_time_s"],
                         "meas_rounds_s": m["step_rounds_s"],
                         "pred_mem": e.memory.total_bytes, "meas_mem": m["peak_memory_bytes"],
                         "pred_tp": e.metrics.throughput_samples_per_s / scale, "meas_tp": m["throughput"],
                         "pred_split": tuple(x * scale for x in (e.time.forward_phase_s, e.time.backward_phase_s,
                                                                 e.time.step_phase_s)),
                         "meas_split": tuple(m.get(k) or 0.0 for k in ("fwd_s", "bwd_s", "step_s")),
                         "others": others})
        return rows

    rows = rows_with(True)
    print(f"\nworkload B: {workload_b.name}, seq {workload_b.seq_len}, fp32, never measured before these runs; "
          f"{len(measured)} of {len(all_cases)} configurations ran in all {args.rounds} rounds{runs.reused_note()}")
    print(accuracy.noise_line([(trial, m, o) for _, trial, m, o in measured], args.rounds) + "\n")
    print("split: the engine's forward / backward / step calls per optimizer step, predicted / measured ms\n")
    head = (f"{'configuration':<30} {'pred ms':>8} {'meas ms':>8} {'err':>7} | {'fwd p/m':>11} {'bwd p/m':>11} "
            f"{'step p/m':>11} | {'pred MiB':>8} {'meas MiB':>8} {'err':>7} | others")
    print(head)
    print("-" * len(head))
    for r in rows:
        split = " ".join(f"{p * 1e3:5.0f}/{q * 1e3:<5.0f}" for p, q in zip(r["pred_split"], r["meas_split"]))
        print(f"{r['name']:<30} {r['pred_step_s'] * 1e3:8.1f} {r['meas_step_s'] * 1e3:8.1f} "
              f"{(r['pred_step_s'] / r['meas_step_s'] - 1) * 100:+6.1f}% | {split} | {accuracy.mib(r['pred_mem']):>8} "
              f"{accuracy.mib(r['meas_mem']):>8} {(r['pred_mem'] / r['meas_mem'] - 1) * 100:+6.1f}% | "
              f"{'' if r['others'] is None else format(r['others'], '.2f')}")
    ok = lambda good: "ok" if good else "MISSED"  # noqa: E731
    s = summary(rows)
    print(f"\nstep time: MAPE {s['mape'] * 100:.1f}% (target <= {TARGET_MAPE * 100:.0f}%: {ok(s['mape'] <= TARGET_MAPE)}), "
          f"max error {s['max'] * 100:.1f}%")
    print(f"ranking by throughput: Kendall tau {s['tau']:.3f} (target >= {TARGET_TAU}: {ok(s['tau'] >= TARGET_TAU)})")
    print(f"per-stage ordering by the medians: {s['ordered']} of {s['groups']} groups ordered as measured")
    print(f"per-stage ordering by the rounds: {s['right']} of {s['groups']} groups right "
          f"({ok(s['right'] == s['groups'])}); {s['resolved']} of {s['pairs']} pairs of stages resolved (the "
          f"{accuracy.PAIRED_CONFIDENCE:.0%} interval of their per-round differences excludes 0: ordered as "
          f"measured), the others ties (the predicted difference inside the interval)")
    for g in orderings(rows):
        world, mbs, ckpt = g.group
        print(f"  {world} processes, micro-batch {mbs}{', checkpointing' if ckpt else ''}: measured {g.measured}; "
              f"predicted {g.predicted}{'' if g.same else '  <- differs'}")
        for pair in g.pairs:
            if not pair.resolved or not pair.right:
                print(f"    {pair.text()}")
    print(f"peak memory: MAPE {s['mem_mape'] * 100:.1f}% (target <= {TARGET_MEMORY * 100:.0f}%: "
          f"{ok(s['mem_mape'] <= TARGET_MEMORY)}), max error {s['mem_max'] * 100:.1f}%")
    drifted = summary(rows_with(True, drift))
    when = "at the start (the profile was given: its calibration ran earlier)" if args.profile else "at calibration"
    print(f"\nmachine speed (probe seconds): {probe_at_calibration * 1e3:.1f} ms {when}, "
          f"{probe_before_runs * 1e3:.1f} before B's runs, {probe_after_runs * 1e3:.1f} after: the machine ran "
          f"{(drift - 1) * 100:+.0f}% slower during the runs; predictions scaled by {drift:.3f}: MAPE "
          f"{drifted['mape'] * 100:.1f}%, max {drifted['max'] * 100:.1f}%, tau {drifted['tau']:.3f}, "
          f"{ordering_text(drifted)}")
    alone = summary(rows_with(False))
    print(f"\nthe same runs predicted from the profile alone (no engine costs or process memory from A): "
          f"MAPE {alone['mape'] * 100:.1f}%, tau {alone['tau']:.3f}, {ordering_text(alone)}, "
          f"memory MAPE {alone['mem_mape'] * 100:.1f}%")
    for label, note in (("without engines", "A's engine costs per unit, as simtune search predicts B once A's are saved"),
                        ("with its engines", "B's own engines, as the first search of B on a new machine predicts it")):
        if label not in measured_b:
            print(f"the same runs predicted from B's model measured {label}: not measured (--skip-own-engines)")
            continue
        got = summary(rows_with(True, source=measured_b[label]))
        kept = summary(rows_with(True, source=measured_b[label], carried=False))
        print(f"the same runs predicted from B's model measured {label} ({measured_b[label].seconds:.1f} s; {note}): "
              f"MAPE {got['mape'] * 100:.1f}%, max {got['max'] * 100:.1f}%, tau {got['tau']:.3f}, "
              f"{ordering_text(got)}, memory MAPE {got['mem_mape'] * 100:.1f}%; its times taken as "
              f"measured at one process too (not carried to its threads): MAPE {kept['mape'] * 100:.1f}%, "
              f"max {kept['max'] * 100:.1f}%, tau {kept['tau']:.3f}")
    ablations = []
    if first_touch_cost(profile) is not None:
        ablations.append((without_first_touch(profile), "the page faults of memory mapped afresh (docs/cost-model.md 3.5"))
    if profile.compute.thread_pool is not None:
        ablations.append((compute_without(profile, thread_pool=None), "the throttled OpenMP pool's wake-ups (docs/cost-model.md 3.6"))
    if profile.compute.thread_pool is not None and profile.compute.thread_pool.products:
        copy_only = dataclasses.replace(profile.compute.thread_pool, products=())
        ablations.append((compute_without(profile, thread_pool=copy_only),
                          "the products' own wake-up, each paying the copy's (docs/cost-model.md 3.6"))
    if profile.compute.weight_points:
        ablations.append((compute_without(profile, weight_points=()), "the matmul weights' cost (docs/cost-model.md 3.1"))
    if any(fit.tail_points for fit in profile.collectives.intra_node.values()):
        ablations.append((without_tail_points(profile), "the collectives' large-message regime (docs/cost-model.md 3.2"))
    for plain, what in ablations:
        plain_costs, plain_per_param = engine_costs(plain)
        on = (plain, plain_costs, learnt_on(plain, plain_costs, plain_per_param))
        closed = summary(rows_with(True, on=on))
        line = (f"\nthe same without {what}; A's and the twin's costs read again without it): MAPE "
                f"{closed['mape'] * 100:.1f}%, max {closed['max'] * 100:.1f}%, tau {closed['tau']:.3f}, "
                f"{ordering_text(closed)}")
        if "without engines" in measured_b:
            product = summary(rows_with(True, source=measured_b["without engines"], on=on))
            line += f"; from B's model measured without engines: MAPE {product['mape'] * 100:.1f}%, tau {product['tau']:.3f}"
        print(line)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s; load average at end: {accuracy.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
