"""The GPU kit's host-side steps: the plan, the runner's launches, the summary tables.

    python benchmarks/gpu/report.py plan --mode gpu|rehearsal --profile P --precision bf16 --out plan.json
    python benchmarks/gpu/report.py launches --plan plan.json --measurements m.jsonl --count 2 --work DIR
        --timeout S --out launches.json
    python benchmarks/gpu/report.py summarize --out-dir DIR
    python benchmarks/gpu/report.py repredict --kit-out DIR --profile P [--profile P2 ...]

``repredict`` predicts a committed kit output's measured configurations again on other profiles
(a changed cost model checked against real GPU measurements without a GPU). ``plan``,
``summarize`` and ``repredict`` use only simtune's pure cost model (no torch); ``launches`` runs real
experiments through simtune's runner (DeepSpeed's launcher and simtune's probe).

Memory is compared like with like: the prediction's total less the profile's fixed overhead
(CUDA context, communication library, allocator slack: not seen by torch's allocator) against the
peak allocated by torch's allocator, and the reserved peak is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for entry in (str(HERE), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from cases import Case, Planner, gpu_cases, rehearsal_cases  # noqa: E402

TARGET_STEP_MAPE = 0.25
"""The published-measurement target of the transferable cost model, applied here too."""


# ---------------------------------------------------------------------- plan
def planning_profile(profile_ref: str, precision: str) -> tuple[Any, Any]:
    """The profile as ``simtune estimate`` and reports use it: with the engine costs learnt on it
    (saved by a calibration with engines, or by a search), and those costs (None when none)."""
    from simtune.hardware.registry import load_profile
    from simtune.prediction.learnt_engine_costs import learnt_engine_costs, with_learnt_engine_costs

    profile = load_profile(profile_ref)
    learnt = learnt_engine_costs(profile, precision)
    return with_learnt_engine_costs(profile, learnt), learnt


def make_plan(mode: str, profile_ref: str, precision: str, torch_adam: bool, cpu_adam: bool) -> dict[str, Any]:
    """The kit's plan: every case rendered and predicted on the profile. A case predicted at another
    precision than the plan's (autocast) that the profile has no compute curve for (a CPU without
    bf16) is listed under ``left_out`` with why; the plan's own precision missing fails as before."""
    profile, learnt = planning_profile(profile_ref, precision)
    cases = gpu_cases() if mode == "gpu" else rehearsal_cases()
    planner = Planner(profile, precision, torch_adam=torch_adam, max_micro_batch_size=4096 if mode == "gpu" else 16)
    precisions = {c.key: planner.precision_of(c) for c in cases}
    missing = {key: p for key, p in precisions.items() if p != precision and p not in profile.compute.curves}
    rows = [planner.plan(case) for case in cases if case.key not in missing]
    left_out = [{"key": key, "reason": f"the profile has no {p} compute curve"} for key, p in missing.items()]
    engine_costs = None if learnt is None else {"sources": list(learnt.sources), "costs": dict(learnt.costs),
                                                "param_pass_s": [list(row) for row in learnt.param_pass_s]}
    return {"mode": mode, "profile": profile.name, "profile_ref": profile_ref, "precision": precision,
            "torch_adam": torch_adam, "cpu_adam": cpu_adam, "engine_costs": engine_costs, "cases": rows,
            "left_out": left_out}


def planner_of(plan: dict[str, Any]) -> Planner:
    profile, _ = planning_profile(plan["profile_ref"], plan["precision"])
    return Planner(profile, plan["precision"], torch_adam=plan["torch_adam"],
                   max_micro_batch_size=4096 if plan["mode"] == "gpu" else 16)


