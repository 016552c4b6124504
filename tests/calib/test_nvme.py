"""The storage microbenchmark (simtune.calib.nvme), run for real on this machine's disk."""

import pytest

from simtune.calib import nvme


def test_a_rank_writes_and_reads_its_file_in_blocks_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(nvme, "QUICK_FILE_BYTES", 16 * nvme.BLOCK_BYTES + 1)  # whole blocks only
    barriers = []
    # the bytes already in the rank's file as each timed part starts
    result = nvme.run(str(tmp_path), True, rank=3,
                      barrier=lambda: barriers.append(sum(f.stat().st_size for f in tmp_path.rglob("*.bin"))))
    assert result["bytes"] == 16 * nvme.BLOCK_BYTES
    assert result["write_s"] > 0 and result["read_s"] > 0 and isinstance(result["direct"], bool)
    # the write and the read each start with the node's ranks; the timed write overwrites a file
    # written once already, as every swap after the first step does
    assert barriers == [16 * nvme.BLOCK_BYTES, 16 * nvme.BLOCK_BYTES]
    assert list(tmp_path.iterdir()) == []  # the rank's folder and file are removed


def test_the_node_moves_its_ranks_bytes_in_the_slowest_ranks_time():
    ranks = [{"bytes": 2**30, "write_s": 1.0, "read_s": 0.5, "direct": True},
             {"bytes": 2**30, "write_s": 2.0, "read_s": 0.25, "direct": False}]
    rates = nvme.node_rates(ranks)
    assert rates["write_bytes_per_s"] == pytest.approx(2**31 / 2.0)
    assert rates["read_bytes_per_s"] == pytest.approx(2**31 / 0.5)
    assert rates["ranks"] == 2 and rates["direct"] is False and rates["bytes_per_rank"] == 2**30
