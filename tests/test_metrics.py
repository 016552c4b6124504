"""The metric table: what each metric means, and the places that read it."""

import pytest

from simtune.dsconfig import AutotuningConfig
from simtune.metrics import METRICS, metric, step_metrics


def test_each_metric_follows_from_one_step():
    values = step_metrics(0.5, 64, 3e12)
    assert values == {"throughput": 128.0, "latency": 500.0, "FLOPS_per_gpu": 6e12}
    assert step_metrics(0.5, 64, None)["FLOPS_per_gpu"] is None  # no FLOP count, no FLOPS


def test_directions_and_descriptions():
    assert [m.name for m in METRICS if m.lower_is_better] == ["latency"]
    assert [metric(name).short_unit for name in ("throughput", "latency", "FLOPS")] == ["samples/s", "ms", "flop/s"]
    assert {row.name: row.description for row in METRICS} == {"throughput": "samples/s, higher is better",
                                   "latency": "ms per optimizer step, lower is better",
                                   "FLOPS": "flop/s per GPU, higher is better"}
    with pytest.raises(KeyError):
        metric("tokens")


@pytest.mark.parametrize("row", METRICS, ids=[m.name for m in METRICS])
def test_the_autotuning_section_reads_key_and_direction_from_the_table(row):
    config = AutotuningConfig(metric=row.name)
    assert config.metric_key == row.key
    assert config.metric_higher_is_better is not row.lower_is_better


@pytest.mark.parametrize("value,reference,lower,expected", [
    (110.0, 100.0, False, 0.1), (90.0, 100.0, True, 0.1), (110.0, 100.0, True, -0.1), (0.0, 0.0, False, 0.0),
])
def test_gain_is_relative_and_follows_the_direction(value, reference, lower, expected):
    row = metric("latency" if lower else "throughput")
    assert row.gain(value, reference) == pytest.approx(expected)
    assert row.shortfall(reference, value) == pytest.approx(-expected)
