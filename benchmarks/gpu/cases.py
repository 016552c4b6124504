"""The configurations the GPU kit measures, and their predictions.

Two sets: ``gpu`` (real-size presets in bf16 on one H200) and ``rehearsal`` (tiny presets in
fp32 on one CPU process, the same code paths). Each case is one DeepSpeed engine built from
simtune's own rendering of a :class:`simtune.space.Trial` (``TuningSpace.render``), so what is
measured is exactly what a search would run, and its prediction comes from
:class:`simtune.prediction.predictor.Predictor` with the closed-form workload (no workload calibration: the
regime of capacity planning and ``--verify-top 0``).

``largest`` cases do not run one size: they start at the micro-batch size the model predicts is
the largest that fits and look for the largest that really runs (see ``sweep.py``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Optional

AUTOCAST_DTYPE = "bf16"
"""The dtype an ``autocast`` case's forward runs in (its engine is fp32), in GPU and rehearsal plans alike."""

GROUPS = ("main", "stage3")
"""Stages 0-2 run in one process; stage 3 in a process of its own (its engine patches torch's
module construction and linear function for the rest of the process)."""


@dataclass(frozen=True)
class Case:
    preset: str
    seq_len: int
    stage: int
    micro_batch_size: int
    checkpointing: bool = False
    offload_optimizer: str = "none"
    largest: bool = False
    """Search for the largest micro-batch size that runs, from the predicted one."""
    autocast: bool = False
    """An fp32 engine whose forward runs inside ``torch.autocast`` in bf16 (the Hugging Face
    Trainer's mixed precision without DeepSpeed's), predicted with ``TrainConfig.autocast``."""
    torch_adam: bool = False
    """torch's AdamW (``torch_adam``) whatever optimizer the plan runs: beside the same case with
    FusedAdam, it measures stage 0's per-tensor wrapper (``TrainConfig.fused_adam``)."""

    @property
    def group(self) -> str:
        return "stage3" if self.stage == 3 else "main"

    @property
    def key(self) -> str:
        extras = (("_ckpt" if self.checkpointing else "") + ("_offopt" if self.offload_optimizer != "none" else "")
                  + ("_autocast" if self.autocast else "") + ("_torchadam" if self.torch_adam else ""))
        size = "max" if self.largest else f"mbs{self.micro_batch_size}"
        return f"{self.preset}_s{self.seq_len}_z{self.stage}_{size}{extras}"


def _sweep(preset: str, seq: int, rows: list[tuple]) -> list[Case]:
    out = []
    for row in rows:
        stage, mbs, *flags = row
        out.append(Case(preset, seq, stage, mbs, checkpointing="ckpt" in flags,
                        offload_optimizer="cpu" if "offload" in flags else "none", largest="largest" in flags,
                        autocast="autocast" in flags, torch_adam="torch_adam" in flags))
    return out


def gpu_cases() -> list[Case]:
    """29 fixed configurations over four presets (every stage, micro-batch sweeps, checkpointing
    and optimizer offload on and off, at stages 2 and 3, one under torch autocast, one with torch's AdamW beside
    FusedAdam) and three searches for the largest micro-batch size, in the order they are worth
    measuring: a call that runs out of time keeps the first ones. On one H200 a configuration took
    about 10 s (engine start-up included), so a 190 s phase measures about 13 of the first group
    and 5 of stage 3."""
    return (
        _sweep("gpt2", 1024, [(0, 16), (1, 16), (2, 16), (0, 16, "torch_adam"), (0, 4), (0, 64),
                              (0, 16, "autocast")])
        + _sweep("gpt2-medium", 1024, [(0, 16)])
        + _sweep("gpt2-large", 1024, [(0, 8)])
        + _sweep("bert-large", 512, [(0, 64), (2, 64)])
        + _sweep("gpt2", 1024, [(0, 16, "ckpt"), (2, 16, "offload")])
        + _sweep("gpt2-medium", 1024, [(0, 0, "largest")])
        + _sweep("gpt2-medium", 1024, [(1, 16, "ckpt"), (0, 4), (2, 16)])
        + _sweep("gpt2-large", 1024, [(2, 8), (1, 8), (0, 2), (2, 8, "offload"), (0, 8, "ckpt")])
        + _sweep("bert-large", 512, [(0, 16), (1, 64, "ckpt")])
        + _sweep("bert-large", 512, [(1, 0, "largest")])
        + _sweep("gpt2-medium", 1024, [(2, 0, "largest", "ckpt")])
        + _sweep("gpt2", 1024, [(3, 16)]) + _sweep("gpt2-medium", 1024, [(3, 8)])
        + _sweep("gpt2-large", 1024, [(3, 8)]) + _sweep("bert-large", 512, [(3, 64)])
        + _sweep("gpt2", 1024, [(3, 16, "ckpt"), (3, 16, "offload")])
    )


