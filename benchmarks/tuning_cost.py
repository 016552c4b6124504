"""What tuning costs: simtune's simulated search against measured exploration, side by side.

Three tuners tune the same workload (gpt2-tiny, 64 tokens per sample, AdamW, fp32) over the same
space (every ZeRO stage, micro-batch sizes up to 16, the ZeRO knobs: ``"fast": false``) on the same
machine (2 CPU processes with gloo, one thread each):

1. ``simtune search --verify-top 3`` (the simulated strategy), from a fresh home folder, so the
   calibration of the machine and the measurement of the workload (one launch) are part of its
   cost; then the same command again in a new results folder with that home ("next search"): the
   machine and the workload are known, and the residual model has the first search's three runs.
   A first search's choice among stages whose true gap is 3-6% rests on single runs, and its cost
   on the machine's speed at the time, so ``--first-searches N`` (default 3) runs N first searches,
   each from its own fresh home, spread between the other tuners;
2. ``simtune search --strategy measure --no-stop-at-worse-stage`` with the ``gridsearch`` and
   with the ``model_based`` knob tuner (DeepSpeed's exploration order, every candidate run for
   real, every stage explored as DeepSpeed's code does: its README's rule of skipping the stages
   after one more than 5% worse is not in its code, and on a shared 2-core machine a noisy run
   would cut stages at random);
3. DeepSpeed's own autotuner, ``deepspeed --autotuning tune --num_accelerators 2
   simtune/workloads/train.py --model gpt2-tiny --seq-len 64 --deepspeed cfg.json`` with
   ``DS_ACCELERATOR=cpu LOCAL_SIZE=2 OMP_NUM_THREADS=1``. In non-fast mode its knob experiments
   die with ``KeyError: 'hostfile'`` and it keeps its fast-mode best; without ``pdsh`` every
   experiment's clean-up prints a traceback. Both are its behaviour and are reported, not worked
   around.

For each: wall time, real experiments, the configuration chosen. Then every chosen configuration
is run again through simtune's runner (end-to-end step time over the same window, steps 3..22), the
configurations in alternation, ``--repeats`` times, and the median throughput is compared.

Targets: simtune's total wall time at most 1/5 of the measured exploration's, and its chosen
configuration's re-measured throughput within 3% of the best any tuner found.

Last, the residual model on real runs: the cost model's step times against every successful run
of the measured tuners, uncorrected, corrected by the residual model simtune saved after its
verifications, and corrected by one fitted on half of those runs and tested on the other half.

Run from the repository root on a quiet machine (it waits until the 1-minute load average is
below 1.5)::

    python benchmarks/tuning_cost.py > benchmarks/results/tuning_cost.txt

``--keep DIR`` keeps every tuner's folder (and ``tuners.json``); ``--report-only DIR`` prints the
report of such a run again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET_LOAD = 1.5
SPEED_TARGET = 5.0
FIRST_SEARCH_EXPERIMENTS = 3
"""A first search's calibration and verification together, in experiments of the measured tuners."""
QUALITY_TARGET = 0.03
MODEL, SEQ_LEN = "gpt2-tiny", "64"
MEASURE = ("--strategy", "measure", "--no-stop-at-worse-stage")
FIRST = "simtune simulate, first search"
"""Label of the first searches after the first (``simtune simulate``), numbered from 2."""

CONFIG = {
    "train_micro_batch_size_per_gpu": 1,
    "gradient_accumulation_steps": 1,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.0}},
    "zero_optimization": {"stage": "all"},
    "autotuning": {"fast": False, "max_train_micro_batch_size_per_gpu": 16, "start_profile_step": 3,
                   "end_profile_step": 22},
}
"""The space and the measurement window every tuner gets: 20 measured steps, the built-in CPU
config's window (DeepSpeed's 3..5 leaves one run's throughput too noisy to rank by on 2 CPU
processes: benchmarks/results/measurement_noise.txt)."""


