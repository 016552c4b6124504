"""The DeepSpeed configuration file and its "autotuning" section.

:func:`load_ds_config` reads the JSON file a user passes to the DeepSpeed launcher.
:class:`AutotuningConfig` is the "autotuning" section: every key DeepSpeed's autotuner reads,
with the defaults its code uses (``deepspeed/autotuning/constants.py``), plus simtune's own keys.
Two defaults differ from DeepSpeed's code on purpose: ``overwrite`` is false (DeepSpeed's
README says false, its code says true and deletes earlier results), and metric names are
case-insensitive (DeepSpeed's ``"flops"`` fails at run time because its metrics file says
``FLOPS_per_gpu``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from simtune.errors import ConfigError
from simtune.metrics import METRICS as METRIC_TABLE
from simtune.metrics import Metric
from simtune.metrics import metric as metric_row
from simtune.search.study_storage import parse_storage

METRICS = tuple(row.name for row in METRIC_TABLE)
"""Values accepted for ``metric`` (after case-insensitive normalisation)."""

TUNER_TYPES = ("gridsearch", "random", "model_based")
"""Values accepted for ``tuner_type``."""

IGNORED_DEEPSPEED_KEYS = frozenset(
    {"metric_path", "model_info", "model_info_path", "min_train_batch_size"}
)
"""Keys DeepSpeed's autotuner reads that simtune accepts and does not need: the probe writes
the metrics file itself and measures the model instead of running a profiling experiment."""


class FrozenMapping(Mapping):
    """A read-only, hashable mapping (equal to a dict with the same items)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __repr__(self) -> str:
        return f"FrozenMapping({self._items!r})"


class ConfigWarning(UserWarning):
    """Something in the DeepSpeed configuration is ignored or adjusted; tuning goes on."""


def load_ds_config(path: str | Path) -> dict:
    """Read a DeepSpeed JSON configuration file and return its top-level object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"DeepSpeed config {path} does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"DeepSpeed config {path} is a directory, not a JSON file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"DeepSpeed config {path} cannot be read ({exc}).") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"DeepSpeed config {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}."
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(
            f"DeepSpeed config {path} must hold a JSON object at the top level, "
            f"not {json_type_name(config)}."
        )
    return config


def clips_gradients(ds_config: Mapping[str, Any] | None) -> bool:
    """Whether a DeepSpeed config clips gradients: ``gradient_clipping`` above 0, or ``"auto"``
    (the Hugging Face Trainer fills in its ``max_grad_norm``, 1.0 unless set)."""
    value = (ds_config or {}).get("gradient_clipping")
    if value is None:
        return False
    if value == "auto":
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"gradient_clipping must be a number of at least 0 or \"auto\", not {value!r}.")
    return value > 0


def pins_offload_memory(ds_config: Mapping[str, Any] | None, section: str) -> bool:
    """Whether ``zero_optimization.<section>`` (``offload_optimizer`` or ``offload_param``) keeps
    its host buffers page-locked: its ``pin_memory``, true unless set (DeepSpeed 0.19.8,
    runtime/zero/offload_config.py, from 0.19.5: DeepSpeed PR #8207; earlier releases defaulted to
    false)."""
    zero = (ds_config or {}).get("zero_optimization")
    offload = zero.get(section) if isinstance(zero, Mapping) else None
    value = offload.get("pin_memory", True) if isinstance(offload, Mapping) else True
    if not isinstance(value, bool):
        raise ConfigError(f"zero_optimization.{section}.pin_memory must be true or false, not {value!r}.")
    return value


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size_bytes(value: Any, *, name: str = "memory_budget_bytes") -> int:
    """A positive byte count from an integer or a string such as "1.5GB" or "800MiB".

    KB/MB/GB/TB are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024 (IEC 80000-13); units
    are case-insensitive; a fractional result is rounded down to whole bytes.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a byte count such as 2000000000 or \"1.5GB\", not {value!r}.")
    if isinstance(value, (int, float)):
        number, scale = float(value), 1
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ConfigError(
                f"{name} {value!r} is not a size: write a number of bytes or a number with a unit "
                f"(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. \"1.5GB\"."
            )
        number, scale = float(match.group(1)), _SIZE_UNITS[unit]
    else:
        raise ConfigError(f"{name} must be a byte count such as 2000000000 or \"1.5GB\", not {value!r}.")
    size_bytes = int(number * scale)
    if size_bytes <= 0:
        raise ConfigError(f"{name} must be positive, got {value!r}.")
    return size_bytes


