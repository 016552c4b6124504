"""A large workload's engines stand-in: a tiny reference model's real engines teach the machine
what DeepSpeed's engine costs per unit, so that the workload is measured without engines."""

import dataclasses
import json
from types import SimpleNamespace

import pytest

from simtune.calibration.workload import MeasureScope, read_cached
from simtune.cli import main
from simtune.hardware import load_profile
from simtune.hardware.registry import user_dir
from simtune.model.adapters import model_spec
from simtune.model.inputs import MeasuredCompute, TrainConfig
from simtune.model.step_time import framework_costs
from simtune.prediction.learnt_engine_costs import PER_PARAMETER_KEY, learnt_costs_path, learnt_engine_costs
from simtune.prediction.residual import residual_path
from simtune.search import model_inputs
from simtune.search.model_inputs import (engine_reference, engine_reference_heavy, engines_by_reference,
                                         reference_scope, workload_key)
from simtune.workloads import load_workload
from simtune.workloads.analysis import parameter_count, parameter_tensor_numels


def test_the_reference_is_tiny_and_large_models_use_it():
    reference, heavy = engine_reference(), engine_reference_heavy()
    assert (reference.name, reference.seq_len) == model_inputs.ENGINE_REFERENCE
    # the heavy twin has the same modules and tensors, and many more parameters
    assert (heavy.seq_len, len(parameter_tensor_numels(heavy))) == (reference.seq_len,
                                                                      len(parameter_tensor_numels(reference)))
    assert parameter_count(heavy) > 10 * parameter_count(reference)
    assert not engines_by_reference(reference)
    assert not engines_by_reference(load_workload("bert-tiny"))  # 0.56M parameters, gpt2-tiny's 0.54M
    assert engines_by_reference(load_workload("gpt2"))  # 124M: its seven engines cost far more


def test_the_reference_measures_engines_and_the_buckets_the_workload_needs():
    for buckets in (True, False):
        wanted = MeasureScope(checkpointing=True, bucket_engines=buckets, engines=False)
        assert reference_scope(wanted) == MeasureScope(checkpointing=False, bucket_engines=buckets, engines=True)


def test_per_unit_costs_of_a_later_workload_are_read_net_of_the_learnt_costs_per_parameter(tmp_path, monkeypatch):
    """A workload whose own engines were measured after the reference pair saves costs per unit
    with the per-parameter work already learnt taken off, as the pair's were, and no table."""
    from tests.prediction.test_engine_costs import PER_PARAM, TRUE, gpt2_spec, hardware_spec

    monkeypatch.setenv("SIMTUNE_HOME", str(tmp_path))
    profile = load_profile("dgx-a100-80gb")
    hardware = hardware_spec(streaming_bytes_per_s=1e11, ranks_per_node=2)  # where the engines ran
    truth = dataclasses.replace(hardware, framework=dataclasses.replace(TRUE, param_pass_s=PER_PARAM))

    def measured(model):
        rows = tuple((stage, 2) + framework_costs(model, truth, TrainConfig(
            stage=stage, micro_batch_size=2, precision="fp32", dp_degree=2)) + (0.0,) for stage in range(4))
        return dataclasses.replace(model, measured_compute=MeasuredCompute(
            ((1, 0.01, 0.02), (4, 0.04, 0.08)), stage_overheads=rows))

    def predictor(model):
        return SimpleNamespace(calibration=SimpleNamespace(engines=(SimpleNamespace(reduce_bucket_size=None),)),
                               measured_compute_used=True, model=measured(model), hardware=hardware,
                               precision="fp32", precision_label="fp32")

    small = gpt2_spec()
    large = dataclasses.replace(small, parameter_count=small.parameter_count + 8_388_608)
    model_inputs.remember_engine_costs(profile, predictor(small), "pair", say=print, heavy=predictor(large))
    learnt = learnt_engine_costs(profile, "fp32")
    assert learnt is not None and len(learnt.param_pass_s) == 4
    for got, want in zip(learnt.param_pass_s, PER_PARAM):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-15)
    # a later workload of another size: its per-unit costs come out as the truth's, not inflated by
    # its own per-parameter work
    later = dataclasses.replace(small, parameter_count=small.parameter_count + 2_000_000)
    model_inputs.remember_engine_costs(profile, predictor(later), "later", say=print)
    entries = json.loads(learnt_costs_path(profile.name).read_text())["entries"]
    assert PER_PARAMETER_KEY not in entries["later"] and PER_PARAMETER_KEY in entries["pair"]
    assert entries["later"]["costs"]["engine_step_s"] == pytest.approx(TRUE.engine_step_s, rel=1e-6)
    assert entries["later"]["costs"]["zero3_module_s"] == pytest.approx(TRUE.zero3_module_s, rel=1e-6)