# ---------------------------------------------------------------------- launches
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_launches(plan: dict[str, Any], measured: list[dict], count: int, work: Path, timeout_s: int) -> dict:
    """The first ``count`` measured fixed-size configurations (one per stage, lowest stages
    first) again through simtune's runner: one launch each, the probe timing the steps."""
    from simtune.runner import Resources, Runner
    from simtune.runner.experiment import Experiment
    from simtune.workloads import TRAIN_PROGRAM

    ok = {m["key"]: m for m in measured if m.get("status") == "ok"}
    chosen, stages = [], set()
    for row in plan["cases"]:
        case = row["case"]
        if (row["key"] in ok and not case["largest"] and not case.get("autocast") and not case.get("torch_adam")
                and case["stage"] not in stages and len(chosen) < count):
            # the training program runs DeepSpeed's precision (not autocast) and the plan's optimizer
            chosen.append(row)
            stages.add(case["stage"])
    work.mkdir(parents=True, exist_ok=True)
    out = []
    for row in chosen:
        case = row["case"]
        config_path = work / f"{row['key']}.json"
        config_path.write_text(json.dumps(row["ds_config"]))
        program = (str(TRAIN_PROGRAM), ["--model", case["preset"], "--seq-len", str(case["seq_len"]),
                                        "--deepspeed", str(config_path)])
        runner = Runner(program, Resources.resolve(num_gpus=1), work / "results", work / "exps",
                        arg_mappings={"activation_checkpointing": "--gradient_checkpointing"}, timeout_s=timeout_s,
                        overwrite=True, start_profile_step=4, end_profile_step=8)
        from simtune.space import Trial

        trial = Trial(stage=case["stage"], micro_batch_size=row["micro_batch_size"],
                      offload_optimizer=case["offload_optimizer"], activation_checkpointing=case["checkpointing"])
        result = runner.run([Experiment(row["key"], trial, row["ds_config"])])[0]
        metrics = result.metrics or {}
        out.append({"key": row["key"], "status": result.status, "reason": result.reason, "wall_s": result.wall_s,
                    "launch_step_s": metrics.get("step_time_s"), "launch_peak_bytes": metrics.get("peak_memory_bytes"),
                    "launch_peak_reserved_bytes": metrics.get("peak_memory_reserved_bytes"),
                    "memory_kind": metrics.get("memory_kind"), "in_process_step_s": ok[row["key"]]["step_s"],
                    "in_process_peak_bytes": ok[row["key"]]["peak"]["allocated_bytes"]})
    return {"launches": out}


# ---------------------------------------------------------------------- summary
def _pct(value: Optional[float]) -> str:
    return "" if value is None else f"{value * 100:+.1f}%"


def _gib(value: Optional[float]) -> str:
    return "" if value is None else f"{value / 2**30:.2f}"


def summary_rows(plan: dict[str, Any], measured: list[dict]) -> list[dict[str, Any]]:
    """One row per measured case: predicted against measured step time and memory."""
    planner = planner_of(plan)
    by_key = {m["key"]: m for m in measured}
    rows = []
    for row in plan["cases"]:
        m = by_key.get(row["key"])
        if m is None:
            continue
        case = Case(**row["case"])
        size = m.get("micro_batch_size") or row["micro_batch_size"]
        predicted = planner.prediction(case, max(1, size))
        peak = m.get("peak") or {}
        pred_mem = predicted["total_bytes"] - predicted["fixed_overhead_bytes"]
        out = {"key": row["key"], "case": row["case"], "stage": case.stage, "mbs": size, "status": m["status"],
               "reason": m.get("reason"), "largest": case.largest, "pred_feasible": predicted["feasible"],
               "pred_step_s": predicted["step_s"], "meas_step_s": m.get("step_s"),
               "pred_mem_bytes": pred_mem, "meas_alloc_bytes": peak.get("allocated_bytes"),
               "meas_reserved_bytes": peak.get("reserved_bytes"),
               "predicted_largest": row["predicted_largest"], "measured_largest": m.get("measured_largest"),
               "smallest_failing": m.get("smallest_failing"), "pred_split_s": predicted["split_s"],
               "pred_optimizer_s": predicted["optimizer_s"], "pred_offload_s": predicted["offload_s"],
               "meas_split_s": m.get("split_s"), "profile": m.get("profile")}
        if out["meas_step_s"]:
            out["step_err"] = out["pred_step_s"] / out["meas_step_s"] - 1
        if out["meas_alloc_bytes"]:
            out["mem_err"] = pred_mem / out["meas_alloc_bytes"] - 1
        rows.append(out)
    return rows


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [abs(r["step_err"]) for r in rows if "step_err" in r and not r["largest"]]
    mems = [abs(r["mem_err"]) for r in rows if "mem_err" in r and not r["largest"]]
    infeasible_runs = [r["key"] for r in rows if r["pred_feasible"] and r["status"] == "oom" and not r["largest"]]
    return {"configurations": len(rows), "ok": sum(1 for r in rows if r["status"] == "ok"),
            "step_mape": statistics.fmean(steps) if steps else None,
            "step_median_error": statistics.median(steps) if steps else None,
            "memory_mape": statistics.fmean(mems) if mems else None,
            "memory_max_error": max(mems) if mems else None,
            "predicted_feasible_out_of_memory": infeasible_runs}