@dataclass(frozen=True)
class AutotuningConfig:
    """The "autotuning" section of a DeepSpeed config, validated; a CLI value wins over it.

    Build it with :meth:`from_dict`; apply command-line values with :meth:`with_overrides`.
    """

    # --- DeepSpeed's keys (defaults from deepspeed/autotuning/constants.py) ---
    enabled: bool = False
    """DeepSpeed's switch for its own engine hook; simtune tunes whatever its value."""
    results_dir: str = "autotuning_results"
    """Folder for one sub-folder per experiment, summary.txt and the optimal configuration."""
    exps_dir: str = "autotuning_exps"
    """Folder for the experiment descriptions (<name>.json)."""
    overwrite: bool = False
    """False: an experiment whose result already exists is not run again."""
    metric: str = "throughput"
    """What is optimised: "throughput" (samples/s), "latency" (ms per step) or "FLOPS"."""
    start_profile_step: int = 3
    """First optimizer step (numbered from 1) of the measured window."""
    end_profile_step: int = 5
    """Last optimizer step of the measured window; the experiment ends after it."""
    fast: bool = True
    """True: tune ZeRO stage and micro-batch size only; False: also the ZeRO knobs."""
    max_train_batch_size: int | None = None
    """Upper bound on the global batch (mbs * gas * world_size / mp_size); None: no bound."""
    mp_size: int = 1
    """Model-parallel degree; the data-parallel degree is world_size / mp_size."""
    num_tuning_micro_batch_sizes: int = 3
    """How many micro-batch sizes are taken forward per stage once the largest one is known."""
    tuner_type: str = "gridsearch"
    """Tuner for the ZeRO knob experiments: "gridsearch" (DeepSpeed's code default; its README
    says "model_based"), "random" or "model_based"."""
    tuner_early_stopping: int = 5
    """Stop a tuner after this many experiments without improvement."""
    tuner_num_trials: int = 50
    """At most this many knob experiments per stage."""
    arg_mappings: Mapping[str, str] | None = None
    """DeepSpeed key -> the training script's flag (e.g. "train_micro_batch_size_per_gpu" ->
    "--per_device_train_batch_size"); keys and values are stripped of whitespace."""
    min_train_micro_batch_size_per_gpu: int = 1
    """Micro-batch size tried when the user's smallest one does not run."""
    max_train_micro_batch_size_per_gpu: int = 1024
    """Largest micro-batch size ever tried."""

    # --- simtune's own keys ---
    verify_top: int = 3
    """How many of the best predicted configurations are run for real (0: none, the predicted
    best is returned)."""
    profile: str | None = None
    """Hardware profile (name or JSON path) for the cost model; None: the one for this machine."""
    search_trials: int = 200
    """How many configurations the model-driven search evaluates."""
    confirm_close_calls: int = 0
    """When one run each cannot tell the two best verified configurations apart (a close call),
    run each this many more times and return the better mean; 0: only say so."""
    storage: str | None = None
    """Where the Optuna study is kept: a database URL (sqlite:///PATH, postgresql://..., mysql://...)
    or a journal file (journal:///PATH.log); None: results_dir/study.db. See
    :mod:`simtune.search.study_storage`."""
    experiment_timeout_s: float | None = 600.0
    """Wall-clock limit of one experiment in seconds; None: no limit."""
    memory_budget_bytes: int | None = None
    """Per-process memory limit an experiment must stay under (stands in for device memory on
    CPU); an int or a string such as "1.5GB" or "800MiB"; None: no limit."""
    tune_offload: bool = False
    """Also try optimizer (stage >= 1) and parameter (stage 3) offload to CPU."""
    tune_activation_checkpointing: bool = False
    """Also try activation checkpointing on and off (passed to the script through
    arg_mappings["activation_checkpointing"])."""

    @classmethod
    def from_dict(cls, section: Mapping[str, Any] | None) -> "AutotuningConfig":
        """Validate an "autotuning" section (None or missing: all defaults).

        Keys are stripped of whitespace; unknown keys give a :class:`ConfigWarning` and are
        ignored.
        """
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise ConfigError(
                f'The "autotuning" section must be a JSON object, not {json_type_name(section)}.'
            )
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for raw_key, value in section.items():
            key = raw_key.strip() if isinstance(raw_key, str) else raw_key
            if key in IGNORED_DEEPSPEED_KEYS:
                continue
            if key not in known:
                warnings.warn(
                    f'Unknown key "{raw_key}" in the "autotuning" section is ignored.',
                    ConfigWarning,
                    stacklevel=2,
                )
                continue
            if key in values:
                raise ConfigError(f'The "autotuning" section sets "{key}" twice.')
            values[key] = value
        return cls._validated(values)

    def with_overrides(self, **cli_values: Any) -> "AutotuningConfig":
        """A copy where each given value (a CLI flag) replaces the file's; None means "not given"."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(cli_values) - known)
        if unknown:
            raise TypeError(f"AutotuningConfig has no field {', '.join(unknown)}")
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update({k: v for k, v in cli_values.items() if v is not None})
        return self._validated(values)

    @property
    def metric_spec(self) -> Metric:
        """The chosen metric's row of :data:`simtune.metrics.METRICS` (its direction, unit, key)."""
        return metric_row(self.metric)

    @property
    def metric_higher_is_better(self) -> bool:
        """True for throughput and FLOPS; latency is better when lower."""
        return not self.metric_spec.lower_is_better

    @property
    def metric_key(self) -> str:
        """The key of the chosen metric in metrics.json."""
        return metric_row(self.metric).key

    def arg_flag(self, key: str) -> str | None:
        """The script flag mapped to a DeepSpeed key, or None."""
        if self.arg_mappings is None:
            return None
        return self.arg_mappings.get(key)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (arg_mappings as a dict)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.arg_mappings is not None:
            out["arg_mappings"] = dict(self.arg_mappings)
        return out

    @classmethod
    def _validated(cls, values: dict[str, Any]) -> "AutotuningConfig":
        v = {f.name: f.default for f in dataclasses.fields(cls)}
        v.update(values)
        for name in ("enabled", "overwrite", "fast", "tune_offload", "tune_activation_checkpointing"):
            if not isinstance(v[name], bool):
                raise ConfigError(f"autotuning.{name} must be true or false, not {v[name]!r}.")
        for name in ("results_dir", "exps_dir"):
            if not isinstance(v[name], str) or not v[name].strip():
                raise ConfigError(f"autotuning.{name} must be a non-empty folder path, not {v[name]!r}.")
        v["metric"] = _metric(v["metric"])
        v["tuner_type"] = _tuner_type(v["tuner_type"])
        for name in (
            "start_profile_step",
            "end_profile_step",
            "mp_size",
            "num_tuning_micro_batch_sizes",
            "tuner_early_stopping",
            "tuner_num_trials",
            "min_train_micro_batch_size_per_gpu",
            "max_train_micro_batch_size_per_gpu",
            "search_trials",
        ):
            v[name] = _positive_int(v[name], f"autotuning.{name}")
        v["verify_top"] = _non_negative_int(v["verify_top"], "autotuning.verify_top")
        v["confirm_close_calls"] = _non_negative_int(v["confirm_close_calls"], "autotuning.confirm_close_calls")
        if v["end_profile_step"] < v["start_profile_step"]:
            raise ConfigError(
                f"autotuning.end_profile_step ({v['end_profile_step']}) must not be smaller than "
                f"start_profile_step ({v['start_profile_step']})."
            )
        if v["max_train_micro_batch_size_per_gpu"] < v["min_train_micro_batch_size_per_gpu"]:
            raise ConfigError(
                f"autotuning.max_train_micro_batch_size_per_gpu ({v['max_train_micro_batch_size_per_gpu']}) "
                f"must not be smaller than min_train_micro_batch_size_per_gpu "
                f"({v['min_train_micro_batch_size_per_gpu']})."
            )
        if v["max_train_batch_size"] is not None:
            v["max_train_batch_size"] = _positive_int(v["max_train_batch_size"], "autotuning.max_train_batch_size")
        if v["profile"] is not None and (not isinstance(v["profile"], str) or not v["profile"].strip()):
            raise ConfigError(f"autotuning.profile must be a profile name or path, not {v['profile']!r}.")
        if v["storage"] is not None:
            parse_storage(v["storage"])  # a ConfigError in one sentence when it names no storage
            v["storage"] = v["storage"].strip()
        timeout = v["experiment_timeout_s"]
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
                raise ConfigError(
                    f"autotuning.experiment_timeout_s must be a positive number of seconds, not {timeout!r}."
                )
            v["experiment_timeout_s"] = float(timeout)
        if v["memory_budget_bytes"] is not None:
            v["memory_budget_bytes"] = parse_size_bytes(
                v["memory_budget_bytes"], name="autotuning.memory_budget_bytes"
            )
        v["arg_mappings"] = _arg_mappings(v["arg_mappings"])
        return cls(**v)


