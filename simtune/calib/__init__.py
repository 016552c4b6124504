"""Calibration programs: the only code in the project that times kernels or opens process groups.

``python -m simtune.calib.run_all`` runs on every rank of a launch and prints one JSON
line of raw measurements on rank 0 (see ``simtune/calib/run_all.py``). Fitting happens elsewhere
(``simtune.calibration``), so these programs only measure.
"""
