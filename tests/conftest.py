"""Every test gets its own simtune home, so no test reads or writes the user's profiles, residual
models or workload cache (``SIMTUNE_HOME``; launched processes inherit it)."""

import pytest


@pytest.fixture(autouse=True)
def _isolated_simtune_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SIMTUNE_HOME", str(tmp_path_factory.mktemp("simtune-home")))
    monkeypatch.delenv("SIMTUNE_PROFILE_PATH", raising=False)
    monkeypatch.delenv("SIMTUNE_CACHE_DIR", raising=False)
