"""What the cost model gets wrong, learnt from real runs: step-time residuals and memory corrections.

Step time. Every verified experiment adds a sample ``(features of the trial and of its
prediction, predicted step_s, measured step_s)``. The residual model learns

    r(x) = ln(measured_step_s / predicted_step_s)

and corrects a prediction as ``step_s * exp(r(x))``. Three candidate correctors are compared by
their held-out error (leave-one-out up to 10 samples, 5-fold beyond), and the one with the
smallest wins (the trees only from ``MIN_SAMPLES_FOR_TREES`` samples on):

- ``identity``: no correction (r = 0);
- ``local``: the mean of r over the samples near x, shrunk toward 0 where there are few
  (a kernel-weighted mean with a prior of ``PRIOR_SAMPLES`` samples at r = 0, Nadaraya 1964 /
  Watson 1964 with a ridge term):

      r(x) = sum_i k(x, x_i) r_i / (PRIOR_SAMPLES + sum_i k(x, x_i))
      k(x, x_i) = exp(-1/2 sum_f ((x_f - x_i,f) / REGION_SCALES[f])^2)

  over the stage, log2 micro-batch size, log2 accumulation, offload and checkpointing. A factor
  learnt from runs that all sit in one region (verifications are the top predictions, often one
  micro-batch size at a few stages) corrects that region and fades away from it, instead of
  moving every other configuration by the same amount; a factor seen across the space corrects
  across the space;
- ``xgboost``: gradient-boosted trees on the features (Chen and Guestrin 2016, "XGBoost: A
  Scalable Tree Boosting System"), shallow and few because samples are few.

Corrections are fitted on the samples of one workload (another model's errors do not correct
this one). The held-out error (mean |corrected - measured| / measured) of the winner is the
model's own error estimate, which the search uses as its doubt. A workload with fewer than
``MIN_SAMPLES_FOR_ERROR`` samples takes the held-out error of the other workloads' samples of the
profile once one common factor is removed (their mean r: a uniform error does not change a
ranking), and ``DEFAULT_ERROR`` when there are too few of those too; with fewer than
``MIN_SAMPLES_FOR_ERROR`` samples of its own, its samples still correct it (``local``).

Memory. A run that went out of memory although predicted to fit proves the true peak exceeds
the limit it ran under, so the model under-predicts that configuration by at least
``limit / predicted``; a successful run's measured peak gives ``measured / predicted``. The
correction of a (workload, stage) is the largest such factor, never below 1: predicted peaks of
that stage are multiplied by it before they are compared with the limit, which marks the region
around a failure infeasible.

The samples (not the fitted trees) are stored as JSON in the user profile folder,
``~/.simtune/profiles/residuals/<profile>.json``, and the trees are refitted on load (a few
milliseconds, deterministic), so the file stays readable and independent of the xgboost version.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, TypeVar, Union

from simtune.atomic import write_atomically
from simtune.errors import ProfileError
from simtune.file_lock import exclusive
from simtune.knobs import deepspeed_defaults

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]

SCHEMA_VERSION = 1
DEFAULT_ERROR = 0.10
"""Relative error assumed before enough real runs have been measured."""
MIN_ERROR = 0.03
"""Floor of the error estimate: run-to-run noise of a measured step time on a quiet machine."""
MIN_SAMPLES_FOR_ERROR = 3
"""Held-out errors from fewer samples are not trusted."""
MIN_SAMPLES_FOR_TREES = 8
"""Boosted trees are a candidate corrector only from this many samples on."""
MAX_SAMPLES = 2000
"""Oldest samples are dropped beyond this."""
RATIO_BOUNDS = (0.1, 10.0)
"""A correction factor is clipped to this range."""
CORRECTORS = ("identity", "local", "xgboost")
PRIOR_SAMPLES = 1.0
"""Weight of the prior r = 0 in the local corrector: one sample at a point corrects it by half
its log ratio, three by three quarters."""
REGION_SCALES = {"stage": 0.5, "log2_mbs": 1.0, "log2_gas": 1.0, "offload_optimizer": 0.5, "offload_param": 0.5,
                 "activation_checkpointing": 0.5}
"""Kernel widths of the local corrector: a sample keeps weight 0.61 at twice or half its
micro-batch size or accumulation, 0.14 at the next ZeRO stage or across an offload or
checkpointing switch, 0.02 two stages away."""

_BOOL_KNOBS = ("overlap_comm", "contiguous_gradients", "reduce_scatter")
_SIZE_KNOBS = ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size",
               "stage3_param_persistence_threshold", "stage3_max_live_parameters")

FEATURES = (
    "stage", "log2_mbs", "log2_gas", "log2_batch_per_gpu", "offload_optimizer", "offload_param",
    "activation_checkpointing", *_BOOL_KNOBS, *(f"log10_{k}" for k in _SIZE_KNOBS),
    "log10_step_s", "forward_share", "backward_share", "recompute_share", "exposed_comm_share",
    "optimizer_share", "offload_share", "log10_model_states_bytes", "dp_degree",
)
"""The inputs of the residual model, in a fixed order."""


def residual_features(trial: Any, estimate: Any, knobs: Mapping[str, Any] | None = None,
                      dp_degree: int = 1) -> dict[str, float]:
    """Numbers describing a trial and its prediction. ``knobs``: every ZeRO knob's value in the
    experiment (``TuningSpace.knob_values``); missing or None values take DeepSpeed's defaults."""
    given = {k: v for k, v in (knobs or dict(trial.zero_knobs)).items() if v is not None}
    values = {**deepspeed_defaults(trial.stage), **given}
    t = estimate.time
    step = max(float(t.step_s), 1e-12)
    mbs, gas = trial.micro_batch_size, trial.gradient_accumulation_steps
    features = {
        "stage": float(trial.stage),
        "log2_mbs": math.log2(mbs),
        "log2_gas": math.log2(gas),
        "log2_batch_per_gpu": math.log2(mbs * gas),
        "offload_optimizer": float(trial.offload_optimizer != "none"),
        "offload_param": float(trial.offload_param != "none"),
        "activation_checkpointing": float(bool(trial.activation_checkpointing)),
        **{k: float(bool(values[k])) for k in _BOOL_KNOBS},
        **{f"log10_{k}": math.log10(max(float(values[k]), 1.0)) for k in _SIZE_KNOBS},
        "log10_step_s": math.log10(step),
        "forward_share": t.forward_s / step,
        "backward_share": t.backward_s / step,
        "recompute_share": t.recompute_s / step,
        "exposed_comm_share": max(0.0, t.exposed_comm_s) / step,
        "optimizer_share": t.optimizer_s / step,
        "offload_share": t.offload_transfer_s / step,
        "log10_model_states_bytes": math.log10(max(float(estimate.memory.model_states_bytes), 1.0)),
        "dp_degree": float(dp_degree),
    }
    return features


