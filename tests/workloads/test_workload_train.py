"""The built-in training program: its pieces in process, and two real 2-rank DeepSpeed runs."""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simtune.workloads import TRAIN_PROGRAM, load_workload
from simtune.workloads import train as program
from simtune.workloads.presets import PRESETS_DIR

LOSS_LINE = re.compile(r"^step (\d+) loss (\S+) elapsed_s", re.MULTILINE)


def test_train_program_path_points_at_the_script():
    assert TRAIN_PROGRAM == Path(program.__file__)
    assert TRAIN_PROGRAM.is_file() and TRAIN_PROGRAM.name == "train.py"


def test_arguments_and_their_defaults():
    args = program.parse_args(["--model", "gpt2", "--deepspeed", "ds.json", "--local_rank=1"])
    assert (args.steps, args.gradient_checkpointing, args.seq_len, args.local_rank) == (1_000_000, False, None, 1)
    args = program.parse_args(["--model", "gpt2", "--deepspeed", "ds.json", "--seq-len", "64",
                               "--gradient_checkpointing", "true", "--steps", "3", "--seed", "7"])
    assert (args.seq_len, args.gradient_checkpointing, args.steps, args.seed) == (64, True, 3, 7)
    with pytest.raises(SystemExit):
        program.parse_args(["--model", "gpt2", "--deepspeed", "ds.json", "--gradient_checkpointing", "maybe"])


def test_missing_optimizer_becomes_adamw_and_cpu_uses_torch_adam():
    user = {"train_micro_batch_size_per_gpu": 2}
    config, notes = program.with_optimizer(user, "cpu")
    assert config["optimizer"]["type"] == "AdamW"
    assert config["optimizer"]["params"] == {"lr": 1e-4, "weight_decay": 0.0, "torch_adam": True}
    assert "optimizer" not in user and len(notes) == 2
    config, notes = program.with_optimizer(user, "cuda")
    assert "torch_adam" not in config["optimizer"]["params"] and len(notes) == 1


def test_users_optimizer_is_kept():
    user = {"optimizer": {"type": "SGD", "params": {"lr": 0.5}}}
    assert program.with_optimizer(user, "cpu") == (user, [])
    user = {"optimizer": {"type": "Adam", "params": {"lr": 0.5, "torch_adam": False}}}
    assert program.with_optimizer(user, "cpu") == (user, [])


def test_zero_stage_reading():
    assert program.zero_stage({}) == 0
    assert program.zero_stage({"zero_optimization": {"stage": 3}}) == 3
    assert program.zero_stage({"zero_optimization": {"stage": "all"}}) == 0


def test_synthetic_batches_follow_the_task():
    causal = program.SyntheticTokens(load_workload("gpt2-tiny", seq_len=16), 4, torch.device("cpu"), seed=1)
    batch = causal.next()
    assert batch["input_ids"].shape == (4, 16)
    assert torch.equal(batch["input_ids"], batch["labels"])
    assert int(batch["input_ids"].max()) < 1024

    masked = program.SyntheticTokens(load_workload("bert-tiny", seq_len=128), 64, torch.device("cpu"), seed=1)
    batch = masked.next()
    labelled = batch["labels"] != -100
    assert bool(labelled.any(dim=1).all())
    assert 0.12 < float(labelled.float().mean()) < 0.18
    assert torch.equal(batch["labels"][labelled], batch["input_ids"][labelled])
    assert not torch.equal(masked.next()["input_ids"], batch["input_ids"])

    import dataclasses

    bert = load_workload("bert-tiny", seq_len=16)
    classifier = dataclasses.replace(bert, task="sequence-classification", hf_config={**bert.hf_config, "num_labels": 3})
    batch = program.SyntheticTokens(classifier, 64, torch.device("cpu"), seed=1).next()
    assert batch["labels"].shape == (64,) and set(batch["labels"].tolist()) == {0, 1, 2}


def test_threads_default_to_cores_per_local_rank():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["LOCAL_SIZE"] = "2"
    code = "from simtune.workloads import train; print(train.limit_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) == max(1, len(os.sched_getaffinity(0)) // 2)


