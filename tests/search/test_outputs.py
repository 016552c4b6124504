import json

import pytest

from simtune.search.outputs import (
    GLOBAL_SPACE,
    format_duration,
    lr_advice,
    optimal_config,
    parse_summary_table,
    pipe_table,
    write_outputs,
)
from simtune.space import TuningSpace
from simtune.search.measured import MeasuredSearch, MeasureOptions
from simtune.search.twin import TwinRunner, metrics_for


@pytest.fixture(scope="module")
def outcome():
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": [0, 1]},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
              "autotuning": {"enabled": True, "max_train_micro_batch_size_per_gpu": 8}}
    space = TuningSpace.from_config(config, world_size=2)

    def run(trial):
        if trial.micro_batch_size > 6:
            return "oom"
        return metrics_for(10.0 * trial.micro_batch_size * (1.02 if trial.stage else 1.0))

    return MeasuredSearch(space, TwinRunner(run), MeasureOptions()).run()


def test_summary_has_deepspeeds_table_and_closing_line(tmp_path, outcome):
    written = write_outputs(tmp_path, outcome, 3723.4, optimal_command="deepspeed train.py")
    text = (tmp_path / "summary.txt").read_text()
    assert text == written.summary_text
    rows = parse_summary_table(text)
    assert list(rows[0])[:4] == ["tuning_space", "num_experiments", "best_metric_val", "best_exp_name"]
    assert [r["tuning_space"] for r in rows] == ["z0", "z1", GLOBAL_SPACE]
    by_space = {r["tuning_space"]: r for r in rows}
    z0 = [m for m in outcome.measurements if m.trial.stage == 0]
    assert int(by_space["z0"]["num_experiments"]) == len(z0)
    assert int(by_space["z0"]["num_failed"]) == sum(1 for m in z0 if not m.ok)
    assert int(by_space[GLOBAL_SPACE]["num_experiments"]) == len(outcome.measurements)
    assert by_space[GLOBAL_SPACE]["best_exp_name"] == outcome.best.name == "z1_gas1_tmbspg6"
    assert float(by_space[GLOBAL_SPACE]["best_metric_val"]) == pytest.approx(outcome.best.value)
    assert f"Tuning completed in 1:02:03. Total number of experiments: {len(outcome.measurements)}." in text
    assert "Metric: throughput (samples/s, higher is better)." in text
    assert "Failed experiments: 4 (oom 4)." in text  # 8 and 7 fail at both stages


def test_the_table_reads_like_tabulates_pipe_format():
    table = pipe_table(["tuning_space", "num_experiments"], [["z0", 5], ["global", 11]])
    assert table.splitlines() == [
        "| tuning_space   |   num_experiments |",
        "|:---------------|------------------:|",
        "| z0             |                 5 |",
        "| global         |                11 |",
    ]


def test_predicted_values_get_their_own_column(outcome):
    from simtune.search.outputs import format_summary

    text = format_summary(outcome, 1.0, predicted={outcome.best.name: 61.5})
    rows = {r["tuning_space"]: r for r in parse_summary_table(text)}
    assert rows[GLOBAL_SPACE]["predicted_metric_val"] == "61.5"
    assert rows["z0"]["predicted_metric_val"] == "-"


def test_optimal_config_has_no_autotuning_section(tmp_path, outcome):
    written = write_outputs(tmp_path, outcome, 1.0, optimal_command="deepspeed train.py --deepspeed x.json")
    config = json.loads(written.optimal_config_path.read_text())
    assert "autotuning" not in config
    assert config["train_micro_batch_size_per_gpu"] == 6
    assert config["zero_optimization"]["stage"] == 1
    assert config["gradient_accumulation_steps"] * 6 * 2 == 12 and "train_batch_size" not in config
    assert written.optimal_command_path.read_text() == "deepspeed train.py --deepspeed x.json\n"
    assert "autotuning" not in optimal_config(outcome.best)


def test_results_json_lists_every_experiment(tmp_path, outcome):
    written = write_outputs(tmp_path, outcome, 1.0)
    document = json.loads(written.results_path.read_text())
    assert [e["name"] for e in document["experiments"]] == [m.name for m in outcome.measurements]
    failed = [e for e in document["experiments"] if e["status"] != "ok"]
    assert failed and all(e["metrics"] is None and e["reason"] for e in failed)
    assert document["experiments"][0]["trial"]["stage"] == 0
    assert document["best"] == outcome.best.name
    assert written.optimal_command_path is None  # no command given


def test_lr_advice_sqrt_for_adam_linear_for_sgd():
    adam = lr_advice(16, 64, "AdamW")
    assert adam.factor == pytest.approx(2.0)
    assert "sqrt(64/16)" in adam.text
    sgd = lr_advice(16, 64, "SGD")
    assert sgd.factor == pytest.approx(4.0)
    unknown = lr_advice(16, 4, None)
    assert unknown.factor is None and "0.5" in unknown.text and "0.25" in unknown.text
    assert lr_advice(16, 16, "Adam") is None
    assert lr_advice(None, 16, "Adam") is None


def test_lr_advice_is_written_to_the_summary(tmp_path, outcome):
    advice = lr_advice(2, 12, "AdamW")
    text = write_outputs(tmp_path, outcome, 1.0, advice=advice).summary_text
    assert f"Learning rate: {advice.text}" in text


def test_format_duration():
    assert format_duration(0.4) == "0:00:00"
    assert format_duration(59.6) == "0:01:00"
    assert format_duration(36000 + 61) == "10:01:01"


def test_a_run_whose_step_time_moved_within_its_window_is_named(tmp_path):
    """Its figure is the window's median, which a transient (slow first steps) pulls down."""
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": [0, 1]},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
              "autotuning": {"enabled": True, "max_train_micro_batch_size_per_gpu": 2}}
    space = TuningSpace.from_config(config, world_size=2)

    def run(trial):
        steps = [0.1] * 20 if trial.stage == 0 else [0.13] * 10 + [0.1] * 10
        return {**metrics_for(10.0 * trial.micro_batch_size), "step_times_s": steps}

    outcome = MeasuredSearch(space, TwinRunner(run), MeasureOptions()).run()
    text = write_outputs(tmp_path, outcome, 1.0).summary_text
    unsteady = [line for line in text.splitlines() if line.startswith("Unsteady: ")]
    assert len(unsteady) == sum(1 for m in outcome.measurements if m.trial.stage == 1) > 0
    assert all(line.startswith("Unsteady: z1_") and "moved 30% within the measured window" in line for line in unsteady)
