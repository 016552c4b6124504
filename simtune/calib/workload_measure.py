"""The measurements of a model behind a workload calibration (torch; no DeepSpeed engine).

:func:`measure` runs in the calling process (``calibrate_workload(in_process=True)``, the tests'
way); :mod:`simtune.calib.workload_rank` runs the same on every rank of a launch and adds real
engines (:mod:`simtune.calib.engines`). :func:`measure_module` is the part shared
with script mode: it takes any ``nn.Module`` and a function giving a batch of a micro-batch size.

Regime measured, and why:

- timings: ``loss = model(**batch).loss`` (forward, loss included, as the training program calls
  the engine) and ``loss.backward()``, gradients dropped between repeats; 2 warm-up iterations
  per size (the first iterations allocate and pick kernels), then ``repeats`` rounds that time
  every size once in turn (so a burst of another process's work spreads over all sizes), each
  timed iteration preceded by an untimed one of the same size (training repeats one size: the
  first iteration after a change of size pays allocations and page faults training does not),
  with ``time.perf_counter`` around each call, the device synchronised before and after on CUDA.
  Medians are what the predictor uses; min and max show the spread. The same again with
  activation checkpointing switched on, for models that have the switch.
- saved bytes: a ``saved_tensors_hooks`` pack hook sees every tensor autograd keeps; tensors are
  counted once per storage (views share one), storages of parameters are left out (the model
  states count them), and each is charged to the transformer layer running when it was saved.
- peak memory, over a few iterations: CUDA ``max_memory_allocated`` after
  ``reset_peak_memory_stats``; CPU ``VmHWM`` after freed heap pages are handed back (glibc
  ``malloc_trim``) and ``5`` is written to ``/proc/self/clear_refs`` (which resets the
  high-water mark to the current resident size).
- FLOPs: fvcore's ``FlopCountAnalysis`` with only its matrix-product handles (fvcore counts a
  multiply-add as one flop: doubled here), with the attention run eagerly for the count so its
  products are visible to the tracer; torch's ``FlopCounterMode`` when fvcore cannot trace.
"""

from __future__ import annotations

import datetime
import functools
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import torch

from simtune.calibration.workload import (DEFAULT_MICRO_BATCH_SIZES, MicroBatchMeasurement, ModelShape, Request,
                                          TimeStats, WorkloadCalibration, WorkloadCalibrationError)
from simtune.errors import WorkloadError
from simtune.precision import TORCH_DTYPE_NAMES, autocast_parts
from simtune.probe.device import reset_rss_peak
from simtune.workloads.presets import Workload, _from_document, build_model, load_workload

Batch = dict[str, Any]
"""Keyword inputs of one forward call."""
MakeBatch = Callable[[int], Batch]
"""A batch of the given micro-batch size."""
LossOf = Callable[[Any], torch.Tensor]
"""The loss from a model's output."""
Measured = tuple[list[MicroBatchMeasurement], list[tuple[int, float]], str, list[str]]
"""What :func:`measure_module` measured: per micro-batch size, the FLOPs counted per size, the
counter and notes."""

WARMUP = 2
FVCORE_MATMUL_OPS = ("aten::addmm", "aten::bmm", "aten::_convolution", "aten::einsum", "aten::matmul",
                     "aten::mm", "aten::linear")
"""The fvcore handles kept: matrix products only, the FLOP convention of simtune (layer norms,
pooling and upsampling, which fvcore also counts by default, are left out)."""


# ---------------------------------------------------------------------- memory readings
def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    value = _status_kib("VmRSS")
    return 0 if value is None else value * 1024


class PeakMemory:
    """Peak memory above the starting point over a region, on the device the model runs on."""

    def __init__(self, device: Any) -> None:
        self.cuda = device.type == "cuda"
        self.torch = torch

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.start = self.torch.cuda.memory_allocated()
        else:
            reset_rss_peak()
            self.start = rss_bytes()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            peak = self.torch.cuda.max_memory_allocated()
        else:
            hwm = _status_kib("VmHWM")
            peak = 0 if hwm is None else hwm * 1024
        self.peak_bytes = max(0, peak - self.start)


