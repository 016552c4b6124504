"""benchmarks/engine_profile.py: a case names model, sequence length, stage, processes and, when
given, the micro-batch size (2 otherwise)."""

from __future__ import annotations

import pytest

from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script


def _profile():
    return load_script(BENCHMARKS / "engine_profile.py", "engine_profile_benchmark")


def test_a_case_takes_its_micro_batch_size_from_a_fifth_field():
    parse = _profile().parse_case
    assert parse("gpt2:32:0:2") == ("gpt2", 32, 0, 2, 2)
    assert parse("gpt2:32:1:2:8") == ("gpt2", 32, 1, 2, 8)


def test_a_case_with_a_missing_field_is_refused():
    with pytest.raises(ValueError):
        _profile().parse_case("gpt2:32:1")
