"""`simtune profiles` and `simtune profiles show` through the real command line."""

import dataclasses

import pytest

from simtune.cli import main
from simtune.hardware import load_profile, save_profile


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SIMTUNE_HOME", raising=False)
    monkeypatch.delenv("SIMTUNE_PROFILE_PATH", raising=False)


def test_profiles_lists_spec_and_measured(capsys):
    spec = load_profile("dgx-h100-80gb")
    measured = dataclasses.replace(spec.provenance, kind="measured")
    save_profile(dataclasses.replace(spec, name="lab-h100", provenance=measured))
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert {"dgx2-v100-32gb", "dgx-a100-80gb", "dgx-h100-80gb", "hgx-h200-141gb", "lab-h100"} <= set(lines)
    assert "superseded by lab-h100" in lines["dgx-h100-80gb"]
    assert " measured " in lines["lab-h100"] and "80.0 GiB" in lines["lab-h100"]
    assert ".simtune/profiles/lab-h100.json" in lines["lab-h100"]


def test_profiles_show(capsys):
    assert main(["profiles", "show", "dgx2-v100-32gb"]) == 0
    out = capsys.readouterr().out
    assert "Tesla V100-SXM3-32GB (cuda) x 16 per node" in out
    assert "compute_efficiency" in out and "intra-node allreduce" in out
    assert "host copy           4.0 GB/s" in out and "pageable" not in out  # 0.5 x 256 GB/s, 16 ranks, read and written
    assert main(["profiles", "show", "dgx2-v100-32gb", "--json"]) == 0
    assert '"schema_version": 1' in capsys.readouterr().out


def test_profiles_show_lists_the_engine_costs_learnt_on_it(capsys):
    from simtune.model.inputs import FrameworkCosts
    from simtune.prediction.learnt_engine_costs import record_engine_costs

    assert main(["profiles", "show", "dgx-a100-80gb"]) == 0
    out = capsys.readouterr().out
    assert "framework           forward_kernel 6.0 us" in out and "engine costs learnt" not in out
    record_engine_costs(load_profile("dgx-a100-80gb"), "gpt2@1024/bf16#1", "bf16",
                        FrameworkCosts(zero3_module_s=2e-4), buckets_measured=False)
    assert main(["profiles", "show", "dgx-a100-80gb"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "engine costs learnt" in line)
    assert "zero3_module 200.0 us" in line and "gpt2@1024/bf16#1" in line and "reduce_bucket" not in line
    assert "per parameter" not in line
    table = ((0.0, 4e-9, 8e-9), (0.0, 1.1e-8, 1.2e-8), (0.0, 9e-9, 1.2e-8), (8e-9, 1e-8, 7e-9))
    record_engine_costs(load_profile("dgx-a100-80gb"), "gpt2-tiny@64/bf16#1", "bf16",
                        FrameworkCosts(zero3_module_s=2e-4, param_pass_s=table), buckets_measured=False)
    assert main(["profiles", "show", "dgx-a100-80gb"]) == 0
    out = capsys.readouterr().out
    assert "per parameter (ns)  forward backward step: z0 0.00 4.00 8.00; z1 0.00 11.00 12.00" in out


def test_profiles_show_says_when_the_spec_engine_costs_stand_in(capsys):
    from pathlib import Path

    # an H200 profile calibrated without engines
    path = Path(__file__).resolve().parents[2] / "benchmarks/results/gpu/h200-2026-12-04-kit/h200-141gb-1gpu.json"
    assert main(["profiles", "show", str(path)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  engine costs  "))
    assert "the spec profiles' published estimates stand in" in line and "zero3_module 300.0 us" in line
    assert main(["profiles", "show", "hgx-h200-141gb"]) == 0
    assert "stand in" not in capsys.readouterr().out  # a spec profile's are its own


def test_profiles_show_errors(capsys):
    assert main(["profiles", "show", "missing-profile"]) == 2
    assert "No hardware profile is named 'missing-profile'" in capsys.readouterr().err
    assert main(["profiles", "show"]) == 2
    assert "Say which profile to show" in capsys.readouterr().err