def log(message: str) -> None:
    print(f"[tuning_cost] {message}", file=sys.stderr, flush=True)


def load() -> float:
    return os.getloadavg()[0]


def wait_until_quiet(max_wait_s: float) -> float:
    deadline = time.monotonic() + max_wait_s
    while load() >= QUIET_LOAD and time.monotonic() < deadline:
        log(f"1-minute load average {load():.2f} >= {QUIET_LOAD}: waiting")
        time.sleep(30)
    return load()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def torch_extensions_dir() -> str:
    default = Path.home() / ".cache" / "torch_extensions" / f"py{sys.version_info.major}{sys.version_info.minor}_cpu"
    return os.environ.get("TORCH_EXTENSIONS_DIR", str(default))


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float) -> tuple[float, int, str]:
    """(wall seconds, exit code, output) of one tuner."""
    started = time.monotonic()
    with open(cwd / "tuner.log", "wb") as out:
        try:
            done = subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout_s, start_new_session=True)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = -1
    return time.monotonic() - started, code, (cwd / "tuner.log").read_text(errors="replace")


def remove_buffers(ports: range) -> None:
    for port in ports:
        for path in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"):
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# the tuners
def simtune_tuner(folder: Path, extra: list[str], home: Path | None, timeout_s: float) -> dict:
    """One ``simtune search`` in ``folder``; ``home``: the home folder it sees (profiles, caches and
    residual models live there), None for the real one."""
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(CONFIG, indent=1))
    env = {"TORCH_EXTENSIONS_DIR": torch_extensions_dir()}
    if home is not None:
        env["HOME"] = str(home)
        calibrated_before = (home / ".simtune" / "profiles").is_dir()
    argv = [sys.executable, "-m", "simtune", "search", "--model", MODEL, "--seq-len", SEQ_LEN, "--deepspeed",
            "cfg.json", "--num_gpus", "2", *extra]
    wall_s, code, output = run(argv, folder, env, timeout_s)
    results = folder / "autotuning_results"
    document = json.loads((results / "results.json").read_text()) if (results / "results.json").exists() else {}
    launched = [e for e in document.get("experiments", []) if not e.get("reused")]
    optimal = results / "ds_config_optimal.json"
    record = {"command": " ".join(argv[2:]), "folder": str(folder), "wall_s": wall_s, "exit_code": code, "experiments": len(launched),
              "chosen": document.get("best"), "config": json.loads(optimal.read_text()) if optimal.exists() else None,
              "tail": output[-1500:]}
    record["close_call"] = next((note for note in document.get("notes", []) if note.startswith("close call")), None)
    model = document.get("model")
    if model:
        record["calibration_s"] = model.get("calibration_s")
        record["search_s"] = model.get("search_s")
        record["verification_s"] = model.get("verification_s")
        record["extra_launches"] = 0 if calibrated_before else 1
        record["error_estimate"] = model.get("error_estimate")
        record["error_source"] = model.get("error_source")
    return record


