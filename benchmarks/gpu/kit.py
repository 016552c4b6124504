"""The GPU validation kit: everything a GPU must show, in one call, every phase under its deadline.

On the GPU machine, from the repository root, after ``bash benchmarks/gpu/prepare_wheels.sh`` here
(the device call carries ``.whl``)::

    python3 benchmarks/gpu/kit.py --out "$OUT"                 # about 8 minutes at most

Rehearsal on a CPU (tiny presets, one CPU process, short deadlines; run by the tests)::

    python benchmarks/gpu/kit.py --rehearse --out /tmp/kit

Phases, in order (docs/benchmarks-gpu.md gives each one's budget and what it writes):

1. ``install``: the carried wheels into a private folder (pip ``--target``), then the versions,
   ``nvidia-smi``, ``nvcc``, the device as torch sees it and free host memory;
2. ``ops``: DeepSpeed's FusedAdam and CPUAdam built at once, in two processes; a build lock left
   behind is removed; if FusedAdam cannot be built, every later phase trains with torch's Adam
   (``torch_adam``) and the reason is recorded;
3. ``calibrate``: ``simtune calibrate --gpus 1`` with the reference engines on the GPU (their
   costs are what ``simtune estimate`` adds to a model it never ran), without them in the
   rehearsal; the profile saved with its raw numbers;
4. ``plan``: each configuration rendered by simtune's space and predicted by its cost model with
   the engine costs learnt on the profile (the regime of ``simtune estimate`` and reports);
5. ``measure``: the configurations measured in two processes (stages 0-2, then stage 3);
6. ``launches``: a few of them again through simtune's runner (the real launcher and probe);
7. ``search``: ``simtune search --verify-top 3`` on a real preset;
8. ``autotuner``: DeepSpeed's own autotuner on the same workload, if time is left;
9. ``report``: the tables (predicted against measured) in summary.md.

Throughout, ``nvidia-smi`` samples the SM clock, power and temperature twice a second (where it
exists); kit.json keeps them per phase. Only the standard library is imported here: the packages
arrive in phase 1. Each phase runs as
processes of its own, in their own session, killed with their group at the phase's deadline;
kit.json is rewritten after every phase, and the measurements are appended as they are made, so
a call that ends early still returns what it did. Files under ``--out`` (8 at most): kit.json,
kit.log, <profile>.json, plan.json, measurements.jsonl, launches.json, search.txt, summary.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WHEELS = ROOT / ".whl"
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                    "manylinux1_x86_64")
"""The GPU machine's Python and platforms (the device tool's notes), as prepare_wheels.sh uses them."""
MODULES = ("torch", "deepspeed", "optuna", "xgboost", "fvcore", "transformers", "numpy", "scipy", "pydantic")


@dataclass(frozen=True)
class Mode:
    """What differs between the GPU run and its CPU rehearsal."""

    name: str
    precision: str
    profile_name: str
    search_model: tuple[str, int]
    verify_top: int
    launch_keys: int
    """How many of the measured configurations run again through the runner."""
    budgets_s: dict[str, float]
    total_s: float
    calibrate_args: tuple[str, ...] = ()
    search_max_micro_batch_size: Optional[int] = None
    """The search space's largest micro-batch size (the rehearsal keeps its runs short)."""
    largest_attempts: int = 6
    """Sizes a search for the largest micro-batch size may try."""
    experiment_timeout_s: float = 30
    """One launch's time-out in the search (an H200 machine took about 40 s to start, run and end
    a one-rank DeepSpeed launch)."""
    search_stages: Optional[str] = None
    """The search's ``zero_optimization.stage`` (None: the built-in default)."""


GPU = Mode("gpu", "bf16", "h200-141gb-1gpu", ("gpt2", 1024), 3, 1,
           {"install": 45, "ops": 120, "calibrate": 150, "plan": 30, "measure": 190, "launches": 70,
            "search": 170, "autotuner": 0, "report": 25}, total_s=540, experiment_timeout_s=120,
           search_stages="all")