# ---------------------------------------------------------------------- counting
def transformer_layers(model: Any) -> list[tuple[str, Any]]:
    """The repeated blocks: the children of the longest ``nn.ModuleList`` of same-type modules."""
    best: list[tuple[str, Any]] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best):
            children = list(module)
            if children and all(type(c) is type(children[0]) for c in children):
                best = [(f"{name}.{i}", c) for i, c in enumerate(children)]
    return best


def parameter_facts(model: Any) -> tuple[int, tuple[int, ...], int]:
    """(distinct parameter elements, every tensor's size in ``parameters()`` order, the largest
    count one module holds itself, tied parameters counting for each holder)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        seen.setdefault(p.data_ptr(), p.numel())
    numels = tuple(p.numel() for p in model.parameters())
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    return sum(seen.values()), numels, largest


def count_forward_flops(model: Any, batch: Batch) -> tuple[float, str, tuple[str, ...]]:
    """Forward FLOPs of ``model(**batch)`` (2 per multiply-add), the counter used, and notes."""
    notes: list[str] = []
    restore = None
    config = getattr(model, "config", None)
    if config is not None and hasattr(model, "set_attn_implementation"):
        restore = getattr(config, "_attn_implementation", None)
        if restore not in (None, "eager"):
            try:
                model.set_attn_implementation("eager")
            except Exception:  # a model that only has one attention implementation
                restore = None
    try:
        try:
            from fvcore.nn import FlopCountAnalysis  # fvcore and numpy: not in a rank's memory baseline

            names = list(batch)
            inputs = tuple(batch[n] for n in names)

            class _Positional(torch.nn.Module):
                """The model called with positional tensors, as the tracer calls it."""

                def __init__(self, inner: Any) -> None:
                    super().__init__()
                    self.inner = inner

                def forward(self, *args: Any) -> Any:
                    out = self.inner(**dict(zip(names, args)))
                    return out.loss if hasattr(out, "loss") and out.loss is not None else out

            analysis = FlopCountAnalysis(_Positional(model), inputs)
            handles = dict(analysis._op_handles)
            analysis.clear_op_handles()
            analysis.set_op_handle(**{op: handles[op] for op in FVCORE_MATMUL_OPS if op in handles})
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            total = 2.0 * analysis.total()
            hidden = [op for op in analysis.unsupported_ops() if "attention" in op or op == "prim::PythonOp"]
            if hidden or total <= 0:  # fused attention, or products inside a custom autograd function
                raise RuntimeError(f"fvcore cannot see inside {', '.join(hidden) or 'the model'}")
            return total, "fvcore", tuple(notes)
        except Exception as exc:  # fvcore traces with torch.jit; some models do not trace
            notes.append(f"fvcore could not count ({type(exc).__name__}: {str(exc)[:120]}); "
                         "torch FlopCounterMode counted")
        from torch.utils.flop_counter import FlopCounterMode  # only where fvcore could not count

        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(**batch)
        return float(counter.get_total_flops()), "torch", tuple(notes)
    finally:
        if restore not in (None, "eager"):
            model.set_attn_implementation(restore)


def saved_tensor_bytes(model: Any, forward: Callable[[], Any], layers: Sequence[tuple[str, Any]]
                       ) -> tuple[int, dict[str, int], Any]:
    """Run ``forward`` under a pack hook; bytes of distinct non-parameter storages autograd saved,
    in total and per layer ("other" outside the layers), and forward's result."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    by_layer: dict[str, int] = {name: 0 for name, _ in layers}
    by_layer["other"] = 0
    current = ["other"]
    handles = []
    for name, layer in layers:
        handles.append(layer.register_forward_pre_hook(lambda m, a, n=name: current.__setitem__(0, n)))
        handles.append(layer.register_forward_hook(lambda m, a, o: current.__setitem__(0, "other")))

    def pack(tensor: Any) -> Any:
        try:
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key and key not in params and key not in seen:
                seen.add(key)
                by_layer[current[0]] += storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, meta)
            pass
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            result = forward()
    finally:
        for handle in handles:
            handle.remove()
    return sum(by_layer.values()), by_layer, result


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of y over x (through the origin when there is one point)."""
    if len(xs) == 1:
        return ys[0] / xs[0]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


# ---------------------------------------------------------------------- the measurement
def timed_once(model: Any, batch: Batch, loss_of: LossOf, sync: Callable[[], None]) -> tuple[float, float]:
    """Seconds of one forward (loss included) and of its backward; gradients dropped after."""
    sync()
    t0 = time.perf_counter()
    loss = loss_of(model(**batch))
    sync()
    t1 = time.perf_counter()
    loss.backward()
    sync()
    t2 = time.perf_counter()
    del loss
    model.zero_grad(set_to_none=True)
    return t1 - t0, t2 - t1


def _warm(model: Any, batch: Batch, loss_of: LossOf) -> None:
    for _ in range(WARMUP):
        loss_of(model(**batch)).backward()
        model.zero_grad(set_to_none=True)


def _warmed_within_memory(model: Any, batch: Batch, loss_of: LossOf, agree: Callable[[float], float]) -> bool:
    """One forward and backward of ``batch``, False on every rank when it ran out of device memory
    on any (a larger size a search's space reaches, which the memory estimate from the smaller
    ones let through; the ranks then go on without it)."""
    try:
        loss_of(model(**batch)).backward()
        failed = 0.0
    except torch.cuda.OutOfMemoryError:
        failed = 1.0
    model.zero_grad(set_to_none=True)
    if failed and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return not agree(failed)


PEAK_ITERATIONS = 4
"""Forward + backward iterations inside one peak-memory reading: training repeats them, and on
CPU the heap grows over the first few (freed blocks do not always fit the next allocations)."""


def _peak(model: Any, make_batch: MakeBatch, mbs: int, loss_of: LossOf,
          layers: Sequence[tuple[str, Any]], device: Any) -> tuple[int, dict[str, int], int]:
    """(saved bytes, saved bytes per layer) of one forward, and the peak bytes over
    PEAK_ITERATIONS forward + backward iterations."""
    with PeakMemory(device) as peak:
        saved, by_layer, out = saved_tensor_bytes(model, lambda: model(**make_batch(mbs)), layers)
        loss_of(out).backward()
        del out
        model.zero_grad(set_to_none=True)
        for _ in range(PEAK_ITERATIONS - 1):
            loss_of(model(**make_batch(mbs))).backward()
            model.zero_grad(set_to_none=True)
    return saved, by_layer, peak.peak_bytes


def gradient_bytes(model: Any) -> int:
    """Bytes of the gradients a backward creates: one per distinct trainable parameter."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        if p.requires_grad:
            seen.setdefault(p.data_ptr(), p.numel() * p.element_size())
    return sum(seen.values())


