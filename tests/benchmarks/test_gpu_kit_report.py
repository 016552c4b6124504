"""The GPU kit's report: committed H200 measurements predicted again, stage pairs counted."""

from __future__ import annotations

from tests.benchmarks.benchmark_scripts import BENCHMARKS, load_script

KIT = BENCHMARKS / "gpu"
H200_KIT = BENCHMARKS / "results" / "gpu" / "h200-2026-12-04-kit"


def _report():
    return load_script(KIT / "report.py", "gpu_kit_report")


def _row(stage: int, pred: float, meas: float, mbs: int = 16, **case) -> dict:
    return {"key": f"z{stage}" + "".join(f"_{k}" for k in case), "largest": False, "mbs": mbs, "stage": stage,
            "pred_step_s": pred, "meas_step_s": meas,
            "case": {"preset": "gpt2", "seq_len": 1024, "checkpointing": False, "offload_optimizer": "none", **case}}


def test_stage_pairs_count_only_configurations_that_differ_in_their_stage():
    report = _report()
    rows = [_row(0, 1.0, 1.2), _row(1, 2.0, 1.1), _row(3, 3.0, 2.0), _row(0, 9.0, 9.0, mbs=4),
            _row(0, 0.5, 5.0, torch_adam=True), _row(0, 0.5, 5.0, autocast=True)]
    # pairs (0,1) reversed, (0,3) and (1,3) as measured; the micro-batch 4 row has no partner, nor
    # have the rows of another optimizer or under autocast
    assert report.stage_pairs(rows) == (2, 3)


def test_torchs_adamw_is_set_beside_fused_adam_at_the_same_stage_and_size():
    report = _report()
    rows = [_row(0, 0.100, 0.124), _row(1, 0.100, 0.107), _row(0, 0.121, 0.145, torch_adam=True),
            _row(1, 0.100, 0.109, torch_adam=True, autocast=True)]
    assert report.optimizer_pairs(rows) == [
        "z0_torch_adam: torch's AdamW over FusedAdam +21.0 ms measured, +21.0 ms predicted"]


def test_offload_is_set_beside_the_same_configuration_without_it():
    report = _report()

    def row(stage: int, pred: float, meas: float, offload: str, optimizer: float, copies: float) -> dict:
        return {**_row(stage, pred, meas, offload_optimizer=offload), "pred_optimizer_s": optimizer,
                "pred_offload_s": copies}

    rows = [row(2, 0.060, 0.104, "none", 0.001, 0.0), row(2, 0.210, 0.356, "cpu", 0.140, 0.014),
            row(3, 0.100, 0.200, "cpu", 0.050, 0.030)]  # stage 3 has no partner without offload
    assert report.offload_pairs(rows) == [
        "z2_offload_optimizer: offload +252.0 ms measured, +150.0 ms predicted (copies 14.0 ms, optimizer +139.0 ms)"]


def test_the_committed_h200_run_is_predicted_again_on_any_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMTUNE_HOME", str(tmp_path))  # no engine costs learnt here
    text = _report().repredicted_text(H200_KIT, ["hgx-h200-141gb", str(H200_KIT / "h200-141gb-1gpu.json")])
    assert "16 ran; precision bf16; torch Adam" in text
    sections = text.split("\nprofile ")[1:]
    assert len(sections) == 2
    for section in sections:
        lines = section.splitlines()
        rows = [line for line in lines if line.startswith(("  gpt2", "  bert")) and ": " not in line]
        assert len(rows) == 16
        assert "step MAPE" in section and "stage pairs ordered as measured" in section and " of 8" in section
        (pair,) = [line for line in lines if ": offload +" in line]
        assert pair.startswith("  gpt2_s1024_z2_mbs16_offopt: offload +251.9 ms measured, +")


def test_the_summary_sets_the_calibrated_kernels_beside_the_spec_profile():
    report = _report()
    profile = report._profile_in(H200_KIT)
    assert profile == H200_KIT / "h200-141gb-1gpu.json"
    lines = report.kernel_lines(profile)
    measured = next(line for line in lines if line.startswith("| bf16 | measured"))
    spec = next(line for line in lines if line.startswith("| bf16 | spec"))
    assert "760 T (0.77)" in measured and "| none |" in measured  # calibrated before the attention timing
    assert "(0.30 / 0.29)" in spec and "3.12 TB/s" in spec
    assert "No calibrated profile" in "\n".join(report.kernel_lines(None))


def test_the_summary_gives_the_host_copies_pinned_and_pageable():
    from simtune.hardware.profile import CopyPoint, Stats

    report = _report()
    # the committed H200 run predates the pageable copies: its pinned ones only
    lines = report.kernel_lines(report._profile_in(H200_KIT))
    assert "| h2d | 512 |" in "\n".join(lines) and "pageable" not in "\n".join(lines)

    def point(direction: str, nbytes: int, seconds: float) -> CopyPoint:
        return CopyPoint(direction, nbytes, Stats(min_s=seconds, median_s=seconds, max_s=seconds, repeats=3))

    copies = report.host_copy_lines([point("h2d", 2**24, 1e-3), point("h2d", 2**29, 10e-3),
                                     point("h2d_pageable", 2**29, 40e-3), point("d2d", 2**29, 1e-3)])
    assert copies[-2:] == ["| h2d | 512 | 53.7 |", "| h2d_pageable | 512 | 13.4 |"]
    assert report.host_copy_lines([point("host_memcpy", 2**26, 1e-3)]) == []


def test_a_case_the_profile_cannot_predict_is_left_out_of_the_plan_with_why(tmp_path, monkeypatch):
    """A CPU without bf16 (AVX2 alone) calibrates fp32 only: the rehearsal's autocast case cannot be
    predicted there, so the plan leaves it out, says why, and plans the rest."""
    import json

    from tests.benchmarks.benchmark_scripts import ROOT

    monkeypatch.setenv("SIMTUNE_HOME", str(tmp_path))
    profile = json.loads((ROOT / "hardware_profiles" / "hgx-h200-141gb.json").read_text())
    for dtype in ("bf16", "fp16"):
        del profile["compute"]["curves"][dtype]
        del profile["compute"]["attention"][dtype]
        profile["compute"]["unsupported_dtypes"][dtype] = "unsupported: oneDNN reports no support on this CPU"
    path = tmp_path / "fp32-only.json"
    path.write_text(json.dumps(profile))
    report = _report()
    plan = report.make_plan("rehearsal", str(path), "fp32", torch_adam=True, cpu_adam=False)
    autocast = [c.key for c in report.rehearsal_cases() if c.autocast]
    assert autocast and [c["key"] for c in plan["left_out"]] == autocast
    assert "no bf16 compute curve" in plan["left_out"][0]["reason"]
    assert len(plan["cases"]) == len(report.rehearsal_cases()) - len(autocast)
    summary = report.summary_markdown(plan, [], [], {})
    assert f"Left out of the plan (the profile cannot predict them): {autocast[0]} (" in summary
