"""``simtune search --verify-top 0``: the predicted best for hardware this machine does not have, in
DeepSpeed's output layout, with nothing run and nothing calibrated."""

import json
import shlex

import optuna
import pytest

from simtune.cli import main
from simtune.search.outputs import GLOBAL_SPACE, parse_summary_table
from simtune.search.study import STUDY_FILE, storage_url

ARGV = ["search", "--verify-top", "0", "--model", "gpt2-xl", "--profile", "dgx2-v100-32gb", "--num_gpus", "16",
        "--results_dir", "res", "--trials", "60"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no user profiles, no residuals, nothing cached
    return tmp_path


def test_a_spec_profile_gives_the_predicted_best_in_deepspeeds_layout(workdir, capsys):
    assert main(ARGV) == 0
    captured = capsys.readouterr()
    results = workdir / "res"
    summary = (results / "summary.txt").read_text()
    assert summary in captured.out
    rows = {r["tuning_space"]: r for r in parse_summary_table(summary)}
    best = rows[GLOBAL_SPACE]
    assert "z0" not in rows  # 1.5B parameters with Adam do not fit a 32 GB V100 without ZeRO
    assert best["num_experiments"] == "0" and best["best_metric_val"] == best["predicted_metric_val"]
    assert float(best["best_metric_val"]) == max(float(r["best_metric_val"]) for r in rows.values())
    assert "Total number of experiments: 0." in summary
    assert "Predicted only: nothing was run" in summary and "Optimal (predicted, not measured)" in summary
    assert "hardware profile dgx2-v100-32gb (spec)" in summary
    assert "Real experiments: 0 launched" in summary
    assert "Model check: all" in summary and "gap 0%" in summary

    # nothing ran: no experiment folder, no calibration
    names = {p.name for p in results.iterdir()}
    assert {"summary.txt", "results.json", "predictions.json", "ds_config_optimal.json", "cmd_optimal.txt",
            STUDY_FILE} <= names
    assert not [p for p in results.iterdir() if p.is_dir()]
    assert not (workdir / "home" / ".simtune" / "profiles").exists()
    assert "calibrat" not in captured.err.replace("Calibration", "")

    optimal = json.loads((results / "ds_config_optimal.json").read_text())
    assert optimal["zero_optimization"]["stage"] == int(best["best_exp_name"][1])
    assert optimal["fp16"] == {"enabled": True}  # V100: no bf16
    assert "train_batch_size" not in optimal  # DeepSpeed derives it: mbs x gas x 16
    command = shlex.split((results / "cmd_optimal.txt").read_text())
    assert command[command.index("--num_gpus") + 1] == "16"
    assert not any(word.startswith("DS_ACCELERATOR") for word in command)  # the GPUs of the profile, not this CPU

    predictions = json.loads((results / "predictions.json").read_text())
    assert predictions["predicted_only"] and predictions["profile"] == "dgx2-v100-32gb"
    first = predictions["predictions"][0]
    assert first["name"] == best["best_exp_name"] and first["status"] == "predicted"
    assert first["measured_metric_value"] is None
    assert first["terms"]["memory"]["total_bytes"] <= first["terms"]["limit_bytes"]
    assert first["predicted_metrics"]["throughput"] == pytest.approx(first["predicted_metric_value"])
    document = json.loads((results / "results.json").read_text())
    assert document["strategy"] == "simulate" and document["profile"] == "dgx2-v100-32gb"
    assert document["experiments"] == [] and document["best"] == first["name"]

    study = optuna.load_study(study_name=document["model"]["study_name"], storage=storage_url(results))
    assert study.best_value == pytest.approx(first["predicted_metric_value"])


def test_the_same_command_again_resumes_the_study(workdir, capsys):
    assert main(ARGV + ["-q"]) == 0
    document = json.loads((workdir / "res" / "results.json").read_text())
    assert main(ARGV) == 0
    again = json.loads((workdir / "res" / "results.json").read_text())
    assert again["model"]["study_name"] == document["model"]["study_name"]
    assert again["model"]["study_resumed_from"] == document["model"]["study_trials"]
    assert again["model"]["study_trials"] == document["model"]["study_trials"]
    assert again["best"] == document["best"]
    assert "already done, resuming" in capsys.readouterr().err


def test_latency_picks_the_smallest(workdir):
    assert main(ARGV + ["-q", "--metric", "latency"]) == 0
    rows = {r["tuning_space"]: r for r in parse_summary_table((workdir / "res" / "summary.txt").read_text())}
    values = [float(r["best_metric_val"]) for s, r in rows.items() if s != GLOBAL_SPACE]
    assert float(rows[GLOBAL_SPACE]["best_metric_val"]) == min(values)


@pytest.mark.parametrize("argv,expected", [
    (["--verify-top", "-1"], "--verify-top must be at least 0, not -1"),
    (["--confirm-close-calls", "-2"], "--confirm-close-calls must be at least 0, not -2"),
    (["--verify-top", "2", "--profile", "dgx2-v100-32gb", "--num_gpus", "2"], "cannot be verified here"),
    (["--verify-top", "0", "--profile", "no-such-profile"], "No hardware profile is named 'no-such-profile'"),
])
def test_impossible_requests_are_one_sentence(workdir, capsys, argv, expected):
    assert main(["search", "--model", "gpt2-tiny", *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (workdir / "autotuning_results" / "study.db").exists()