"""Budgets from the first H200 call (4 December 2026): install 20 s, both ops 47-54 s at once,
calibration 27-30 s without engines (with them about 50 s more: two one-rank launches of about
22 s each), a measured configuration about 10 s, a one-rank launch of gpt2 about 40 s, the search
about 23 s per workload measurement and 40-45 s per verification. DeepSpeed's own autotuner
took 41-46 s per experiment there, so its fast mode does not fit the call: it is left out."""
REHEARSAL = Mode("rehearsal", "fp32", "cpu-1proc-kit-rehearsal", ("gpt2-tiny", 64), 0, 1,
                 {"install": 30, "ops": 3, "calibrate": 60, "plan": 30, "measure": 120, "launches": 60,
                  "search": 60, "autotuner": 0, "report": 30}, total_s=360, calibrate_args=("--quick", "--no-engines"),
                 search_max_micro_batch_size=16, largest_attempts=3)
REPORT_RESERVE_S = 20.0
MIN_PHASE_S = 8.0


GPU_QUERY = "timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu"
"""What ``nvidia-smi`` samples twice a second while the GPU works: whether the SM clock holds
its boost under sustained load (a power-capped part lowers it) is one candidate for the gap
between the model's compute rate and the measured one."""


def _percentile(values: list[float], q: float) -> Optional[float]:
    """The ``q`` quantile of ``values`` (nearest rank below), None when there are none."""
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else None