def deepspeed_tuner(folder: Path, timeout_s: float) -> dict:
    folder.mkdir(parents=True)
    config = json.loads(json.dumps(CONFIG))
    config["autotuning"]["enabled"] = True
    (folder / "cfg.json").write_text(json.dumps(config, indent=1))
    port = free_port()
    launcher = shutil.which("deepspeed") or str(Path(sys.executable).with_name("deepspeed"))
    argv = [launcher, "--autotuning", "tune", "--num_accelerators", "2", "--master_port", str(port),
            str(ROOT / "simtune" / "workloads" / "train.py"), "--model", MODEL, "--seq-len", SEQ_LEN,
            "--deepspeed", "cfg.json"]
    env = {"DS_ACCELERATOR": "cpu", "LOCAL_SIZE": "2", "OMP_NUM_THREADS": "1",
           "TORCH_EXTENSIONS_DIR": torch_extensions_dir()}
    try:
        wall_s, code, output = run(argv, folder, env, timeout_s)
    finally:
        remove_buffers(range(port, port + 200))
    results = folder / "autotuning_results"
    experiments = sorted(p.parent.name for p in results.glob("*/exp.json"))
    optimal = results / "ds_config_optimal.json"
    summary = (results / "summary.txt").read_text() if (results / "summary.txt").exists() else ""
    best = None
    for line in summary.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "global" and len(cells) >= 4:
            best = cells[3]
    failed = []
    for name in experiments:
        if not (results / name / "metrics.json").exists() and name != "profile_model_info":
            failed.append(name)
    hostfile_errors = sum("KeyError: 'hostfile'" in (p.read_text(errors="replace"))
                          for p in results.glob("*/stderr.log"))
    return {"command": " ".join(["deepspeed", *argv[1:]]), "wall_s": wall_s, "exit_code": code,
            "experiments": len(experiments), "failed": failed, "chosen": best,
            "config": json.loads(optimal.read_text()) if optimal.exists() else None, "summary": summary,
            "hostfile_errors": hostfile_errors or output.count("KeyError: 'hostfile'"),
            "knob_tuning_skipped": output.count("No need to tune other Zero configuration parameters"),
            "pdsh_missing": output.count("No such file or directory: 'pdsh'"), "tail": output[-1500:]}


# ---------------------------------------------------------------------------------------------
# re-measuring the choices
def canonical(value):
    """``value`` with whole floats written as integers: DeepSpeed's autotuner writes
    ``"weight_decay": 0`` where simtune keeps the user's ``0.0``, and the two configurations
    train identically, so they are re-measured as one."""
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def remeasure(configs: dict[str, dict], folder: Path, repeats: int) -> dict[str, list[float]]:
    """Run each distinct configuration ``repeats`` times, the configurations in alternation; the
    throughput of each run (samples/s), by tuner label."""
    from simtune.runner import Resources, Runner
    from simtune.runner.experiment import Experiment
    from simtune.space import Trial
    from simtune.workloads import TRAIN_PROGRAM

    distinct: dict[str, dict] = {}
    owners: dict[str, list[str]] = {}
    for label, config in configs.items():
        key = json.dumps(canonical(config), sort_keys=True)
        distinct.setdefault(key, config)
        owners.setdefault(key, []).append(label)
    runner = Runner((str(TRAIN_PROGRAM), ("--model", MODEL, "--seq-len", SEQ_LEN, "--deepspeed", "ds_config.json")),
                    Resources.local(num_gpus=2, accelerator="cpu"), folder / "results", folder / "exps",
                    overwrite=True, timeout_s=600, start_profile_step=CONFIG["autotuning"]["start_profile_step"],
                    end_profile_step=CONFIG["autotuning"]["end_profile_step"])
    measured: dict[str, list[float]] = {key: [] for key in distinct}
    keys = list(distinct)
    for repeat in range(repeats):
        order = keys[repeat % len(keys):] + keys[:repeat % len(keys)]
        for index, key in enumerate(order):
            config = distinct[key]
            zero = config.get("zero_optimization") or {}
            trial = Trial(int(zero.get("stage", 0)), int(config["train_micro_batch_size_per_gpu"]),
                          int(config.get("gradient_accumulation_steps", 1)))
            name = f"c{keys.index(key)}_r{repeat}"
            (result,) = runner.run([Experiment(name, trial, config)])
            value = (result.metrics or {}).get("throughput") if result.status == "ok" else None
            log(f"re-measure {name} ({'/'.join(owners[key])}): {result.status} {value}")
            if value is not None:
                measured[key].append(float(value))
    return {label: measured[key] for key, labels in owners.items() for label in labels}