def split_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Predicted against measured time of each engine call (the device synchronised around each)."""
    split = [r for r in rows if r.get("meas_split_s") and not r["largest"]]
    if not split:
        return []
    lines = ["", "## Where a step's time goes (ms per optimizer step, predicted / measured)", "",
             "| configuration | forward | backward | step |", "|---|---|---|---|"]
    for r in split:
        cells = [f"{r['pred_split_s'][k] * 1e3:.1f} / {r['meas_split_s'][k] * 1e3:.1f}" for k in ("forward", "backward", "step")]
        lines.append(f"| {r['key']} | " + " | ".join(cells) + " |")
    return lines


def profile_lines(rows: list[dict[str, Any]], top: int = 6) -> list[str]:
    """Each profiled configuration: host and device time per phase, the costliest operators."""
    lines: list[str] = []
    for r in rows:
        prof = r.get("profile")
        if not prof:
            continue
        lines += ["", f"## Profile of {r['key']} (torch.profiler, per optimizer step)", ""]
        if "error" in prof:
            lines.append(f"Not profiled: {prof['error']}")
            continue
        lines += [f"{prof['operators_per_step']} operator calls recorded per step (nested calls included).", "",
                  "| phase | host ms | device ms |",
                  "|---|---|---|"]
        lines += [f"| {name} | {v['host_ms']:.1f} | {v['device_ms']:.1f} |" for name, v in prof["phases"].items()]
        for title, key in (("host", "top_host"), ("device", "top_device")):
            entries = prof.get(key) or []
            if entries:
                lines += ["", f"Most {title} time: " + "; ".join(
                    f"`{e['name']}` {e['ms_per_step']:.2f} ms ({e['calls_per_step']:g} calls)" for e in entries[:top])]
    return lines


def clock_lines(samples: dict[str, Any]) -> list[str]:
    """The GPU's clocks, power and temperature per phase (``nvidia-smi`` twice a second)."""
    if samples.get("skipped"):
        return ["", f"GPU clocks: not sampled ({samples['skipped']})."]
    if not samples.get("phases"):
        return []
    lines = ["", "## GPU clocks while each phase ran (nvidia-smi, every 0.5 s)", "",
             "| phase | samples (busy) | SM MHz busy p5 / p50 | SM MHz max | power W p50 / max | max °C |",
             "|---|---|---|---|---|---|"]
    for name, v in samples["phases"].items():
        lines.append(f"| {name} | {v['samples']} ({v['busy_samples']}) | {v['sm_mhz_busy_p5']} / "
                     f"{v['sm_mhz_busy_p50']} | {v['sm_mhz_max']:g} | {v['power_w_p50']:g} / {v['power_w_max']:g} | "
                     f"{v['temperature_c_max']:g} |")
    return lines


