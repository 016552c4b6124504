"""A tiny DeepSpeed training program for the tests: an MLP on random data.

Run as a user would: ``deepspeed tiny_train.py --deepspeed cfg.json --batch_size 4``. The flags
that make it misbehave on purpose (``--fail_batch_size``, ``--sleep_s``, ``--steps``) let the
tests produce each outcome of a real run; ``--data_file`` names a file it must open (a relative
path resolves where the run starts); ``--hard_exit`` ends a finished run without the
interpreter's teardown, as scripts that must exit 0 on CPU do.
"""

import argparse
import os
import time

import deepspeed
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--local_rank", type=int, default=-1)
parser.add_argument("--deepspeed", required=True, help="DeepSpeed config JSON")
parser.add_argument("--batch_size", type=int, default=2)
parser.add_argument("--hidden", type=int, default=128)
parser.add_argument("--steps", type=int, default=50, help="optimizer steps to train")
parser.add_argument("--sleep_s", type=float, default=0.0, help="sleep before training")
parser.add_argument("--fail_batch_size", type=int, default=0, help="raise when --batch_size is this")
parser.add_argument("--hard_exit", action="store_true", help="leave with os._exit after training")
parser.add_argument("--data_file", help="a file to read before training (it must exist where the run starts)")
args = parser.parse_args()

if args.data_file:
    with open(args.data_file, encoding="utf-8") as data:
        data.read()

if args.sleep_s:
    time.sleep(args.sleep_s)
if args.batch_size == args.fail_batch_size:
    raise ValueError(f"tiny_train was asked to fail (batch size {args.batch_size})")

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(args.hidden, 4 * args.hidden),
    torch.nn.GELU(),
    torch.nn.Linear(4 * args.hidden, args.hidden),
)
engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                       config=args.deepspeed)
if engine.train_micro_batch_size_per_gpu() != args.batch_size:
    raise ValueError("--batch_size does not match train_micro_batch_size_per_gpu")

for _ in range(args.steps * engine.gradient_accumulation_steps()):
    x = torch.randn(args.batch_size, args.hidden, device=engine.device)
    loss = (engine(x) - x).pow(2).mean()
    engine.backward(loss)
    engine.step()
print(f"tiny_train finished {engine.global_steps} steps", flush=True)
if args.hard_exit:
    # DeepSpeed on CPU can abort the interpreter at exit after a finished run ("terminate called
    # without an active exception", exit -6), with or without destroy_process_group()
    os._exit(0)