@dataclass(frozen=True)
class TimeSample:
    """One verified experiment's step time, predicted (uncorrected) and measured."""

    workload: str
    name: str
    features: Mapping[str, float]
    predicted_step_s: float
    measured_step_s: float
    recorded: str = ""

    @property
    def log_ratio(self) -> float:
        return math.log(self.measured_step_s / self.predicted_step_s)


@dataclass(frozen=True)
class MemorySample:
    """One verified experiment's memory: what was predicted, the limit it ran under, and what
    happened (``ok`` with the measured peak, or ``oom``)."""

    workload: str
    name: str
    stage: int
    predicted_bytes: int
    limit_bytes: int | None
    status: str
    measured_bytes: int | None = None
    recorded: str = ""

    @property
    def factor(self) -> float:
        """What the prediction must at least be multiplied by to agree with this run (>= 1)."""
        if self.predicted_bytes <= 0:
            return 1.0
        if self.status == "oom" and self.limit_bytes:
            return max(1.0, self.limit_bytes / self.predicted_bytes * 1.01)
        if self.status == "ok" and self.measured_bytes:
            return max(1.0, self.measured_bytes / self.predicted_bytes)
        return 1.0


@dataclass(frozen=True)
class Corrector:
    """The fitted step-time correction and its held-out error."""

    kind: str
    """identity, local or xgboost."""
    held_out_error: float | None
    """Mean relative error of corrected predictions on held-out samples; None: too few samples."""
    base_error: float | None
    """The same for uncorrected predictions (the base model alone)."""
    errors: Mapping[str, float] = field(default_factory=dict)
    """Held-out error of every candidate corrector."""
    samples: int = 0


def _timestamp() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _matrix(samples: Sequence[TimeSample]) -> FloatArray:
    import numpy as np

    return np.array([[float(s.features.get(name, 0.0)) for name in FEATURES] for s in samples], dtype=float)