# ---------------------------------------------------------------------------------------------
# the residual model on real runs
def residual_check(work: Path) -> list[str]:
    """How far the cost model's step times are from the runs of the measured tuners, before and
    after the residual correction: trained on simtune's own verifications (what the next search
    uses), and trained on a random half of the measured runs, tested on the other half."""
    import random

    from simtune.dsconfig import AutotuningConfig
    from simtune.hardware import read_profile_file
    from simtune.prediction.predictor import Predictor
    from simtune.prediction.residual import ResidualModel, TimeSample
    from simtune.space import Trial, TuningSpace
    from simtune.search.forecast import Forecaster
    from simtune.search.model_inputs import workload_key
    from simtune.workloads import load_workload
    from simtune.calibration.workload import read_cached

    home = work / "home" / ".simtune"
    profiles = sorted((home / "profiles").glob("*.json"))
    caches = sorted((home / "cache").glob("workload-*.json"))
    residual_files = sorted((home / "profiles" / "residuals").glob("*.json"))
    if not (profiles and caches and residual_files):
        return ["residual check: simtune simulate left no profile, workload measurement or residual file"]
    profile = read_profile_file(profiles[0])
    space = TuningSpace.from_config(CONFIG, AutotuningConfig.from_dict(CONFIG["autotuning"]), world_size=2)
    workload = read_cached(caches[0]) or load_workload(MODEL, int(SEQ_LEN))  # closed form if the cache is stale
    predictor = Predictor.from_parts(space, workload, profile, world_size=2, precision="fp32")
    key = workload_key(load_workload(MODEL, int(SEQ_LEN)), "fp32")
    runs = []
    for label in ("gridsearch", "model_based"):
        path = work / label / "autotuning_results" / "results.json"
        if not path.exists():
            continue
        for e in json.loads(path.read_text())["experiments"]:
            step_s = (e.get("metrics") or {}).get("step_time_s")
            if e["status"] == "ok" and step_s:
                runs.append((Trial.from_dict(e["trial"]), float(step_s), f"{label}/{e['name']}"))
    if len(runs) < 6:
        return [f"residual check: only {len(runs)} measured runs to test on"]
    base = Forecaster(predictor, space, workload=key)
    forecasts = base.forecast_many(t for t, _, _ in runs)

    def error(model: ResidualModel, rows) -> float:
        ratios = model.ratios([forecasts[i].features for i in rows], key)
        return statistics.mean(abs(forecasts[i].base_step_s * r - runs[i][1]) / runs[i][1]
                               for i, r in zip(rows, ratios))

    everything = list(range(len(runs)))
    own = ResidualModel.load(residual_files[0])
    rng = random.Random(0)
    shuffled = everything[:]
    rng.shuffle(shuffled)
    train, test = shuffled[: len(runs) // 2], shuffled[len(runs) // 2:]
    half = ResidualModel([TimeSample(key, runs[i][2], dict(forecasts[i].features), forecasts[i].base_step_s,
                                     runs[i][1]) for i in train])
    return [
        f"residual model on real runs ({len(runs)} successful runs of the measured tuners, step time):",
        f"- uncorrected cost model: mean error {error(ResidualModel(), everything):.1%} over all {len(runs)}",
        f"- corrected by the residual model simtune saved after its searches ({len(own.time_samples)} verified "
        f"configurations, corrector {own.corrector(key).kind}): {error(own, everything):.1%} over the same runs "
        f"(fitted on simtune's own runs only)",
        f"- fitted on a random half ({len(train)} runs, {half.corrector(key).kind}), tested on the other "
        f"{len(test)}: uncorrected {error(ResidualModel(), test):.1%}, corrected {error(half, test):.1%} "
        f"(its own held-out estimate: {half.error_estimate(key):.1%})",
    ]


def describe(config: dict | None) -> str:
    if not config:
        return "-"
    zero = config.get("zero_optimization") or {}
    knobs = {k: v for k, v in zero.items() if k != "stage"}
    text = f"stage {zero.get('stage', 0)}, mbs {config.get('train_micro_batch_size_per_gpu')}, " \
           f"gas {config.get('gradient_accumulation_steps', 1)}"
    return text + (f", {json.dumps(knobs, sort_keys=True)}" if knobs else "")


# ---------------------------------------------------------------------------------------------
def verified_by_simtune(folder: Path, config: dict | None) -> tuple[str, float] | None:
    """(name, single-run value) when the simtune search in ``folder`` verified exactly ``config``."""
    results = folder / "autotuning_results"
    if config is None or not (results / "results.json").exists():
        return None
    for e in json.loads((results / "results.json").read_text())["experiments"]:
        path = results / e["name"] / "ds_config.json"
        if e.get("metric_value") is not None and path.exists() and \
                canonical(json.loads(path.read_text())) == canonical(config):
            return e["name"], float(e["metric_value"])
    return None


def render(work: Path, data: dict) -> str:
    """The report of one benchmark run (``data``: what :func:`main` saved in tuners.json)."""
    tuners, measured, loads, repeats = data["tuners"], data["measured"], data["loads"], data["repeats"]
    medians = {label: statistics.median(v) for label, v in measured.items() if v}
    best_value = max(medians.values()) if medians else None
    lines = [
        f"# command: {data['command']}",
        f"# host {data['host']}, {data['cores']} cores, python {data['python']}; "
        f"1-minute load average at start {loads['start']:.2f} (" +
        ", ".join(f"{k} {v:.2f}" for k, v in loads.items() if k != "start") + ")",
        f"# workload {MODEL}, {SEQ_LEN} tokens, AdamW, fp32; 2 CPU processes (gloo), OMP_NUM_THREADS=1; space: "
        f"ZeRO stages 0-3, mbs up to 16, ZeRO knobs (fast: false); steps {CONFIG['autotuning']['start_profile_step']}.."
        f"{CONFIG['autotuning']['end_profile_step']} measured; total benchmark time {data['total_s']:.0f} s",
        "",
        f"| tuner | wall_s | real experiments | chosen | re-measured samples/s (median of {repeats}, min..max) "
        f"| vs best |",
        "|:--|--:|:--|:--|--:|--:|",
    ]
    for label, t in tuners.items():
        runs = measured.get(label, [])
        median = medians.get(label)
        experiments = str(t["experiments"])
        if t.get("extra_launches"):
            experiments += " + 1 launch that calibrates the machine and measures the workload"
        if t.get("failed"):
            experiments += f" ({len(t['failed'])} without metrics)"
        chosen = f"{t['chosen'] or '-'}: {describe(t['config'])}"
        if median is None:
            lines.append(f"| {label} | {t['wall_s']:.0f} | {experiments} | {chosen} | - | - |")
            continue
        vs = f"{(median - best_value) / best_value:+.1%}"
        lines.append(f"| {label} | {t['wall_s']:.0f} | {experiments} | {chosen} | {median:.1f} "
                     f"({min(runs):.1f}..{max(runs):.1f}) | {vs} |")
    lines.append("")
    sim = tuners["simtune simulate"]
    firsts = ["simtune simulate", *sorted((label for label in tuners if label.startswith(FIRST)),
                                          key=lambda label: int(label.rsplit(" ", 1)[1]))]
    simulated = [*firsts, *(["simtune simulate, next search"] if "simtune simulate, next search" in tuners else [])]
    for label in simulated:
        t = tuners[label]
        if t.get("calibration_s") is not None:
            lines.append(f"{label}: calibration {t['calibration_s']:.1f} s (machine + workload), search "
                         f"{t['search_s']:.1f} s, verification {t['verification_s']:.1f} s, the rest start-up and "
                         f"outputs; error estimate {t['error_estimate']:.0%} ({t['error_source']}).")
    measured_tuners = [label for label in ("simtune measure gridsearch", "simtune measure model_based")
                       if label in tuners]
    speed_ok: dict[str, bool] = {}
    for own in simulated:
        ratios = {label: tuners[label]["wall_s"] / tuners[own]["wall_s"] for label in measured_tuners}
        speed_ok[own] = all(r >= SPEED_TARGET for r in ratios.values())
        lines.append(f"speed: {own}: " + ", ".join(
            f"{label} took {r:.1f}x its wall time ({'ok' if r >= SPEED_TARGET else 'MISSED'})"
            for label, r in ratios.items()) + f" (target >= {SPEED_TARGET:.0f}x)")
    measured_runs = [tuners[label] for label in measured_tuners if tuners[label]["experiments"]]
    if measured_runs:  # the ratio moves with how many experiments early stopping lets a tuner run
        per_experiment = (sum(t["wall_s"] for t in measured_runs) / sum(t["experiments"] for t in measured_runs))
        for own in simulated:
            worth = tuners[own]["wall_s"] / per_experiment
            lines.append(f"speed: {own} cost as much as {worth:.1f} experiments of the measured tuners "
                         f"({per_experiment:.1f} s each on average): {SPEED_TARGET:.0f}x faster than a tuner that runs "
                         f"{SPEED_TARGET * worth:.0f} or more")
            t = tuners[own]
            if t.get("calibration_s") is not None and own in firsts:
                spent = (t["calibration_s"] + t["verification_s"]) / per_experiment
                lines.append(f"speed: {own}: calibration + verification cost {spent:.1f} experiments "
                             f"(target <= {FIRST_SEARCH_EXPERIMENTS}: "
                             f"{'ok' if spent <= FIRST_SEARCH_EXPERIMENTS else 'MISSED'})")
    if "DeepSpeed autotuner" in tuners:
        ds = tuners["DeepSpeed autotuner"]
        lines.append(f"speed: DeepSpeed autotuner took {ds['wall_s'] / sim['wall_s']:.1f}x simtune simulate's wall "
                     f"time (exit code {ds['exit_code']}; knob tuning skipped at {ds['knob_tuning_skipped']} stage(s) "
                     f"whose best micro-batch size was not larger than the previous stage's; "
                     f"{ds['hostfile_errors']} knob experiment(s) ended with KeyError: 'hostfile'; "
                     f"{ds['pdsh_missing']} clean-up traceback(s) for the missing pdsh)")
    quality_ok: dict[str, bool] = {}
    best_label = max(medians, key=medians.get) if medians else None
    for own in simulated:
        if medians.get(own) is None or not best_value:
            continue
        gap = (best_value - medians[own]) / best_value
        quality_ok[own] = gap <= QUALITY_TARGET
        flagged = tuners[own].get("close_call")
        lines.append(f"quality: {own}'s choice re-measures {gap:.1%} below the best choice of any tuner "
                     f"(target <= {QUALITY_TARGET:.0%}: {'ok' if quality_ok[own] else 'MISSED'})"
                     + (f"; it said: {flagged}" if flagged else "; it reported no close call"))
        if gap <= QUALITY_TARGET:
            continue
        runs, mine = measured[best_label], measured[own]
        if min(runs) <= max(mine):
            lines.append(f"noise: the re-measured ranges overlap ({own} {min(mine):.1f}..{max(mine):.1f}, "
                         f"{best_label} {min(runs):.1f}..{max(runs):.1f})")
        verified = verified_by_simtune(Path(tuners[own]["folder"]) if tuners[own].get("folder") else work / "simulate",
                                       tuners[best_label]["config"])
        if verified is not None and verified[0] != tuners[own].get("chosen"):
            lines.append(f"noise: {own} verified the best choice too ({verified[0]}), but its one run "
                         f"measured {verified[1]:.1f} samples/s, below the run of the configuration it returned")
    both = [own for own in firsts if speed_ok.get(own) and quality_ok.get(own)]
    lines.append(f"first searches (fresh machine): {len(both)} of {len(firsts)} met both targets; speed "
                 f"{sum(speed_ok.get(o, False) for o in firsts)} of {len(firsts)}, quality "
                 f"{sum(quality_ok.get(o, False) for o in firsts)} of {len(firsts)}")
    lines += ["", *residual_check(work)]
    lines += ["", "Commands (run in a fresh folder each):"]
    lines += [f"- {label}: {t['command']}" for label, t in tuners.items()]
    if "DeepSpeed autotuner" in tuners and tuners["DeepSpeed autotuner"].get("summary"):
        lines += ["", "DeepSpeed autotuner summary.txt:", tuners["DeepSpeed autotuner"]["summary"].rstrip()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="re-measurements of each choice (default 7)")
    parser.add_argument("--max-wait-s", type=float, default=3600, help="longest wait for a quiet machine")
    parser.add_argument("--timeout-s", type=float, default=3600, help="longest run of one tuner")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--skip-deepspeed", action="store_true", help="leave DeepSpeed's autotuner out")
    parser.add_argument("--first-searches", type=int, default=3,
                        help="first searches, each from a fresh home (default 3)")
    parser.add_argument("--report-only", metavar="DIR",
                        help="print the report of a run kept with --keep again (from DIR/tuners.json)")
    args = parser.parse_args(argv)
    if args.first_searches < 1:
        parser.error(f"--first-searches must be at least 1, not {args.first_searches}")
    if args.report_only:
        work = Path(args.report_only)
        data = json.loads((work / "tuners.json").read_text())
        data["command"] += f" (this report printed again by: python benchmarks/tuning_cost.py --report-only {work})"
        print(render(work, data))
        return 0
    os.environ["DS_ACCELERATOR"] = "cpu"
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="simtune-tuning-cost-"))
    work.mkdir(parents=True, exist_ok=True)

    start_load = wait_until_quiet(args.max_wait_s)
    loads = {"start": start_load}
    started = time.monotonic()
    tuners: dict[str, dict] = {}
    home = work / "home"
    plan = [
        ("simtune simulate", lambda: simtune_tuner(work / "simulate", ["--verify-top", "3"], home, args.timeout_s)),
        ("simtune simulate, next search", lambda: simtune_tuner(
            work / "simulate-next", ["--verify-top", "3"], home, args.timeout_s)),
        ("simtune measure gridsearch", lambda: simtune_tuner(
            work / "gridsearch", [*MEASURE, "--tuner_type", "gridsearch"], None, args.timeout_s)),
        ("simtune measure model_based", lambda: simtune_tuner(
            work / "model_based", [*MEASURE, "--tuner_type", "model_based"], None, args.timeout_s)),
    ]
    if not args.skip_deepspeed:
        plan.append(("DeepSpeed autotuner", lambda: deepspeed_tuner(work / "deepspeed", args.timeout_s)))
    for n in range(2, args.first_searches + 1):  # spread between the others: the machine's speed drifts
        plan.insert(min(len(plan), 2 * n - 1), (f"{FIRST} {n}", lambda n=n: simtune_tuner(
            work / f"simulate-{n}", ["--verify-top", "3"], work / f"home-{n}", args.timeout_s)))
    for label, tune in plan:
        loads[f"before {label}"] = load()
        log(f"{label}: running (load {load():.2f})")
        tuners[label] = tune()
        log(f"{label}: {tuners[label]['wall_s']:.0f} s, {tuners[label]['experiments']} experiments, "
            f"chose {tuners[label]['chosen']} (exit {tuners[label]['exit_code']})")

    chosen = {label: t["config"] for label, t in tuners.items() if t["config"]}
    loads["before re-measuring"] = load()
    measured = remeasure(chosen, work / "remeasure", args.repeats)
    loads["end"] = load()
    data = {"command": "python " + " ".join(["benchmarks/tuning_cost.py", *sys.argv[1:]]),
            "tuners": tuners, "measured": measured, "loads": loads, "repeats": args.repeats,
            "total_s": time.monotonic() - started, "host": platform.node(), "cores": os.cpu_count(),
            "python": platform.python_version()}
    (work / "tuners.json").write_text(json.dumps(data, indent=1, default=str))
    print(render(work, data))
    if args.keep:
        print(f"\nWork folder: {work} (python benchmarks/tuning_cost.py --report-only {work} prints this again)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
