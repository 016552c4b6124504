import pytest

from simtune.errors import ConfigError
from simtune.probe.metrics import RunFacts, summarize
from simtune.probe.protocol import REQUIRED_METRIC_KEYS, ProbeSettings
from simtune.probe.window import StepWindow


def _window():
    window = StepWindow(start=2, end=4)
    for step, time_s in [(1, 10.0), (2, 10.5), (3, 11.5), (4, 11.8)]:
        if window.needs_boundary(step):
            window.mark_boundary(step, time_s)
    for step, (fwd, bwd, opt) in {2: (0.1, 0.2, 0.05), 3: (0.3, 0.4, 0.1), 4: (0.05, 0.1, 0.02)}.items():
        for kind, value in (("fwd", fwd / 2), ("fwd", fwd / 2), ("bwd", bwd), ("step", opt)):
            window.add_split(step, kind, value)
    return window


def test_window_covers_start_minus_one_to_end():
    window = StepWindow(start=2, end=4)
    assert [window.needs_boundary(k) for k in range(0, 6)] == [False, True, True, True, True, False]
    assert [window.measures(k) for k in range(1, 6)] == [False, True, True, True, False]


def test_step_times_and_split_medians():
    window = _window()
    assert window.complete
    assert window.step_times_s() == pytest.approx([0.5, 1.0, 0.3])
    assert window.split_medians_s() == pytest.approx({"fwd": 0.1, "bwd": 0.2, "step": 0.05})


def test_summary_definitions():
    facts = RunFacts(train_batch_size=16, micro_batch_size=4, gradient_accumulation_steps=2,
                     world_size=2, zero_stage=1, flops_per_micro_step=1000,
                     peak_memory_per_rank=(5, 9), peak_reserved_per_rank=None, memory_kind="rss_peak")
    metrics = summarize(_window(), facts)
    assert set(REQUIRED_METRIC_KEYS) <= set(metrics)
    assert metrics["step_time_s"] == pytest.approx(0.5)
    assert metrics["throughput"] == pytest.approx(16 / 0.5)
    assert metrics["latency"] == pytest.approx(500.0)
    assert metrics["flops_per_step"] == 2000
    assert metrics["FLOPS_per_gpu"] == pytest.approx(2000 / 0.5)
    assert (metrics["step_time_min_s"], metrics["step_time_max_s"]) == pytest.approx((0.3, 1.0))
    assert metrics["peak_memory_bytes"] == 9 and metrics["peak_memory_per_rank"] == [5, 9]


def test_uncounted_flops_give_null():
    facts = RunFacts(16, 4, 2, 2, 0, None, (1,), None, "rss_peak")
    assert summarize(_window(), facts)["FLOPS_per_gpu"] is None


def test_settings_round_trip_and_validation(tmp_path):
    settings = ProbeSettings(3, 5, str(tmp_path / "metrics.json"), 1 << 30)
    settings.write(tmp_path / "probe.json")
    assert ProbeSettings.read(tmp_path / "probe.json") == settings
    for start, end, budget in [(0, 5, None), (4, 3, None), (1, 2, 0), (1, 2, True)]:
        with pytest.raises(ConfigError):
            ProbeSettings(start, end, "m.json", budget)
