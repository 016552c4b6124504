"""Calibration: launch the :mod:`simtune.calib` programs, fit their measurements, save a hardware profile.

``calibrate(num_gpus, num_nodes=1, hostfile=None, name=None, out=None, quick=False)`` is the entry
point (``simtune calibrate`` on the command line). See docs/calibration.md.

The fitting's names are imported on first use: the measuring launches import submodules of this
package in every rank, and numpy's and scipy's fitting code (some 24 MiB of resident memory) must
not count in the memory a rank holds before it trains.
"""

from importlib import import_module
from typing import Any

from simtune.calibration.calibrate import CalibrationResult, calibrate, run_calibration
from simtune.calibration.launch import CalibrationError

_FITTING = {"build_profile": "build", "default_name": "build", "FitError": "fit", "LineFit": "fit",
            "fit_collective": "fit", "fit_line": "fit", "r_squared": "fit"}


def __getattr__(name: str) -> Any:
    if name in _FITTING:
        return getattr(import_module(f"simtune.calibration.{_FITTING[name]}"), name)
    raise AttributeError(f"module 'simtune.calibration' has no attribute {name!r}")


__all__ = ["CalibrationError", "CalibrationResult", "FitError", "LineFit", "build_profile", "calibrate", "default_name",
           "fit_collective", "fit_line", "r_squared", "run_calibration"]