EXTRA_SIZE_SECONDS = 0.15
"""A micro-batch size above :data:`~simtune.calibration.workload.DEFAULT_MICRO_BATCH_SIZES` (one a
search's space reaches) is measured only while one forward and backward of it, extrapolated from
the size before, takes at most this long: its timings cost some 50 such iterations."""


def measure_module(model: Any, make_batch: MakeBatch, *, micro_batch_sizes: Sequence[int],
                   repeats: int, memory_limit_bytes: int, loss_of: Optional[Callable[[Any], Any]] = None,
                   checkpointing: Optional[Callable[[bool], None]] = None,
                   barrier: Optional[Callable[[], None]] = None,
                   agree: Callable[[float], float] = lambda value: value
                   ) -> Measured:
    """Measure any module: timings, saved bytes and peak memory per micro-batch size (and with
    activation checkpointing when ``checkpointing(on)`` can switch it), and forward FLOPs at
    the two smallest sizes. Sizes whose activations would pass half the memory limit
    (extrapolated from the last size) are skipped, and so are sizes above the default ones whose
    forward and backward would take more than :data:`EXTRA_SIZE_SECONDS`. ``barrier()`` (ranks
    measuring side by side) runs before every timed iteration, so the ranks run the same work at
    the same moment, as training's collectives keep them; ``agree(x)`` returns the largest ``x``
    of those ranks, so that they skip the same sizes."""
    loss_of = loss_of or (lambda out: out.loss if hasattr(out, "loss") else out)
    device = next(model.parameters()).device
    layers = transformer_layers(model)
    sync = device_sync(device)
    grads = gradient_bytes(model)
    notes: list[str] = []
    sizes = sorted(set(int(m) for m in micro_batch_sizes))
    flops: list[tuple[int, float]] = []
    counter = "torch"
    for mbs in sizes[:2]:
        total, counter, more = count_forward_flops(model, make_batch(mbs))
        flops.append((mbs, total))
        notes.extend(n for n in more if n not in notes)

    # memory first, size by size (stopping before a size that would not fit)
    kept: list[int] = []
    memory: dict[int, tuple[int, dict[str, int], int, Optional[int]]] = {}
    per_sample_guess = None
    seconds_per_sample = 0.0
    for mbs in sizes:
        if per_sample_guess is not None and per_sample_guess * mbs > memory_limit_bytes / 2:
            notes.append(f"micro-batch {mbs} skipped: its activations would pass half the memory limit")
            break
        if mbs > DEFAULT_MICRO_BATCH_SIZES[-1] and seconds_per_sample * mbs > EXTRA_SIZE_SECONDS:
            notes.append(f"micro-batch {mbs} skipped: one forward and backward would take about "
                         f"{seconds_per_sample * mbs:.2f} s (more than {EXTRA_SIZE_SECONDS} s)")
            break
        batch = make_batch(mbs)
        if mbs > DEFAULT_MICRO_BATCH_SIZES[-1] and not _warmed_within_memory(model, batch, loss_of, agree):
            notes.append(f"micro-batch {mbs} skipped: it ran out of device memory")
            break
        warm_started = time.perf_counter()
        _warm(model, batch, loss_of)
        seconds_per_sample = agree((time.perf_counter() - warm_started) / WARMUP / mbs)
        saved, by_layer, peak = _peak(model, make_batch, mbs, loss_of, layers, device)
        ckpt_peak = None
        if checkpointing is not None:
            checkpointing(True)
            try:
                _warm(model, batch, loss_of)
                ckpt_peak = max(0, _peak(model, make_batch, mbs, loss_of, (), device)[2] - grads)
            finally:
                checkpointing(False)
        memory[mbs] = (saved, by_layer, peak, ckpt_peak)
        kept.append(mbs)
        per_sample_guess = max(peak, saved) / mbs

    # then times, in rounds that take every size in turn: a burst of interference from other
    # processes spreads over all sizes instead of covering one
    plain: dict[int, tuple[list[float], list[float]]] = {m: ([], []) for m in kept}
    ckpt: dict[int, tuple[list[float], list[float]]] = {m: ([], []) for m in kept}
    together = barrier or (lambda: None)

    def steady(mbs: int) -> tuple[float, float]:
        # one untimed iteration first: training repeats one size, so the allocations of the
        # previous size (and, on CPU, the page faults of a heap that must grow) are not its cost
        timed_once(model, make_batch(mbs), loss_of, sync)
        together()
        return timed_once(model, make_batch(mbs), loss_of, sync)

    for _ in range(repeats):
        for mbs in kept:
            f, b = steady(mbs)
            plain[mbs][0].append(f)
            plain[mbs][1].append(b)
        if checkpointing is not None:
            checkpointing(True)
            try:
                for mbs in kept:
                    f, b = steady(mbs)
                    ckpt[mbs][0].append(f)
                    ckpt[mbs][1].append(b)
            finally:
                checkpointing(False)

    results: list[MicroBatchMeasurement] = []
    for mbs in kept:
        saved, by_layer, peak, ckpt_peak = memory[mbs]
        with_ckpt = checkpointing is not None
        results.append(MicroBatchMeasurement(
            micro_batch_size=mbs, forward=TimeStats.of(plain[mbs][0]), backward=TimeStats.of(plain[mbs][1]), saved_bytes=saved,
            saved_bytes_by_layer=tuple(by_layer.items()), peak_bytes=peak, activation_peak_bytes=max(0, peak - grads),
            forward_checkpointed=TimeStats.of(ckpt[mbs][0]) if with_ckpt else None,
            backward_checkpointed=TimeStats.of(ckpt[mbs][1]) if with_ckpt else None,
            activation_peak_checkpointed_bytes=ckpt_peak))
    return results, flops, counter, notes


