"""Drawing: each function takes one frozen data object of :mod:`simtune.report.data` and returns a
matplotlib Figure (Agg, no pyplot state), so plots are pure functions of their data."""
