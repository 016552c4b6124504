"""The report of a finished search: what was predicted, what was measured, how the search went, and
the calibration of the hardware profile its model used."""

from __future__ import annotations

from typing import Optional

from simtune.hardware.profile import HardwareProfile
from simtune.report.data.accuracy import predicted_vs_measured
from simtune.report.data.calibration import collective_fits
from simtune.report.data.history import search_history
from simtune.report.document import BulletList, Figure, Paragraph, Preformatted, Section, Table
from simtune.report.plots.accuracy import draw_accuracy
from simtune.report.plots.calibration import draw_calibration
from simtune.report.plots.history import draw_history
from simtune.report.profiles import profile_section
from simtune.report.search_results import SearchRecord
from simtune.report.units import duration, number, signed_percent
from simtune.runner.steadiness import UNSTEADY_STATUS

PREDICTED_ONLY_ROWS = 20


def _outcome_section(record: SearchRecord) -> Section:
    ok = sum(1 for e in record.experiments if e.status == "ok")
    unsteady = sum(1 for e in record.experiments if e.status == UNSTEADY_STATUS)
    failed = len(record.experiments) - ok - unsteady
    facts = [f"Results folder: `{record.results_dir}`.",
             f"Metric: {record.metric} ({'lower' if record.lower_is_better else 'higher'} is better).",
             f"Experiments: {len(record.experiments)} ({ok} ok, {failed} failed"
             + (f", {unsteady} set aside as unsteady)." if unsteady else ").")]
    if record.best:
        facts.append(f"Best measured: `{record.best}` ({record.metric} {number(record.best_value)}).")
    else:
        facts.append("No experiment ran successfully.")
    if record.elapsed_s is not None:
        facts.append(f"Search time: {duration(record.elapsed_s)}.")
    blocks: list = [BulletList(tuple(facts))]
    if record.summary_text:
        blocks += [Paragraph("`summary.txt`:"), Preformatted(record.summary_text)]
    rows = tuple((str(i), f"`{e.name}`", e.status, e.phase or "-", number(e.measured), number(e.predicted),
                  e.reason or "") for i, e in enumerate(record.experiments, 1))
    blocks += [Paragraph("Every experiment, in the order it finished:"),
               Table(("#", "experiment", "status", "phase", f"measured {record.metric}", f"predicted {record.metric}",
                      "reason"), rows, (True, False, False, False, True, True, False))]
    return Section("What the search did", tuple(blocks))


def _accuracy_section(record: SearchRecord) -> Section:
    data = predicted_vs_measured(record)
    if not data.points:
        why = ("the search ran no experiment (predictions only, as with --verify-top 0)" if not record.experiments
               else "no experiment that ran carries a prediction" if record.prediction_sources
               else "this search made no predictions (results.json has no \"predicted\" values and there is no "
                    "predictions.json): a measured search runs every candidate for real")
        blocks: list = [Paragraph(f"Nothing to compare: {why}.")]
    else:
        rows = tuple((str(i), f"`{p.name}`", number(p.predicted), number(p.measured), signed_percent(p.error))
                     for i, p in enumerate(data.points, 1))
        mae = data.mean_absolute_error
        blocks = [
            Paragraph(f"Every configuration that was both predicted and run for real (predictions from "
                      f"{', '.join(record.prediction_sources)}). error = (predicted - measured) / measured; the "
                      f"mean absolute error is {100 * mae:.1f}%. Points on the diagonal are exact; the shaded band "
                      f"is within 10%."),
            Table(("#", "experiment", f"predicted {record.metric}", f"measured {record.metric}", "error"), rows,
                  (True, False, True, True, True)),
            Figure("predicted-vs-measured", "Predicted against measured, with the y = x line; points are numbered "
                   "as in the table.", data, draw_accuracy),
        ]
    if data.failed_predicted:
        blocks.append(Paragraph("Predicted but failed when run: " + ", ".join(f"`{n}`" for n in data.failed_predicted)
                                + "."))
    if record.predicted_only:
        ranked = sorted(record.predicted_only, key=lambda item: record.spec.best_first(item[1]))
        shown = ranked[:PREDICTED_ONLY_ROWS]
        more = f" (the best {len(shown)} shown)" if len(ranked) > len(shown) else ""
        blocks += [Paragraph(f"Predicted but not run: {len(ranked)} configuration(s){more}, best first."),
                   Table(("experiment", f"predicted {record.metric}"),
                         tuple((f"`{name}`", number(value)) for name, value in shown), (False, True))]
    return Section("Predicted vs measured", tuple(blocks))


def _history_section(record: SearchRecord) -> Section:
    data = search_history(record)
    if not data.values:
        return Section("Search history", (Paragraph("The search recorded no experiment."),))
    return Section("Search history", (
        Paragraph("The metric of each experiment in the order it finished, failed ones marked at the bottom, and "
                  "the best value found so far: where the line goes flat, later experiments stopped paying off."),
        Figure("search-history", f"Search history ({data.metric}).", data, draw_history)))


def _calibration_section(profile: Optional[HardwareProfile], record: SearchRecord) -> tuple[Section, ...]:
    if profile is None:
        hint = (f"The search names profile `{record.profile}`, which could not be loaded" if record.profile
                else "The search does not name the hardware profile its model used")
        return (Section("Calibration", (Paragraph(f"{hint}; add --profile NAME to show its collective fits."),)),)
    data = collective_fits(profile)
    if not data.series:
        blocks: list = [Paragraph(f"Profile `{profile.name}` has no collective fits ({data.note}).")]
    else:
        rows = tuple((s.scope, s.op, str(s.ranks), f"{s.latency_s * 1e6:.3g}", f"{s.bandwidth_bytes_per_s / 1e9:.3g}",
                      "-" if s.r2 is None else f"{s.r2:.3f}", str(len(s.point_bytes))) for s in data.series)
        blocks = [
            Paragraph("Collective time against message size for the profile the model used: measured points (median, "
                      "with the min-max range of the repeats) and the fitted t = latency + bus_factor(n) x S / "
                      "bus bandwidth (S the total array; bus_factor 2(n-1)/n for allreduce, (n-1)/n for allgather "
                      "and reduce-scatter, 1 for broadcast). Both axes are logarithmic: the flat part on the left "
                      "is latency, the slope-1 part on the right bandwidth."),
            Table(("scope", "collective", "ranks", "latency (us)", "bus bandwidth (GB/s)", "R^2", "points"), rows,
                  (False, False, True, True, True, True, True)),
            Figure("calibration-collectives", f"{profile.name}: collective fits.", data, draw_calibration),
        ]
    return (Section("Calibration", tuple(blocks)), profile_section(profile))


def search_sections(record: SearchRecord, profile: Optional[HardwareProfile] = None) -> tuple[Section, ...]:
    return (_outcome_section(record), _accuracy_section(record), _history_section(record),
            *_calibration_section(profile, record))