def kernel_lines(profile_path: Optional[Path], spec_name: str = "hgx-h200-141gb") -> list[str]:
    """The calibrated kernel rates beside the spec profile's: per dtype the best matmul, the fused
    attention kernel forward and backward, and memory-bound kernels (GELU) in bytes per second."""
    if profile_path is None:
        return ["", "## Calibrated kernels", "", "No calibrated profile in this folder."]
    from simtune.hardware import load_profile
    from simtune.model.adapters import streaming_bandwidth

    measured, spec = load_profile(str(profile_path)), load_profile(spec_name)

    def rates(p: Any, dtype: str) -> str:
        curve = p.compute.curves.get(dtype)
        if curve is None:
            return "n/a"
        peak = spec.device.peak_flop_per_s.get(dtype) or max(x.flop_per_s for x in curve.points)
        best = max(x.flop_per_s for x in curve.points)
        att = p.compute.attention.get(dtype)
        attention = (f"{att.forward_flop_per_s / 1e12:.0f} / {att.backward_flop_per_s / 1e12:.0f} T "
                     f"({att.forward_flop_per_s / peak:.2f} / {att.backward_flop_per_s / peak:.2f})" if att else "none")
        bw = streaming_bandwidth(p, dtype)
        stream = f"{bw / 1e12:.2f} TB/s" if bw else "as fp32"
        return f"{best / 1e12:.0f} T ({best / peak:.2f}) | {attention} | {stream}"

    lines = ["", f"## Calibrated kernels (`{profile_path.name}` beside `{spec_name}`; fractions of the spec peak)", "",
             "| dtype | profile | best matmul | fused attention fwd / bwd | memory-bound (GELU) |", "|---|---|---|---|---|"]
    for dtype in ("bf16", "fp16", "fp32"):
        for name, p in (("measured", measured), ("spec", spec)):
            lines.append(f"| {dtype} | {name} | {rates(p, dtype)} |")
    return lines + host_copy_lines(measured.offload.points)


def host_copy_lines(points: Any) -> list[str]:
    """Host <-> device copies of the calibration at their largest size, pinned and pageable
    (DeepSpeed's offload buffers are pageable under ``pin_memory: false``; the model assumes pinned)."""
    largest: dict[str, Any] = {}
    for p in points:
        if p.direction in ("h2d", "d2h", "h2d_pageable", "d2h_pageable") and (
                p.direction not in largest or p.bytes > largest[p.direction].bytes):
            largest[p.direction] = p
    if not largest:
        return []
    lines = ["", "## Host copies (largest size, fastest repeat)", "", "| direction | MiB | GB/s |", "|---|---|---|"]
    for direction in ("h2d", "h2d_pageable", "d2h", "d2h_pageable"):
        if direction in largest:
            p = largest[direction]
            lines.append(f"| {direction} | {p.bytes / 2**20:.0f} | {p.bytes / p.stats.min_s / 1e9:.1f} |")
    return lines


def _profile_in(out: Path) -> Optional[Path]:
    """The calibrated profile the kit wrote into ``out`` (the JSON holding a hardware profile)."""
    for path in sorted(out.glob("*.json")):
        if path.name not in ("plan.json", "kit.json", "launches.json"):
            try:
                if "schema_version" in json.loads(path.read_text()):
                    return path
            except (OSError, ValueError):
                continue
    return None


