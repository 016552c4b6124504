"""Where the engine's backward work falls under gradient accumulation: real DeepSpeed runs on 2
CPU processes that split the same 16 samples per rank and step into 16 x 1, 4 x 4 and 1 x 16
micro-batches, at every ZeRO stage, predicted two ways.

Run from the repository root on a quiet machine (no GPU needed):

    python benchmarks/accumulation.py > benchmarks/results/accumulation.txt

The workload calibration measures DeepSpeed's engines at one micro-step per step, so what an
engine adds to the bare model's backward (the reduction's own work, the wait for the slower rank)
is known per backward call at accumulation 1 only. The cost model charges it once per optimizer
step at stages 0/1, which reduce gradients at the accumulation boundary only, and in every
micro-step at stages 2/3, which reduce in every micro-step
(:func:`simtune.model.step_time.backward_engine_work_per_step`). At stages 0/1 every micro-step
after the first adds its gradients into the kept ones, at the rate of the calibration's copy inside
the cache where both sets fit in a rank's share of it (gpt2-tiny's do), else at the streaming rate
(:func:`simtune.model.step_time.gradient_copy_s`). Two more predictions undo one rule each, as the
model was before it: the accumulation at the streaming rate, and the engine's backward work in
every micro-step at every stage. Like ``benchmarks/accuracy.py`` (whose
machinery it uses: calibration, watched launches, rounds in alternating order, medians), it prints
per configuration the predicted and measured step time and the engine's forward / backward / step
split, then the step-time MAPE of each prediction, per stage and overall.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any, Optional

_spec = importlib.util.spec_from_file_location("accuracy", Path(__file__).with_name("accuracy.py"))
assert _spec is not None and _spec.loader is not None
accuracy = importlib.util.module_from_spec(_spec)
sys.modules["accuracy"] = accuracy
_spec.loader.exec_module(accuracy)

SPLITS = ((16, 1), (4, 4), (1, 16))
"""(micro-batch size, accumulation steps): 16 samples per rank and step each."""


def cases() -> list[Any]:
    return [accuracy.Case(stage, mbs, gas) for stage in (0, 1, 2, 3) for mbs, gas in SPLITS]


def every_micro_step(predictor: Any) -> Any:
    """The same predictor with the engine's backward work charged in every micro-step at every
    stage (the rule before :func:`~simtune.model.step_time.backward_engine_work_per_step`)."""
    import simtune.model.step_time as step_time

    class EveryMicroStep:
        def predict(self, trial: Any) -> Any:
            kept = step_time.backward_engine_work_per_step
            step_time.backward_engine_work_per_step = lambda stage: False
            try:
                return predictor.predict(trial)
            finally:
                step_time.backward_engine_work_per_step = kept

    return EveryMicroStep()


def accumulation_streamed(predictor: Any) -> Any:
    """The same predictor with the gradients' accumulation at the streaming rate whether or not
    they fit in the cache (the rule before :meth:`~simtune.model.inputs.HardwareSpec.plain_bandwidth_within`)."""
    from simtune.model.inputs import HardwareSpec

    class Streamed:
        def predict(self, trial: Any) -> Any:
            kept = HardwareSpec.plain_bandwidth_within
            HardwareSpec.plain_bandwidth_within = lambda self, working_set_bytes: None  # type: ignore[method-assign]
            try:
                return predictor.predict(trial)
            finally:
                HardwareSpec.plain_bandwidth_within = kept  # type: ignore[method-assign]

    return Streamed()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-tiny")
    parser.add_argument("--seq-len", type=int, default=64)
    accuracy.add_run_arguments(parser, "simtune-accumulation")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-minute load average below this")
    parser.add_argument("--wait-s", type=float, default=0.0, help="wait up to this long for a quiet machine")
    args = parser.parse_args(argv)
    accuracy.launch_on_cpu()

    from simtune.calibration.workload import MeasureScope
    from simtune.calibration.workload_launch import calibrate_workload
    from simtune.prediction.predictor import Predictor
    from simtune.workloads import load_workload

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    accuracy.wait_for_quiet(args.max_load, args.wait_s)
    accuracy.print_header("accumulation.py", argv)
    started = time.perf_counter()

    profile = accuracy.machine_profile(args, work, "cpu-2proc-accumulation")
    workload = load_workload(args.model, seq_len=args.seq_len)
    largest = max(mbs for mbs, _ in SPLITS)
    calibration, others = accuracy.retried("workload calibration", lambda: calibrate_workload(
        workload, profile, precision="fp32", cache_dir=work / "cache", refresh=not args.profile,
        scope=MeasureScope(checkpointing=False, bucket_engines=False, largest_micro_batch_size=largest),
        log=lambda m: print(f"# {m}", file=sys.stderr)), args.max_others, args.retries)
    print(f"workload: {workload.name}, seq {workload.seq_len}, fp32; calibrated in {calibration.seconds:.1f} s on "
          f"{calibration.ranks} ranks, others {others:.2f} cores; engines at one micro-step per step")
    accuracy.print_calibration(calibration, profile)
    space, measured = accuracy.measured_cases(args, work, [accuracy.trial_of(c) for c in cases()])

    predictor = Predictor.from_parts(space, calibration, profile, world_size=2, precision="fp32")
    hardware = predictor.hardware
    cached = hardware.cached_plain_bytes_per_s
    print(f"  cache: {hardware.cache_bytes / 2**20:.1f} MiB per rank, a copy inside it "
          + ("not measured" if cached is None else f"{cached / 1e9:.1f} GB/s")
          + f" (read plus written), streaming {(hardware.streaming_for('fp32') or 0) / 1e9:.1f} GB/s")
    ways = (("The model (the engine's backward work once a step at stages 0/1, gradients that fit in the cache "
             "accumulated at its rate)", predictor),
            ("The gradients accumulated at the streaming rate", accumulation_streamed(predictor)),
            ("The engine's backward work charged in every micro-step at every stage",
             every_micro_step(accumulation_streamed(predictor))))
    for label, way in ways:
        rows = accuracy.rows_for(way, measured)
        print(f"\n{label}: predicted (p) against measured (m), split = the engine's forward / backward / step "
              "calls per optimizer step:\n")
        print("\n".join(accuracy.table(rows)))
        overall = accuracy.summary(rows)
        by_stage = ", ".join(f"stage {stage} {accuracy.summary([r for r in rows if r['trial'].stage == stage])['mape']:.1%}"
                             for stage in range(4))
        print(f"\nstep-time MAPE {overall['mape']:.1%} ({by_stage}); Kendall tau {overall['tau']:.3f}")
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s; load average at end: {accuracy.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