@pytest.mark.slow
def test_a_first_search_of_a_large_workload_measures_the_references_engines_instead(tmp_path, monkeypatch, capsys):
    """bert-tiny counts as large here (the threshold lowered to 1x: it has a few more parameters
    than gpt2-tiny): the machine's calibration launch measures gpt2-tiny's engines, and bert-tiny's
    own launch measures its model only."""
    assert parameter_count(load_workload("bert-tiny", seq_len=32)) > parameter_count(engine_reference())
    monkeypatch.setattr(model_inputs, "ENGINE_REFERENCE_ABOVE", 1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds.json").write_text(json.dumps({
        "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": [0, 3], "reduce_bucket_size": 100000},
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
    # read off the reference's engines, with small buckets too as the space's reduce_bucket_size
    # issues several reductions, and off its heavy twin's for the costs per parameter
    assert learnt.covers(bucket_engines=True)
    # what stage 3 adds per micro-step beyond stage 0 (a fetch and release per module in each pass,
    # a gradient hook per tensor) and a reduction bucket's call are milliseconds on CPU. How stage
    # 3's excess splits between modules and hooks is a difference of differences that a busy
    # 2-core machine can tip to either side (one part read as 0); their sum is what is measured.
    tiny = model_spec(engine_reference())
    per_module = learnt.costs["zero3_module_s"] + learnt.costs["zero3_module_backward_s"]
    stage3_excess = (tiny.hooked_modules * per_module
                     + len(tiny.layout.numels) * learnt.costs["gradient_hook_s"])
    assert stage3_excess > 1e-3 and learnt.costs["reduce_bucket_s"] > 0
    # ZeRO-1's flat fp32 partition costs every step in proportion to the parameters
    zero1 = learnt.param_pass_s[1]
    assert len(learnt.param_pass_s) == 4 and zero1[1] + zero1[2] > 0
    assert learnt_engine_costs(profile, "bf16") == learnt  # the only costs there are
    measured = [read_cached(path) for path in (user_dir().parent / "cache").glob("workload-*.json")]
    by_name = {m.name: m for m in measured if m is not None}
    assert set(by_name) == {"gpt2-tiny", "gpt2-tiny-heavy", "bert-tiny"}
    assert by_name["gpt2-tiny"].engines and not by_name["gpt2-tiny"].engines_skipped
    assert by_name["gpt2-tiny-heavy"].engines and not by_name["gpt2-tiny-heavy"].engines_skipped
    assert by_name["bert-tiny"].engines_skipped and not by_name["bert-tiny"].engines
    results = json.loads((tmp_path / "autotuning_results" / "results.json").read_text())
    assert [e["status"] for e in results["experiments"]] == ["ok"]
    summary = (tmp_path / "autotuning_results" / "summary.txt").read_text()
    assert "gpt2-tiny's engines were measured in the calibration's launch in place of the workload's" in summary
    assert "gpt2-tiny-heavy's beside them for the costs per parameter" in summary

    # The machine has its profile but has lost its engine costs: the reference's engines are
    # measured in place of the workload's again, outside a calibration (here from the cache).
    learnt_costs_path(profile.name).unlink()
    # and the residual the first verification taught, which may move another configuration to the top
    residual_path(profile.name).unlink()
    shared_log = tmp_path / "autotuning_results" / "shared_launch" / "stdout.log"
    first_launch = shared_log.stat().st_mtime_ns
    code = main(["search", "--model", "bert-tiny", "--seq-len", "32", "--num_gpus", "2", "--verify-top", "1",
                 "--deepspeed", "ds.json"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "calibrating" not in err and "measuring gpt2-tiny's engines in place of the workload's" in err
    assert learnt_engine_costs(profile, "fp32") == learnt
    summary = (tmp_path / "autotuning_results" / "summary.txt").read_text()
    assert "gpt2-tiny's engines were measured in place of the workload's (" in summary
    # its one verification was the first search's: no launch started for it
    assert "Real experiments: 0 launched, 1 reused from earlier runs." in summary
    assert shared_log.stat().st_mtime_ns == first_launch
