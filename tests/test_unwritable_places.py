"""A results folder that cannot be written: read-only, a file where a folder is expected, a full
disk. Each is one sentence naming the path and the cause (exit code 2), with no traceback and no
temporary file left. The read-only and full places are tmpfs mounts (skipped where mounting is
not allowed)."""

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from simtune.atomic import write_atomically
from simtune.cli import main
from simtune.errors import OutputError

PREDICT = ["search", "-q", "--verify-top", "0", "--profile", "dgx-a100-80gb", "--trials", "10"]


@contextmanager
def tmpfs(folder: Path, options: str):
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def error_of(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("simtune: error: ")]
    assert len(errors) == 1, err
    return errors[0][len("simtune: error: "):]


def fill(path: Path) -> None:
    """Write ``path`` until its file system is full."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError):
            while True:
                os.write(handle, b"\0" * 4096)
    finally:
        os.close(handle)


def left_behind(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """The study kept outside the results folder, so the results folder is first written by the outputs."""
    monkeypatch.chdir(tmp_path)
    return ["--storage", f"sqlite:///{tmp_path / 'study.db'}"]


def test_a_read_only_results_dir_is_one_sentence(tmp_path, elsewhere, capsys):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as place:
        message = error_of(capsys, [*PREDICT, *elsewhere, "--results_dir", str(place / "results")])
    assert message == f"{place / 'results'} cannot be written: read-only file system."


def test_a_read_only_results_dir_stops_a_measured_search_before_any_launch(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with tmpfs(tmp_path / "ro", "ro,size=64k") as place:
        message = error_of(capsys, ["search", "-q", "--strategy", "measure", "--results_dir", str(place / "r")])
    assert "cannot be written: read-only file system" in message


def test_a_file_where_the_results_folder_should_be_is_one_sentence(tmp_path, elsewhere, capsys):
    (tmp_path / "notes").write_text("x")
    message = error_of(capsys, [*PREDICT, *elsewhere, "--results_dir", str(tmp_path / "notes" / "results")])
    assert message == f"{tmp_path / 'notes' / 'results'} cannot be written: not a directory."


def test_a_full_disk_is_one_sentence_and_leaves_no_temporary_file(tmp_path, elsewhere, capsys):
    with tmpfs(tmp_path / "full", "size=64k") as place:
        (place / "results").mkdir()
        fill(place / "ballast")
        message = error_of(capsys, [*PREDICT, *elsewhere, "--results_dir", str(place / "results")])
        assert "cannot be written: no space left on device" in message and str(place / "results") in message
        assert left_behind(place) == []


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    with tmpfs(tmp_path / "full", "size=64k") as place:
        write_atomically(place / "summary.txt", "before\n")
        with pytest.raises(OutputError, match="summary.txt cannot be written: no space left on device"):
            write_atomically(place / "summary.txt", "x" * 200_000)
        assert (place / "summary.txt").read_text() == "before\n" and left_behind(place) == []
