"""Experiment names, in the form DeepSpeed's autotuner gives them.

``z{stage}_{knobs}_gas{gas}_tmbspg{mbs}``, e.g. ``z1_rbs5.0e+07_abs1.0e+09_gas1_tmbspg11``.
Each knob is written as its abbreviation (the first letter of each ``_``-separated word of
its key, as in DeepSpeed's ``canonical_name``) followed by its value: numbers above 9000 in
``%.1e`` form (with more digits when one would merge two different values), booleans as T/F.
simtune's additions follow the knobs: ``oocpu`` (optimizer offload), ``opcpu`` (parameter
offload), ``acT`` (activation checkpointing); each appears only when it is not off.

Names are unique per distinct trial: the knobs come in one fixed order, every abbreviation is
distinct, and every value is written so that it can be read back. They use only letters,
digits and ``._+-``, so they are safe as folder names.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from simtune.knobs import abbreviation, name_order

if TYPE_CHECKING:
    from simtune.space import Trial

_SAFE = re.compile(r"^[A-Za-z0-9._+-]+$")


def format_value(value: Any) -> str:
    """A knob value as it appears in a name: T/F, ``%.1e`` above 9000, else plain."""
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, int):
        return _exponent_form_int(value) if value > 9000 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"knob value {value!r} cannot be named")
        if value > 9000:
            return _exponent_form_float(value)
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value)
    if not _SAFE.match(text):
        raise ValueError(f"knob value {value!r} cannot be part of a folder name")
    return text


def experiment_name(trial: "Trial", default_knobs: Mapping[str, Any] | None = None) -> str:
    """The experiment's name: ``z{stage}_{knobs}_{additions}_gas{gas}_tmbspg{mbs}``.

    With ``default_knobs`` (key -> value the experiment would use anyway), knobs whose value
    equals their default are left out of the name, so two trials that run the same configuration
    share it; without it every knob of the trial is named and names are unique per trial.
    """
    parts = [f"z{trial.stage}"]
    knobs = dict(trial.zero_knobs)
    if default_knobs:
        knobs = {
            k: v
            for k, v in knobs.items()
            if not (k in default_knobs and _same(default_knobs[k], v))
        }
    for key in _ordered(knobs):
        parts.append(abbreviation(key) + format_value(knobs[key]))
    if trial.offload_optimizer != "none":
        parts.append("oo" + format_value(trial.offload_optimizer))
    if trial.offload_param != "none":
        parts.append("op" + format_value(trial.offload_param))
    if trial.activation_checkpointing:
        parts.append("acT")
    parts.append(f"gas{trial.gradient_accumulation_steps}")
    parts.append(f"tmbspg{trial.micro_batch_size}")
    return "_".join(parts)


def _ordered(keys: Iterable[str]) -> list[str]:
    order = name_order()  # simtune.knobs' table; keys it does not hold follow alphabetically
    known = [k for k in order if k in keys]
    return known + sorted(k for k in keys if k not in order)


def _same(a: Any, b: Any) -> bool:
    return type(a) is bool and type(b) is bool and a == b or (
        type(a) is not bool and type(b) is not bool and a == b
    )


def _exponent_form_int(value: int) -> str:
    """Exact ``d.ddde+XX`` form of a positive integer, at least one decimal (5.0e+07)."""
    digits = str(value)
    exponent = len(digits) - 1
    mantissa = digits.rstrip("0") or "0"
    decimals = mantissa[1:] or "0"
    return f"{mantissa[0]}.{decimals}e+{exponent:02d}"


def _exponent_form_float(value: float) -> str:
    """``%.1e``, with more digits only when one decimal would not read back as ``value``."""
    for precision in range(1, 18):
        text = f"{value:.{precision}e}"
        if float(text) == value:
            return text
    return repr(value)
