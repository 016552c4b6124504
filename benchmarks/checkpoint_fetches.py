"""What ZeRO-3 gathers per step, with and without activation checkpointing, against the model.

Runs gpt2-tiny at stage 3 on 2 CPU ranks (DeepSpeed's launcher and engine, gloo), built as
simtune's training program builds it (``deepspeed.zero.Init``, Hugging Face's non-reentrant
checkpointing), once with DeepSpeed's defaults (everything stays gathered from forward to backward)
and once releasing every parameter after its use (``stage3_max_reuse_distance``,
``stage3_max_live_parameters`` and ``stage3_prefetch_bucket_size`` 0), each with checkpointing off
and on. Each rank counts the ``all_gather_into_tensor`` calls and elements of its steps 3-4 and
how often one layer's ``mlp.c_fc`` ran forward, and the script prints them beside the model's
gathered elements per step (``fetched_elements``, plus the persistent parameters re-gathered
after the step).

What it showed (benchmarks/results/checkpoint_fetches.txt): checkpointing recomputes the layer
(two forwards of ``c_fc`` per step) but gathers nothing more, in calls or elements, with
parameters kept and with all released. Releasing everything, DeepSpeed gathered 3 x 131,072
elements more per step: gpt2-tiny's only tensor above the persistence threshold is its tied
embedding (1,024 x 128), used twice in forward (embedding and head) and twice in backward, and
gathered at each use once released (``tied_table_regathered``; before the model counted it,
it predicted 131,072 more).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

MODEL, SEQ, MBS, RANKS, STEPS, COUNTED = "gpt2-tiny", 64, 2, 2, 4, 2
RELEASE_ALL = {"stage3_max_reuse_distance": 0, "stage3_max_live_parameters": 0, "stage3_prefetch_bucket_size": 0}


def rank_program(config_path: str, checkpointing: bool, out: str) -> None:
    """One rank: train, counting gathers in the last COUNTED steps."""
    import collections

    import deepspeed
    import torch
    import torch.distributed as dist

    from simtune.workloads import load_workload
    from simtune.workloads.train import SyntheticTokens, build_training_model

    counts: collections.Counter[str] = collections.Counter()
    original = dist.all_gather_into_tensor

    def counted(output_tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        counts["calls"] += 1
        counts["elements"] += output_tensor.numel()
        return original(output_tensor, *args, **kwargs)

    dist.all_gather_into_tensor = counted
    ds_config = json.loads(Path(config_path).read_text())
    workload = load_workload(MODEL, seq_len=SEQ)
    model, keep_alive = build_training_model(workload, ds_config, checkpointing)
    layer = model.transformer.h[0].mlp.c_fc
    layer.register_forward_hook(lambda *_: counts.update(["layer_forwards"]))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds_config)
    batches = SyntheticTokens(workload, MBS, torch.device("cpu"), seed=1)
    for step in range(STEPS):
        if step == STEPS - COUNTED:
            counts.clear()
        loss = engine(**batches.next()).loss
        engine.backward(loss)
        engine.step()
    if engine.global_rank == 0:
        Path(out).write_text(json.dumps({k: v / COUNTED for k, v in counts.items()}))
    del keep_alive


def predicted(zero: dict) -> dict:
    from simtune.model.adapters import model_spec
    from simtune.model.inputs import TrainConfig
    from simtune.model.memory_buffers import fetched_elements
    from simtune.model.shards import shards
    from simtune.workloads import load_workload

    m = model_spec(load_workload(MODEL, seq_len=SEQ))
    c = TrainConfig(stage=3, micro_batch_size=MBS, dp_degree=RANKS, precision="fp32", **zero)
    s = shards(m, c)
    return {"fetched": fetched_elements(m, s, c), "persistent": s.persistent}


def main() -> int:
    argv = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]  # the launcher adds it
    if argv and argv[0] == "--rank":
        rank_program(argv[1], argv[2] == "1", argv[3])
        return 0
    from simtune.runner.launcher import run_on_cpu_ranks

    print("Command: python benchmarks/checkpoint_fetches.py")
    print(f"{MODEL}, seq {SEQ}, micro-batch {MBS}, stage 3, fp32, {RANKS} CPU ranks; counts per step over steps "
          f"{STEPS - COUNTED + 1}-{STEPS}\n")
    print(f"{'zero settings':<14} {'ckpt':<5} {'c_fc fwd':>8} {'gather calls':>12} {'gathered':>10} {'model':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for label, zero in (("defaults", {}), ("release all", RELEASE_ALL)):
            model = predicted(zero)
            for checkpointing in (False, True):
                config = {"train_micro_batch_size_per_gpu": MBS, "gradient_accumulation_steps": 1,
                          "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}},
                          "zero_optimization": {"stage": 3, **zero}}
                path = Path(folder) / "ds.json"
                path.write_text(json.dumps(config))
                out = Path(folder) / "counts.json"
                done = run_on_cpu_ranks([__file__, "--rank", str(path), "1" if checkpointing else "0", str(out)],
                                        RANKS)
                if done.returncode != 0:
                    sys.exit(f"the run failed ({done.returncode}): {done.stderr[-2000:]}")
                counts = json.loads(out.read_text())
                print(f"{label:<14} {'on' if checkpointing else 'off':<5} {counts['layer_forwards']:>8.0f} "
                      f"{counts['calls']:>12.0f} {counts['elements']:>10.0f} "
                      f"{model['fetched'] + model['persistent']:>10}")
    print("\nmodel: fetched_elements (forward's non-persistent, backward's released) + the persistent "
          "elements gathered after the step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
