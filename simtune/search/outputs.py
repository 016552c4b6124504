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
- ``predictions.json`` (model-driven searches): every verified configuration with its trial, the
  predicted terms and metrics, the measured metrics and the error; with ``--verify-top 0`` the
  best prediction of each stage.

A model-driven search passes a :class:`ModelReport`: summary.txt then also gives the method, the
number of real experiments, the calibration, search, verification and total times, the check of
the study against the enumerated space, and a predicted-vs-measured table.

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

from simtune.atomic import write_atomically
from simtune.runner.interference import MAX_OTHERS_CORES
from simtune.runner.steadiness import UNSTEADY_STATUS
from simtune.search.outcome import Measurement, SearchOutcome

SUMMARY_FILE = "summary.txt"
PREDICTIONS_FILE = "predictions.json"
OPTIMAL_CONFIG_FILE = "ds_config_optimal.json"
OPTIMAL_COMMAND_FILE = "cmd_optimal.txt"
RESULTS_FILE = "results.json"

DEEPSPEED_COLUMNS = ("tuning_space", "num_experiments", "best_metric_val", "best_exp_name")
GLOBAL_SPACE = "global"


# ------------------------------------------------------------------------------------------------
# what a model-driven search adds
@dataclass(frozen=True)
class PredictionRow:
    """One configuration the model predicted and (unless predicted only) that ran for real."""

    name: str
    trial: Mapping[str, Any]
    status: str
    """The run's outcome (ok, oom, crashed, timeout), or "predicted" when it was not run."""
    predicted: float
    """Predicted value of the search metric."""
    measured: float | None
    error: float | None
    """(predicted - measured) / measured; None when nothing was measured."""
    why: str
    """Why it was chosen for verification."""
    reused: bool = False
    replaces: str | None = None
    predicted_metrics: Mapping[str, float | None] | None = None
    measured_metrics: Mapping[str, Any] | None = None
    terms: Mapping[str, Any] | None = None
    """Every predicted memory and time term, and the corrections applied."""


@dataclass(frozen=True)
class ModelReport:
    """The model-driven search's account of itself (see the module docstring)."""

    profile: str
    profile_kind: str
    """"measured" or "spec"."""
    predicted_only: bool
    space_points: int
    study_name: str
    study_storage: str
    study_trials: int
    study_resumed_from: int
    enumeration: str | None
    """The study-versus-enumeration sentence, or None when the space was too large to enumerate."""
    enumeration_gap: float | None
    error_estimate: float
    error_source: str
    calibration_s: float
    search_s: float
    verification_s: float
    total_s: float
    real_experiments: int
    """Experiments launched by this search."""
    reused_experiments: int
    """Experiments taken from an earlier run's results (overwrite false)."""
    rows: tuple[PredictionRow, ...] = ()
    calibration_note: str | None = None
    residual_path: str | None = None
    settled: bool = False
    """A close call between the two best was settled by more runs (the better mean is returned)."""
    launches: str | None = None
    """How the experiments were launched when they shared launches (:mod:`simtune.runner.shared_launch`)."""
    optimizer_note: str | None = None
    """How the config's optimizer was modelled, when it is not AdamW
    (:meth:`simtune.prediction.predictor.Predictor.optimizer_note`)."""


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value:+.1%}"


def prediction_table(report: ModelReport) -> str:
    """Predicted beside measured, one row per verified (or, predicted only, predicted) configuration."""
    headers = ["exp_name", "status", "predicted_val", "measured_val", "error", "why"]
    rows = [[r.name, f"{r.status} (reused)" if r.reused else r.status, r.predicted, r.measured,
             _percent(r.error), r.why + (f" (replaces {r.replaces})" if r.replaces else "")] for r in report.rows]
    return pipe_table(headers, rows)


def model_lines(report: ModelReport) -> list[str]:
    """The lines summary.txt adds for a model-driven search."""
    what = ("the best prediction is returned, nothing was run (--verify-top 0)" if report.predicted_only
            else "the best predictions were run for real and the measured best is returned"
            + (" (a close call settled by more runs: the better mean)" if report.settled else ""))
    lines = [f"Method: simulate: hardware profile {report.profile} ({report.profile_kind}); "
             f"{report.study_trials} Optuna trials over {report.space_points} configurations "
             f"(study {report.study_name} in {report.study_storage}); {what}."]
    if report.optimizer_note:
        lines.append(f"Optimizer: {report.optimizer_note}.")
    if report.calibration_note:
        lines.append(f"Calibration: {report.calibration_note}.")
    how = f" ({report.launches})" if report.launches and report.real_experiments else ""
    lines.append(f"Real experiments: {report.real_experiments} launched{how}, {report.reused_experiments} reused "
                 f"from earlier runs.")
    lines.append(f"Time: calibration {report.calibration_s:.1f} s, search {report.search_s:.1f} s, "
                 f"verification {report.verification_s:.1f} s, total {report.total_s:.1f} s.")
    if report.enumeration is not None:
        lines.append(f"Model check: {report.enumeration}.")
    else:
        lines.append(f"Model check: the space has {report.space_points} configurations, too many to enumerate; "
                     f"the study's best is not compared with the true optimum.")
    lines.append(f"Model error estimate: {report.error_estimate:.1%} ({report.error_source}).")
    if report.rows:
        lines += ["", "Predicted vs measured" if not report.predicted_only else "Predicted best per stage",
                  prediction_table(report)]
    return lines


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
        failed = sum(1 for n in names if by_name[n].failed)
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


