"""ZeRO-Infinity's NVMe offload run for real on this machine, against the model's swap time.

Calibrates this machine quickly with ``--nvme-path`` (the storage's read and write rates), then
runs the same stage-3 configuration with its optimizer offloaded to host memory and to NVMe (and,
with ``--pipeline``, to NVMe through DeepSpeed's pipelined swapper: ``pipeline_read`` and
``pipeline_write`` with the buffers it needs), in turn, ``--rounds`` times (``simtune search
--strategy measure``: DeepSpeed's launcher and engines, 2 CPU processes, gloo; DeepSpeed's async_io
op must build, which needs libaio), and prints the measured step times and engine-step calls
beside the model's swap time (``simtune estimate`` with the calibrated profile: offload transfer
with NVMe less without).

    python benchmarks/nvme_offload.py --work-dir /tmp/simtune-nvme --rounds 3
    python benchmarks/nvme_offload.py --work-dir /tmp/simtune-nvme-pipe --rounds 3 --pipeline \\
        --model wide --sub-group-size 1e6

With ``--params`` it offloads the parameters instead, all of them to NVMe (``max_in_cpu`` 0) against
all in host memory, the optimizer in host memory in both, every parameter released after its use
(DeepSpeed's 5 parameter swap buffers run out where parameters stay gathered), and predicts both
through the predictor with the same config:

    python benchmarks/nvme_offload.py --work-dir /tmp/simtune-nvme-params --rounds 3 --params --model wide

Whole launches of one configuration on a small VM differ by tens of ms in step time, so the
difference of two variants' medians is coarse; benchmarks/nvme_param_time.py times, inside the
same kind of run, the DeepSpeed functions that swap the parameters.

``--model wide`` is a GPT-2 shape of 13.2M parameters (width 512, 4 layers) whose partition on 2
ranks makes 7 sub-groups of 1e6 (gpt2-tiny-heavy's one 8.4M-element position table keeps most of
it in one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SEQ, MBS, RANKS = 64, 4, 2
RELEASE_ALL = {"stage3_max_reuse_distance": 0, "stage3_max_live_parameters": 0, "stage3_prefetch_bucket_size": 0}
WIDE = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 1024, "n_positions": 64,
        "n_embd": 512, "n_layer": 4, "n_head": 8, "activation_function": "gelu_new"}


def run(command: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def offload_section(variant: str, swap: Path, buffers: int) -> dict:
    section = {"device": "cpu" if variant == "cpu" else "nvme", "nvme_path": str(swap)}
    if variant == "pipelined":
        section.update(pipeline_read=True, pipeline_write=True, buffer_count=buffers)
    return section


def param_sections(variant: str, swap: Path) -> dict:
    """--params: the optimizer offloaded to host memory, the parameters to host memory or all of
    them to NVMe (``max_in_cpu`` 0)."""
    device = "nvme" if variant == "params-nvme" else "cpu"
    return {"offload_optimizer": {"device": "cpu"},
            "offload_param": {"device": device, "nvme_path": str(swap), "max_in_cpu": 0}}


def measure(variant: str, folder: Path, model: str, zero: dict, sections: dict, env: dict) -> dict:
    folder.mkdir(parents=True)
    config = {"train_micro_batch_size_per_gpu": [MBS], "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3, **zero, **sections},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
              "autotuning": {"start_profile_step": 3, "end_profile_step": 13}}
    (folder / "ds.json").write_text(json.dumps(config))
    run([sys.executable, "-m", "simtune", "search", "--strategy", "measure", "--model", model, "--seq-len", str(SEQ),
         "--num_gpus", str(RANKS), "--deepspeed", "ds.json", "-q"], env, folder)
    document = json.loads((folder / "autotuning_results" / "results.json").read_text())
    # a run whose steps moved is run again, and the search returns the steady one
    return next(e["metrics"] for e in document["experiments"] if e["name"] == document["best"])


def predict(variant: str, model: str, profile: Path, sub_group_size: str | None, buffers: int, env: dict,
            cwd: Path) -> dict:
    extra = ["--sub-group-size", sub_group_size] if sub_group_size else []
    if variant == "pipelined":
        extra += ["--nvme-pipeline", "true", "--nvme-buffer-count", str(buffers)]
    done = run([sys.executable, "-m", "simtune", "estimate", "--model", model, "--seq-len", str(SEQ), "--profile",
                str(profile), "--gpus", str(RANKS), "--stage", "3", "--mbs", str(MBS), "--offload-optimizer",
                "cpu" if variant == "cpu" else "nvme", *extra, "--json"], env, cwd)
    return json.loads(done.stdout)["time_s"]


def predict_in_process(variant: str, model: str, profile: Path, zero: dict, swap: Path) -> dict:
    """The model's step terms for a --params variant, through the predictor and the same config
    (``simtune estimate`` has no flags for the release settings)."""
    from simtune.prediction.predictor import Predictor
    from simtune.space import Trial, TuningSpace
    from simtune.workloads import load_workload

    config = {"train_micro_batch_size_per_gpu": MBS, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3, **zero, **param_sections(variant, swap)}}
    predictor = Predictor.from_parts(TuningSpace.from_config(config, world_size=RANKS),
                                     load_workload(model, seq_len=SEQ), str(profile), world_size=RANKS,
                                     precision="fp32")
    device = "nvme" if variant == "params-nvme" else "cpu"
    time_s = predictor.predict(Trial(stage=3, micro_batch_size=MBS, offload_optimizer="cpu",
                                     offload_param=device)).time
    return {"offload_transfer": time_s.offload_transfer_s, "step": time_s.step_s}


def needed_buffers(model: str, sub_group_size: str | None) -> int:
    from simtune.model.adapters import model_spec
    from simtune.model.inputs import TrainConfig
    from simtune.model.nvme_swap import swap_buffers_needed
    from simtune.nvme_settings import NvmeSwapSettings
    from simtune.workloads import load_workload

    extra = {"sub_group_size": int(float(sub_group_size))} if sub_group_size else {}
    c = TrainConfig(stage=3, micro_batch_size=MBS, dp_degree=RANKS, precision="fp32", offload_optimizer=True,
                    offload_optimizer_nvme=True, nvme=NvmeSwapSettings(pipeline_read=True, pipeline_write=True),
                    **extra)
    return swap_buffers_needed(model_spec(load_workload(model, seq_len=SEQ)), c)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="/tmp/simtune-nvme")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="gpt2-tiny-heavy", help="a preset, or wide (see above)")
    parser.add_argument("--sub-group-size", help="the config's sub_group_size (default DeepSpeed's)")
    parser.add_argument("--pipeline", action="store_true", help="also run NVMe through the pipelined swapper")
    parser.add_argument("--params", action="store_true",
                        help="offload the parameters instead, all of them to NVMe (max_in_cpu 0), every one "
                             "released after use (stage3_max_reuse_distance, max_live_parameters and "
                             "prefetch_bucket_size 0: DeepSpeed's 5 parameter swap buffers run out otherwise), "
                             "against the same with parameters in host memory")
    args = parser.parse_args()
    work = Path(args.work_dir)
    if work.exists():
        sys.exit(f"{work} exists: name a new --work-dir")
    swap = work / "swap"
    swap.mkdir(parents=True)
    model = args.model
    if model == "wide":
        model = str(work / "gpt2-wide.json")
        Path(model).write_text(json.dumps(WIDE))
    zero = {"sub_group_size": int(float(args.sub_group_size))} if args.sub_group_size else {}
    if args.params:
        zero.update(RELEASE_ALL)
    buffers = needed_buffers(model, args.sub_group_size)
    variants = ("cpu", "nvme", "pipelined") if args.pipeline else ("cpu", "nvme")
    if args.params:
        variants = ("params-cpu", "params-nvme")
    env = {**os.environ, "SIMTUNE_HOME": str(work / "home"), "SIMTUNE_CACHE_DIR": str(work / "cache")}
    flags = (f" --model {args.model}" if args.model != "gpt2-tiny-heavy" else "") \
        + (f" --sub-group-size {args.sub_group_size}" if args.sub_group_size else "") \
        + (" --pipeline" if args.pipeline else "") + (" --params" if args.params else "")
    print(f"# command: python benchmarks/nvme_offload.py --work-dir {work} --rounds {args.rounds}{flags}")
    print(f"# {args.model}, {SEQ} tokens, micro-batch {MBS}, ZeRO-3{', sub_group_size ' + args.sub_group_size if args.sub_group_size else ''}{', every parameter released after use' if args.params else ''}, "
          f"{RANKS} CPU processes (gloo); load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    profile = work / "profile.json"
    started = time.perf_counter()
    run([sys.executable, "-m", "simtune", "calibrate", "--gpus", str(RANKS), "--quick", "--no-engines", "--nvme-path",
         str(swap), "--out", str(profile)], env, work)
    offload = json.loads(profile.read_text())["offload"]
    print(f"calibration {time.perf_counter() - started:.0f} s: node NVMe read {offload['nvme_read_bytes_per_s'] / 1e9:.2f} "
          f"GB/s, write {offload['nvme_write_bytes_per_s'] / 1e9:.2f} GB/s")
    if args.pipeline:
        print(f"pipelined: pipeline_read and pipeline_write with {buffers} swap buffers")
    measured: dict[str, list[dict]] = {variant: [] for variant in variants}
    for round_index in range(args.rounds):
        order = variants if round_index % 2 == 0 else tuple(reversed(variants))
        for variant in order:
            sections = (param_sections(variant, swap) if args.params
                        else {"offload_optimizer": offload_section(variant, swap, buffers)})
            m = measure(variant, work / f"round{round_index}-{variant}", model, zero, sections, env)
            measured[variant].append(m)
            print(f"round {round_index + 1} {variant:9s}: step {m['step_time_s'] * 1e3:7.1f} ms (forward "
                  f"{m['fwd_s'] * 1e3:.1f}, backward {m['bwd_s'] * 1e3:.1f}, step call {m['step_s'] * 1e3:.1f})")
    if args.params:
        predicted = {variant: predict_in_process(variant, model, profile, zero, swap) for variant in variants}
    else:
        predicted = {variant: predict(variant, model, profile, args.sub_group_size, buffers, env, work)
                     for variant in variants}

    def median(variant: str, key: str) -> float:
        return statistics.median(m[key] for m in measured[variant]) * 1e3

    print()
    base = variants[0]
    for variant in variants[1:]:
        swap_ms = (predicted[variant]["offload_transfer"] - predicted[base]["offload_transfer"]) * 1e3
        print(f"{variant}: predicted swap time (offload transfer, {variant} less {base}): {swap_ms:.1f} ms")
        print(f"{variant}: measured, medians over rounds: step "
              f"{median(variant, 'step_time_s') - median(base, 'step_time_s'):+.1f} ms, step call "
              f"{median(variant, 'step_s') - median(base, 'step_s'):+.1f} ms, forward "
              f"{median(variant, 'fwd_s') - median(base, 'fwd_s'):+.1f} ms, backward "
              f"{median(variant, 'bwd_s') - median(base, 'bwd_s'):+.1f} ms ({variant} less {base})")
    steps = ", ".join(f"{v} {predicted[v]['step'] * 1e3:.1f} ms" for v in variants)
    measured_steps = ", ".join(f"{v} {median(v, 'step_time_s'):.1f} ms" for v in variants)
    print(f"predicted step: {steps}; measured medians: {measured_steps}")
    print(f"# load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