class _Trees:
    """Boosted trees on ln(measured/predicted): few and shallow (samples are few), deterministic."""

    PARAMS = {"objective": "reg:squarederror", "max_depth": 3, "eta": 0.2, "min_child_weight": 1.0,
              "lambda": 1.0, "subsample": 1.0, "seed": 0, "nthread": 1, "verbosity": 0}
    ROUNDS = 60

    def __init__(self, samples: Sequence[TimeSample]) -> None:
        import numpy as np
        import xgboost

        targets = np.array([s.log_ratio for s in samples])
        params = {**self.PARAMS, "base_score": float(targets.mean())}
        self.booster = xgboost.train(params, xgboost.DMatrix(_matrix(samples), label=targets),
                                     num_boost_round=self.ROUNDS)

    def predict(self, matrix: FloatArray) -> NDArray[Any]:
        import xgboost

        return self.booster.predict(xgboost.DMatrix(matrix))


def _fit_trees(samples: Sequence[TimeSample]) -> _Trees:
    return _Trees(samples)


class _Local:
    """The kernel-weighted mean of ln(measured/predicted), shrunk toward 0 (module docstring)."""

    def __init__(self, samples: Sequence[TimeSample]) -> None:
        import numpy as np

        self.points = _region(s.features for s in samples)
        self.log_ratios = np.array([s.log_ratio for s in samples], dtype=float)

    def predict(self, rows: Iterable[Mapping[str, float]]) -> FloatArray:
        import numpy as np

        query = _region(rows)
        if not len(query):
            return np.zeros(0)
        squared = ((query[:, None, :] - self.points[None, :, :]) ** 2).sum(axis=2)
        weights = np.exp(-0.5 * squared)
        shrunk: FloatArray = weights @ self.log_ratios / (PRIOR_SAMPLES + weights.sum(axis=1))
        return shrunk


def _region(rows: Iterable[Mapping[str, float]]) -> FloatArray:
    """Feature rows in kernel-width units (:data:`REGION_SCALES`)."""
    import numpy as np

    return np.array([[float(r.get(f, 0.0)) / w for f, w in REGION_SCALES.items()] for r in rows],
                    dtype=float).reshape(-1, len(REGION_SCALES))


_State = Union[_Local, _Trees, None]
"""A fitted corrector's state: none for the identity."""
_Sample = TypeVar("_Sample", TimeSample, MemorySample)


def _folds(n: int) -> list[list[int]]:
    """Leave-one-out up to 10 samples, else 5 interleaved folds."""
    k = n if n <= 10 else 5
    return [list(range(i, n, k)) for i in range(k)]