def predicted_rows(report: ModelReport, best_name: str | None) -> list[SummaryRow]:
    """Predicted only: a row per stage with its best prediction (no experiment), then the global
    row with ``best_name`` (the first row when it is not among them)."""
    ordered = sorted(report.rows, key=lambda r: (r.trial.get("stage", 0), r.name))
    rows = [SummaryRow(f"z{r.trial.get('stage')}", 0, r.predicted, r.name, 0, r.predicted) for r in ordered]
    best = next((r for r in report.rows if r.name == best_name), report.rows[0] if report.rows else None)
    if best is not None:
        rows.append(SummaryRow(GLOBAL_SPACE, 0, best.predicted, best.name, 0, best.predicted))
    return rows


def format_summary(
    outcome: SearchOutcome,
    elapsed_s: float,
    *,
    advice: "LrAdvice | None" = None,
    predicted: Mapping[str, float] | None = None,
    model: ModelReport | None = None,
) -> str:
    """The text of summary.txt. ``model``: a model-driven search's report (adds its lines; with
    ``model.predicted_only`` the rows hold the predicted best of each stage, the first row of
    ``model.rows`` being the best overall)."""
    predicted_only = model is not None and model.predicted_only
    rows = (predicted_rows(model, outcome.best.name if outcome.best else None) if model is not None and predicted_only
            else summary_rows(outcome, predicted))
    headers = [*DEEPSPEED_COLUMNS, "num_failed"]
    with_prediction = predicted is not None or predicted_only
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
        f"Metric: {outcome.metric.name} ({outcome.metric.description}).",
    ]
    if predicted_only:
        lines.append("Predicted only: nothing was run; best_metric_val holds the model's prediction.")
    failures: dict[str, int] = {}
    for m in outcome.measurements:
        if m.failed:  # an "ok" run without the metric (FLOPS that could not be counted) counts too
            kind = m.status if m.status != "ok" else "no metric value"
            failures[kind] = failures.get(kind, 0) + 1
    if failures:
        detail = ", ".join(f"{status} {count}" for status, count in sorted(failures.items()))
        lines.append(f"Failed experiments: {sum(failures.values())} ({detail}).")
    else:
        lines.append("Failed experiments: 0.")
    disturbed = [m for m in outcome.measurements if m.load_note]
    if disturbed:
        runs = ", ".join(f"{m.name} {m.others_cores:.2f}" for m in disturbed)
        lines.append(f"Load: other processes used more than {MAX_OTHERS_CORES} cores on average during "
                     f"{len(disturbed)} experiment(s), so their timings may be slowed by them: {runs}.")
    lines += [f"Unsteady: {note}" + (f"; {m.reason}." if m.status == UNSTEADY_STATUS else ".")
              for m in outcome.measurements if not m.failed and (note := m.unsteady_note)]
    if outcome.best is None:
        lines.append("No experiment ran successfully, so there is no optimal configuration.")
    elif predicted_only or outcome.best.status == "predicted":
        lines.append(f"Optimal (predicted, not measured): {outcome.best.name} "
                     f"({outcome.metric.name} {outcome.best.value:g} predicted).")
    else:
        lines.append(f"Optimal: {outcome.best.name} ({outcome.metric.name} {outcome.best.value:g}), "
                     f"results in {outcome.best.result_dir}.")
    if model is not None:
        lines.extend(model_lines(model))
        lines.append("")
    lines.extend(f"Note: {note}." for note in outcome.notes)
    if advice is not None:
        lines.append(f"Learning rate: {advice.text}")
    return "\n".join(lines).rstrip("\n") + "\n"


def parse_summary_table(text: str) -> list[dict[str, str]]:
    """The rows of summary.txt's first table (DeepSpeed's) as {column: cell}, the alignment rule
    skipped; later tables (predicted vs measured) are not part of it."""
    table: list[str] = []
    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    if not table:
        return []
    split = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table]
    headers = split[0]
    return [dict(zip(headers, cells)) for cells in split[1:] if not re.fullmatch(r"[:\-| ]+", "".join(cells))]


