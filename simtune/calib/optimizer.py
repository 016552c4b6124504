"""Time of one optimizer step as a function of the number of parameters.

The step of Adam-type optimizers is memory-bound: it reads and writes the fp32 parameter, its
gradient and two moments per parameter, so its time is close to ``a + b * params``. Parameters
are split over several tensors, as in a model, so the multi-tensor (foreach) paths are exercised.

Sizes start where the parameters, gradients and moments no longer fit in the CPU caches (a few
MiB), since models are larger than that and the per-parameter cost changes when the state leaves
the caches.

On the host each implementation is also timed, in turn with the others, at the largest size
with every gradient 0 from the first step, so that both moments stay exactly 0 (``zero_state``):
the parameters no sample reaches (learned position rows beyond the sequence) are stepped like
that, and torch's CPU ``sqrt`` runs several times slower on zeros than on ordinary values
(benchmarks/results/zero_optimizer_state.txt).

Implementations: torch's AdamW (for-loop, foreach and fused where torch offers them on this
device), DeepSpeed's FusedAdam on CUDA and DeepSpeedCPUAdam on the host; and torch's Adagrad,
momentum SGD and SGD in the implementation torch runs on this device (the for-loop for CPU
tensors, foreach for CUDA ones), which DeepSpeed builds from a config naming them
(:data:`simtune.optimizers.CALIBRATED_ALGORITHMS`); DeepSpeed's CPU Adagrad and Lion, which step
those algorithms offloaded (:data:`simtune.optimizers.HOST_KERNEL_FITS`). DeepSpeed's ops are
used only when already built (installed with the package, or present and up to date in the JIT
cache): building them takes tens of seconds, so a missing or outdated op is recorded as
unavailable, never built here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess

import torch

from simtune.calib.device import Device
from simtune.calib.timing import measure_in_turn
from simtune.optimizers import ALGORITHMS, CALIBRATED_ALGORITHMS, HOST_KERNEL_FITS, fit_name

CPU_PARAMS = [2**18, 2**20, 2**21, 2**22]
CPU_PARAMS_QUICK = [2**18, 2**20, 2**22]
CUDA_PARAMS = [2**20, 2**23, 2**26, 2**28]
CUDA_PARAMS_QUICK = [2**20, 2**24, 2**28]
TENSORS_PER_MODEL = 8


def _op_prebuilt(builder) -> str | None:
    """None if the DeepSpeed op can be loaded without compiling, else why not: installed with
    DeepSpeed, or JIT-built and up to date (:func:`jit_build_outdated`)."""
    from deepspeed.git_version_info import installed_ops  # a missing or broken op fails only this optimizer

    if installed_ops.get(builder.name, False):
        return None
    from torch.utils.cpp_extension import _get_build_directory  # a missing or broken op fails only this optimizer

    build_dir = _get_build_directory(builder.name, verbose=False)
    if os.path.exists(os.path.join(build_dir, f"{builder.name}.so")):
        return jit_build_outdated(build_dir, builder.name)
    return f"op {builder.name} is not built (it is JIT-compiled on first use, which calibration does not wait for)"


def jit_build_outdated(build_dir: str, name: str) -> str | None:
    """None if loading the JIT-built op in ``build_dir`` compiles nothing, else why it would.

    torch's loader runs the first ``ninja`` on ``PATH`` over the op's build folder, even when its
    library is there, and ninja compiles again whatever its log says is stale: a source or header
    newer than the library (torch or DeepSpeed upgraded), or a log written by another ninja version
    (a virtual environment's ``ninja`` and the system's read each other's logs as stale). Either
    costs one to two minutes per op on a few cores, so such an op is left out, as an unbuilt one
    is. ``ninja -n`` (a dry run) tells without building."""
    ninja = shutil.which("ninja")
    if ninja is None:
        return f"op {name} cannot be loaded: torch's loader needs ninja on PATH, even for a built op"
    try:
        done = subprocess.run([ninja, "-n", "-C", build_dir], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"op {name}: {ninja} -n failed ({exc})"
    if done.returncode == 0 and "no work to do" in done.stdout:
        return None
    return (f"op {name} is built but out of date for {ninja} (loading it would compile it again, which "
            f"calibration does not wait for)")


def _make_params(total: int, device: torch.device, zero_gradients: bool = False) -> list[torch.nn.Parameter]:
    per_tensor = max(1, total // TENSORS_PER_MODEL)
    params = []
    for _ in range(TENSORS_PER_MODEL):
        p = torch.nn.Parameter(torch.randn(per_tensor, device=device))
        p.grad = torch.zeros_like(p) if zero_gradients else torch.randn_like(p) * 1e-3
        params.append(p)
    return params


def _torch_adamw(variant: str):
    def make(params):
        if variant == "foreach":
            return torch.optim.AdamW(params, lr=1e-4, foreach=True)
        if variant == "fused":
            return torch.optim.AdamW(params, lr=1e-4, fused=True)
        return torch.optim.AdamW(params, lr=1e-4, foreach=False)

    return make


def _torch_algorithm(algorithm: str, implementation: str):
    """torch's optimizer of one of :data:`~simtune.optimizers.CALIBRATED_ALGORITHMS`."""
    foreach = implementation == "foreach"

    def make(params):
        if algorithm == "adagrad":
            return torch.optim.Adagrad(params, lr=1e-4, foreach=foreach)
        momentum = 0.9 if algorithm == "sgd_momentum" else 0.0
        return torch.optim.SGD(params, lr=1e-4, momentum=momentum, foreach=foreach)

    return make


def _always(make):
    """A resolver for an optimizer that is always available."""
    return lambda: (make, None)


def _deepspeed_cpu_kernel(algorithm: str):
    """A resolver for DeepSpeed's CPU optimizer of ``algorithm`` (what ZeRO-Offload steps it
    with), available where its op is already built."""

    def resolve():
        from deepspeed.ops import op_builder  # a missing or broken op fails only this optimizer

        builder, _ = DEEPSPEED_CPU_KERNELS[algorithm]
        reason = _op_prebuilt(getattr(op_builder, builder)())
        if reason:
            return None, reason
        kernel = deepspeed_cpu_optimizer(algorithm)  # a missing or broken op fails only this optimizer
        extra = {"adamw_mode": True} if algorithm == "adamw" else {}
        return (lambda params: kernel(params, lr=1e-4, **extra)), None

    return resolve


DEEPSPEED_CPU_KERNELS = {  # algorithm: (op builder, module of its class), as simtune.optimizers.HOST_KERNEL_FITS
    "adamw": ("CPUAdamBuilder", "deepspeed.ops.adam"),
    "adagrad": ("CPUAdagradBuilder", "deepspeed.ops.adagrad"),
    "lion": ("CPULionBuilder", "deepspeed.ops.lion"),
}


def deepspeed_cpu_optimizer(algorithm: str):
    """DeepSpeed's CPU optimizer class for ``algorithm`` (``Algorithm.offload_impl``, in its module
    of :data:`DEEPSPEED_CPU_KERNELS`); constructing one JIT-builds its op where it is not built."""
    import importlib

    return getattr(importlib.import_module(DEEPSPEED_CPU_KERNELS[algorithm][1]), ALGORITHMS[algorithm].offload_impl)


def _deepspeed_fused_adam():
    from deepspeed.ops.op_builder import FusedAdamBuilder  # a missing or broken op fails only this optimizer

    reason = _op_prebuilt(FusedAdamBuilder())
    if reason:
        return None, reason
    from deepspeed.ops.adam import FusedAdam  # a missing or broken op fails only this optimizer

    return (lambda params: FusedAdam(params, lr=1e-4, adam_w_mode=True)), None


@contextlib.contextmanager
def _cpu_info_asked_once():
    """DeepSpeed's CPU optimizers ask py-cpuinfo for the CPU's vendor in their constructor, which
    runs a subprocess (about 1.2 s on the 2-core VM, 4 of every kernel's 5 s of timing); while
    calibration builds them the first answer is kept."""
    try:
        import cpuinfo  # DeepSpeed's dependency; without it nothing here asks
    except ImportError:
        yield
        return
    original = cpuinfo.get_cpu_info
    cpuinfo.get_cpu_info = functools.cache(original)
    try:
        yield
    finally:
        cpuinfo.get_cpu_info = original


def _time_impl(make, device: Device, torch_device: torch.device, sizes: list[int], warmup: int, repeats: int) -> dict:
    """Every size's model and optimizer built first, then their steps timed in turn
    (:func:`~simtune.calib.timing.measure_in_turn`); on the host one more model of the largest
    size whose gradients are all 0 (``zero_state``, module docstring)."""
    host = torch_device.type == "cpu"
    sync = (lambda: None) if host else device.sync
    models = [_make_params(total, torch_device) for total in sizes]
    if host:
        models.append(_make_params(max(sizes), torch_device, zero_gradients=True))
    optimizers = [make(params) for params in models]
    points = measure_in_turn([optimizer.step for optimizer in optimizers], sync, warmup, repeats)
    for point, params in zip(points, models):
        point["params"] = sum(p.numel() for p in params)
    result = {"device": torch_device.type, "dtype": "fp32"}
    if host:
        result["zero_state"] = points.pop()
    result["points"] = points
    return result


def run(device: Device, quick: bool) -> dict:
    """Step timings per implementation; an implementation that cannot run records why."""
    cuda = device.kind == "cuda"
    warmup, repeats = (1, 3) if quick else (2, 5)
    dev_sizes = (CUDA_PARAMS_QUICK if quick else CUDA_PARAMS) if cuda else (CPU_PARAMS_QUICK if quick else CPU_PARAMS)
    host_sizes = CPU_PARAMS_QUICK if quick else CPU_PARAMS
    torch_adamw = {variant: _always(_torch_adamw(variant)) for variant in ("foreach", "fused", "for_loop")}
    candidates = [
        ("torch_adamw_foreach", torch_adamw["foreach"], device.torch_device, dev_sizes),
        ("torch_adamw_fused", torch_adamw["fused"], device.torch_device, dev_sizes),
    ]
    # the for-loop on a GPU: its intercept holds the launches of its 8 tensors (the model's
    # per-tensor dispatch, docs/cost-model.md 3.4)
    candidates.append(("torch_adamw_for_loop", torch_adamw["for_loop"], device.torch_device, dev_sizes))
    implementation = "foreach" if cuda else "for_loop"  # what torch picks for the device's tensors
    for algorithm in CALIBRATED_ALGORITHMS:
        candidates.append((fit_name(algorithm, implementation), _always(_torch_algorithm(algorithm, implementation)),
                           device.torch_device, dev_sizes))
    if cuda:
        candidates.append(("deepspeed_fused_adam", _deepspeed_fused_adam, device.torch_device, dev_sizes))
        candidates.append(("torch_adamw_foreach_host", torch_adamw["foreach"], torch.device("cpu"), host_sizes))
    for algorithm, fit in HOST_KERNEL_FITS.items():
        candidates.append((fit, _deepspeed_cpu_kernel(algorithm), torch.device("cpu"), host_sizes))

    impls: dict[str, dict] = {}
    with _cpu_info_asked_once():
        for name, resolve, torch_device, sizes in candidates:
            impls[name] = _timed_or_why_not(resolve, device, torch_device, sizes, warmup, repeats)
    if cuda:
        torch.cuda.empty_cache()
    return {"impls": impls}


def _timed_or_why_not(resolve, device: Device, torch_device: torch.device, sizes: list[int], warmup: int,
                      repeats: int) -> dict:
    """One implementation's timings, or why it could not run."""
    try:
        make, reason = resolve()
        if make is None:
            return {"unavailable": reason}
        return _time_impl(make, device, torch_device, sizes, warmup, repeats)
    except Exception as exc:  # a missing or broken op must never fail calibration
        return {"unavailable": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