def device_sync(device: Any) -> Callable[[], None]:
    """What waits for ``device`` (a torch device or its name): ``torch.cuda.synchronize`` on a
    GPU, nothing on CPU, where every call has finished when it returns."""
    if getattr(device, "type", str(device)).startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def checkpointing_switch(model: Any, request: Request) -> Optional[Callable[[bool], None]]:
    """The model's activation-checkpointing switch when the request asks for it, else None."""
    return hf_checkpointing(model) if request.checkpointing else None


def hf_checkpointing(model: Any) -> Optional[Callable[[bool], None]]:
    """A switch for a Hugging Face model's activation checkpointing (non-reentrant, as the
    training program uses it), or None for a model without one."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        return None

    def switch(on: bool) -> None:
        if on:
            kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        elif hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        else:
            model.gradient_checkpointing_disable()

    return switch


def derived_activations(results: Sequence[MicroBatchMeasurement]) -> tuple[float, float]:
    """(saved bytes per sample, mean per transformer layer per sample): slopes over the sizes."""
    xs = [m.micro_batch_size for m in results]
    total = _slope(xs, [m.saved_bytes for m in results])
    names = [n for n, _ in results[0].saved_bytes_by_layer if n != "other"]
    if not names:
        return total, 0.0
    per_layer = [_slope(xs, [dict(m.saved_bytes_by_layer)[n] for m in results]) for n in names]
    return total, statistics.fmean(per_layer)


def flops_per_sample(flops: Sequence[tuple[int, float]]) -> float:
    """Per-sample forward FLOPs: the slope between the counted sizes (per-batch work such as
    DeBERTa's relative-position projections is shared), or the one count / its size."""
    if len(flops) == 1:
        return flops[0][1] / flops[0][0]
    (m0, f0), (m1, f1) = flops[0], flops[1]
    return (f1 - f0) / (m1 - m0)


def model_shape(model: Any, workload: Any = None) -> ModelShape:
    if workload is not None:
        return ModelShape(workload.num_layers, workload.hidden_size, workload.num_heads,
                          workload.intermediate_size, workload.vocab_size)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        try:
            w = _from_document("script model", config.to_dict(), None)
            return ModelShape(w.num_layers, w.hidden_size, w.num_heads, w.intermediate_size, w.vocab_size)
        except WorkloadError:  # a config without the transformer sizes
            pass
    return generic_shape(model)


def generic_shape(model: Any) -> ModelShape:
    """A stand-in shape for a model without a Hugging Face config: its repeated blocks as layers,
    the widest linear layer's input and output as hidden and MLP widths. Only the compute-curve
    work size (on other hardware) and the activation formula use it, and the measured activation
    bytes replace the formula."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    widest = max(linears, key=lambda m: m.in_features * m.out_features, default=None)
    hidden = widest.in_features if widest is not None else 1
    inner = widest.out_features if widest is not None else 1
    return ModelShape(num_layers=max(1, len(transformer_layers(model))), hidden_size=hidden, num_heads=1,
                      intermediate_size=inner, vocab_size=1)


def build_measured_model(workload: Workload, precision: str, device: torch.device) -> Any:
    """The workload's model with random weights (seeded), in the training precision, in train mode;
    under DeepSpeed's ``torch_autocast`` (a ``"bf16+autocast"`` label: :mod:`simtune.precision`)
    an fp32 model whose forward, loss included, runs inside ``torch.autocast`` in that dtype, as
    the engine runs it."""
    dtype, autocast = autocast_parts(precision)
    torch.manual_seed(1234)
    try:
        built_in = getattr(torch, TORCH_DTYPE_NAMES["fp32" if autocast else dtype])
        model = build_model(workload).to(device=device, dtype=built_in)
    except (RuntimeError, ValueError) as exc:
        raise WorkloadCalibrationError(f"{workload.name} cannot be built in {precision} ({exc}).") from None
    if autocast:
        forward_under_autocast(model, device.type, dtype)
    model.train()
    return model


def forward_under_autocast(model: Any, device_type: str, precision: str) -> None:
    """Run ``model``'s forward inside ``torch.autocast(device_type, <precision's dtype>)`` from now
    on (the backward runs outside it, as torch recommends and DeepSpeed's engine does)."""
    inner = model.forward
    dtype = getattr(torch, TORCH_DTYPE_NAMES[precision])

    @functools.wraps(inner)
    def forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=dtype):
            return inner(*args, **kwargs)

    model.forward = forward


