"""The command line: argument handling and every bad input (nothing is launched for those)."""

import json

import pytest

from simtune.cli import COMMANDS, build_parser, main
from simtune.commands import SearchCommand


def write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def error_of(capsys, argv):
    """Run main, require exit code 2 and exactly one error line; return that line's message."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("simtune: error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    message = errors[0][len("simtune: error: "):]
    assert message.endswith(".")
    return message


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


BAD_INPUTS = {
    "malformed JSON": (lambda d: ["--model", "gpt2-tiny", "--deepspeed", write(d / "c.json", "{bad")],
                       "not valid JSON"),
    "unknown preset": (lambda d: ["--model", "gpt5-huge"], "neither a model preset"),
    "list for gas": (lambda d: ["--deepspeed", write(d / "c.json", {"gradient_accumulation_steps": [1, 2]})],
                     "gradient_accumulation_steps is a list"),
    "non-positive mbs": (lambda d: ["--deepspeed", write(d / "c.json", {"train_micro_batch_size_per_gpu": [2, 0]})],
                         "positive integer"),
    "unknown metric": (lambda d: ["--metric", "speed"], "metric 'speed' is unknown"),
    "unknown metric in the config": (
        lambda d: ["--deepspeed", write(d / "c.json", {"autotuning": {"metric": "accuracy"}})], "is unknown"),
    "unknown tuner": (lambda d: ["--tuner_type", "bayes"], "tuner_type 'bayes' is unknown"),
    "end before start": (
        lambda d: ["--deepspeed", write(d / "c.json", {"autotuning": {"start_profile_step": 5, "end_profile_step": 4}})],
        "end_profile_step (4) must not be smaller"),
    "arg_mappings not a mapping": (
        lambda d: ["--deepspeed", write(d / "c.json", {"autotuning": {"arg_mappings": ["--batch_size"]}})],
        "arg_mappings must map"),
    "arg_mappings value not a flag": (
        lambda d: ["--deepspeed", write(d / "c.json", {"autotuning": {"arg_mappings": {"train_micro_batch_size_per_gpu": 4}}})],
        "must be a script flag"),
    "results_dir is a file": (lambda d: ["--results_dir", write(d / "taken", "x")], "is an existing file"),
    "missing script": (lambda d: ["nosuch_train.py", "--deepspeed", "ds.json"], "does not exist"),
    "no gpus": (lambda d: ["--num_gpus", "0"], "--num_gpus must be at least 1, not 0"),
    "unknown option": (lambda d: ["--frobnicate"], "Unrecognized arguments: --frobnicate"),
    "model and script": (lambda d: ["--model", "gpt2-tiny", write(d / "t.py", ""), "--deepspeed", "x.json"],
                         "not both"),
    "script without a config": (lambda d: [write(d / "t.py", ""), "--lr", "1"], "name no DeepSpeed config"),
    "bad memory budget": (lambda d: ["--memory-budget", "lots"], "is not a size"),
    "unknown storage scheme": (lambda d: ["--storage", "mongodb://db.example/studies"],
                               "storage scheme mongodb:// is unknown"),
    "storage not a URL": (lambda d: ["--storage", "studies"], "storage 'studies' is not a URL"),
    "unknown storage in the config": (
        lambda d: ["--deepspeed", write(d / "c.json", {"autotuning": {"storage": "redis://db.example"}})],
        "storage scheme redis:// is unknown"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_sentence_and_launches_nothing(case, workdir, capsys):
    make_argv, expected = BAD_INPUTS[case]
    argv = make_argv(workdir)
    message = error_of(capsys, ["search", *argv])
    assert expected in message
    assert not (workdir / "autotuning_results").exists()
    assert not (workdir / "autotuning_exps").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:  # nothing listens on it once closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("url, expected", [
    ("postgresql://simtune:s3cret-pw@127.0.0.1:{port}/studies", "Cannot connect to the study storage "
                                                                "postgresql://simtune:***@127.0.0.1:{port}/studies"),
    ("mysql://simtune:s3cret-pw@127.0.0.1:{port}/studies", "needs the Python package mysqlclient"),
])
def test_a_storage_that_cannot_be_opened_is_one_sentence_before_anything_runs(url, expected, workdir, capsys):
    import importlib.util

    if url.startswith("postgresql"):
        pytest.importorskip("psycopg2")
    elif any(importlib.util.find_spec(m) for m in ("MySQLdb", "pymysql", "mysql")):
        pytest.skip("a MySQL driver is installed here")
    port = _closed_port()
    message = error_of(capsys, ["search", "--verify-top", "0", "--profile", "dgx-a100-80gb",
                                "--storage", url.format(port=port)])
    assert expected.format(port=port) in message and "s3cret-pw" not in message
    assert not (workdir / "autotuning_results").exists()


def test_debug_shows_the_traceback(workdir, capsys):
    assert main(["search", "--debug", "--model", "gpt5-huge"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "simtune: error:" in err


def test_help_is_the_command_docstring(capsys):
    assert main(["search", "-h"]) == 0
    out = capsys.readouterr().out
    assert SearchCommand.summary() in out
    assert "--memory-budget" in out and "--no-fast" in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "search" in capsys.readouterr().err


def test_every_command_is_registered_under_its_name():
    parser = build_parser()
    for command_class in COMMANDS:
        args = parser.parse_args([command_class.name])
        assert isinstance(args.command, command_class)


def test_script_mode_takes_everything_after_the_options():
    args = build_parser().parse_args(["search", "--num_gpus", "2", "--no-fast", "train.py", "--deepspeed",
                                      "ds.json", "--num_gpus", "7", "--fast"])
    assert args.num_gpus == 2 and args.fast is False
    assert args.script == ["train.py", "--deepspeed", "ds.json", "--num_gpus", "7", "--fast"]


def test_gpus_is_a_short_form_of_num_gpus():
    assert build_parser().parse_args(["search", "--gpus", "4"]).num_gpus == 4


def test_an_interrupt_keeps_what_finished(workdir, capsys, monkeypatch):
    """Ctrl-C during the first experiment: exit 130, say what was kept, write results.json."""
    from simtune.runner import Runner

    def interrupted(self, experiments):
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "run", interrupted)
    code = main(["search", "-q", "--strategy", "measure", "--results_dir", "res"])
    err = capsys.readouterr().err
    assert code == 130
    assert "interrupted: 0 finished experiment(s) are kept in res" in err
    document = json.loads((workdir / "res" / "results.json").read_text())
    assert document["interrupted"] is True and document["experiments"] == []
