"""``simtune report`` end to end through the command line (no launch: the cost model only)."""

import pytest

from simtune.cli import main


def test_capacity_report_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "plan"
    code = main(["report", "--model", "gpt2-medium", "--profile", "dgx-a100-80gb", "--gpus", "8,16",
                 "--samples", "1e6", "--precision", "bf16", "--global-batch", "256", "--out", str(out), "-q"])
    assert code == 0
    assert "Wrote" in capsys.readouterr().out
    markdown = (out / "report.md").read_text()
    assert "The global batch is fixed at 256 samples." in markdown
    assert "1M samples (given)" in markdown
    assert "give --price USD_PER_GPU_HOUR for the cost" in markdown
    assert (out / "report.html").is_file() and (out / "scaling.png").is_file()
    assert "fixed global batch (strong scaling)" not in markdown  # that is the plot's title, not the text


def test_capacity_report_under_autocast_says_so(tmp_path):
    out = tmp_path / "plan"
    assert main(["report", "--model", "gpt2-medium", "--profile", "dgx-a100-80gb", "--gpus", "8",
                 "--precision", "bf16", "--autocast", "--out", str(out), "-q"]) == 0
    markdown = (out / "report.md").read_text()
    assert "bf16 under torch autocast" in markdown and "--autocast" in markdown
    assert "fp32 parameters and gradients, reduced in fp32" in markdown


def test_search_report_defaults_to_a_folder_inside_the_results(make_search, capsys):
    folder = make_search()
    assert main(["report", "--results", str(folder), "--profile", "dgx2-v100-32gb", "-q"]) == 0
    assert (folder / "report" / "report.md").is_file()
    text = (folder / "report" / "report.md").read_text()
    assert "Nothing to compare: this search made no predictions" in text
    assert "## Calibration" in text and "### Profile `dgx2-v100-32gb`" in text


def test_search_report_without_a_profile_says_how_to_add_one(make_search, tmp_path):
    folder = make_search()
    assert main(["report", "--results", str(folder), "--out", str(tmp_path / "r"), "-q"]) == 0
    assert "add --profile NAME" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["report"], "Say what to report on"),
    (["report", "--model", "gpt2"], "needs --profile"),
    (["report", "--model", "gpt2", "--profile", "no-such-profile"], "no-such-profile"),
    (["report", "--model", "no-such-model", "--profile", "dgx-a100-80gb"], "neither a model preset"),
    (["report", "--model", "gpt2", "--profile", "dgx2-v100-32gb", "--precision", "bf16"], "has no bf16"),
    (["report", "--model", "gpt2", "--profile", "dgx-a100-80gb", "--tokens", "1e9", "--samples", "5"], "not allowed"),
    (["report", "--model", "gpt2", "--profile", "dgx-a100-80gb", "--gpus", "8,x"], "comma-separated"),
    (["report", "--model", "gpt2", "--profile", "dgx-a100-80gb", "--gpus", "8", "--global-batch", "12"],
     "cannot be split evenly"),
    (["report", "--model", "gpt2", "--profile", "dgx-a100-80gb", "--price", "-3"], "positive"),
    (["report", "--results", "/nonexistent/results"], "holds no results.json"),
    (["report", "--model", "gpt2", "--profile", "dgx-a100-80gb", "--precision", "fp32", "--autocast"],
     "Autocast needs a 16-bit precision"),
])
def test_user_errors_are_one_sentence_and_exit_2(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("simtune: error:") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_the_example_report_in_the_docs_is_what_the_command_writes_today(tmp_path):
    """docs/examples/report-gpt2-xl is made by the command docs/reports.md gives: a change to the
    cost model or the spec profiles that moves it must regenerate it."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "report-gpt2-xl"
    out = tmp_path / "report-gpt2-xl"
    assert main(["report", "--model", "gpt2-xl", "--profile", "dgx2-v100-32gb,dgx-a100-80gb", "--gpus", "16,32,64",
                 "--tokens", "1e10", "--price", "2.5", "--out", str(out), "-q"]) == 0
    written, committed = (out / "report.md").read_text(), (example / "report.md").read_text()
    assert written == committed, "regenerate docs/examples/report-gpt2-xl with the command in docs/reports.md"
    assert {p.name for p in example.glob("*.png")} == {p.name for p in out.glob("*.png")}