def test_bad_model_exits_with_one_line_and_no_traceback(tmp_path):
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"train_micro_batch_size_per_gpu": 1}))
    result = subprocess.run(
        [sys.executable, str(TRAIN_PROGRAM), "--model", "gpt5-huge", "--deepspeed", str(config)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "train.py: error: 'gpt5-huge' is neither a model preset" in result.stderr


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_two_ranks(tmp_path, ds_config, program_args, timeout_s=240):
    """Run train.py on 2 CPU ranks through the DeepSpeed launcher; return (rc, stdout+stderr)."""
    launcher = shutil.which("deepspeed") or str(Path(sys.executable).with_name("deepspeed"))
    config_path = tmp_path / "ds_config.json"
    config_path.write_text(json.dumps(ds_config))
    port = _free_port()
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "LOCAL_SIZE": "2", "OMP_NUM_THREADS": "1"}
    command = [launcher, "--num_accelerators", "2", "--master_port", str(port), str(TRAIN_PROGRAM),
               "--deepspeed", str(config_path), "--log-interval", "1", *program_args]
    try:
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout_s)
    finally:
        for leftover in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"):
            leftover.unlink(missing_ok=True)
    return result.returncode, result.stdout + result.stderr


def _losses(output):
    return {int(step): float(loss) for step, loss in LOSS_LINE.findall(output)}


@pytest.mark.slow
def test_two_rank_zero2_run_of_gpt2_tiny(tmp_path):
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2,
              "zero_optimization": {"stage": 2}}
    rc, output = _launch_two_ranks(tmp_path, config, ["--model", "gpt2-tiny", "--seq-len", "32", "--steps", "3"])
    assert rc == 0, output[-3000:]
    losses = _losses(output)
    assert sorted(losses) == [1, 2, 3], output[-3000:]  # printed by rank 0 only
    assert all(math.isfinite(loss) and 0 < loss < 20 for loss in losses.values())
    assert "micro-batch 2, accumulation 2, world 2" in output


@pytest.mark.slow
def test_two_rank_zero3_bf16_run_of_bert_tiny_with_checkpointing(tmp_path):
    """ZeRO-3 builds the model partitioned and must still exit 0 (no abort at interpreter exit)."""
    config = {"train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": True},
              "zero_optimization": {"stage": 3},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}
    rc, output = _launch_two_ranks(
        tmp_path, config,
        ["--model", "bert-tiny", "--seq-len", "32", "--steps", "2", "--gradient_checkpointing", "true"],
    )
    assert rc == 0, output[-3000:]
    losses = _losses(output)
    assert sorted(losses) == [1, 2] and all(math.isfinite(loss) for loss in losses.values())
    assert "gradient checkpointing True" in output
    assert "terminate called" not in output


def test_a_classifier_trains_on_one_rank_without_a_launcher(tmp_path):
    """A sequence-classification config.json (GPT-2 scores every position and needs a padding
    token) runs DeepSpeed's engine on one CPU process, its loss near ln(C) for random labels."""
    hf_config = {**json.loads((PRESETS_DIR / "gpt2-tiny.json").read_text())["hf_config"],
                 "architectures": ["GPT2ForSequenceClassification"], "num_labels": 4}
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    (tmp_path / "ds.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": 4,
                                                  "zero_optimization": {"stage": 2}}))
    result = subprocess.run(
        [sys.executable, str(TRAIN_PROGRAM), "--model", str(tmp_path / "config.json"), "--seq-len", "32",
         "--deepspeed", str(tmp_path / "ds.json"), "--steps", "3", "--log-interval", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
        env={**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "(sequence-classification, seq 32)" in output
    losses = _losses(output)
    assert sorted(losses) == [1, 2, 3] and all(abs(loss - math.log(4)) < 1.0 for loss in losses.values())


@pytest.mark.slow
def test_under_the_probe_a_run_shorter_than_the_window_says_why_it_has_no_metrics(tmp_path):
    """The program's own fast exit must leave the probe its last word when steps run out."""
    from simtune.runner import Resources, Runner
    from simtune.runner.experiment import Experiment

    runner = Runner((str(TRAIN_PROGRAM), ("--model", "gpt2-tiny", "--seq-len", "16", "--steps", "2",
                                          "--deepspeed", "ds_config.json")),
                    Resources.local(num_gpus=2, accelerator="cpu"), tmp_path / "results", tmp_path / "exps",
                    timeout_s=240, start_profile_step=2, end_profile_step=4)
    result, = runner.run([Experiment("z0_gas1_tmbspg1", None, {"train_micro_batch_size_per_gpu": 1,
                                                               "zero_optimization": {"stage": 0}})])
    assert result.status == "crashed"
    assert result.reason == "no metrics: the script ended after 2 optimizer steps, before end_profile_step 4"