def _metric(value: Any) -> str:
    if isinstance(value, str):
        name = value.strip().lower()
        if name in ("flops", "flops_per_gpu"):
            return "FLOPS"
        if name in ("throughput", "latency"):
            return name
    raise ConfigError(f"autotuning.metric {value!r} is unknown: use throughput, latency or FLOPS.")


def _tuner_type(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in TUNER_TYPES:
        return value.strip().lower()
    raise ConfigError(f"autotuning.tuner_type {value!r} is unknown: use gridsearch, random or model_based.")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}.")
    return value


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a whole number of at least 0, not {value!r}.")
    return value


def _arg_mappings(value: Any) -> Mapping[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(
            "autotuning.arg_mappings must map DeepSpeed keys to script flags, e.g. "
            '{"train_micro_batch_size_per_gpu": "--per_device_train_batch_size"}, '
            f"not {json_type_name(value)}."
        )
    mappings: dict[str, str] = {}
    for raw_key, raw_flag in value.items():
        if not isinstance(raw_key, str) or not raw_key.strip():
            raise ConfigError(f"autotuning.arg_mappings has an empty or non-text key {raw_key!r}.")
        if not isinstance(raw_flag, str) or not raw_flag.strip().startswith("-") or len(raw_flag.split()) != 1:
            raise ConfigError(
                f'autotuning.arg_mappings["{raw_key.strip()}"] must be a script flag such as '
                f'"--per_device_train_batch_size", not {raw_flag!r}.'
            )
        key, flag = raw_key.strip(), raw_flag.strip()
        if key in mappings and mappings[key] != flag:
            raise ConfigError(f'autotuning.arg_mappings maps "{key}" twice, to {mappings[key]} and {flag}.')
        mappings[key] = flag
    return FrozenMapping(mappings)


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
