"""A large workload's engines stand-in: a tiny reference model's real engines teach the machine
what DeepSpeed's engine costs per unit, so that the workload is measured without engines."""

import json

import pytest

from simtune.calibration.workload import MeasureScope, read_cached
from simtune.cli import main
from simtune.hardware import load_profile
from simtune.hardware.registry import user_dir
from simtune.prediction.learnt_engine_costs import learnt_costs_path, learnt_engine_costs
from simtune.search import model_inputs
from simtune.search.model_inputs import engine_reference, engines_by_reference, reference_scope, workload_key
from simtune.workloads import load_workload
from simtune.workloads.analysis import parameter_count


def test_the_reference_is_tiny_and_large_models_use_it():
    reference = engine_reference()
    assert (reference.name, reference.seq_len) == model_inputs.ENGINE_REFERENCE
    assert not engines_by_reference(reference)
    assert not engines_by_reference(load_workload("bert-tiny"))  # 0.56M parameters, gpt2-tiny's 0.54M
    assert engines_by_reference(load_workload("gpt2"))  # 124M: its seven engines cost far more


def test_the_reference_measures_engines_and_the_buckets_the_workload_needs():
    for buckets in (True, False):
        wanted = MeasureScope(checkpointing=True, bucket_engines=buckets, engines=False)
        assert reference_scope(wanted) == MeasureScope(checkpointing=False, bucket_engines=buckets, engines=True)


@pytest.mark.slow
def test_a_first_search_of_a_large_workload_measures_the_references_engines_instead(tmp_path, monkeypatch, capsys):
    """bert-tiny counts as large here (the threshold lowered to 1x: it has a few more parameters
    than gpt2-tiny): the machine's calibration launch measures gpt2-tiny's engines, and bert-tiny's
    own launch measures its model only."""
    assert parameter_count(load_workload("bert-tiny", seq_len=32)) > parameter_count(engine_reference())
    monkeypatch.setattr(model_inputs, "ENGINE_REFERENCE_ABOVE", 1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds.json").write_text(json.dumps({
        "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": [0, 3]},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}},
        "autotuning": {"max_train_micro_batch_size_per_gpu": 4, "start_profile_step": 2, "end_profile_step": 4}}))
    code = main(["search", "--model", "bert-tiny", "--seq-len", "32", "--num_gpus", "2", "--verify-top", "1",
                 "--deepspeed", "ds.json"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "in the launch that measures gpt2-tiny (seq 64, fp32)" in err  # the machine and the reference
    assert "the workload's engines are not measured" in err

    (profile_path,) = user_dir().glob("cpu-2proc-*.json")
    profile = load_profile(profile_path)
    learnt = learnt_engine_costs(profile, "fp32")
    assert learnt is not None and learnt.sources == (workload_key(engine_reference(), "fp32"),)
    measured = [read_cached(path) for path in (user_dir().parent / "cache").glob("workload-*.json")]
    by_name = {m.name: m for m in measured if m is not None}
    assert set(by_name) == {"gpt2-tiny", "bert-tiny"}
    assert by_name["gpt2-tiny"].engines and not by_name["gpt2-tiny"].engines_skipped
    assert by_name["bert-tiny"].engines_skipped and not by_name["bert-tiny"].engines
    results = json.loads((tmp_path / "autotuning_results" / "results.json").read_text())
    assert [e["status"] for e in results["experiments"]] == ["ok"]
    summary = (tmp_path / "autotuning_results" / "summary.txt").read_text()
    assert "gpt2-tiny's engines were measured in the calibration's launch in place of the workload's" in summary

    # The machine has its profile but has lost its engine costs: the reference's engines are
    # measured in place of the workload's again, outside a calibration (here from the cache).
    learnt_costs_path(profile.name).unlink()
    code = main(["search", "--model", "bert-tiny", "--seq-len", "32", "--num_gpus", "2", "--verify-top", "1",
                 "--deepspeed", "ds.json"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "calibrating" not in err and "measuring gpt2-tiny's engines in place of the workload's" in err
    assert learnt_engine_costs(profile, "fp32") == learnt
    summary = (tmp_path / "autotuning_results" / "summary.txt").read_text()
    assert "gpt2-tiny's engines were measured in place of the workload's (" in summary
