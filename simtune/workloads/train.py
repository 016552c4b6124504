"""simtune's built-in training program: a Hugging Face model with random weights, trained by
DeepSpeed on synthetic tokens. Run it under the DeepSpeed launcher like any training script::

    deepspeed --num_gpus 8 simtune/workloads/train.py --model gpt2 --seq-len 512 \\
        --deepspeed ds_config.json [--steps N] [--gradient_checkpointing true] [--seed S]

The DeepSpeed config must hold the batch settings (``train_micro_batch_size_per_gpu``,
``gradient_accumulation_steps``); precision, ZeRO and offload come from it too. Without an
``optimizer`` section the program trains with AdamW at lr 1e-4. On the CPU accelerator Adam and
AdamW use torch's implementation (DeepSpeed's fused kernels need a GPU). Under ZeRO-3 the model
is built already partitioned (``deepspeed.zero.Init``), as the Hugging Face Trainer does.

Causal LMs learn to predict their input (labels = inputs); masked LMs get labels on 15% of the
positions (at least one per sequence); classifiers get one random class per sequence. Rank 0 prints
the loss every ``--log-interval`` steps.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# Run as a script, this folder is first on sys.path; its modules must not shadow anything.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
try:
    import simtune  # noqa: F401
except ImportError:  # a checkout that is not installed: its root holds the package
    sys.path.insert(0, str(_HERE.parents[1]))

from simtune.errors import SimtuneError, WorkloadError  # noqa: E402
from simtune.probe.ranks import adopt_launcher_ranks  # noqa: E402
from simtune.workloads import DEFAULT_OPTIMIZER  # noqa: E402
from simtune.workloads.presets import Workload, build_model, load_workload  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="preset name or path of a Hugging Face config.json")
    parser.add_argument("--seq-len", "--seq_len", dest="seq_len", type=int, default=None,
                        help="tokens per sample (default: the preset's)")
    parser.add_argument("--deepspeed", "--deepspeed_config", dest="deepspeed", required=True,
                        help="DeepSpeed config JSON")
    parser.add_argument("--steps", type=int, default=1_000_000,
                        help="optimizer steps to run (default 1000000: an outside probe ends the run)")
    parser.add_argument("--gradient_checkpointing", "--gradient-checkpointing", type=_parse_bool,
                        default=False, metavar="true|false", help="recompute activations in the backward")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--log-interval", "--log_interval", dest="log_interval", type=int, default=10,
                        help="print the loss every N optimizer steps (and at the first and last)")
    parser.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int,
                        default=int(os.environ.get("LOCAL_RANK", "0")), help="set by the launcher")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.log_interval < 1:
        parser.error("--steps and --log-interval must be at least 1")
    return args


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def limit_threads() -> int:
    """Give each local rank cores / local ranks threads unless OMP_NUM_THREADS says otherwise.

    Ranks that each use every core oversubscribe the machine, and CPU step times become noise.
    """
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    local_ranks = int(os.environ.get("LOCAL_SIZE") or os.environ.get("LOCAL_WORLD_SIZE") or 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // max(1, local_ranks))
    torch.set_num_threads(threads)
    return threads


def read_ds_config(path: str) -> dict[str, Any]:
    """The config at ``path``, or, where no such file exists, the base64 (URL-safe) JSON that
    DeepSpeed's own autotuner passes in place of the path (as DeepSpeedConfig accepts it)."""
    try:
        config = json.loads(Path(path).read_text())
    except OSError as exc:  # no such file, or a name too long to be one
        try:
            config = json.loads(base64.urlsafe_b64decode(path.encode()).decode())
        except (ValueError, UnicodeError):
            reason = "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read ({exc.strerror})"
            raise WorkloadError(f"DeepSpeed config {path} {reason}.") from None
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"DeepSpeed config {path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    if not isinstance(config, dict):
        raise WorkloadError(f"DeepSpeed config {path} must hold a JSON object.")
    return config


def with_optimizer(config: dict[str, Any], accelerator: str) -> tuple[dict[str, Any], list[str]]:
    """The config with an optimizer DeepSpeed can build here, and notes on what was changed.

    No optimizer section: AdamW, lr 1e-4. On the CPU accelerator Adam/AdamW get
    ``torch_adam: true`` (torch's implementation; FusedAdam needs a GPU).
    """
    notes: list[str] = []
    result = json.loads(json.dumps(config))
    if "optimizer" not in result:
        result["optimizer"] = json.loads(json.dumps(DEFAULT_OPTIMIZER))
        notes.append("no optimizer in the DeepSpeed config: using AdamW, lr 1e-4")
    optimizer = result["optimizer"]
    params = optimizer.setdefault("params", {})
    if accelerator == "cpu" and str(optimizer.get("type", "")).lower() in ("adam", "adamw") \
            and "torch_adam" not in params:
        params["torch_adam"] = True
        notes.append("CPU accelerator: Adam runs as torch.optim (torch_adam)")
    return result, notes


