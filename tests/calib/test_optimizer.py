"""The optimizer microbenchmark, run for real on this CPU."""

import dataclasses

import pytest

from simtune.calib import optimizer
from simtune.calib.device import current_device


@pytest.fixture(scope="module")
def quick_run() -> dict:
    """One quick run of the microbenchmark on this CPU, read by every test here (5-10 s each)."""
    return optimizer.run(current_device(0), quick=True)


def test_host_implementations_also_time_their_largest_size_with_moments_left_at_zero(quick_run):
    result = quick_run["impls"]
    timed = {name: impl for name, impl in result.items() if "unavailable" not in impl}
    assert {"torch_adamw_foreach", "torch_adamw_for_loop"} <= set(timed)
    for impl in timed.values():
        largest = max(point["params"] for point in impl["points"])
        zero = impl["zero_state"]
        assert zero["params"] == largest == max(optimizer.CPU_PARAMS_QUICK)
        assert 0 < zero["min_s"] <= zero["median_s"] <= zero["max_s"]
        assert len(impl["points"]) == len(optimizer.CPU_PARAMS_QUICK)  # the zero-moment step is not a fit point


def test_the_other_algorithms_are_timed_in_the_implementation_torch_runs_here_and_the_model_uses_them(quick_run):
    """On CPU tensors torch runs its for-loop: Adagrad, momentum SGD and SGD are timed so, and a
    profile built from the timings gives the model their measured rates beside AdamW's."""
    from simtune.calibration.build import _optimizer
    from simtune.hardware.profile import HardwareProfile
    from simtune.hardware.registry import load_profile
    from simtune.model.adapters import algorithm_rates, hardware_spec
    from simtune.optimizers import CALIBRATED_ALGORITHMS, fit_algorithm, fit_name

    raw = quick_run
    for algorithm in CALIBRATED_ALGORITHMS:
        assert "points" in raw["impls"][fit_name(algorithm, "for_loop")], raw["impls"][fit_name(algorithm, "for_loop")]
    measured = _optimizer(raw)
    base = load_profile("dgx-a100-80gb")
    profile: HardwareProfile = dataclasses.replace(base, optimizer=measured,
                                                   device=dataclasses.replace(base.device, kind="cpu"))
    # timings on a busy machine can fail to fit (a slope not positive): those fall back to the bytes
    # ratio; which algorithm steps faster is benchmarks/results/optimizer_algorithms.txt's to say
    fitted = {algorithm: fit.s_per_param for algorithm in CALIBRATED_ALGORITHMS
              if (fit := measured.fits.get(fit_name(algorithm, "for_loop"))) is not None and fit.s_per_param > 0}
    assert all(measured.fits[fit_name(a, "for_loop")].device == "cpu" for a in fitted)
    rates = {rate.algorithm: rate.s_per_param for rate in algorithm_rates(profile, "torch_adamw_for_loop")}
    assert rates == fitted
    spec = hardware_spec(profile, "torch_adamw_for_loop") if "torch_adamw_for_loop" in measured.fits else None
    if spec is not None:
        assert {rate.algorithm: rate.s_per_param for rate in spec.algorithm_rates} == rates
        if "adagrad" in rates:  # Adagrad's root of a zero state was timed too
            assert spec.algorithm_rate("adagrad").zero_state_s_per_param == \
                measured.fits["torch_adagrad_for_loop"].zero_state_s_per_param
    # the default device fit is the fastest AdamW one, never SGD's faster step
    if any(fit_algorithm(name) == "adamw" for name in measured.fits):
        assert fit_algorithm(hardware_spec(profile).optimizer_impl) == "adamw"


