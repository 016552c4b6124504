"""benchmarks/overlap_published.py: a collective beside a product, predicted as the step's phases are."""

from __future__ import annotations

import pytest

from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script


def _script():
    return load_script(BENCHMARKS / "overlap_published.py", "overlap_published_benchmark")


def test_every_measurement_quotes_its_source_and_has_a_profile():
    script = _script()
    found = script.sources()
    assert found, "no source in benchmarks/published/overlap/"
    for name, source in found.items():
        assert source["source"]["url"].startswith("https://"), name
        assert script.profile_of(source["hardware"]["gpu"]) is not None, name
        for row in source["measurements"]:
            assert row["quote"] and row["collective"]["op"] in ("allgather", "allreduce", "reduce_scatter"), row
            assert ("measured_ms" in row) != ("beside_ms" in row), row


def test_side_by_side_lies_between_the_longer_part_and_the_two_in_turn():
    script = _script()
    source = script.sources()["pytorch_pr172714_h100"]
    in_turn, beside = (script.predict(row, source) for row in source["measurements"])
    parts_ms = (beside.matmul_s * 1e3, beside.collective.seconds * 1e3)
    assert in_turn.predicted == pytest.approx(sum(parts_ms))
    assert beside.hidden_free == pytest.approx(max(parts_ms))
    assert beside.hidden_free < beside.sms_only < beside.predicted < sum(parts_ms)
    # the all-gather of 64 MiB a rank on 8 ranks is 512 MiB, almost all of it bytes, not latency
    assert beside.collective.total_bytes == 8 * 64 * 2**20 and beside.collective.moving_s > 0.95 * beside.collective.seconds
    assert beside.share > beside.sms_share  # on an H100 node the memory traffic takes more than the SMs


def test_a_kernel_wholly_beside_a_collective_of_unknown_size_is_slowed_by_the_large_message_share():
    script = _script()
    source = script.sources()["nccl_issue1428_a100"]
    gemm = script.predict(source["measurements"][0], source)
    assert gemm.unit == "x alone" and gemm.predicted == pytest.approx(1 / (1 - gemm.share))
    assert gemm.published == pytest.approx(2.08 / 1.18)
    assert gemm.collective.total_bytes is None and gemm.hidden_free == 1.0


def test_the_script_prints_every_row_and_the_medians(capsys):
    script = _script()
    assert script.main() == 0
    out = capsys.readouterr().out
    for source in script.sources().values():
        for row in source["measurements"]:
            assert f" {row['id']} " in out
    assert "median |error| over the rows: the model" in out