def token_batches(workload: Workload, device: torch.device, seed: int = 4321) -> MakeBatch:
    """Random token batches of a micro-batch size, labelled as the training program labels them."""
    generator = torch.Generator().manual_seed(seed)

    def make_batch(mbs: int) -> Batch:
        tokens = torch.randint(0, workload.vocab_size, (mbs, workload.seq_len), generator=generator)
        labels = workload.synthetic_labels(tokens, generator)
        return {"input_ids": tokens.to(device), "labels": labels.to(device)}

    return make_batch


def calibration_from(request: Request, workload: Workload, model: Any, measured: Measured, *, device_text: str,
                     started: float, **extra: Any) -> WorkloadCalibration:
    """Assemble a model-mode calibration from the model and ``measure_module``'s results."""
    results, flops, counter, notes = measured
    count, numels, largest = parameter_facts(model)
    total, per_layer = derived_activations(results)
    fields: dict[str, Any] = dict(engines=(), ranks=1, base_rss_bytes=0, program_overhead_bytes=0, zero_runtime_bytes=0,
                                  checkpointing_skipped=not request.checkpointing,
                                  micro_batch_sizes_asked=tuple(request.micro_batch_sizes),
                                  bucket_engines_skipped=not request.bucket_engines,
                                  engines_skipped=not request.engines)
    fields.update(extra)
    return WorkloadCalibration(
        fingerprint=request.fingerprint, name=workload.name, mode="model", seq_len=workload.seq_len,
        precision=request.precision, profile_name=request.profile_name, device=device_text,
        threads=torch.get_num_threads(), shape=model_shape(model, workload), parameter_count=count,
        param_tensor_numels=numels, largest_layer_params=largest,
        flops_per_sample_forward=flops_per_sample(flops), flops_counter=counter,
        flops_by_micro_batch=tuple(flops), saved_bytes_per_sample=total,
        saved_bytes_per_sample_per_layer=per_layer, measurements=tuple(results),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch_version=torch.__version__, seconds=time.perf_counter() - started,
        notes=tuple(notes) + tuple(fields.pop("notes", ())), **fields)


def device_text(device: Any) -> str:
    return "cpu" if device.type == "cpu" else f"cuda {torch.cuda.get_device_name(device)}"


def measure(request: Request) -> WorkloadCalibration:
    """Measure a model-mode workload's model in this process (no engines, no process memory)."""
    started = time.perf_counter()
    workload = load_workload(request.model, seq_len=request.seq_len)
    previous = torch.get_num_threads()
    torch.set_num_threads(request.threads)
    try:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = build_measured_model(workload, request.precision, device)
        measured = measure_module(model, token_batches(workload, device), micro_batch_sizes=request.micro_batch_sizes,
                                  repeats=request.repeats, memory_limit_bytes=request.memory_limit_bytes,
                                  checkpointing=checkpointing_switch(model, request))
        return calibration_from(request, workload, model, measured, device_text=device_text(device), started=started)
    finally:
        torch.set_num_threads(previous)
