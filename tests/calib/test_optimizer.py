"""The optimizer microbenchmark, run for real on this CPU."""

from simtune.calib import optimizer
from simtune.calib.device import current_device


def test_host_implementations_also_time_their_largest_size_with_moments_left_at_zero():
    result = optimizer.run(current_device(0), quick=True)["impls"]
    timed = {name: impl for name, impl in result.items() if "unavailable" not in impl}
    assert {"torch_adamw_foreach", "torch_adamw_for_loop"} <= set(timed)
    for impl in timed.values():
        largest = max(point["params"] for point in impl["points"])
        zero = impl["zero_state"]
        assert zero["params"] == largest == max(optimizer.CPU_PARAMS_QUICK)
        assert 0 < zero["min_s"] <= zero["median_s"] <= zero["max_s"]
        assert len(impl["points"]) == len(optimizer.CPU_PARAMS_QUICK)  # the zero-moment step is not a fit point