def test_deepspeeds_cpu_kernels_are_timed_where_built_and_step_their_algorithms_offloaded(quick_run):
    """Each DeepSpeed CPU optimizer is timed on the host where its op is built, else recorded as not
    built (calibration never compiles one); the model takes the timed ones for the offloaded step."""
    from simtune.calibration.build import _optimizer
    from simtune.hardware.registry import load_profile
    from simtune.model.adapters import host_algorithm_rates
    from simtune.optimizers import HOST_KERNEL_FITS

    raw = quick_run["impls"]
    for fit in HOST_KERNEL_FITS.values():
        assert "points" in raw[fit] or "is not built" in raw[fit]["unavailable"], raw[fit]
    measured = _optimizer({"impls": raw})
    base = load_profile("dgx-a100-80gb")
    rates = {rate.algorithm: rate.s_per_param
             for rate in host_algorithm_rates(dataclasses.replace(base, optimizer=measured))}
    assert rates == {algorithm: measured.fits[fit].s_per_param for algorithm, fit in HOST_KERNEL_FITS.items()
                     if algorithm != "adamw" and fit in measured.fits and measured.fits[fit].s_per_param > 0}


def test_the_calibration_summary_gives_the_zero_state_cost_only_where_a_states_root_is_taken():
    from simtune.commands.calibrate import summary_lines
    from simtune.hardware.profile import OptimizerFit, SizePoint, Stats
    from simtune.hardware.registry import load_profile

    def fit(name, zero_s):
        ordinary, zero = Stats(1e-6, 1e-6, 1e-6, 3), Stats(zero_s, zero_s, zero_s, 3)
        return OptimizerFit(name, "cuda", 0.0, 1e-9, 1.0, (SizePoint(1000, ordinary),), SizePoint(1000, zero))

    base = load_profile("dgx-a100-80gb")
    fits = {"torch_adamw_foreach": fit("torch_adamw_foreach", 5e-6), "torch_sgd_foreach": fit("torch_sgd_foreach", 5e-6)}
    profile = dataclasses.replace(base, optimizer=dataclasses.replace(base.optimizer, fits=fits))
    lines = {line.split()[1]: line for line in summary_lines(profile) if line.strip().startswith("optimizer")}
    assert "with its states at 0" in lines["torch_adamw_foreach"]
    assert "states at 0" not in lines["torch_sgd_foreach"] and "1 ns/param" in lines["torch_sgd_foreach"]


def test_deepspeeds_cpu_optimizers_ask_for_the_cpus_vendor_once_while_calibration_builds_them():
    import cpuinfo

    original = cpuinfo.get_cpu_info
    with optimizer._cpu_info_asked_once():
        assert cpuinfo.get_cpu_info() is cpuinfo.get_cpu_info()  # the first answer kept
    assert cpuinfo.get_cpu_info is original


def test_a_jit_built_op_counts_as_built_only_while_ninja_would_compile_nothing(tmp_path, monkeypatch):
    """A real ninja over a build folder shaped as torch's (a build.ninja and the library it
    makes): up to date it is loadable; with a source newer than its library, or no ninja on PATH,
    loading it would compile or fail, so calibration leaves it out and says why."""
    import os
    import subprocess
    import sys

    monkeypatch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    folder = tmp_path / "demo_op"
    folder.mkdir()
    (folder / "demo.cpp").write_text("int demo() { return 1; }\n")
    (folder / "build.ninja").write_text("rule copy\n  command = cp $in $out\nbuild demo_op.so: copy demo.cpp\n"
                                        "default demo_op.so\n")
    subprocess.run(["ninja", "-C", str(folder)], check=True, capture_output=True)
    assert optimizer.jit_build_outdated(str(folder), "demo_op") is None

    later = (folder / "demo_op.so").stat().st_mtime + 10
    os.utime(folder / "demo.cpp", (later, later))  # a source changed since the build: ninja compiles again
    reason = optimizer.jit_build_outdated(str(folder), "demo_op")
    assert reason is not None and "out of date" in reason and "demo_op" in reason
    assert (folder / "demo_op.so").stat().st_mtime < later  # the dry run built nothing

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    reason = optimizer.jit_build_outdated(str(folder), "demo_op")
    assert reason is not None and "needs ninja on PATH" in reason
