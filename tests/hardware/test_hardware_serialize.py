"""JSON round trip and validation: bad profiles are rejected with one sentence naming field and value."""

import copy
import json

import pytest

from simtune.errors import ProfileError
from simtune.hardware import SHIPPED_DIR, load_profile, profile_from_dict, profile_to_dict, save_profile
from simtune.hardware.serialize import profile_fingerprint


@pytest.fixture
def good() -> dict:
    return json.loads((SHIPPED_DIR / "dgx-a100-80gb.json").read_text())


def test_round_trip_is_lossless(tmp_path):
    profile = load_profile("dgx-a100-80gb")
    path = save_profile(profile, tmp_path)
    assert path == tmp_path / "dgx-a100-80gb.json"
    again = load_profile(path)
    assert again == profile
    assert profile_to_dict(again) == profile_to_dict(profile)


def _error(data: dict) -> str:
    with pytest.raises(ProfileError) as info:
        profile_from_dict(data, source="x.json")
    message = str(info.value)
    assert message.count(". ") == 0 and message.endswith(".") and "\n" not in message  # one sentence
    return message


def test_wrong_schema_version(good):
    good["schema_version"] = 2
    message = _error(good)
    assert "schema_version 2" in message and "schema_version 1" in message


def test_missing_field(good):
    del good["device"]["memory_bytes"]
    assert "has no field device.memory_bytes" in _error(good)


def test_negative_bandwidth(good):
    good["collectives"]["intra_node"]["allgather"]["bandwidth_bytes_per_s"] = -5.0
    message = _error(good)
    assert "collectives.intra_node.allgather.bandwidth_bytes_per_s is -5.0" in message
    assert "greater than 0" in message


def test_zero_memory(good):
    good["device"]["memory_bytes"] = 0
    message = _error(good)
    assert "device.memory_bytes is 0" in message and "greater than 0" in message


def test_efficiency_above_one(good):
    peak = good["device"]["peak_flop_per_s"]["bf16"]
    good["compute"]["curves"]["bf16"]["points"][0]["flop_per_s"] = 1.5 * peak
    message = _error(good)
    assert "compute.curves.bf16.points[0].flop_per_s" in message and "efficiency 1.5 > 1" in message


@pytest.mark.parametrize(
    "mutate, field",
    [
        (
            lambda d: d["device"].__setitem__("usable_memory_bytes", d["device"]["memory_bytes"] + 1),
            "usable_memory_bytes",
        ),
        (lambda d: d["collectives"]["inter_node"]["allreduce"].__setitem__("latency_s", -1e-6), "latency_s"),
        (lambda d: d["collectives"]["intra_node"]["allreduce"].__setitem__("r2", 1.2), "r2"),
        (lambda d: d["optimizer"]["fits"]["torch_adamw_fused"].__setitem__("s_per_param", 0.0), "s_per_param"),
        (lambda d: d["provenance"].__setitem__("kind", "guessed"), "provenance.kind"),
        (lambda d: d["device"].__setitem__("count_per_node", "8"), "count_per_node"),
        (lambda d: d["offload"].__setitem__("h2d_bytes_per_s", float("nan")), "h2d_bytes_per_s"),
    ],
)
def test_other_impossible_values(good, mutate, field):
    bad = copy.deepcopy(good)
    mutate(bad)
    assert field in _error(bad)


def test_file_errors_are_profile_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(broken)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "absent.json")


def test_a_profile_without_framework_costs_reads_as_none_and_a_negative_cost_is_refused(good):
    assert profile_from_dict(good, source="x.json").framework is not None
    older = {k: v for k, v in good.items() if k != "framework"}
    assert profile_from_dict(older, source="x.json").framework is None
    good["framework"]["zero3_module_s"] = -1.0
    assert "framework.zero3_module_s" in _error(good)


