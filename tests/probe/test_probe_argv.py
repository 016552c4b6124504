import pytest

from simtune.probe.argv import ProbeUsageError, parse_probe_argv


def test_launcher_order_puts_local_rank_first():
    inv = parse_probe_argv(["--local_rank=1", "--simtune-probe=/r/probe.json", "train.py",
                            "--deepspeed", "ds.json", "--local_rank=7"])
    assert inv.settings_path == "/r/probe.json"
    assert inv.local_rank == "1"
    assert inv.script == "train.py"
    assert inv.script_argv() == ["train.py", "--local_rank=1", "--deepspeed", "ds.json", "--local_rank=7"]


def test_separate_values_and_probe_flag_first():
    inv = parse_probe_argv(["--simtune-probe", "p.json", "--local_rank", "0", "t.py", "-x"])
    assert (inv.settings_path, inv.local_rank, inv.script, inv.script_args) == ("p.json", "0", "t.py", ("-x",))


def test_without_local_rank_the_script_sees_none():
    inv = parse_probe_argv(["--simtune-probe=p.json", "t.py", "a"])
    assert inv.script_argv() == ["t.py", "a"]


@pytest.mark.parametrize("argv", [["t.py"], ["--local_rank=0", "t.py"], ["--simtune-probe=p.json"],
                                  ["--simtune-probe"]])
def test_unusable_command_lines(argv):
    with pytest.raises(ProbeUsageError):
        parse_probe_argv(argv)
