"""Profile folders: shipped spec profiles, the user folder, SIMTUNE_PROFILE_PATH, measured over spec."""

import dataclasses
import json

import pytest

from simtune.errors import ProfileError
from simtune.hardware import (
    SHIPPED_DIR,
    find_profile_for,
    list_profiles,
    load_profile,
    profile_problems,
    profile_to_dict,
    save_profile,
)
from simtune.hardware.spec import spec_profiles

SPEC_NAMES = {"dgx2-v100-32gb", "dgx-a100-80gb", "dgx-h100-80gb", "hgx-h200-141gb"}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SIMTUNE_HOME", raising=False)
    monkeypatch.delenv("SIMTUNE_PROFILE_PATH", raising=False)


def test_every_spec_profile_loads_and_lists():
    entries = {e.name: e for e in list_profiles()}
    assert SPEC_NAMES <= set(entries)
    for name in SPEC_NAMES:
        profile = load_profile(name)
        assert profile.kind == "spec" and entries[name].kind == "spec"
        assert profile.provenance.sources and "compute_efficiency" in profile.provenance.assumptions
        assert entries[name].path.parent == SHIPPED_DIR
    assert entries["dgx2-v100-32gb"].device_count == 16
    assert "bf16" not in load_profile("dgx2-v100-32gb").compute.curves  # V100: no bf16
    assert profile_problems() == []


def test_shipped_files_match_the_generator():
    for profile in spec_profiles():
        shipped = json.loads((SHIPPED_DIR / f"{profile.name}.json").read_text())
        assert shipped == json.loads(json.dumps(profile_to_dict(profile)))


def _measured_copy(name: str, source: str = "dgx-a100-80gb"):
    spec = load_profile(source)
    return dataclasses.replace(spec, name=name, provenance=dataclasses.replace(spec.provenance, kind="measured"))


def test_measured_profile_wins_over_spec_for_same_hardware(tmp_path):
    save_profile(_measured_copy("my-a100-box"))  # default folder: ~/.simtune/profiles
    entries = {e.name: e for e in list_profiles()}
    assert entries["my-a100-box"].origin == "user"
    assert entries["dgx-a100-80gb"].superseded_by == "my-a100-box"
    assert entries["dgx-h100-80gb"].superseded_by is None
    found = find_profile_for("nvidia  a100-sxm4-80gb", 8)
    assert found is not None and found.name == "my-a100-box"
    assert find_profile_for("NVIDIA A100-SXM4-80GB", 4) is None


def test_profile_path_env_and_same_name_precedence(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    save_profile(_measured_copy("dgx-h100-80gb", source="dgx-h100-80gb"), extra)
    monkeypatch.setenv("SIMTUNE_PROFILE_PATH", str(extra))
    entries = {e.name: e for e in list_profiles()}
    assert entries["dgx-h100-80gb"].kind == "measured" and entries["dgx-h100-80gb"].origin == "env"
    assert load_profile("dgx-h100-80gb").kind == "measured"


def test_invalid_files_are_reported_not_listed(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "bad.json").write_text(json.dumps({"schema_version": 99}))
    monkeypatch.setenv("SIMTUNE_PROFILE_PATH", str(extra))
    assert "bad" not in {e.name for e in list_profiles()}
    problems = profile_problems()
    assert len(problems) == 1 and "schema_version 99" in problems[0].message


def test_unknown_name_and_bad_name():
    with pytest.raises(ProfileError, match="No hardware profile is named 'nope'"):
        load_profile("nope")
    with pytest.raises(ProfileError, match="must start with a letter or digit"):
        save_profile(dataclasses.replace(load_profile("dgx-a100-80gb"), name="../escape"))


def test_simtune_home_moves_the_user_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMTUNE_HOME", str(tmp_path / "elsewhere"))
    from simtune.hardware.registry import user_dir
    assert user_dir() == tmp_path / "elsewhere" / "profiles"


def test_a_profile_of_the_same_devices_on_as_many_nodes_is_found_first():
    one_node = _measured_copy("b-one-node")
    save_profile(one_node)
    device = dataclasses.replace(one_node.device, count_per_node=4, nodes=2)
    save_profile(dataclasses.replace(one_node, name="a-two-nodes", device=device))
    assert find_profile_for("NVIDIA A100-SXM4-80GB", 8).name == "b-one-node"  # not the first name
    assert find_profile_for("NVIDIA A100-SXM4-80GB", 8, nodes=2).name == "a-two-nodes"