def test_a_profile_with_one_stage_3_cost_per_module_reads_it_for_both_passes(good):
    """Profiles written before stage 3's two passes were apart held one cost per module and pass;
    a profile whose two are equal is written that way, so its fingerprint stays."""
    good["framework"]["zero3_module_s"] = 3e-4
    good["framework"].pop("zero3_module_backward_s", None)
    older = profile_from_dict(good, source="x.json")
    assert older.framework is not None and older.framework.zero3_module_backward_s == 3e-4
    assert "zero3_module_backward_s" not in profile_to_dict(older)["framework"]
    good["framework"]["zero3_module_backward_s"] = 1e-4
    split = profile_from_dict(good, source="x.json")
    assert split.framework is not None and split.framework.zero3_module_backward_s == 1e-4
    assert profile_to_dict(split)["framework"]["zero3_module_backward_s"] == 1e-4
    assert profile_fingerprint(split) != profile_fingerprint(older)


def test_costs_per_parameter_round_trip_and_a_bad_table_is_refused(good, tmp_path):
    profile = profile_from_dict(good, source="x.json")
    assert profile.framework is not None and profile.framework.param_pass_s == ()
    assert "param_pass_s" not in profile_to_dict(profile)["framework"]  # the fingerprint of older profiles holds
    table = [[0.0, 4e-9, 8e-9], [0.0, 1e-8, 1.2e-8], [0.0, 9e-9, 1.2e-8], [8e-9, 1e-8, 7e-9]]
    good["framework"]["param_pass_s"] = table
    learnt = profile_from_dict(good, source="x.json")
    assert learnt.framework is not None and learnt.framework.param_pass_s[3] == (8e-9, 1e-8, 7e-9)
    assert load_profile(save_profile(learnt, tmp_path)) == learnt
    good["framework"]["param_pass_s"] = table[:3]
    assert "framework.param_pass_s" in _error(good)


def test_an_optimizer_fits_zero_state_point_round_trips_and_its_absence_keeps_the_fingerprint(good, tmp_path):
    profile = profile_from_dict(good, source="x.json")
    fits = profile_to_dict(profile)["optimizer"]["fits"]
    assert all("zero_state" not in fit for fit in fits.values())  # older profiles keep their fingerprint
    assert profile_fingerprint(profile) == profile_fingerprint(profile_from_dict(copy.deepcopy(good), source="y.json"))
    stats = {"min_s": 0.026, "median_s": 0.027, "max_s": 0.03, "repeats": 5}
    good["optimizer"]["fits"]["torch_adamw_fused"]["zero_state"] = {"size": 4194304, "stats": stats}
    measured = profile_from_dict(good, source="x.json")
    assert measured.optimizer.fits["torch_adamw_fused"].zero_state.size == 4194304
    assert load_profile(save_profile(measured, tmp_path)) == measured
    assert profile_fingerprint(measured) != profile_fingerprint(profile)
    good["optimizer"]["fits"]["torch_adamw_fused"]["zero_state"]["stats"]["min_s"] = -1.0
    assert "zero_state.stats.min_s" in _error(good)


def test_fused_attention_rates_round_trip_and_one_above_the_peak_is_refused(good, tmp_path):
    profile = profile_from_dict(good, source="x.json")
    assert profile.compute.attention["bf16"].forward_flop_per_s > profile.compute.attention["bf16"].backward_flop_per_s
    assert load_profile(save_profile(profile, tmp_path)) == profile
    older = copy.deepcopy(good)
    del older["compute"]["attention"]
    assert profile_from_dict(older, source="x.json").compute.attention == {}
    assert "attention" not in profile_to_dict(profile_from_dict(older, source="x.json"))["compute"]
    good["compute"]["attention"]["bf16"]["backward_flop_per_s"] = 2 * good["device"]["peak_flop_per_s"]["bf16"]
    assert "compute.attention.bf16.backward_flop_per_s" in _error(good)



def test_a_collectives_compute_share_is_optional_and_below_one(good):
    assert profile_from_dict(good, source="x.json").collectives.compute_share == pytest.approx(24 / 108)
    older = copy.deepcopy(good)
    del older["collectives"]["compute_share"]
    assert profile_from_dict(older, source="x.json").collectives.compute_share is None
    assert "compute_share" not in profile_to_dict(profile_from_dict(older, source="x.json"))["collectives"]
    good["collectives"]["compute_share"] = 1.5
    assert "collectives.compute_share" in _error(good)
