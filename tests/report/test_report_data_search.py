"""Reading a search's results folder, and the data of the after-search plots."""

import json

import pytest

from simtune.metrics import metric
from simtune.errors import InputError
from simtune.hardware import load_profile
from simtune.hardware.profile import CollectiveFit, CollectivePoint, Stats, bus_factor
from simtune.report.data.accuracy import predicted_vs_measured
from simtune.report.data.calibration import SPEC_RANGE_BYTES, collective_fits, collective_series
from simtune.report.data.history import best_so_far, search_history
from simtune.report.search_results import read_search


def test_a_measured_search_reads_without_predictions(search_dir):
    record = read_search(search_dir)
    assert record.metric == "throughput" and not record.lower_is_better
    assert [e.name for e in record.experiments] == ["z0_gas1_tmbspg1", "z0_gas1_tmbspg16", "z1_gas1_tmbspg32",
                                                     "z1_gas1_tmbspg16"]
    assert [e.measured for e in record.experiments] == [100.0, 300.0, None, 250.0]
    assert record.experiments[2].status == "oom" and record.experiments[2].stage == 1
    assert record.best == "z0_gas1_tmbspg16" and record.best_value == 300.0
    assert all(e.predicted is None for e in record.experiments) and record.prediction_sources == ()
    assert "Tuning completed" in record.summary_text
    assert record.profile is None
    assert predicted_vs_measured(record).points == ()


def test_predictions_from_results_json(make_search):
    record = read_search(make_search(predicted={"z0_gas1_tmbspg1": 110.0, "z0_gas1_tmbspg16": 270.0}))
    data = predicted_vs_measured(record)
    assert [(p.name, p.predicted, p.measured) for p in data.points] == [
        ("z0_gas1_tmbspg1", 110.0, 100.0), ("z0_gas1_tmbspg16", 270.0, 300.0)]
    assert data.points[0].error == pytest.approx(0.10)
    assert data.points[1].error == pytest.approx(-0.10)
    assert data.mean_absolute_error == pytest.approx(0.10)


@pytest.mark.parametrize("document", [
    {"z1_gas1_tmbspg16": 200.0, "z1_gas1_tmbspg32": 260.0, "z3_gas1_tmbspg8": 400.0},
    {"predictions": [{"name": "z1_gas1_tmbspg16", "predicted_metric_value": 200.0},
                     {"name": "z1_gas1_tmbspg32", "predicted": {"throughput": 260.0}},
                     {"name": "z3_gas1_tmbspg8", "predicted_value": 400.0}], "profile": {"name": "dgx-a100-80gb"}},
    [{"name": "z1_gas1_tmbspg16", "throughput": 200.0}, {"name": "z1_gas1_tmbspg32", "prediction": 260.0},
     {"name": "z3_gas1_tmbspg8", "predicted": 400.0}],
])
def test_predictions_json_in_every_accepted_shape(make_search, document):
    record = read_search(make_search(predictions_json=document))
    assert record.prediction_sources == ("predictions.json",)
    data = predicted_vs_measured(record)
    assert [(p.name, p.predicted) for p in data.points] == [("z1_gas1_tmbspg16", 200.0)]
    assert data.points[0].error == pytest.approx(-0.2)
    assert data.failed_predicted == ("z1_gas1_tmbspg32",)  # predicted, then out of memory
    assert record.predicted_only == (("z3_gas1_tmbspg8", 400.0),)
    if isinstance(document, dict) and "profile" in document:
        assert record.profile == "dgx-a100-80gb"


def test_predicted_fields_of_experiment_records_and_the_profile_entry(make_search):
    folder = make_search()
    document = json.loads((folder / "results.json").read_text())
    document["experiments"][0]["predicted_metric_value"] = 90.0
    document["profile"] = "dgx2-v100-32gb"
    (folder / "results.json").write_text(json.dumps(document))
    record = read_search(folder)
    assert record.experiments[0].predicted == 90.0
    assert record.profile == "dgx2-v100-32gb"
    assert record.prediction_sources == ("results.json experiment records",)