class GpuSampler:
    """``nvidia-smi --query-gpu=... -lms 500`` in the background, summarised per phase."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.process: Optional[subprocess.Popen] = None
        self.reason: Optional[str] = None

    def start(self) -> None:
        if shutil.which("nvidia-smi") is None:
            self.reason = "no nvidia-smi on this machine"
            return
        try:
            with self.path.open("w", encoding="utf-8") as handle:  # the child keeps its own copy
                self.process = subprocess.Popen(["nvidia-smi", f"--query-gpu={GPU_QUERY}",
                                                 "--format=csv,noheader,nounits", "-lms", "500"], stdout=handle,
                                                stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:  # sampling must never cost the call
            self.reason = f"nvidia-smi did not start: {exc}"

    def stop(self) -> None:
        if self.process is not None:
            _kill_group(self.process)
            self.process = None

    def summary(self, phases: dict[str, Any]) -> dict[str, Any]:
        """Per phase (by the wall-clock times the kit recorded): samples, the SM clock while the GPU
        was busy (utilisation >= 50%), power and temperature."""
        if self.reason:
            return {"skipped": self.reason}
        rows = []
        for line in (self.path.read_text(encoding="utf-8", errors="replace").splitlines()
                     if self.path.is_file() else []):
            parts = [p.strip() for p in line.split(",")]
            try:
                when = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
                rows.append((when, *(float(v) for v in parts[1:6])))
            except (ValueError, IndexError):
                continue
        out: dict[str, Any] = {"samples": len(rows), "phases": {}}
        for name, phase in phases.items():
            if "wall_start" not in phase:
                continue
            inside = [r for r in rows if phase["wall_start"] <= r[0] <= phase["wall_end"]]
            busy = [r for r in inside if r[5] >= 50]
            if not inside:
                continue
            out["phases"][name] = {
                "samples": len(inside), "busy_samples": len(busy),
                "sm_mhz_busy_p5": _percentile([r[1] for r in busy], 0.05),
                "sm_mhz_busy_p50": _percentile([r[1] for r in busy], 0.5),
                "sm_mhz_max": max(r[1] for r in inside), "power_w_p50": _percentile([r[3] for r in inside], 0.5),
                "power_w_max": max(r[3] for r in inside), "temperature_c_max": max(r[4] for r in inside)}
        return out


class Kit:
    def __init__(self, mode: Mode, out: Path, work: Path, total_s: float, wheels: Path = WHEELS) -> None:
        self.mode, self.out, self.work, self.wheels = mode, out, work, wheels
        self.deadline = time.monotonic() + total_s
        self.record: dict[str, Any] = {"mode": mode.name, "started": _now(), "phases": {}, "budget_s": total_s}
        self.site = work / "site"
        self.env = dict(os.environ)
        self.env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", PYTHONUNBUFFERED="1",
                        SIMTUNE_HOME=str(work / "home"))
        self.env["PYTHONPATH"] = os.pathsep.join([str(self.site), str(ROOT)] + (
            [self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH") else []))
        self.env["PATH"] = os.pathsep.join([str(self.site / "bin"), str(Path(sys.executable).parent),
                                            self.env.get("PATH", "")])
        if mode.name == "rehearsal":
            self.env["DS_ACCELERATOR"] = "cpu"
        self.arch_list = deepspeed_arch_list(self.env.get("TORCH_CUDA_ARCH_LIST"))
        if self.arch_list is not None:
            self.record["torch_cuda_arch_list"] = {"given": self.env["TORCH_CUDA_ARCH_LIST"], "used": self.arch_list}
            self.env["TORCH_CUDA_ARCH_LIST"] = self.arch_list
        self.torch_adam = False
        self.profile_path: Optional[Path] = None

    # ------------------------------------------------------------------ bookkeeping
    def log(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        with (self.out / "kit.log").open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def save(self) -> None:
        _write_json(self.out / "kit.json", self.record)

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, argv: list[str], timeout_s: float, *, log_name: str, cwd: Path = ROOT) -> tuple[int, str]:
        """Run ``argv`` in its own session; kill its group at ``timeout_s``. Returns (code, output
        tail); code 124 on a time-out. The whole output goes to kit.log."""
        self.log(f"$ {' '.join(argv)}  (deadline {timeout_s:.0f} s)")
        process = subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace", start_new_session=True)
        try:
            output, _ = process.communicate(timeout=max(1.0, timeout_s))
            code = process.returncode
        except subprocess.TimeoutExpired:
            _kill_group(process)
            output, _ = process.communicate()
            code = 124
            locks = remove_build_locks()  # a killed process may have been building an op
            if locks:
                self.log(f"removed build locks left by {log_name}: {', '.join(locks)}")
        with (self.out / "kit.log").open("a", encoding="utf-8") as handle:
            handle.write(f"--- {log_name} (exit {code})\n{output}\n")
        return code, output[-3000:]

    def phase(self, name: str, body: Callable[[float], dict[str, Any]]) -> None:
        budget = self.mode.budgets_s[name]
        reserve = 0.0 if name == "report" else REPORT_RESERVE_S
        allowed = min(budget, self.left_s() - reserve)
        entry: dict[str, Any] = {"budget_s": budget}
        if budget <= 0:
            entry.update(status="skipped", reason="not part of this mode")
        elif allowed < min(budget, MIN_PHASE_S):
            entry.update(status="skipped", reason=f"{max(0.0, self.left_s()):.0f} s left of the call")
        else:
            self.log(f"phase {name}: up to {allowed:.0f} s")
            started = time.monotonic()
            entry["wall_start"] = time.time()
            try:
                entry.update(body(allowed))
                entry.setdefault("status", "ok")
            except Exception as exc:  # noqa: BLE001 - a failed phase is a recorded result
                entry.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
            entry["seconds"] = round(time.monotonic() - started, 1)
            entry["wall_end"] = time.time()
        self.record["phases"][name] = entry
        self.log(f"phase {name}: {entry['status']}" + (f" ({entry.get('reason')})" if entry.get("reason") else ""))
        self.save()

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    # ------------------------------------------------------------------ phases
    def install(self, allowed: float) -> dict[str, Any]:
        wheels = sorted(glob.glob(str(self.wheels / "*.whl")))
        result: dict[str, Any] = {"wheels": [Path(w).name for w in wheels]}
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--target", str(self.site)]
        if wheels and self.mode.name == "rehearsal":
            # This machine's Python is not the GPU machine's: check that the carried set installs
            # there (its Python and platform), without installing it here.
            pip += ["--dry-run", "--only-binary=:all:", "--python-version", DEVICE_PYTHON, "--implementation", "cp",
                    *(f"--platform={p}" for p in DEVICE_PLATFORMS)]
            result["dry_run"] = True
        if wheels:
            code, tail = self.run([*pip, *wheels], allowed * 0.7, log_name="pip install")
            if code != 0:
                return {**result, "status": "failed", "reason": f"pip install exit {code}: {_last_line(tail)}"}
        elif self.mode.name == "gpu":
            result["note"] = f"no wheels in {self.wheels}: run benchmarks/gpu/prepare_wheels.sh and carry .whl"
        code, output = self.run(self.python("-c", _ENVIRONMENT_PROBE), max(5.0, allowed * 0.3), log_name="versions")
        environment = _last_json(output)
        if environment is None:
            return {**result, "status": "failed", "reason": f"the environment probe failed: {_last_line(output)}"}
        environment["nvidia_smi"] = _command_text(["nvidia-smi"])
        environment["nvcc"] = _command_text(["nvcc", "--version"])
        environment["host_memory_available_bytes"] = _mem_available()
        environment["cpu_count"] = os.cpu_count()
        self.record["environment"] = environment
        missing = [m for m, v in environment["versions"].items() if v is None]
        if missing:
            return {**result, "status": "failed", "reason": f"cannot import {', '.join(missing)}"}
        return result

    def ops(self, allowed: float) -> dict[str, Any]:
        builds = {name: subprocess.Popen(self.python("-c", _OP_BUILD.format(builder=builder)), cwd=ROOT, env=self.env,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         errors="replace", start_new_session=True)
                  for name, builder in (("fused_adam", "FusedAdamBuilder"), ("cpu_adam", "CPUAdamBuilder"))}
        self.log(f"building {', '.join(builds)} at once (deadline {allowed:.0f} s)")
        started = time.monotonic()
        outcome: dict[str, Any] = {}
        for name, process in builds.items():
            try:
                output, _ = process.communicate(timeout=max(1.0, allowed - (time.monotonic() - started)))
                code = process.returncode
            except subprocess.TimeoutExpired:
                _kill_group(process)
                output, _ = process.communicate()
                code = 124
            with (self.out / "kit.log").open("a", encoding="utf-8") as handle:
                handle.write(f"--- build {name} (exit {code})\n{output}\n")
            outcome[name] = {"built": code == 0, "seconds": round(time.monotonic() - started, 1),
                             "reason": None if code == 0 else ("time-out" if code == 124 else _last_line(output))}
        outcome["locks_removed"] = remove_build_locks()
        self.torch_adam = not outcome["fused_adam"]["built"]
        outcome["optimizer"] = "torch_adam" if self.torch_adam else "deepspeed FusedAdam"
        if self.torch_adam:
            outcome["fallback_reason"] = f"FusedAdam not built ({outcome['fused_adam']['reason']})"
        self.record["ops"] = outcome
        return {"status": "ok" if outcome["fused_adam"]["built"] and outcome["cpu_adam"]["built"] else "partial"}

    def calibrate(self, allowed: float) -> dict[str, Any]:
        """``simtune calibrate --gpus 1`` (on the GPU with the reference engines, whose costs the
        plan and the search then read); once more when it fails and the first try left time for a
        second, then without the engines (a failed engine launch must not cost the profile)."""
        folder = self.work / "profiles"
        path = folder / f"{self.mode.profile_name}.json"
        started, tries = time.monotonic(), []
        extra = list(self.mode.calibrate_args)
        while True:
            left = allowed - (time.monotonic() - started)
            code, tail = self.run(self.python("-m", "simtune", "calibrate", "--gpus", "1", "--name",
                                              self.mode.profile_name, "--out", str(folder), "--timeout",
                                              str(int(max(5, left - 5))), *extra),
                                  left, log_name="calibrate")
            tries.append(f"{' '.join(extra) or 'with engines'}: " + (f"exit {code}: {_last_line(tail)}" if code else "ok"))
            spent = time.monotonic() - started
            if code == 0 or code == 124 or len(tries) == 2 or allowed - spent < spent + MIN_PHASE_S:
                break
            if "--no-engines" not in extra:
                extra.append("--no-engines")
        if code != 0 or not path.is_file():
            return {"status": "failed", "reason": tries[-1], "tries": tries}
        shutil.copy(path, self.out / path.name)
        self.profile_path = path
        return {"profile": path.name, "tries": tries}

    def plan(self, allowed: float) -> dict[str, Any]:
        profile = str(self.profile_path) if self.profile_path else FALLBACK_PROFILE[self.mode.name]
        argv = self.python(str(HERE / "report.py"), "plan", "--mode", self.mode.name, "--profile", profile,
                           "--precision", self.mode.precision, "--out", str(self.out / "plan.json"))
        if self.torch_adam:
            argv.append("--torch-adam")
        if self.record.get("ops", {}).get("cpu_adam", {}).get("built") is False:
            argv.append("--no-cpu-adam")
        code, tail = self.run(argv, allowed, log_name="plan")
        if code != 0:
            return {"status": "failed", "reason": f"exit {code}: {_last_line(tail)}"}
        return {"profile": profile}

    def measure(self, allowed: float) -> dict[str, Any]:
        plan = self.out / "plan.json"
        if not plan.is_file():
            return {"status": "skipped", "reason": "no plan"}
        results = self.out / "measurements.jsonl"
        started = time.monotonic()
        codes = {}
        for group, share in (("main", 0.7), ("stage3", 1.0)):
            left = allowed - (time.monotonic() - started)
            code, _ = self.run(self.python(str(HERE / "sweep.py"), str(plan), group, str(results),
                                           "--largest-attempts", str(self.mode.largest_attempts)),
                               left * share, log_name=f"sweep {group}")
            codes[group] = code
        statuses = [json.loads(line)["status"] for line in results.read_text().splitlines()] \
            if results.exists() else []
        total = len(json.loads(plan.read_text())["cases"])
        ran = sum(1 for s in statuses if s == "ok")
        status = "failed" if not ran else "ok" if len(statuses) == total else "partial"
        return {"status": status, "measured": len(statuses), "ran": ran, "planned": total, "exit_codes": codes}

    def launches(self, allowed: float) -> dict[str, Any]:
        if not (self.out / "measurements.jsonl").is_file():
            return {"status": "skipped", "reason": "nothing measured"}
        code, tail = self.run(self.python(str(HERE / "report.py"), "launches", "--plan", str(self.out / "plan.json"),
                                          "--measurements", str(self.out / "measurements.jsonl"),
                                          "--count", str(self.mode.launch_keys), "--work", str(self.work / "launches"),
                                          "--timeout", str(int(allowed / max(1, self.mode.launch_keys)) - 5),
                                          "--out", str(self.out / "launches.json")), allowed, log_name="launches")
        if code != 0:
            return {"status": "failed", "reason": f"exit {code}: {_last_line(tail)}"}
        launched = json.loads((self.out / "launches.json").read_text())["launches"]
        if not launched:
            return {"status": "skipped", "reason": "no configuration ran in the measure phase"}
        ok = sum(1 for item in launched if item["status"] == "ok")
        return {"launched": len(launched), "ok": ok, **({} if ok == len(launched) else {"status": "partial"})}

    def _train_config(self, extra: Optional[dict] = None) -> Path:
        config: dict[str, Any] = {"optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.0}}}
        if self.torch_adam:
            config["optimizer"]["params"]["torch_adam"] = True
        if self.mode.precision != "fp32":
            config[self.mode.precision] = {"enabled": True}
        config.update(extra or {})
        path = self.work / f"ds_config_{len(list(self.work.glob('ds_config_*.json')))}.json"
        path.write_text(json.dumps(config, indent=1))
        return path

    def search(self, allowed: float) -> dict[str, Any]:
        model, seq = self.mode.search_model
        # Without the kit's profile, the search calibrates this machine itself.
        profile = ["--profile", str(self.profile_path)] if self.profile_path else []
        argv = self.python("-m", "simtune", "search", "--model", model, "--seq-len", str(seq), "--num_gpus", "1",
                           "--verify-top", str(self.mode.verify_top), *profile,
                           "--deepspeed", str(self._train_config(self._search_limits())), "--results_dir", str(self.work / "search"),
                           "--exps_dir", str(self.work / "search_exps"),
                           "--timeout", str(int(self.mode.experiment_timeout_s)))
        started = time.monotonic()
        code, tail = self.run(argv, allowed, log_name="search")
        summary = self.work / "search" / "summary.txt"
        text = [f"$ {' '.join(argv[1:])}", f"exit {code} after {time.monotonic() - started:.1f} s", "", tail]
        if summary.is_file():
            text += ["", "summary.txt:", summary.read_text()]
        (self.out / "search.txt").write_text("\n".join(text))
        return {"exit_code": code, "seconds": round(time.monotonic() - started, 1),
                **({} if code == 0 else {"status": "failed", "reason": _last_line(tail)})}

    def _search_limits(self) -> dict[str, Any]:
        limit = self.mode.search_max_micro_batch_size
        extra: dict[str, Any] = {} if limit is None else {"autotuning": {"max_train_micro_batch_size_per_gpu": limit}}
        if self.mode.search_stages is not None:
            extra["zero_optimization"] = {"stage": self.mode.search_stages}
        return extra

    def autotuner(self, allowed: float) -> dict[str, Any]:
        model, seq = self.mode.search_model
        results, exps = self.work / "ds_autotuning_results", self.work / "ds_autotuning_exps"
        config = self._train_config({"train_micro_batch_size_per_gpu": "auto", "autotuning": {
            "enabled": True, "fast": True, "results_dir": str(results), "exps_dir": str(exps)}})
        argv = ["deepspeed", "--autotuning", "run", "--num_gpus", "1",
                str(ROOT / "simtune" / "workloads" / "train.py"), "--model", model, "--seq-len", str(seq),
                "--deepspeed", str(config), "--steps", "12"]
        started = time.monotonic()
        code, tail = self.run(argv, allowed, log_name="deepspeed autotuner")
        text = ["", "=" * 72, "DeepSpeed's autotuner on the same workload", f"$ {' '.join(argv)}",
                f"exit {code} after {time.monotonic() - started:.1f} s", "", tail]
        summary = results / "summary.txt"
        if summary.is_file():
            text += ["", "summary.txt:", summary.read_text()]
        # Each finished experiment's metrics, whether or not the autotuner got to its summary
        # (without pdsh it prints a traceback per experiment and carries on).
        for metrics in sorted(results.glob("*/metrics.json")):
            text.append(f"{metrics.parent.name}: {metrics.read_text().strip()}")
        with (self.out / "search.txt").open("a", encoding="utf-8") as handle:
            handle.write("\n".join(text))
        return {"exit_code": code, **({} if code == 0 else {"status": "failed", "reason": _last_line(tail)})}

    def report(self, allowed: float) -> dict[str, Any]:
        argv = self.python(str(HERE / "report.py"), "summarize", "--out-dir", str(self.out))
        code, tail = self.run(argv, allowed, log_name="report")
        return {} if code == 0 else {"status": "failed", "reason": f"exit {code}: {_last_line(tail)}"}


FALLBACK_PROFILE = {"gpu": "hgx-h200-141gb", "rehearsal": "hgx-h200-141gb"}
"""The profile the plan predicts with when the calibration failed (a spec profile: said so in
kit.json's plan entry)."""

_ENVIRONMENT_PROBE = r"""
import importlib, json, platform
versions = {}
for name in %r:
    try:
        versions[name] = getattr(importlib.import_module(name), "__version__", "?")
    except Exception as exc:
        versions[name] = None
info = {"python": platform.python_version(), "versions": versions}
try:
    import torch
    info["cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["device"] = {"name": p.name, "total_memory_bytes": p.total_memory,
                          "capability": list(torch.cuda.get_device_capability(0)),
                          "multiprocessors": p.multi_processor_count}
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
except Exception as exc:
    info["torch_error"] = str(exc)
print(json.dumps(info))
""" % (MODULES,)

_OP_BUILD = (
    "import time; t = time.perf_counter()\n"
    "from deepspeed.accelerator import get_accelerator\n"
    "builder = get_accelerator().create_op_builder('{builder}')\n"
    "if builder is None: raise SystemExit('{builder}: no such op for this accelerator')\n"
    "builder.load(verbose=False)\n"
    "print('{builder} built in %.1f s' % (time.perf_counter() - t))\n"
)


def deepspeed_arch_list(given: Optional[str]) -> Optional[str]:
    """simtune's :func:`simtune.runner.arch_list.deepspeed_arch_list`, loaded from its file (a
    standard-library module: the packages are not installed yet when the kit starts)."""
    spec = importlib.util.spec_from_file_location("simtune_arch_list", ROOT / "simtune" / "runner" / "arch_list.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.deepspeed_arch_list(given)


def remove_build_locks() -> list[str]:
    """Remove the ``lock`` files torch's extension builder leaves when a build is killed: every
    later build of that op would wait on them for ever."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    removed = []
    for lock in list(root.glob("*/lock")) + list(root.glob("*/*/lock")):
        try:
            lock.unlink()
            removed.append(str(lock))
        except OSError:
            pass
    return removed


def _kill_group(process: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _last_json(text: str) -> Optional[dict]:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _command_text(argv: list[str]) -> Optional[str]:
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()[-4000:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"failed: {exc}"


def _mem_available() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the result files (8 at most)")
    parser.add_argument("--work", help="folder for everything else (default: a new one under /tmp)")
    parser.add_argument("--wheels", default=str(WHEELS), help="folder of the carried wheels (default .whl)")
    parser.add_argument("--rehearse", action="store_true", help="the CPU rehearsal: tiny presets, one CPU process")
    parser.add_argument("--budget-s", type=float, help="the whole call's deadline (default: the mode's)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiply every phase's budget and the call's deadline (a slow or busy machine)")
    parser.add_argument("--skip", default="", help="comma-separated phases to leave out")
    args = parser.parse_args(argv)
    mode = REHEARSAL if args.rehearse else GPU
    if args.time_scale != 1.0:
        mode = dataclasses.replace(mode, budgets_s={k: v * args.time_scale for k, v in mode.budgets_s.items()},
                                   total_s=mode.total_s * args.time_scale)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or f"/tmp/simtune-gpu-kit-{os.getpid()}")
    work.mkdir(parents=True, exist_ok=True)
    kit = Kit(mode, out, work, args.budget_s or mode.total_s, Path(args.wheels))
    skipped = {s for s in args.skip.split(",") if s}
    kit.log(f"simtune GPU kit, mode {mode.name}, deadline {kit.left_s():.0f} s, work folder {work}")
    sampler = GpuSampler(work / "gpu_samples.csv")
    sampler.start()
    try:
        for name in ("install", "ops", "calibrate", "plan", "measure", "launches", "search", "autotuner", "report"):
            if name == "report":
                sampler.stop()
                kit.record["gpu_samples"] = sampler.summary(kit.record["phases"])
                kit.save()  # the report reads kit.json
            if name in skipped:
                kit.record["phases"][name] = {"status": "skipped", "reason": "--skip"}
                kit.save()
                continue
            kit.phase(name, getattr(kit, name))
    finally:
        sampler.stop()
    kit.record["finished"] = _now()
    kit.save()
    failed = [n for n, p in kit.record["phases"].items() if p["status"] == "failed"]
    kit.log(f"done in {kit.record['budget_s'] - kit.left_s():.0f} s; failed phases: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