def summary_markdown(plan: Optional[dict[str, Any]], measured: list[dict], launches: list[dict], kit: dict,
                     profile_path: Optional[Path] = None) -> str:
    env = kit.get("environment", {})
    mode = plan["mode"] if plan else kit.get("mode", "?")
    device = env.get("device", {}).get("name") or ("CPU (rehearsal)" if mode == "rehearsal" else "?")
    ops = kit.get("ops", {})
    lines = [f"# GPU kit results ({mode})", "",
             f"Device: {device}; torch {env.get('versions', {}).get('torch')}, CUDA {env.get('cuda')}, "
             f"DeepSpeed {env.get('versions', {}).get('deepspeed')}; optimizer {ops.get('optimizer', '?')}"
             f"{' (' + ops['fallback_reason'] + ')' if ops.get('fallback_reason') else ''}.",
             "", "## Phases", "", "| phase | status | seconds | note |", "|---|---|---|---|"]
    for name, phase in kit.get("phases", {}).items():
        lines.append(f"| {name} | {phase['status']} | {phase.get('seconds', '')} | {phase.get('reason') or ''} |")
    lines += clock_lines(kit.get("gpu_samples") or {})
    lines += kernel_lines(profile_path)
    if plan is None:
        return "\n".join(lines + ["", "No plan: nothing was predicted or measured."]) + "\n"
    if plan.get("left_out"):
        lines += ["", "Left out of the plan (the profile cannot predict them): " + "; ".join(
            f"{c['key']} ({c['reason']})" for c in plan["left_out"]) + "."]
    rows = summary_rows(plan, measured)
    v = verdicts(rows)
    engine_costs = plan.get("engine_costs")
    learnt = ("engine costs learnt from " + ", ".join(engine_costs["sources"])) if engine_costs else \
        "no engine costs learnt on it"
    lines += ["", f"## Predicted against measured (one process; closed-form workload; profile `{plan['profile']}`, "
              f"{learnt}; {plan['precision']})", "",
              "Memory: predicted total less the profile's fixed overhead against torch's peak allocated; "
              "reserved beside it.", "",
              "| configuration | status | pred ms | meas ms | err | pred GiB | alloc GiB | err | reserved GiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["largest"]:
            continue
        meas = f"{r['meas_step_s'] * 1e3:.1f}" if r["meas_step_s"] else ""
        lines.append(f"| {r['key']} | {r['status']} | {r['pred_step_s'] * 1e3:.1f} | {meas} | "
                     f"{_pct(r.get('step_err'))} | {_gib(r['pred_mem_bytes'])} | {_gib(r['meas_alloc_bytes'])} | "
                     f"{_pct(r.get('mem_err'))} | {_gib(r['meas_reserved_bytes'])} |")
    lines += ["", "## Largest micro-batch size", "",
              "| configuration | predicted largest | measured largest | smallest failing | sizes tried |",
              "|---|---|---|---|---|"]
    by_key = {m["key"]: m for m in measured}
    for r in rows:
        if r["largest"]:
            tried = ", ".join(f"{a['micro_batch_size']} {a['status']}" for a in by_key[r["key"]].get("attempts", []))
            lines.append(f"| {r['key']} | {r['predicted_largest']} | {r['measured_largest']} | "
                         f"{r['smallest_failing'] or ''} | {tried} |")
    lines += split_lines(rows) + profile_lines(rows)
    if launches:
        lines += ["", "## The same configurations through simtune's runner (launcher + probe)", "",
                  "| configuration | status | launch ms | in-process ms | launch peak GiB | in-process GiB |",
                  "|---|---|---|---|---|---|"]
        for item in launches:
            step = f"{item['launch_step_s'] * 1e3:.1f}" if item.get("launch_step_s") else ""
            lines.append(f"| {item['key']} | {item['status']} | {step} | {item['in_process_step_s'] * 1e3:.1f} | "
                         f"{_gib(item.get('launch_peak_bytes'))} | {_gib(item.get('in_process_peak_bytes'))} |")
    fmt = lambda x: "n/a" if x is None else f"{x * 100:.1f}%"  # noqa: E731
    lines += ["", "## Verdicts", "",
              f"- configurations measured: {v['configurations']}, ran: {v['ok']}",
              f"- step time: MAPE {fmt(v['step_mape'])}, median error {fmt(v['step_median_error'])} "
              f"(target MAPE <= {TARGET_STEP_MAPE * 100:.0f}%)",
              f"- peak memory: MAPE {fmt(v['memory_mape'])}, max error {fmt(v['memory_max_error'])}",
              f"- predicted to fit but out of memory: {', '.join(v['predicted_feasible_out_of_memory']) or 'none'}"]
    lines += [f"- {line}" for line in optimizer_pairs(rows) + offload_pairs(rows)]
    return "\n".join(lines) + "\n"


def _alike(r: dict[str, Any]) -> tuple:
    """What a configuration is besides its ZeRO stage and optimizer."""
    case = r["case"]
    return (case["preset"], case["seq_len"], r["mbs"], case["checkpointing"], case["offload_optimizer"],
            bool(case.get("autocast")))


def stage_pairs(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """(pairs ordered as measured, pairs) among configurations that differ in their ZeRO stage
    alone (same preset, sequence, micro-batch size, checkpointing, offload, autocast and
    optimizer)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("meas_step_s") and not r["largest"]:
            groups.setdefault((*_alike(r), bool(r["case"].get("torch_adam"))), []).append(r)
    agree = total = 0
    for members in groups.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                total += 1
                agree += (a["pred_step_s"] < b["pred_step_s"]) == (a["meas_step_s"] < b["meas_step_s"])
    return agree, total


def optimizer_pairs(rows: list[dict[str, Any]]) -> list[str]:
    """For each case measured with torch's AdamW (``Case.torch_adam``) and with the plan's
    FusedAdam alike otherwise: how much longer its step took, measured and predicted (stage 0's
    per-tensor wrapper, ``simtune.model.step_time.unfused_wrapper_s``)."""
    fused = {(*_alike(r), r["stage"]): r for r in rows
             if r.get("meas_step_s") and not r["largest"] and not r["case"].get("torch_adam")}
    lines = []
    for r in rows:
        other = fused.get((*_alike(r), r["stage"]))
        if r["case"].get("torch_adam") and r.get("meas_step_s") and other is not None:
            lines.append(f"{r['key']}: torch's AdamW over FusedAdam +{(r['meas_step_s'] - other['meas_step_s']) * 1e3:.1f}"
                         f" ms measured, +{(r['pred_step_s'] - other['pred_step_s']) * 1e3:.1f} ms predicted")
    return lines


def offload_pairs(rows: list[dict[str, Any]]) -> list[str]:
    """For each case measured with optimizer offload and without it alike otherwise: how much
    longer its step took, measured and predicted, and the predicted parts: offload's copies
    (``simtune.model.optimizer_time.offload_transfer_s``) and the optimizer's change (the host's
    step for the device's)."""
    def alike(r: dict[str, Any]) -> tuple:
        return (*_alike(r)[:4], r["stage"], bool(r["case"].get("autocast")), bool(r["case"].get("torch_adam")))

    plain = {alike(r): r for r in rows if r.get("meas_step_s") and not r["largest"]
             and r["case"]["offload_optimizer"] == "none"}
    lines = []
    for r in rows:
        other = plain.get(alike(r))
        if r["case"]["offload_optimizer"] != "none" and r.get("meas_step_s") and other is not None:
            lines.append(f"{r['key']}: offload +{(r['meas_step_s'] - other['meas_step_s']) * 1e3:.1f} ms measured, "
                         f"+{(r['pred_step_s'] - other['pred_step_s']) * 1e3:.1f} ms predicted (copies "
                         f"{r['pred_offload_s'] * 1e3:.1f} ms, optimizer "
                         f"{(r['pred_optimizer_s'] - other['pred_optimizer_s']) * 1e3:+.1f} ms)")
    return lines


def repredicted_text(kit_out: Path, profiles: list[str]) -> str:
    """The measured configurations of one kit output predicted again on each of ``profiles``
    (names or paths; engine costs learnt on them in this simtune home are applied)."""
    plan = json.loads((kit_out / "plan.json").read_text())
    measured = read_jsonl(kit_out / "measurements.jsonl")
    lines = [f"measurements: {kit_out} ({sum(1 for m in measured if m['status'] == 'ok')} ran; "
             f"precision {plan['precision']}; {'torch Adam' if plan['torch_adam'] else 'DeepSpeed default optimizer'})"]
    for ref in profiles:
        plan_here = {**plan, "profile_ref": ref}
        rows = summary_rows(plan_here, measured)
        v = verdicts(rows)
        agree, pairs = stage_pairs(rows)
        _, learnt = planning_profile(ref, plan["precision"])
        lines += ["", f"profile {ref} ({learnt.describe() if learnt else 'no engine costs learnt on it'})",
                  f"  {'configuration':36s} {'pred ms':>8s} {'meas ms':>8s} {'err':>7s} {'pred GiB':>9s} "
                  f"{'alloc GiB':>9s} {'err':>7s}"]
        for r in rows:
            if r["largest"] or not r.get("meas_step_s"):
                continue
            lines.append(f"  {r['key']:36s} {r['pred_step_s'] * 1e3:8.1f} {r['meas_step_s'] * 1e3:8.1f} "
                         f"{_pct(r.get('step_err')):>7s} {_gib(r['pred_mem_bytes']):>9s} "
                         f"{_gib(r['meas_alloc_bytes']):>9s} {_pct(r.get('mem_err')):>7s}")
        fmt = lambda x: "n/a" if x is None else f"{x * 100:.1f}%"  # noqa: E731
        lines.append(f"  step MAPE {fmt(v['step_mape'])} (median {fmt(v['step_median_error'])}); memory MAPE "
                     f"{fmt(v['memory_mape'])}; stage pairs ordered as measured {agree} of {pairs}")
        lines += [f"  {line}" for line in optimizer_pairs(rows) + offload_pairs(rows)]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--mode", choices=("gpu", "rehearsal"), required=True)
    p.add_argument("--profile", required=True)
    p.add_argument("--precision", required=True)
    p.add_argument("--torch-adam", action="store_true")
    p.add_argument("--no-cpu-adam", action="store_true")
    p.add_argument("--out", required=True)
    la = sub.add_parser("launches")
    la.add_argument("--plan", required=True)
    la.add_argument("--measurements", required=True)
    la.add_argument("--count", type=int, default=2)
    la.add_argument("--work", required=True)
    la.add_argument("--timeout", type=int, default=120)
    la.add_argument("--out", required=True)
    s = sub.add_parser("summarize")
    s.add_argument("--out-dir", required=True)
    r = sub.add_parser("repredict", help="a kit output's measured configurations predicted on other profiles")
    r.add_argument("--kit-out", required=True, help="a kit output folder (plan.json, measurements.jsonl)")
    r.add_argument("--profile", action="append", required=True, help="a profile name or path (repeatable)")
    args = parser.parse_args(argv)

    if args.command == "plan":
        plan = make_plan(args.mode, args.profile, args.precision, args.torch_adam, not args.no_cpu_adam)
        Path(args.out).write_text(json.dumps(plan, indent=1))
        print(f"plan: {len(plan['cases'])} configurations on {plan['profile']}")
    elif args.command == "launches":
        plan = json.loads(Path(args.plan).read_text())
        result = run_launches(plan, read_jsonl(Path(args.measurements)), args.count, Path(args.work),
                              max(30, args.timeout))
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"launches: {[(x['key'], x['status']) for x in result['launches']]}")
    elif args.command == "repredict":
        print(repredicted_text(Path(args.kit_out), args.profile), end="")
    else:
        out = Path(args.out_dir)
        plan = json.loads((out / "plan.json").read_text()) if (out / "plan.json").is_file() else None
        launches = json.loads((out / "launches.json").read_text())["launches"] if (out / "launches.json").is_file() \
            else []
        kit = json.loads((out / "kit.json").read_text()) if (out / "kit.json").is_file() else {}
        text = summary_markdown(plan, read_jsonl(out / "measurements.jsonl"), launches, kit, _profile_in(out))
        (out / "summary.md").write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
