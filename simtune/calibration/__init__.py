"""Calibration: launch the ``calib`` programs, fit their measurements, save a hardware profile.

``calibrate(num_gpus, num_nodes=1, hostfile=None, name=None, out=None, quick=False)`` is the entry
point (``simtune calibrate`` on the command line). See docs/calibration.md.
"""

from simtune.calibration.build import build_profile, default_name
from simtune.calibration.calibrate import CalibrationResult, calibrate, run_calibration
from simtune.calibration.fit import FitError, LineFit, fit_collective, fit_line, r_squared
from simtune.calibration.launch import CalibrationError

__all__ = [
    "CalibrationError",
    "CalibrationResult",
    "FitError",
    "LineFit",
    "build_profile",
    "calibrate",
    "default_name",
    "fit_collective",
    "fit_line",
    "r_squared",
    "run_calibration",
]
