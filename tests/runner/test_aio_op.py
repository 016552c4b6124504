"""DeepSpeed's async_io op asked about in a child process (simtune.runner.aio_op)."""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

import pytest

from simtune.runner.aio_op import async_io_missing

HAS_LIBAIO = Path("/usr/include/libaio.h").exists() and ctypes.util.find_library("aio") is not None


@pytest.mark.skipif(not HAS_LIBAIO, reason="libaio's development files are not installed (.ci/services/libaio.sh)")
def test_the_op_builds_where_libaio_is_installed_and_not_without_a_compiler():
    assert async_io_missing("cpu") is None
    # the builder compiles and links a call of io_submit with the compiler CC names
    missing = async_io_missing("cpu", {**os.environ, "CC": "/nonexistent/cc"})
    assert missing is not None and missing.startswith("cannot be built here: its builder found no libaio")


def test_a_deepspeed_that_cannot_be_imported_is_said_so():
    missing = async_io_missing("cpu", {**os.environ, "PYTHONPATH": "", "PYTHONNOUSERSITE": "1",
                                       "PYTHONSAFEPATH": "1", "PYTHONHOME": "/nonexistent"})
    assert missing is not None and missing.startswith("could not be loaded (")