def rehearsal_cases() -> list[Case]:
    """The same shapes on tiny presets, few (a test runs them on every CI run): 7 configurations
    (every stage, checkpointing, offload, autocast, two micro-batch sizes, two models) and one
    largest-size search."""
    return (
        _sweep("gpt2-tiny", 64, [(0, 2), (0, 8), (1, 4, "ckpt"), (2, 4, "offload"), (3, 4, "ckpt"), (0, 4, "autocast")])
        + _sweep("bert-tiny", 64, [(2, 4)])
        + _sweep("gpt2-tiny", 64, [(1, 0, "largest")])
    )


def base_config(precision: str) -> dict[str, Any]:
    """The DeepSpeed config every case is rendered from: AdamW as the built-in program trains."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.0}},
        "zero_optimization": {"stage": "all", "offload_optimizer": {"device": ["none", "cpu"]}},
        "autotuning": {"tune_activation_checkpointing": True,
                       "arg_mappings": {"activation_checkpointing": "--gradient_checkpointing"}},
    }
    if precision in ("bf16", "fp16"):
        config[precision] = {"enabled": True}
    return config


def trial_of(case: Case, micro_batch_size: Optional[int] = None) -> Any:
    from simtune.space import Trial

    return Trial(stage=case.stage, micro_batch_size=micro_batch_size or case.micro_batch_size,
                 offload_optimizer=case.offload_optimizer, activation_checkpointing=case.checkpointing)


class Planner:
    """Renders and predicts the cases on one hardware profile (pure: no torch)."""

    def __init__(self, profile: Any, precision: str, *, torch_adam: bool, max_micro_batch_size: int) -> None:
        from simtune.space import TuningSpace

        self.profile = profile
        self.precision = precision
        def space(torch_adam: bool) -> Any:
            config = base_config(precision)
            if torch_adam:
                config["optimizer"]["params"]["torch_adam"] = True
            config["autotuning"]["max_train_micro_batch_size_per_gpu"] = max_micro_batch_size
            return TuningSpace.from_config(config, world_size=1)

        self.space = space(torch_adam)
        """The plan's: torch's AdamW with ``torch_adam`` (FusedAdam not built), else DeepSpeed's."""
        self.torch_space = self.space if torch_adam else space(True)
        """For cases that ask for torch's AdamW (``Case.torch_adam``)."""
        self._predictors: dict[tuple[str, int, bool, bool], Any] = {}

    def space_of(self, case: Case) -> Any:
        return self.torch_space if case.torch_adam else self.space

    def precision_of(self, case: Case) -> str:
        """The compute precision the case is predicted at: the autocast dtype for an autocast case."""
        return AUTOCAST_DTYPE if case.autocast else self.precision

    def predictor(self, case: Case) -> Any:
        from simtune.prediction.predictor import Predictor
        from simtune.workloads import load_workload

        key = (case.preset, case.seq_len, case.autocast, case.torch_adam)
        if key not in self._predictors:
            workload = load_workload(case.preset, seq_len=case.seq_len)
            self._predictors[key] = Predictor.from_parts(self.space_of(case), workload, self.profile, world_size=1,
                                                         precision=self.precision_of(case), autocast=case.autocast)
        return self._predictors[key]

    def largest(self, case: Case) -> int:
        return self.predictor(case).max_micro_batch_size(
            case.stage, offload_optimizer=case.offload_optimizer, activation_checkpointing=case.checkpointing)

    def prediction(self, case: Case, micro_batch_size: int) -> dict[str, Any]:
        """Step time, throughput and memory the model predicts for the case at a size."""
        estimate = self.predictor(case).predict(trial_of(case, micro_batch_size))
        memory = estimate.memory
        time = estimate.time
        return {"step_s": time.step_s, "throughput": estimate.metrics.throughput_samples_per_s,
                "split_s": {"forward": time.forward_phase_s, "backward": time.backward_phase_s,
                            "step": time.step_phase_s},
                "optimizer_s": time.optimizer_s, "offload_s": time.offload_transfer_s,
                "total_bytes": memory.total_bytes, "fixed_overhead_bytes": memory.fixed_overhead_bytes,
                "limit_bytes": memory.limit_bytes, "feasible": memory.feasible}

    def plan(self, case: Case) -> dict[str, Any]:
        """What the sweep needs for one case: its DeepSpeed config and the size(s) to run."""
        size = self.largest(case) if case.largest else case.micro_batch_size
        row: dict[str, Any] = {"key": case.key, "case": asdict(case), "group": case.group,
                               "predicted_largest": self.largest(case), "micro_batch_size": max(1, size)}
        config = self.space_of(case).render(trial_of(case, row["micro_batch_size"]))
        if case.autocast:  # an fp32 engine: the sweep runs its forward inside torch.autocast
            for section in ("bf16", "fp16"):
                config.pop(section, None)
            row["autocast_dtype"] = AUTOCAST_DTYPE
        row["ds_config"] = config
        return row


def render_for(ds_config: dict[str, Any], micro_batch_size: int) -> dict[str, Any]:
    """The same config at another micro-batch size (the largest-size search's other sizes)."""
    config = json.loads(json.dumps(ds_config))
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    return config
