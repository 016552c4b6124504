"""How numbers read in reports: bytes in GiB, counts with B/M, durations in h or days."""

from __future__ import annotations

import math
from typing import Optional

GIB = 2**30


def gib(value_bytes: float) -> str:
    """Bytes as GiB with one decimal (2^30 bytes)."""
    return f"{value_bytes / GIB:.1f} GiB"


def count(value: float) -> str:
    """1.56B, 355M, 3.01T."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def duration(value_s: float) -> str:
    """Seconds as s, min, h or days, whichever reads best."""
    if value_s < 120:
        return f"{value_s:.3g} s"
    if value_s < 2 * 3600:
        return f"{value_s / 60:.3g} min"
    if value_s < 3 * 86400:
        return f"{value_s / 3600:.3g} h"
    return f"{value_s / 86400:.3g} days"


def milliseconds(value_s: float) -> str:
    """A step-sized time: ms below a second, s above."""
    if value_s >= 1.0:
        return f"{value_s:.3g} s"
    return f"{value_s * 1e3:.3g} ms"


def number(value: Optional[float], digits: int = 4) -> str:
    """Significant digits, thousands separated; '-' for None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def money(value_usd: Optional[float]) -> str:
    if value_usd is None:
        return "-"
    return f"${value_usd:,.0f}" if value_usd >= 100 else f"${value_usd:,.2f}"


def percent(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def signed_percent(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:+.{digits}f}%"


def flop_rate(value: float) -> str:
    return f"{value / 1e12:.3g} TFLOP/s" if value >= 1e12 else f"{value / 1e9:.3g} GFLOP/s"


def size_bytes(value: float) -> str:
    """Binary units for message sizes: 64 KiB, 4 MiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"