def test_unreadable_results_are_one_sentence_errors(tmp_path):
    with pytest.raises(InputError, match="holds no results.json"):
        read_search(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_search(tmp_path)
    (tmp_path / "results.json").write_text("[]")
    with pytest.raises(InputError, match="not a simtune results file"):
        read_search(tmp_path)


def test_history_keeps_the_best_so_far_through_failures(search_dir):
    data = search_history(read_search(search_dir))
    assert data.values == (100.0, 300.0, None, 250.0)
    assert data.best_so_far == (100.0, 300.0, 300.0, 300.0)
    assert data.statuses == ("ok", "ok", "oom", "ok")
    assert best_so_far((None, 5.0, 3.0, 4.0), metric("latency")) == (None, 5.0, 3.0, 3.0)


def _fit(points_bytes, latency_s=1e-4, bandwidth=2e9, ranks=4, op="allreduce"):
    points = tuple(CollectivePoint(elements=b // 4, bytes=b, stats=Stats(
        min_s=latency_s + bus_factor(op, ranks) * b / bandwidth, median_s=1.1 * (latency_s + b / bandwidth),
        max_s=1.5 * (latency_s + b / bandwidth), repeats=5)) for b in points_bytes)
    return CollectiveFit(op=op, ranks=ranks, dtype="fp32", latency_s=latency_s, bandwidth_bytes_per_s=bandwidth,
                         r2=0.99, points=points)


def test_calibration_curve_is_the_fit_and_the_points_are_the_measurements():
    fit = _fit((2**16, 2**20, 2**24))
    series = collective_series(fit, "intra-node")
    assert series.point_bytes == (2.0**16, 2.0**20, 2.0**24)
    assert series.point_min_s == tuple(p.stats.min_s for p in fit.points)
    assert series.point_median_s == tuple(p.stats.median_s for p in fit.points)
    assert series.curve_bytes[0] == pytest.approx(2**15) and series.curve_bytes[-1] == pytest.approx(2**25)
    for size, seconds in zip(series.curve_bytes, series.curve_s):
        assert seconds == pytest.approx(1e-4 + 2 * 3 / 4 * size / 2e9)
    # the fitted curve passes through the fastest repeats it was fitted on
    for size, fastest in zip(series.point_bytes, series.point_min_s):
        assert fit.time_s(size) == pytest.approx(fastest)


def test_spec_profiles_have_curves_over_a_fixed_range_and_no_points():
    data = collective_fits(load_profile("dgx-a100-80gb"))
    assert data.kind == "spec"
    assert {(s.scope, s.op) for s in data.series} == {(scope, op) for scope in ("intra-node", "inter-node")
                                                      for op in ("allreduce", "allgather", "reduce_scatter",
                                                                 "broadcast")}
    for s in data.series:
        assert s.point_bytes == ()
        assert (s.curve_bytes[0], s.curve_bytes[-1]) == pytest.approx(SPEC_RANGE_BYTES)
        intra = s.scope == "intra-node"
        assert s.bandwidth_bytes_per_s == (240e9 if intra else 160e9)  # 8 x 200 Gb/s NICs per node


def test_a_run_set_aside_as_unsteady_is_neither_a_failure_nor_a_point(make_search):
    from simtune.report import search_sections
    from simtune.report.document import BulletList

    folder = make_search(predicted={"z0_gas1_tmbspg16": 270.0, "z1_gas1_tmbspg16": 260.0})
    document = json.loads((folder / "results.json").read_text())
    unsteady = document["experiments"][3]
    unsteady.update(status="unsteady", metric_value=None, reason="set aside for z1_gas1_tmbspg16_rerun, a steadier "
                                                                 "run of the same configuration")
    (folder / "results.json").write_text(json.dumps(document))
    record = read_search(folder)
    data = predicted_vs_measured(record)
    assert [p.name for p in data.points] == ["z0_gas1_tmbspg16"] and data.failed_predicted == ()
    facts = next(b for b in search_sections(record)[0].blocks if isinstance(b, BulletList)).items
    assert "Experiments: 4 (2 ok, 1 failed, 1 set aside as unsteady)." in facts
