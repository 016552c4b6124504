"""Where the calibration's real engines run (their timing is exercised by the workload launches)."""

from simtune.calib.engines import engine_micro_batch_sizes


def test_the_engines_run_at_the_middle_of_the_default_sizes_whatever_larger_ones_were_measured():
    assert engine_micro_batch_sizes([1, 2, 4, 8]) == engine_micro_batch_sizes([1, 2, 4, 8, 16, 32]) == (4,)
    assert engine_micro_batch_sizes([1, 2]) == (2,)  # what fitted the memory
