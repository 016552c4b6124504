"""Read what a search left in its results_dir: results.json, summary.txt and any predictions.

Predictions are optional and may come from any of (the later ones win for the same experiment):

1. ``results.json`` ``"predicted"``: experiment name -> predicted value of the search metric;
2. a predicted field of an experiment record (``predicted_metric_value``, ``predicted_value``
   or ``predicted``: a number, or an object holding the metric);
3. ``predictions.json`` beside it: a name -> value object, a list of records with ``name`` and a
   predicted field, or either of these under a ``"predictions"`` key.

The hardware profile the search used is read from a ``"profile"`` entry of results.json or
predictions.json (a name or path, or an object with ``name``/``path``) when there is one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from simtune.errors import InputError
from simtune.metrics import METRICS, Metric
from simtune.metrics import metric as metric_row

RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.txt"
PREDICTIONS_FILE = "predictions.json"
PREDICTED_KEYS = ("predicted_metric_value", "predicted_value", "predicted", "prediction")


@dataclass(frozen=True)
class ExperimentRecord:
    name: str
    stage: Optional[int]
    micro_batch_size: Optional[int]
    gradient_accumulation_steps: Optional[int]
    status: str
    reason: str
    measured: Optional[float]
    """The search metric as measured (None when the run failed)."""
    predicted: Optional[float]
    phase: str


@dataclass(frozen=True)
class SearchRecord:
    results_dir: Path
    metric: str
    best: Optional[str]
    best_value: Optional[float]
    elapsed_s: Optional[float]
    experiments: tuple[ExperimentRecord, ...]
    """In the order they finished."""
    predicted_only: tuple[tuple[str, float], ...]
    """Predictions for configurations that were not run."""
    notes: tuple[str, ...]
    summary_text: str
    profile: Optional[str]
    """The hardware profile the search's model used, when it says."""
    prediction_sources: tuple[str, ...]

    @property
    def spec(self) -> Metric:
        """The metric's row of the metric table (its unit and direction)."""
        return metric_row(self.metric)

    @property
    def lower_is_better(self) -> bool:
        return self.spec.lower_is_better


def _number(value: Any, metric: str) -> Optional[float]:
    if isinstance(value, Mapping):
        for key in (metric, "value", "metric_value", *PREDICTED_KEYS):
            if key in value:
                return _number(value[key], metric)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc.strerror}).") from None


def _prediction_map(document: Any, metric: str) -> dict[str, float]:
    """name -> value from any of the accepted predictions.json shapes."""
    if isinstance(document, Mapping) and "predictions" in document:
        document = document["predictions"]
    found: dict[str, float] = {}
    if isinstance(document, Mapping):
        items = document.items()
    elif isinstance(document, list):
        items = ((r.get("name"), next((r[k] for k in PREDICTED_KEYS if k in r), r.get(metric)))
                 for r in document if isinstance(r, Mapping))
    else:
        return found
    for name, value in items:
        number = _number(value, metric)
        if isinstance(name, str) and number is not None:
            found[name] = number
    return found


def _profile_of(*documents: Any) -> Optional[str]:
    for document in documents:
        entry = document.get("profile") if isinstance(document, Mapping) else None
        if isinstance(entry, str) and entry:
            return entry
        if isinstance(entry, Mapping):
            for key in ("path", "name"):
                if isinstance(entry.get(key), str) and entry[key]:
                    return entry[key]
    return None


def read_search(results_dir: str | Path) -> SearchRecord:
    folder = Path(results_dir)
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise InputError(f"{folder} holds no {RESULTS_FILE}; point --results at the results_dir of a finished "
                         f"simtune search.")
    document = _read_json(path)
    if not isinstance(document, Mapping) or not isinstance(document.get("experiments"), list):
        raise InputError(f"{path} has no list of experiments, so it is not a simtune results file.")
    metric = str(document.get("metric") or "throughput")
    if metric not in {row.name for row in METRICS}:
        raise InputError(f"{path} names the metric {metric!r}, which simtune does not know (it knows "
                         f"{', '.join(row.name for row in METRICS)}).")
    predicted: dict[str, float] = {}
    sources = []
    if isinstance(document.get("predicted"), Mapping) and document["predicted"]:
        predicted.update(_prediction_map(document["predicted"], metric))
        sources.append(f"{RESULTS_FILE} \"predicted\"")
    experiments = []
    field_predictions = False
    for raw in document["experiments"]:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
            continue
        for key in PREDICTED_KEYS:
            number = _number(raw.get(key), metric)
            if number is not None:
                predicted[raw["name"]] = number
                field_predictions = True
                break
        experiments.append(raw)
    if field_predictions:
        sources.append(f"{RESULTS_FILE} experiment records")
    predictions_path = folder / PREDICTIONS_FILE
    predictions_document = None
    if predictions_path.is_file():
        predictions_document = _read_json(predictions_path)
        extra = _prediction_map(predictions_document, metric)
        if extra:
            predicted.update(extra)
            sources.append(PREDICTIONS_FILE)

    records = []
    for raw in experiments:
        trial = raw.get("trial") if isinstance(raw.get("trial"), Mapping) else {}
        measured = _number(raw.get("metric_value"), metric)
        if measured is None and isinstance(raw.get("metrics"), Mapping):
            measured = _number(raw["metrics"].get(metric), metric)
        records.append(ExperimentRecord(
            name=raw["name"], stage=trial.get("stage"), micro_batch_size=trial.get("micro_batch_size"),
            gradient_accumulation_steps=trial.get("gradient_accumulation_steps"),
            status=str(raw.get("status") or "unknown"), reason=str(raw.get("reason") or ""),
            measured=measured if raw.get("status", "ok") == "ok" else None,
            predicted=predicted.get(raw["name"]), phase=str(raw.get("phase") or "")))
    run = {r.name for r in records}
    summary_path = folder / SUMMARY_FILE
    summary = summary_path.read_text(encoding="utf-8") if summary_path.is_file() else ""
    return SearchRecord(
        results_dir=folder, metric=metric,
        best=document.get("best"), best_value=_number(document.get("best_metric_value"), metric),
        elapsed_s=_number(document.get("elapsed_s"), metric), experiments=tuple(records),
        predicted_only=tuple(sorted((n, v) for n, v in predicted.items() if n not in run)),
        notes=tuple(str(n) for n in document.get("notes") or ()), summary_text=summary,
        profile=_profile_of(document, predictions_document), prediction_sources=tuple(sources))