def parse_prediction_table(text: str) -> list[dict[str, str]]:
    """The rows of summary.txt's predicted-vs-measured table (empty when there is none)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line in ("Predicted vs measured", "Predicted best per stage"):
            return parse_summary_table("\n".join(lines[index + 1:]))
    return []


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
        return str(section["type"])
    return None


# ------------------------------------------------------------------------------------------------
# the optimal configuration and command
def optimal_config(best: Measurement) -> dict[str, Any]:
    """The best experiment's DeepSpeed config without the "autotuning" section."""
    config: dict[str, Any] = json.loads(json.dumps(dict(best.ds_config)))
    config.pop("autotuning", None)
    return config


def command_text(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """A shell line: ``cd CWD && VAR=value ... argv`` (quoted where needed; no ``cd`` without ``cwd``)."""
    prefix = [f"{key}={shlex.quote(value)}" for key, value in (env or {}).items()]
    line = " ".join([*prefix, shlex.join(list(argv))])
    return f"cd {shlex.quote(cwd)} && {line}" if cwd else line


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
        "others_cores": m.others_cores,
    }


def results_document(outcome: SearchOutcome, elapsed_s: float, *, advice: LrAdvice | None = None,
                     predicted: Mapping[str, float] | None = None, interrupted: bool = False,
                     model: ModelReport | None = None) -> dict[str, Any]:
    """The content of results.json (``strategy``, ``profile`` and ``model`` for a model-driven search)."""
    document: dict[str, Any] = {
        "metric": outcome.metric.name,
        "lower_is_better": outcome.metric.lower_is_better,
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
    if model is not None:
        details = asdict(model)
        details.pop("rows")
        document.update(strategy="simulate", profile=model.profile, model=details)
    return document


def predictions_document(outcome: SearchOutcome, model: ModelReport) -> dict[str, Any]:
    """The content of predictions.json: every verified (or predicted-best) configuration."""
    return {
        "metric": outcome.metric.name,
        "lower_is_better": outcome.metric.lower_is_better,
        "profile": model.profile,
        "predicted_only": model.predicted_only,
        "error_estimate": model.error_estimate,
        "predictions": [
            {"name": r.name, "trial": dict(r.trial), "status": r.status, "reused": r.reused,
             "predicted_metric_value": r.predicted, "measured_metric_value": r.measured, "error": r.error,
             "why": r.why, "replaces": r.replaces,
             "predicted_metrics": dict(r.predicted_metrics) if r.predicted_metrics is not None else None,
             "measured_metrics": dict(r.measured_metrics) if r.measured_metrics is not None else None,
             "terms": r.terms}
            for r in model.rows
        ],
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
    predictions_path: Path | None = None


def _write_text(path: Path, text: str) -> None:
    """Write atomically (a reader never sees half a file)."""
    write_atomically(path, text)


def write_results_json(results_dir: str | os.PathLike[str], document: Mapping[str, Any]) -> Path:
    path = Path(results_dir) / RESULTS_FILE
    _write_text(path, json.dumps(document, indent=2, default=str) + "\n")
    return path


def write_outputs(
    results_dir: str | os.PathLike[str],
    outcome: SearchOutcome,
    elapsed_s: float,
    *,
    optimal_command: str | None = None,
    advice: LrAdvice | None = None,
    predicted: Mapping[str, float] | None = None,
    model: ModelReport | None = None,
) -> WrittenOutputs:
    """Write summary.txt, results.json and, when an experiment succeeded (or, predicted only, a
    configuration is predicted best), ds_config_optimal.json and cmd_optimal.txt
    (``optimal_command``: its text, built by the caller, who knows the launcher); with ``model``
    also predictions.json."""
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    summary = format_summary(outcome, elapsed_s, advice=advice, predicted=predicted, model=model)
    summary_path = folder / SUMMARY_FILE
    _write_text(summary_path, summary)
    results_path = write_results_json(folder, results_document(outcome, elapsed_s, advice=advice, predicted=predicted,
                                                               model=model))
    predictions_path = None
    if model is not None:
        predictions_path = folder / PREDICTIONS_FILE
        _write_text(predictions_path, json.dumps(predictions_document(outcome, model), indent=2, default=str) + "\n")
    config_path = command_path = None
    for stale in (OPTIMAL_CONFIG_FILE, OPTIMAL_COMMAND_FILE):  # from an earlier search
        (folder / stale).unlink(missing_ok=True)
    if outcome.best is not None:
        config_path = folder / OPTIMAL_CONFIG_FILE
        _write_text(config_path, json.dumps(optimal_config(outcome.best), indent=2) + "\n")
        if optimal_command is not None:
            command_path = folder / OPTIMAL_COMMAND_FILE
            _write_text(command_path, optimal_command + "\n")
    return WrittenOutputs(summary_path, results_path, config_path, command_path, summary, predictions_path)
