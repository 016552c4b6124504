"""What a search leaves in results_dir, in the layout of DeepSpeed's autotuner.

- ``summary.txt``: a pipe table ``| tuning_space | num_experiments | best_metric_val |
  best_exp_name |`` with one row per ZeRO stage explored (z0..z3) and a ``global`` row, then
  ``Tuning completed in H:MM:SS. Total number of experiments: N.``, as DeepSpeed writes it. simtune
  appends the column ``num_failed`` (and ``predicted_metric_val`` when a model predicted the
  experiments), then lines with the metric, the failures by outcome, the search's decisions and
  the learning-rate advice. DeepSpeed's four columns come first, so scripts that read them by
  position keep working.
- ``ds_config_optimal.json``: the best experiment's DeepSpeed config, no "autotuning" section.
- ``cmd_optimal.txt``: the command that trains with it (no probe, no autotuning, so it trains for
  real), environment variables first.
- ``results.json``: every experiment (name, trial, status, reason, metrics) and the decisions.

docs/outputs.md describes every field.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from simtune.strategies.measure import Measurement, SearchOutcome

SUMMARY_FILE = "summary.txt"
OPTIMAL_CONFIG_FILE = "ds_config_optimal.json"
OPTIMAL_COMMAND_FILE = "cmd_optimal.txt"
RESULTS_FILE = "results.json"

DEEPSPEED_COLUMNS = ("tuning_space", "num_experiments", "best_metric_val", "best_exp_name")
GLOBAL_SPACE = "global"
METRIC_DESCRIPTIONS = {
    "throughput": "samples/s, higher is better",
    "latency": "ms per optimizer step, lower is better",
    "FLOPS": "flop/s per GPU, higher is better",
}


# ------------------------------------------------------------------------------------------------
# summary.txt
@dataclass(frozen=True)
class SummaryRow:
    """One row of summary.txt."""

    tuning_space: str
    num_experiments: int
    best_metric_val: float | None
    best_exp_name: str | None
    num_failed: int
    predicted_metric_val: float | None = None


def summary_rows(outcome: SearchOutcome, predicted: Mapping[str, float] | None = None) -> list[SummaryRow]:
    """A row per stage that ran experiments, then the global row.

    ``predicted`` (experiment name -> predicted metric value) fills ``predicted_metric_val`` for
    each row's best experiment: the hook a model-driven search uses.
    """
    by_name = {m.name: m for m in outcome.measurements}

    def row(space: str, names: Sequence[str], best: Measurement | None) -> SummaryRow:
        failed = sum(1 for n in names if not by_name[n].ok)
        guess = predicted.get(best.name) if (predicted and best is not None) else None
        return SummaryRow(space, len(names), best.value if best else None, best.name if best else None,
                          failed, guess)

    rows = [row(f"z{s.stage}", s.names, s.best) for s in outcome.stages if s.names]
    rows.append(row(GLOBAL_SPACE, list(by_name), outcome.best))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def pipe_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown pipe table as the ``tabulate`` package's "pipe" format writes it (DeepSpeed's
    summary.txt): numbers right-aligned (``--:``), text left-aligned (``:--``), each column as wide
    as its widest cell or its header plus two; a missing value is written ``-``."""
    cells = [[_cell(v) for v in r] for r in rows]
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) and bool(rows)
               for i in range(len(headers))]
    widths = [max([len(h) + 2] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else (":" + "-" * (w + 1))
                          for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def format_duration(seconds: float) -> str:
    """H:MM:SS, as ``datetime.timedelta`` prints whole seconds."""
    total = int(round(max(0.0, seconds)))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def format_summary(
    outcome: SearchOutcome,
    elapsed_s: float,
    *,
    advice: "LrAdvice | None" = None,
    predicted: Mapping[str, float] | None = None,
) -> str:
    """The text of summary.txt."""
    rows = summary_rows(outcome, predicted)
    headers = [*DEEPSPEED_COLUMNS, "num_failed"]
    with_prediction = predicted is not None
    if with_prediction:
        headers.append("predicted_metric_val")
    table_rows = [
        [r.tuning_space, r.num_experiments, r.best_metric_val, r.best_exp_name, r.num_failed]
        + ([r.predicted_metric_val] if with_prediction else [])
        for r in rows
    ]
    lines = [
        pipe_table(headers, table_rows),
        "",
        f"Tuning completed in {format_duration(elapsed_s)}. "
        f"Total number of experiments: {len(outcome.measurements)}.",
        f"Metric: {outcome.metric} ({METRIC_DESCRIPTIONS.get(outcome.metric, '')}).",
    ]
    failures: dict[str, int] = {}
    for m in outcome.measurements:
        if not m.ok:  # an "ok" run without the metric (FLOPS that could not be counted) counts too
            kind = m.status if m.status != "ok" else "no metric value"
            failures[kind] = failures.get(kind, 0) + 1
    if failures:
        detail = ", ".join(f"{status} {count}" for status, count in sorted(failures.items()))
        lines.append(f"Failed experiments: {sum(failures.values())} ({detail}).")
    else:
        lines.append("Failed experiments: 0.")
    if outcome.best is None:
        lines.append("No experiment ran successfully, so there is no optimal configuration.")
    else:
        lines.append(f"Optimal: {outcome.best.name} ({outcome.metric} {outcome.best.value:g}), "
                     f"results in {outcome.best.result_dir}.")
    lines.extend(f"Note: {note}." for note in outcome.notes)
    if advice is not None:
        lines.append(f"Learning rate: {advice.text}")
    return "\n".join(lines) + "\n"


def parse_summary_table(text: str) -> list[dict[str, str]]:
    """The rows of summary.txt's table as {column: cell} (the alignment rule skipped)."""
    table = [line for line in text.splitlines() if line.startswith("|")]
    if not table:
        return []
    split = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table]
    headers = split[0]
    return [dict(zip(headers, cells)) for cells in split[1:] if not re.fullmatch(r"[:\-| ]+", "".join(cells))]


# ------------------------------------------------------------------------------------------------
# learning-rate advice
ADAM_LIKE = ("adam", "lamb", "lion", "adafactor", "adagrad")
SGD_LIKE = ("sgd", "momentum")


@dataclass(frozen=True)
class LrAdvice:
    """How to scale the learning rate when the tuned global batch differs from the user's.

    Adam-like optimizers: ``sqrt(B'/B)`` (Malladi et al. 2022, "On the SDEs and Scaling Rules for
    Adaptive Gradient Algorithms"); SGD: ``B'/B`` (Goyal et al. 2017, "Accurate, Large Minibatch
    SGD"). ``factor`` is None when the optimizer is unknown: both rules are given.
    """

    user_batch: int
    chosen_batch: int
    optimizer: str | None
    factor: float | None
    text: str


def lr_advice(user_batch: int | None, chosen_batch: int | None, optimizer: str | None) -> LrAdvice | None:
    """The advice, or None when the batches are equal or one of them is unknown."""
    if not user_batch or not chosen_batch or user_batch == chosen_batch:
        return None
    ratio = chosen_batch / user_batch
    root, linear = math.sqrt(ratio), ratio
    head = f"the chosen global batch {chosen_batch} differs from yours, {user_batch}:"
    kind = (optimizer or "").lower()
    if any(name in kind for name in ADAM_LIKE):
        return LrAdvice(user_batch, chosen_batch, optimizer, root,
                        f"{head} scale the learning rate by {root:.3g} (sqrt({chosen_batch}/{user_batch}), "
                        f"the rule for Adam-like optimizers such as {optimizer}).")
    if any(name in kind for name in SGD_LIKE):
        return LrAdvice(user_batch, chosen_batch, optimizer, linear,
                        f"{head} scale the learning rate by {linear:.3g} ({chosen_batch}/{user_batch}, "
                        f"the linear rule for {optimizer}).")
    return LrAdvice(user_batch, chosen_batch, optimizer, None,
                    f"{head} scale the learning rate by {root:.3g} (sqrt({chosen_batch}/{user_batch})) "
                    f"for an Adam-like optimizer, or by {linear:.3g} ({chosen_batch}/{user_batch}) for SGD.")


def optimizer_type(ds_config: Mapping[str, Any]) -> str | None:
    """The "type" of the config's optimizer section, if any."""
    section = ds_config.get("optimizer")
    if isinstance(section, Mapping) and isinstance(section.get("type"), str):
        return section["type"]
    return None


# ------------------------------------------------------------------------------------------------
# the optimal configuration and command
def optimal_config(best: Measurement) -> dict[str, Any]:
    """The best experiment's DeepSpeed config without the "autotuning" section."""
    config = json.loads(json.dumps(dict(best.ds_config)))
    config.pop("autotuning", None)
    return config


def command_text(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """A shell line: ``VAR=value ... argv`` (quoted where needed)."""
    prefix = [f"{key}={shlex.quote(value)}" for key, value in (env or {}).items()]
    return " ".join([*prefix, shlex.join(list(argv))])


# ------------------------------------------------------------------------------------------------
# results.json
def measurement_record(m: Measurement) -> dict[str, Any]:
    return {
        "name": m.name,
        "trial": m.trial.to_dict() if hasattr(m.trial, "to_dict") else asdict(m.trial),
        "status": m.status,
        "reason": m.reason,
        "metric_value": m.value,
        "metrics": dict(m.metrics) if m.metrics is not None else None,
        "phase": m.phase,
        "reused": m.reused,
        "result_dir": m.result_dir,
        "wall_s": m.wall_s,
    }


def results_document(outcome: SearchOutcome, elapsed_s: float, *, advice: LrAdvice | None = None,
                     predicted: Mapping[str, float] | None = None, interrupted: bool = False) -> dict[str, Any]:
    """The content of results.json."""
    return {
        "metric": outcome.metric,
        "lower_is_better": outcome.lower_is_better,
        "best": outcome.best.name if outcome.best else None,
        "best_metric_value": outcome.best.value if outcome.best else None,
        "elapsed_s": elapsed_s,
        "interrupted": interrupted,
        "experiments": [measurement_record(m) for m in outcome.measurements],
        "stages": [
            {"stage": s.stage, "experiments": list(s.names), "best": s.best.name if s.best else None,
             "max_micro_batch_size": s.max_micro_batch_size, "note": s.note}
            for s in outcome.stages
        ],
        "notes": list(outcome.notes),
        "predicted": dict(predicted) if predicted is not None else None,
        "lr_advice": asdict(advice) if advice is not None else None,
    }


# ------------------------------------------------------------------------------------------------
# writing everything
@dataclass(frozen=True)
class WrittenOutputs:
    summary_path: Path
    results_path: Path
    optimal_config_path: Path | None
    optimal_command_path: Path | None
    summary_text: str


def _write_text(path: Path, text: str) -> None:
    """Write atomically (a reader never sees half a file)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_results_json(results_dir: str | os.PathLike, document: Mapping[str, Any]) -> Path:
    path = Path(results_dir) / RESULTS_FILE
    _write_text(path, json.dumps(document, indent=2, default=str) + "\n")
    return path


def write_outputs(
    results_dir: str | os.PathLike,
    outcome: SearchOutcome,
    elapsed_s: float,
    *,
    optimal_command: str | None = None,
    advice: LrAdvice | None = None,
    predicted: Mapping[str, float] | None = None,
) -> WrittenOutputs:
    """Write summary.txt, results.json and, when an experiment succeeded, ds_config_optimal.json
    and cmd_optimal.txt (``optimal_command``: its text, built by the caller, who knows the launcher)."""
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    summary = format_summary(outcome, elapsed_s, advice=advice, predicted=predicted)
    summary_path = folder / SUMMARY_FILE
    _write_text(summary_path, summary)
    results_path = write_results_json(folder, results_document(outcome, elapsed_s, advice=advice, predicted=predicted))
    config_path = command_path = None
    for stale in (OPTIMAL_CONFIG_FILE, OPTIMAL_COMMAND_FILE):  # from an earlier search
        (folder / stale).unlink(missing_ok=True)
    if outcome.best is not None:
        config_path = folder / OPTIMAL_CONFIG_FILE
        _write_text(config_path, json.dumps(optimal_config(outcome.best), indent=2) + "\n")
        if optimal_command is not None:
            command_path = folder / OPTIMAL_COMMAND_FILE
            _write_text(command_path, optimal_command + "\n")
    return WrittenOutputs(summary_path, results_path, config_path, command_path, summary)
