"""The single path from a trial to an estimate.

- :mod:`.predictor`: :class:`~.predictor.Predictor`, the cost model bound to one workload (or its
  calibration), one hardware profile and one process layout: ``predict(trial) -> Estimate``;
- :mod:`.residual`: the step-time and memory corrections learnt from verified runs;
- :mod:`.largest_fit`: the one search for the largest micro-batch size that fits;
- :mod:`.planning`: capacity planning, as queries over tuning spaces built from a grid and run
  through the same predictor.
"""