def _relative_error(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / measured


class ResidualModel:
    """Residual corrections learnt from verified runs; see the module docstring."""

    def __init__(self, time_samples: Iterable[TimeSample] = (), memory_samples: Iterable[MemorySample] = (),
                 *, profile: str = "", path: Path | None = None):
        self.profile = profile
        self.path = path
        self.time_samples: list[TimeSample] = list(time_samples)[-MAX_SAMPLES:]
        self.memory_samples: list[MemorySample] = list(memory_samples)[-MAX_SAMPLES:]
        self._fitted: dict[str, tuple[Corrector, _State]] = {}
        self.learnt: set[tuple[str, str]] = set()
        """(workload, experiment) of every sample added since it was made or loaded."""

    # ------------------------------------------------------------------ learning
    def add_time(self, sample: TimeSample) -> None:
        """Record a measured step time (replacing an earlier sample of the same experiment)."""
        if not (sample.predicted_step_s > 0 and sample.measured_step_s > 0):
            return
        if not sample.recorded:
            sample = TimeSample(**{**asdict(sample), "recorded": _timestamp()})
        self.time_samples = [s for s in self.time_samples
                             if (s.workload, s.name) != (sample.workload, sample.name)] + [sample]
        self.time_samples = self.time_samples[-MAX_SAMPLES:]
        self._fitted.clear()
        self.learnt.add((sample.workload, sample.name))

    def add_memory(self, sample: MemorySample) -> None:
        """Record an experiment's memory outcome (replacing an earlier one of the same experiment)."""
        if not sample.recorded:
            sample = MemorySample(**{**asdict(sample), "recorded": _timestamp()})
        self.memory_samples = [s for s in self.memory_samples
                               if (s.workload, s.name) != (sample.workload, sample.name)] + [sample]
        self.memory_samples = self.memory_samples[-MAX_SAMPLES:]
        self.learnt.add((sample.workload, sample.name))

    # ------------------------------------------------------------------ step time
    def corrector(self, workload: str | None = None) -> Corrector:
        """The corrector chosen by held-out error, fitted on the samples of ``workload`` (every
        sample when None): another model's errors do not correct this one's."""
        return self._fit(workload)[0]

    def _samples_for(self, workload: str | None) -> list[TimeSample]:
        if workload is None:
            return list(self.time_samples)
        return [s for s in self.time_samples if s.workload == workload]

    def _fit(self, workload: str | None) -> tuple[Corrector, _State]:
        samples = self._samples_for(workload)
        key = "|".join(sorted({s.workload for s in samples})) + f"#{len(samples)}"
        if key in self._fitted:
            return self._fitted[key]
        fitted: tuple[Corrector, _State]
        if not samples:
            fitted = (Corrector("identity", None, None), None)
        elif len(samples) < MIN_SAMPLES_FOR_ERROR:
            fitted = (Corrector("local", None, None, samples=len(samples)), _Local(samples))
        else:
            errors = self.held_out_errors(samples)
            candidates = CORRECTORS if len(samples) >= MIN_SAMPLES_FOR_TREES else ("identity", "local")
            kind = min(candidates, key=lambda k: (errors[k], CORRECTORS.index(k)))
            state: _State = None
            if kind == "local":
                state = _Local(samples)
            elif kind == "xgboost":
                state = _fit_trees(samples)
            fitted = (Corrector(kind, errors[kind], errors["identity"], errors, len(samples)), state)
        self._fitted[key] = fitted
        return fitted

    @staticmethod
    def held_out_errors(samples: Sequence[TimeSample]) -> dict[str, float]:
        """Mean relative error of each corrector's predictions of held-out samples, and under
        ``"mean"`` that of one common factor (the mean log ratio of the rest)."""
        import numpy as np

        errors: dict[str, list[float]] = {kind: [] for kind in (*CORRECTORS, "mean")}
        for fold in _folds(len(samples)):
            train = [s for i, s in enumerate(samples) if i not in fold]
            test = [samples[i] for i in fold]
            if not train:
                continue
            mean = sum(s.log_ratio for s in train) / len(train)
            trees = _fit_trees(train)
            tree_log = trees.predict(_matrix(test))
            local_log = _Local(train).predict(s.features for s in test)
            for s, r, q in zip(test, np.asarray(tree_log, dtype=float), local_log):
                errors["identity"].append(_relative_error(s.predicted_step_s, s.measured_step_s))
                errors["mean"].append(_relative_error(s.predicted_step_s * _clip(math.exp(mean)),
                                                      s.measured_step_s))
                errors["local"].append(_relative_error(s.predicted_step_s * _clip(math.exp(float(q))),
                                                       s.measured_step_s))
                errors["xgboost"].append(_relative_error(s.predicted_step_s * _clip(math.exp(float(r))),
                                                         s.measured_step_s))
        return {kind: (sum(v) / len(v) if v else float("inf")) for kind, v in errors.items()}

    def ratios(self, features: Sequence[Mapping[str, float]], workload: str | None = None) -> list[float]:
        """measured/predicted step-time factors for many feature rows (1.0 without samples)."""
        corrector, state = self._fit(workload)
        if corrector.kind == "identity" or not features or state is None:
            return [1.0] * len(features)
        if isinstance(state, _Local):  # the "local" corrector
            return [_clip(math.exp(float(r))) for r in state.predict(features)]
        predicted = state.predict(_matrix([TimeSample("", "", f, 1.0, 1.0) for f in features]))
        return [_clip(math.exp(float(r))) for r in predicted]

    def ratio(self, features: Mapping[str, float], workload: str | None = None) -> float:
        """measured/predicted step-time factor for one feature row."""
        return self.ratios([features], workload)[0]

    def error_estimate(self, workload: str | None = None) -> float:
        """Relative error of corrected predictions, at least MIN_ERROR: the held-out error of the
        workload's chosen corrector when it has MIN_SAMPLES_FOR_ERROR samples; else, from the
        other workloads' samples on this profile, the held-out error left once one common factor
        is removed (a uniform error does not change a ranking); else DEFAULT_ERROR."""
        held_out = self.error_evidence(workload)[0]
        return DEFAULT_ERROR if held_out is None else max(MIN_ERROR, held_out)

    def error_evidence(self, workload: str | None = None) -> tuple[float | None, str]:
        """(held-out error or None, where it comes from) behind :meth:`error_estimate`."""
        corrector = self.corrector(workload)
        if corrector.held_out_error is not None and math.isfinite(corrector.held_out_error):
            return corrector.held_out_error, "own"
        others = [s for s in self.time_samples if workload is not None and s.workload != workload]
        if len(others) >= MIN_SAMPLES_FOR_ERROR:
            return self.held_out_errors(others)["mean"], "others"
        return None, "default"

    # ------------------------------------------------------------------ memory
    def memory_factor(self, workload: str, stage: int) -> float:
        """Multiplier (>= 1) of predicted peak memory at a stage of a workload."""
        factors = [s.factor for s in self.memory_samples if s.workload == workload and s.stage == stage]
        return max([1.0, *factors])

    # ------------------------------------------------------------------ identity and storage
    def fingerprint(self) -> str:
        """Changes whenever a sample is added: a study predicted with other corrections is
        another study."""
        import hashlib

        text = json.dumps([[s.workload, s.name, s.predicted_step_s, s.measured_step_s] for s in self.time_samples]
                          + [[s.workload, s.name, s.status, s.predicted_bytes, s.limit_bytes, s.measured_bytes]
                             for s in self.memory_samples])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "profile": self.profile,
            "time_samples": [asdict(s) for s in self.time_samples],
            "memory_samples": [asdict(s) for s in self.memory_samples],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: Path | None = None) -> "ResidualModel":
        if not isinstance(data, Mapping) or data.get("schema_version") != SCHEMA_VERSION:
            raise ProfileError(f"The residual file {path} is not a simtune residual file of schema version "
                               f"{SCHEMA_VERSION}; delete it to start afresh.")
        try:
            time_samples = [TimeSample(**{**s, "features": dict(s["features"])}) for s in data.get("time_samples", [])]
            memory_samples = [MemorySample(**s) for s in data.get("memory_samples", [])]
        except (TypeError, KeyError) as exc:
            raise ProfileError(f"The residual file {path} holds a malformed sample ({exc}); delete it to "
                               f"start afresh.") from None
        return cls(time_samples, memory_samples, profile=str(data.get("profile", "")), path=path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], profile: str = "") -> "ResidualModel":
        """The residual model stored at ``path``; an empty one when the file does not exist."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(profile=profile, path=path)
        except OSError as exc:
            raise ProfileError(f"The residual file {path} cannot be read ({exc}).") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ProfileError(f"The residual file {path} is not valid JSON; delete it to start afresh.") from None
        return cls.from_dict(data, path=path)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write atomically to ``path`` (default: where it was loaded from), merged with the samples
        other searches stored there since this model was loaded: under a lock, the file is read
        again and, per experiment, the newer sample kept."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path to save the residual model to")
        with exclusive(target.with_name(f".{target.name}.lock")):
            if target.exists():
                self._merge(ResidualModel.load(target, self.profile))
            write_atomically(target, json.dumps(self.to_dict(), indent=1) + "\n")
        self.path = target
        return target

    def _merge(self, stored: "ResidualModel") -> None:
        """Take in ``stored``'s samples: per (workload, experiment) the newer one wins (this model's
        on a tie), in the order they were recorded."""
        def newest(ours: list[_Sample], theirs: list[_Sample]) -> list[_Sample]:
            chosen = {(s.workload, s.name): s for s in theirs}
            for sample in ours:
                key = (sample.workload, sample.name)
                if key not in chosen or sample.recorded >= chosen[key].recorded:
                    chosen[key] = sample
            return sorted(chosen.values(), key=lambda s: s.recorded)[-MAX_SAMPLES:]

        self.time_samples = newest(self.time_samples, stored.time_samples)
        self.memory_samples = newest(self.memory_samples, stored.memory_samples)
        self._fitted.clear()


def _clip(ratio: float) -> float:
    low, high = RATIO_BOUNDS
    return min(high, max(low, ratio))


def residual_path(profile_name: str, folder: str | os.PathLike[str] | None = None) -> Path:
    """Where the residual model of a hardware profile lives: ``<user profile folder>/residuals/
    <profile>.json`` (a sub-folder, so profile listings do not mistake it for a profile)."""
    from simtune.hardware.registry import profile_side_file

    return profile_side_file("residuals", profile_name, folder)
