"""``simtune estimate``: the printed breakdown, the --json schema, and bad inputs."""

import json

import pytest

from simtune.cli import main
from simtune.commands.estimate import MEMORY_TERMS, TIME_TERMS
from simtune.hardware.registry import load_profile
from simtune.prediction.predictor import Predictor
from simtune.space import Trial
from simtune.workloads import load_workload


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    """No workload calibration is cached: estimates come from the closed form and the profile."""
    monkeypatch.setenv("SIMTUNE_CACHE_DIR", str(tmp_path / "cache"))


def run_json(capsys, argv):
    code = main(["estimate", *argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_json_schema_and_values(capsys):
    doc = run_json(capsys, ["--model", "gpt2-xl", "--profile", "dgx2-v100-32gb", "--gpus", "16", "--stage", "2",
                            "--mbs", "2", "--gas", "4"])
    assert set(doc) >= {"memory_bytes", "time_s", "throughput", "latency_ms", "flops_per_gpu", "feasible", "config",
                        "profile"}
    assert list(doc["memory_bytes"]) == [*MEMORY_TERMS, "total"]
    assert list(doc["time_s"]) == [*TIME_TERMS, "step"]
    assert all(isinstance(v, int) and v >= 0 for v in doc["memory_bytes"].values())
    assert all(isinstance(v, float) and v >= 0 for v in doc["time_s"].values())
    held = sum(doc["memory_bytes"][t] for t in MEMORY_TERMS)
    assert doc["memory_bytes"]["total"] <= held  # the step transient shares a slot with activations
    assert doc["profile"] == "dgx2-v100-32gb" and doc["feasible"] is True
    config = doc["config"]
    assert (config["stage"], config["micro_batch_size"], config["gradient_accumulation_steps"]) == (2, 2, 4)
    assert config["world_size"] == 16 and config["train_batch_size"] == 128 and config["precision"] == "fp16"
    assert doc["throughput"] == pytest.approx(128 / doc["time_s"]["step"])
    assert doc["latency_ms"] == pytest.approx(1000 * doc["time_s"]["step"])
    # the same numbers as the Predictor's
    p = Predictor.from_parts(None, load_workload("gpt2-xl"), load_profile("dgx2-v100-32gb"), world_size=16,
                             precision="fp16")
    e = p.predict(Trial(stage=2, micro_batch_size=2, gradient_accumulation_steps=4))
    assert doc["memory_bytes"]["total"] == e.memory.total_bytes
    assert doc["time_s"]["step"] == pytest.approx(e.time.step_s)
    # usable memory is the profile's; the limit adds back the fixed overhead the total counts
    device = load_profile("dgx2-v100-32gb").device
    assert doc["usable_memory_bytes"] == device.usable_memory_bytes
    assert doc["memory_limit_bytes"] == device.usable_memory_bytes + doc["memory_bytes"]["fixed_overhead"]
    assert doc["memory_limit_bytes"] == device.memory_bytes == e.memory.limit_bytes


def test_without_mbs_the_largest_fitting_size_is_taken_and_listed_per_stage(capsys):
    doc = run_json(capsys, ["--model", "gpt2-xl", "--profile", "dgx2-v100-32gb", "--gpus", "16"])
    largest = doc["max_micro_batch_size"]
    assert set(largest) == {"0", "1", "2", "3"} and largest["0"] == 0 and largest["3"] >= 1
    stage = doc["config"]["stage"]
    assert doc["config"]["micro_batch_size"] == largest[str(stage)] and doc["feasible"]
    fixed = run_json(capsys, ["--model", "gpt2-xl", "--profile", "dgx2-v100-32gb", "--gpus", "16", "--stage", "3"])
    assert list(fixed["max_micro_batch_size"]) == ["3"] and fixed["config"]["stage"] == 3


def test_offload_and_checkpointing_move_memory(capsys):
    base = ["--model", "gpt2-large", "--profile", "dgx-a100-80gb", "--gpus", "8", "--stage", "2", "--mbs", "8"]
    plain = run_json(capsys, base)
    offloaded = run_json(capsys, [*base, "--offload-optimizer", "cpu", "--checkpointing"])
    assert offloaded["host_memory_bytes"] > 0 == plain["host_memory_bytes"]
    assert offloaded["memory_bytes"]["optimizer_states"] == 0 < plain["memory_bytes"]["optimizer_states"]
    assert offloaded["memory_bytes"]["activations"] < plain["memory_bytes"]["activations"] / 4
    assert offloaded["time_s"]["recompute"] > 0 == plain["time_s"]["recompute"]
    assert offloaded["config"]["activation_checkpointing"] is True


def test_a_selective_policy_keeps_more_and_recomputes_less_than_full(capsys):
    base = ["--model", "gpt2-large", "--profile", "dgx-a100-80gb", "--gpus", "8", "--stage", "3", "--mbs", "8"]
    full = run_json(capsys, [*base, "--checkpointing"])
    selective = run_json(capsys, [*base, "--checkpointing-policy", "selective-op"])
    assert selective["config"]["activation_checkpointing"] is True
    assert selective["config"]["checkpointing_policy"] == "selective-op"
    assert full["config"]["checkpointing_policy"] == "full"
    assert selective["memory_bytes"]["activations"] > full["memory_bytes"]["activations"]
    assert 0 < selective["time_s"]["recompute"] < full["time_s"]["recompute"]


def test_engine_costs_learnt_on_the_profile_are_used(capsys, tmp_path, monkeypatch):
    """A search that measured engines on this profile saved their costs per unit: an estimate of a
    model never measured there costs its engines with them."""
    from simtune.model.inputs import FrameworkCosts
    from simtune.prediction.learnt_engine_costs import record_engine_costs

    monkeypatch.setenv("SIMTUNE_HOME", str(tmp_path / "home"))
    base = ["--model", "gpt2-large", "--profile", "dgx-a100-80gb", "--gpus", "8", "--stage", "3", "--mbs", "8"]
    before = run_json(capsys, base)
    record_engine_costs(load_profile("dgx-a100-80gb"), "other@128/bf16#0", "bf16",
                        FrameworkCosts(zero3_module_s=0.01, engine_step_s=0.5), buckets_measured=False)
    after = run_json(capsys, base)
    assert after["time_s"]["engine_overhead"] > before["time_s"]["engine_overhead"] + 0.5


def test_text_breakdown(capsys):
    code = main(["estimate", "--model", "gpt2", "--profile", "dgx-a100-80gb", "--gpus", "8", "--stage", "1",
                 "--seq-len", "512", "--precision", "bf16", "--num_nodes", "2"])
    out = capsys.readouterr().out
    assert code == 0
    for needle in ("memory per GPU", "optimizer states", "total", "time per optimizer step", "forward", "step",
                   "samples/s", "largest micro-batch size predicted to fit", "stage 1:", "8 per node x 2 node(s)",
                   "seq 512"):
        assert needle in out, needle


@pytest.mark.parametrize("argv, needle", [
    (["--model", "gpt5-huge", "--profile", "dgx-a100-80gb"], "neither a model preset"),
    (["--model", "gpt2", "--profile", "no-such-profile"], "no-such-profile"),
    (["--model", "gpt2", "--profile", "dgx-a100-80gb", "--gpus", "0"], "--gpus must be a positive integer"),
    (["--model", "gpt2", "--profile", "dgx-a100-80gb", "--gpus", "16"], "8 devices per node"),
    (["--model", "gpt2", "--profile", "dgx-a100-80gb", "--mbs", "-1"], "--mbs must be a positive integer"),
    (["--model", "gpt2", "--profile", "dgx-a100-80gb", "--stage", "5"], "invalid choice"),
    (["--model", "gpt2", "--profile", "dgx-a100-80gb", "--seq-len", "4096"], "exceeds the 1024 positions"),
    (["--model", "gpt2", "--profile", "dgx2-v100-32gb", "--precision", "bf16"], "no bf16 compute curve"),
    (["--model", "gpt2", "--profile", "dgx-a100-80gb", "--stage", "2", "--offload-param", "cpu"], "needs ZeRO stage 3"),
    (["--model", "gpt2", "--profile", "dgx-a100-80gb", "--stage", "0", "--offload-optimizer", "cpu"],
     "needs ZeRO stage 1, 2 or 3"),
    (["--model", "gpt2", "--profile", "dgx-a100-80gb", "--reduce-bucket-size", "lots"], "number of elements"),
    (["--profile", "dgx-a100-80gb", "--checkpointing", "maybe"], "expected true or false"),
    (["--profile", "dgx-a100-80gb", "--checkpointing-policy", "sometimes"], "checkpointing policy must be"),
    (["--profile", "dgx-a100-80gb", "--precision", "fp32", "--autocast"], "--autocast needs a 16-bit --precision"),
    (["--profile", "dgx-a100-80gb", "--optimizer", "adam9"], "has no optimizer fit 'adam9' (it has torch_adamw_fo"),
    (["--profile", "dgx-a100-80gb", "--gradient-clipping", "often"], "expected true or false"),
])
def test_bad_inputs_are_one_sentence_and_exit_2(capsys, argv, needle):
    code = main(["estimate", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("simtune: error: ") and "Traceback" not in err
    assert needle in lines[0]


def test_missing_profile_flag_is_an_error(capsys):
    assert main(["estimate", "--model", "gpt2"]) == 2
    assert "--profile" in capsys.readouterr().err


def test_autocast_keeps_fp32_states_and_costs_its_casts(capsys):
    argv = ["--model", "bert-large", "--seq-len", "512", "--profile", "dgx2-v100-32gb", "--gpus", "1", "--stage", "0",
            "--mbs", "4", "--precision", "fp16"]
    plain, autocast = run_json(capsys, argv), run_json(capsys, [*argv, "--autocast"])
    assert autocast["config"]["autocast"] == "torch" and plain["config"]["autocast"] is False
    params = autocast["config"]["parameters"]
    assert autocast["memory_bytes"]["parameters"] == 4 * params == 2 * plain["memory_bytes"]["parameters"]
    assert autocast["memory_bytes"]["gradients"] == 4 * params
    assert autocast["time_s"]["forward"] > plain["time_s"]["forward"]
    assert autocast["time_s"]["backward"] > plain["time_s"]["backward"]
    main(["estimate", *argv, "--autocast"])
    assert "under torch autocast" in capsys.readouterr().out.splitlines()[0]
    # DeepSpeed's own keeps its fp32 master partition beside the fp32 parameters from stage 1 on
    stage1 = [a if a != "0" else "1" for a in argv]
    torch_z1, deepspeed_z1 = (run_json(capsys, [*stage1, "--autocast", kind]) for kind in ("torch", "deepspeed"))
    assert torch_z1["memory_bytes"]["master_weights"] == 0
    assert deepspeed_z1["memory_bytes"]["master_weights"] == 4 * params
    assert deepspeed_z1["config"]["autocast"] == "deepspeed"


def test_gradients_reduced_in_fp32_and_stage3_without_reduce_scatter_cost_more(capsys):
    argv = ["--model", "gpt2-xl", "--profile", "dgx-a100-80gb", "--gpus", "8", "--mbs", "4", "--precision", "bf16"]
    for stage in ("1", "3"):
        own = run_json(capsys, [*argv, "--stage", stage])
        wide = run_json(capsys, [*argv, "--stage", stage, "--communication-data-type", "fp32"])
        assert (own["config"]["communication_data_type"], wide["config"]["communication_data_type"]) == (None, "fp32")
        assert wide["time_s"]["grad_reduce"] == pytest.approx(2 * own["time_s"]["grad_reduce"], rel=0.05)
        assert wide["time_s"]["step"] > own["time_s"]["step"]
    scatter = run_json(capsys, [*argv, "--stage", "3"])
    allreduce = run_json(capsys, [*argv, "--stage", "3", "--reduce-scatter", "false"])
    assert allreduce["config"]["reduce_scatter"] is False
    # an allreduce moves 2(n-1)/n of the bytes over the bus, a reduce-scatter (n-1)/n
    assert allreduce["time_s"]["grad_reduce"] == pytest.approx(2 * scatter["time_s"]["grad_reduce"], rel=0.05)
    main(["estimate", *argv, "--stage", "3", "--reduce-scatter", "false", "--communication-data-type", "fp32"])
    assert "gradients reduced in fp32, stage 3 allreducing its buckets" in capsys.readouterr().out


def test_a_per_tensor_optimizer_and_clipping_cost_their_step_time(capsys):
    """The Hugging Face Trainer's defaults of 2022: transformers' AdamW loop (predicted as torch's
    for-loop AdamW: 84 bytes per parameter and eight launches per tensor) and max_grad_norm 1.0."""
    argv = ["--model", "bert-large", "--seq-len", "512", "--profile", "dgx2-v100-32gb", "--gpus", "1", "--stage", "0",
            "--mbs", "4", "--precision", "fp16", "--autocast"]
    fused = run_json(capsys, argv)
    loop = run_json(capsys, [*argv, "--optimizer", "torch_adamw_for_loop"])
    clipped = run_json(capsys, [*argv, "--optimizer", "torch_adamw_for_loop", "--gradient-clipping"])
    assert (fused["config"]["optimizer"], loop["config"]["optimizer"]) == ("torch_adamw_fused", "torch_adamw_for_loop")
    # three times the bytes, and more: BERT-large's small tensors wait on their launches
    assert loop["time_s"]["optimizer"] > 3 * fused["time_s"]["optimizer"]
    assert clipped["config"]["gradient_clipping"] is True and loop["config"]["gradient_clipping"] is False
    assert clipped["time_s"]["engine_overhead"] > loop["time_s"]["engine_overhead"]
    assert clipped["throughput"] < loop["throughput"] < fused["throughput"]
    main(["estimate", *argv, "--optimizer", "torch_adamw_foreach", "--gradient-clipping", "true"])
    assert "optimizer torch_adamw_foreach, gradients clipped" in capsys.readouterr().out


def test_pageable_offload_is_said_and_costs_no_less(capsys):
    """A spec profile has no pageable rate (the pinned one stands in); the output says which memory."""
    argv = ["--model", "gpt2-large", "--profile", "dgx-a100-80gb", "--gpus", "8", "--stage", "3", "--mbs", "8",
            "--offload-optimizer", "cpu"]
    pinned, pageable = run_json(capsys, argv), run_json(capsys, [*argv, "--pin-memory", "false"])
    assert (pinned["config"]["pin_memory"], pageable["config"]["pin_memory"]) == (True, False)
    assert pageable["time_s"]["step"] == pytest.approx(pinned["time_s"]["step"])
    main(["estimate", *argv, "--pin-memory", "false"])
    assert "optimizer offload to cpu (pageable)" in capsys.readouterr().out


def test_an_offloaded_optimizer_is_named_as_the_host_runs_it(capsys):
    argv = ["--model", "gpt2-large", "--profile", "dgx-h100-80gb", "--gpus", "8", "--stage", "2", "--mbs", "8"]
    offloaded = run_json(capsys, [*argv, "--offload-optimizer", "cpu"])
    assert offloaded["config"]["host_optimizer"] == "deepspeed_cpu_adam"
    assert run_json(capsys, argv)["config"]["host_optimizer"] is None
    main(["estimate", *argv, "--offload-optimizer", "cpu"])
    assert "optimizer offload to cpu, optimizer deepspeed_cpu_adam on the host" in capsys.readouterr().out


def test_another_algorithm_keeps_its_own_states_and_says_how_its_step_was_scaled(capsys):
    argv = ["--model", "gpt2-large", "--profile", "dgx-h100-80gb", "--gpus", "8", "--stage", "1", "--mbs", "8"]
    adamw = run_json(capsys, argv)
    sgd = run_json(capsys, [*argv, "--algorithm", "sgd"])
    assert (adamw["config"]["algorithm"], sgd["config"]["algorithm"]) == ("adamw", "sgd")
    assert sgd["memory_bytes"]["optimizer_states"] == 0 < adamw["memory_bytes"]["optimizer_states"]
    assert sgd["time_s"]["optimizer"] < adamw["time_s"]["optimizer"]
    main(["estimate", *argv, "--algorithm", "lion"])
    # a spec profile has no DeepSpeed fit: FusedLion steps at torch's fused AdamW rate
    assert "optimizer lion (torch_adamw_fused's AdamW rate scaled to its bytes)" in capsys.readouterr().out
    assert main(["estimate", *argv, "--algorithm", "rmsprop"]) == 2
    assert "invalid choice: 'rmsprop'" in capsys.readouterr().err


def test_an_algorithm_the_profile_timed_is_said_to_step_at_its_measured_rate(capsys, tmp_path, monkeypatch):
    """A profile with torch's SGD fit beside its foreach AdamW one: the text and the JSON say the
    rate was measured; offloaded, the host step is still AdamW's scaled."""
    import dataclasses

    from simtune.hardware.profile import OptimizerFit
    from simtune.hardware.registry import save_profile

    base = load_profile("dgx-h100-80gb")
    sgd = OptimizerFit("torch_sgd_momentum_foreach", "cuda", 1e-5, 3e-12, 1.0, ())
    profile = dataclasses.replace(base, name="h100-sgd", optimizer=dataclasses.replace(
        base.optimizer, fits={**base.optimizer.fits, sgd.impl: sgd}))
    path = tmp_path / "h100-sgd.json"
    save_profile(profile, path)
    argv = ["--model", "gpt2-large", "--profile", str(path), "--gpus", "8", "--stage", "1", "--mbs", "8",
            "--algorithm", "sgd_momentum"]
    assert run_json(capsys, argv)["config"]["algorithm_rate"] == "measured"
    main(["estimate", *argv])
    assert "optimizer sgd_momentum (its rate measured beside torch_adamw_foreach)" in capsys.readouterr().out
    assert run_json(capsys, [*argv, "--offload-optimizer", "cpu"])["config"]["algorithm_rate"] == "scaled from AdamW"


def test_an_offloaded_algorithm_whose_cpu_kernel_was_timed_steps_at_that_kernels_rate(capsys, tmp_path):
    """A profile with DeepSpeed's CPU Adagrad fit: offloaded, Adagrad steps at it (named as the host's
    optimizer, said measured) and its step differs from the CPU Adam rate scaled to its bytes."""
    import dataclasses

    from simtune.hardware.profile import OptimizerFit
    from simtune.hardware.registry import save_profile

    base = load_profile("dgx-h100-80gb")
    adam = base.offload.cpu_adam_s_per_param
    kernel = OptimizerFit("deepspeed_cpu_adagrad", "cpu", 1e-4, 0.3 * adam, 1.0, ())
    profile = dataclasses.replace(base, name="h100-cpu-adagrad", optimizer=dataclasses.replace(
        base.optimizer, fits={**base.optimizer.fits, kernel.impl: kernel}))
    path = tmp_path / "h100-cpu-adagrad.json"
    save_profile(profile, path)
    argv = ["--model", "gpt2-large", "--gpus", "8", "--stage", "2", "--mbs", "8", "--algorithm", "adagrad",
            "--offload-optimizer", "cpu"]
    timed, scaled = run_json(capsys, [*argv, "--profile", str(path)]), run_json(capsys, [*argv, "--profile", "dgx-h100-80gb"])
    assert timed["config"]["host_optimizer"] == "deepspeed_cpu_adagrad" and timed["config"]["algorithm_rate"] == "measured"
    assert scaled["config"]["host_optimizer"] == "deepspeed_cpu_adam"
    assert scaled["config"]["algorithm_rate"] == "scaled from AdamW"
    assert timed["time_s"]["optimizer"] < scaled["time_s"]["optimizer"]  # 0.3 of Adam's rate against 20/28
    main(["estimate", *argv, "--profile", str(path)])
    assert "optimizer adagrad on the host (deepspeed_cpu_adagrad, measured)" in capsys.readouterr().out


def test_nvme_offload_swaps_at_stage_3_at_the_profiles_nvme_rates_and_says_where_none_is_known(capsys):
    argv = ["--model", "gpt2-xl", "--gpus", "8", "--mbs", "4", "--offload-optimizer"]
    cpu = run_json(capsys, ["--profile", "hgx-h200-141gb", "--stage", "3", *argv, "cpu"])
    nvme = run_json(capsys, ["--profile", "hgx-h200-141gb", "--stage", "3", *argv, "nvme"])
    assert nvme["config"]["offload_optimizer"] == "nvme" and nvme["config"]["nvme_uncosted"] is None
    # 16 bytes per partition element read and as many written, eight ranks sharing the node's
    # 46 GB/s of reads and 26 GB/s of writes (the spec profile's ND-H200-v5 measurement)
    partition = -(-1_557_611_200 // 8)
    swap = 16 * partition * 8 * (1 / 46e9 + 1 / 26e9)
    assert nvme["time_s"]["offload_transfer"] - cpu["time_s"]["offload_transfer"] == pytest.approx(swap, rel=0.01)
    assert nvme["host_memory_bytes"] == cpu["host_memory_bytes"]  # the default sub-group holds it all
    main(["estimate", "--profile", "dgx-a100-80gb", "--stage", "3", *argv, "nvme"])
    out = capsys.readouterr().out
    assert "optimizer offload to nvme" in out
    assert "note: dgx-a100-80gb gives no read and write rates for the node's NVMe" in out
    main(["estimate", "--profile", "dgx-a100-80gb", "--stage", "2", *argv, "nvme"])
    out = capsys.readouterr().out
    assert "optimizer offload to nvme (host memory at this stage)" in out and "note:" not in out


def test_nvme_swap_settings_from_the_flags_change_host_memory_and_what_the_step_waits_for(capsys):
    argv = ["--model", "gpt2-xl", "--profile", "hgx-h200-141gb", "--gpus", "8", "--stage", "3", "--mbs", "4",
            "--offload-optimizer", "nvme"]
    plain = run_json(capsys, [*argv, "--sub-group-size", "2e7"])
    pipelined = run_json(capsys, [*argv, "--sub-group-size", "2e7", "--nvme-pipeline", "true",
                                  "--nvme-buffer-count", "12"])
    assert plain["config"]["sub_group_size"] == 20_000_000
    assert plain["config"]["nvme_swap"]["pipeline_read"] is False
    assert pipelined["config"]["nvme_swap"]["pipeline_read"] and pipelined["config"]["nvme_swap"]["pipeline_write"]
    # the drive stays busy: the pipeline hides the host's steps of all but the first and last sub-groups
    saved = plain["time_s"]["offload_transfer"] - pipelined["time_s"]["offload_transfer"]
    assert 0 < saved < plain["time_s"]["optimizer"]
    # eight more buffers of the largest sub-group (fp32), against the default sub-group's whole partition
    assert pipelined["host_memory_bytes"] > plain["host_memory_bytes"]
    default = run_json(capsys, argv)
    assert plain["host_memory_bytes"] < default["host_memory_bytes"]
    main(["estimate", *argv, "--sub-group-size", "2e7", "--nvme-pipeline", "true", "--nvme-buffer-count", "12"])
    assert "optimizer offload to nvme (pipelined)" in capsys.readouterr().out
    # DeepSpeed's pipelined swapper holds three sub-groups' 2 + 2 buffers at once: 4 stop it
    assert main(["estimate", *argv, "--sub-group-size", "2e7", "--nvme-pipeline", "true"]) == 2
    assert ("4 NVMe swap buffers are too few: DeepSpeed's swapper holds 12 at once here (10 optimizer sub-groups "
            "of 2 + 2 buffers, pipeline_read and pipeline_write)") in capsys.readouterr().err
    # one sub-group (the default sub_group_size) overlaps nothing, and 4 are enough
    assert main(["estimate", *argv, "--nvme-pipeline", "true", "--json"]) == 0
    capsys.readouterr()
    assert main(["estimate", *argv, "--nvme-buffer-count", "0"]) != 0
    assert "--nvme-buffer-count must be at least 1, not 0." in capsys.readouterr().err


def test_parameters_on_nvme_need_the_swap_buffers_deepspeed_holds_at_once(capsys):
    argv = ["--model", "gpt2-xl", "--profile", "hgx-h200-141gb", "--gpus", "8", "--stage", "3", "--mbs", "4",
            "--offload-optimizer", "nvme", "--offload-param", "nvme", "--max-in-cpu", "0"]
    # 49 partitions stay gathered through forward (the last ~5e8 elements of trace), and the tied
    # table comes back for the head: 50 held at once
    assert main(["estimate", *argv]) == 2
    err = capsys.readouterr().err
    assert "--param-buffer-count 5 is too few" in err and "at least 50" in err
    document = run_json(capsys, [*argv, "--param-buffer-count", "50"])
    assert document["config"]["nvme_swap"]["param_buffer_count"] == 50
    assert document["config"]["nvme_swap"]["max_in_cpu"] == 0
    # 145 partitions of 1 MiB or more (3 of each layer's 12 tensors, and the table): read at forward and, all
    # but the kept, again at backward
    traffic = document["config"]["nvme_traffic"]
    assert traffic["parameter_partitions"] == 145 and traffic["parameter_buffers_needed"] == 50
    assert traffic["parameter_written_bytes"] == 2 * traffic["parameter_elements"]
    assert traffic["parameter_written_bytes"] < traffic["parameter_read_bytes"] < 2 * traffic["parameter_written_bytes"]
    assert traffic["optimizer_buffers_needed"] == 4 and traffic["optimizer_read_bytes"] > 0
    main(["estimate", *argv, "--param-buffer-count", "50"])
    out = capsys.readouterr().out
    assert "NVMe swaps per rank and step" in out and "(145 partitions, " in out
    assert "swap buffers: offload_optimizer.buffer_count at least 4, offload_param.buffer_count at least 50" in out
    # all on NVMe costs reads that a host copy of 1e9 elements does not
    host = run_json(capsys, [*argv[:-1], "1000000000", "--param-buffer-count", "50"])
    assert document["time_s"]["offload_transfer"] > host["time_s"]["offload_transfer"]
    assert main(["estimate", *argv, "--param-buffer-count", "50", "--param-buffer-size", "1e6"]) == 2
    assert ("--param-buffer-size 1000000 is too small: the largest parameter partition DeepSpeed's swapper places "
            "in a buffer has 10,051,400 elements here") in capsys.readouterr().err
    assert main(["estimate", *argv, "--param-buffer-count", "0"]) == 2
    assert "--param-buffer-count must be at least 1, not 0." in capsys.readouterr().err


def test_parameters_offloaded_to_nvme_that_all_stay_in_host_memory_are_explained_not_costed(capsys):
    argv = ["--model", "gpt2", "--profile", "dgx-h100-80gb", "--gpus", "8", "--stage", "3", "--mbs", "4",
            "--offload-param", "nvme"]
    assert main(["estimate", *argv]) == 0
    out = capsys.readouterr().out
    assert ("parameters: none on NVMe: offload_param.max_in_cpu (1,000,000,000 elements) holds the rank's whole "
            "partition") in out
    # the spec profile has no NVMe rates, but nothing is swapped there: no note that swaps go uncosted
    assert "not costed" not in out
    traffic = run_json(capsys, argv)["config"]["nvme_traffic"]
    assert traffic["parameter_partitions"] == 0 and traffic["parameters_in_host_why"].startswith("offload_param.")
    # with the optimizer's states on NVMe too, something is swapped and the missing rates are said
    assert main(["estimate", *argv, "--offload-optimizer", "nvme"]) == 0
    assert "gives no read and write rates for the node's NVMe" in capsys.readouterr().out
