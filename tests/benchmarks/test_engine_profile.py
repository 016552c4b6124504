"""benchmarks/engine_profile.py: a case names model, sequence length, stage, processes and, when
given, the micro-batch size (2 otherwise) and the micro-steps per optimizer step (1 otherwise)."""

from __future__ import annotations

import pytest

from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script


def _profile():
    return load_script(BENCHMARKS / "engine_profile.py", "engine_profile_benchmark")


def test_a_case_takes_its_micro_batch_size_and_accumulation_from_a_fifth_and_sixth_field():
    parse = _profile().parse_case
    assert parse("gpt2:32:0:2") == ("gpt2", 32, 0, 2, 2, 1)
    assert parse("gpt2:32:1:2:8") == ("gpt2", 32, 1, 2, 8, 1)
    assert parse("gpt2:32:1:2:8:4") == ("gpt2", 32, 1, 2, 8, 4)


@pytest.mark.parametrize("case", ["gpt2:32:1", "gpt2:32:1:2:8:4:1"])
def test_a_case_with_a_missing_or_extra_field_is_refused(case):
    with pytest.raises(ValueError):
        _profile().parse_case(case)


def test_the_reduction_counts_the_pages_it_touches_first(monkeypatch):
    """A reduction that writes a fresh 64 MiB buffer touches at least that many pages first; the
    collectives' own count stays apart."""
    import torch
    from deepspeed import comm

    for name in ("all_reduce", "reduce_scatter_tensor", "all_gather_into_tensor"):
        monkeypatch.setattr(comm, name, getattr(comm, name))  # restored after the test
    script = _profile()

    class Engine:
        def allreduce_gradients(self):
            torch.ones(16 * 2**20)  # 64 MiB: mapped afresh and written

    engine, counts = Engine(), [{}]
    script.count_reduction_faults(engine, counts)
    engine.allreduce_gradients()
    assert counts[0][script.REDUCTION] * script.PAGE >= 60 * 2**20 and counts[0].get(script.COLLECTIVES, 0) == 0


def test_a_named_call_counts_its_first_touches_and_a_missing_one_is_refused():
    import torch

    script = _profile()

    class Optimizer:
        def scaled_global_norm(self):
            torch.ones(16 * 2**20)  # 64 MiB mapped afresh and written

    class Engine:
        optimizer = Optimizer()

    engine, counts = Engine(), [{}]
    script.count_faults_in(engine, ["scaled_global_norm"], counts)
    engine.optimizer.scaled_global_norm()
    assert counts[0]["scaled_global_norm"] * script.PAGE >= 60 * 2**20
    with pytest.raises(SystemExit, match="has no 'step_all'"):
        script.count_faults_in(engine, ["step_all"], counts)