def zero_stage(config: dict[str, Any]) -> int:
    stage = (config.get("zero_optimization") or {}).get("stage", 0)
    return int(stage) if isinstance(stage, (int, str)) and str(stage).isdigit() else 0


class _ZeroThreeModelConfig:
    """What transformers asks of a DeepSpeed config to build a model partitioned under ZeRO-3
    (the object HfDeepSpeedConfig would be, without its dependency on accelerate)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def is_zero3(self) -> bool:
        return True


def build_training_model(workload: Workload, ds_config: dict[str, Any], checkpointing: bool) -> tuple[Any, Any]:
    """The model to train, and the object that must stay alive while it trains (ZeRO-3 only)."""
    keep_alive = None
    if zero_stage(ds_config) == 3:
        from transformers.integrations.deepspeed import set_hf_deepspeed_config

        keep_alive = _ZeroThreeModelConfig(ds_config)
        set_hf_deepspeed_config(keep_alive)
    model = build_model(workload)
    if checkpointing:
        enable_activation_checkpointing(model)
    model.train()
    return model, keep_alive


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute each transformer layer's activations in the backward (Hugging Face's switch).

    Non-reentrant checkpointing works with ZeRO-3's parameter hooks. transformers 5 renamed the
    method; 4.x only has the old name.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class SyntheticTokens:
    """Random token batches for the workload's task, drawn on the CPU and moved to ``device``."""

    def __init__(self, workload: Workload, batch_size: int, device: Any, seed: int) -> None:
        import torch

        self.workload, self.batch_size, self.device = workload, batch_size, device
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> dict[str, Any]:
        import torch

        shape = (self.batch_size, self.workload.seq_len)
        tokens = torch.randint(0, self.workload.vocab_size, shape, generator=self.generator)
        labels = self.workload.synthetic_labels(tokens, self.generator)
        return {"input_ids": tokens.to(self.device), "labels": labels.to(self.device)}


def _ensure_process_group_env() -> int | None:
    """Outside a launcher, run as a single rank on this host; return the port chosen then."""
    if adopt_launcher_ranks() or "RANK" in os.environ:
        return None
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return port


def _remove_shared_memory_buffers(port: int) -> None:
    """Delete the allreduce buffers DeepSpeed's CPU backend leaves in /dev/shm for ``port``."""
    for leftover in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"):
        leftover.unlink(missing_ok=True)


def train(args: argparse.Namespace) -> None:
    threads = limit_threads()
    workload = load_workload(args.model, seq_len=args.seq_len)
    user_config = read_ds_config(args.deepspeed)

    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator().device_name()
    ds_config, notes = with_optimizer(user_config, accelerator)
    own_port = _ensure_process_group_env()
    deepspeed.init_distributed()
    rank = torch.distributed.get_rank()
    # Each rank on its own device before anything (ZeRO-3's partitioned build included) allocates.
    get_accelerator().set_device(int(os.environ.get("LOCAL_RANK", args.local_rank)))

    torch.manual_seed(args.seed)
    model, keep_alive = build_training_model(workload, ds_config, args.gradient_checkpointing)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config if notes else args.deepspeed,
    )
    micro_batch = engine.train_micro_batch_size_per_gpu()
    accumulation = engine.gradient_accumulation_steps()
    data = SyntheticTokens(workload, micro_batch, engine.device, seed=args.seed + 1 + rank)
    if rank == 0:
        for note in notes:
            print(f"train.py: {note}", flush=True)
        print(
            f"train.py: {workload.name} ({workload.task}, seq {workload.seq_len}), "
            f"micro-batch {micro_batch}, accumulation {accumulation}, "
            f"world {torch.distributed.get_world_size()}, threads {threads}, "
            f"gradient checkpointing {args.gradient_checkpointing}",
            flush=True,
        )

    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        for _ in range(accumulation):
            loss = engine(**data.next()).loss
            engine.backward(loss)
            engine.step()
        if rank == 0 and (step == 1 or step % args.log_interval == 0 or step == args.steps):
            elapsed = time.perf_counter() - started
            print(f"step {step} loss {loss.item():.4f} elapsed_s {elapsed:.3f}", flush=True)
    del keep_alive
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    if own_port is not None:
        _remove_shared_memory_buffers(own_port)


def _quiet_offline_hub() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # before transformers is imported


def warm_up() -> None:
    """Called once when a shared launch starts (simtune.probe.serve), before its first run: the
    model library's import, so that it overlaps with the launch's wait for that run."""
    _quiet_offline_hub()
    import transformers  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet_offline_hub()
    try:
        train(args)
    except SimtuneError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    exit_code = main()
    if "simtune.probe.main" in sys.modules:
        # Under the probe: returning lets it say why no metrics were written (it ends the process).
        sys.exit(exit_code)
    sys.stdout.flush()
    sys.stderr.flush()
    # The run is over and the process group is gone; skip interpreter teardown, where ZeRO-3's
    # leftover state can still abort the process (SIGABRT) after a successful run.
    os._exit(exit_code)
