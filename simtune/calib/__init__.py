"""The rank-side programs: the only code in the project that times kernels or opens process groups.

They run inside the ranks of a launch that :mod:`simtune.calibration` starts, and only measure
(fitting and caching happen there):

- ``python -m simtune.calib.run_all``: the machine's microbenchmarks; one JSON line of raw
  measurements on rank 0 (see :mod:`simtune.calib.run_all`);
- ``python -m simtune.calib.workload_rank``: a model-mode workload measured on every rank, with real
  engines at every ZeRO stage (:mod:`simtune.calib.workload_measure`, :mod:`simtune.calib.engines`);
- ``python -m simtune.calib.script_rank``: the model of the user's own training script.
"""
