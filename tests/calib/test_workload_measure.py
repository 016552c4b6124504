"""measure_module's limits on the larger micro-batch sizes a search's space adds, on a small module
measured for real in this process."""

import time

import torch

from simtune.calib import workload_measure
from simtune.calib.workload_measure import measure_module


class Small(torch.nn.Module):
    """Two linear layers; its forward runs out of device memory from ``fails_from`` samples on, and
    sleeps ``sleep_s`` per sample from ``slow_from`` samples on."""

    def __init__(self, fails_from: int, sleep_s: float = 0.0, slow_from: int = 1) -> None:
        super().__init__()
        self.fails_from, self.sleep_s, self.slow_from = fails_from, sleep_s, slow_from
        self.layers = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] >= self.fails_from:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        if x.shape[0] >= self.slow_from:
            time.sleep(self.sleep_s * x.shape[0])
        return self.layers(x).sum()


def batches(mbs: int) -> dict:
    return {"x": torch.randn(mbs, 16)}


def measure(model: torch.nn.Module, agreed: list[float]):
    def agree(value: float) -> float:
        agreed.append(value)
        return value

    return measure_module(model, batches, micro_batch_sizes=(1, 2, 16, 32), repeats=2,
                          memory_limit_bytes=2**40, agree=agree)


def test_a_larger_size_that_runs_out_of_memory_is_skipped_with_the_ones_after_it():
    agreed: list[float] = []
    results, _, _, notes = measure(Small(fails_from=32), agreed)
    assert [m.micro_batch_size for m in results] == [1, 2, 16]
    assert "micro-batch 32 skipped: it ran out of device memory" in notes
    assert 1.0 in agreed  # the ranks were asked to agree on the failure


def test_every_size_that_fits_is_measured(monkeypatch):
    # the time limit on the larger sizes is the next test's: a busy machine must not trip it here
    monkeypatch.setattr(workload_measure, "EXTRA_SIZE_SECONDS", 60.0)
    agreed: list[float] = []
    results, _, _, notes = measure(Small(fails_from=10**6), agreed)
    assert [m.micro_batch_size for m in results] == [1, 2, 16, 32]
    assert not any("skipped" in n for n in notes) and 1.0 not in agreed


def test_a_larger_size_whose_step_would_take_too_long_is_skipped():
    """At 10 ms a sample from micro-batch 16 on, micro-batch 32 would take 0.32 s a forward and
    backward: over the limit (16 itself is judged by micro-batch 2's speed)."""
    assert 32 * 0.01 > workload_measure.EXTRA_SIZE_SECONDS
    results, _, _, notes = measure(Small(fails_from=10**6, sleep_s=0.01, slow_from=16), [])
    assert [m.micro_batch_size for m in results] == [1, 2, 16]
    assert any(n.startswith("micro-batch 32 skipped: one forward and backward would take about") for n in notes)
