"""A Hugging Face Trainer script, as users write them (shaped like transformers'
``examples/pytorch/language-modeling/run_clm.py``): ``TrainingArguments`` first, then a tiny GPT-2
built from its config with ``AutoModelForCausalLM.from_config`` (random weights; under ZeRO-3
transformers builds it inside ``deepspeed.zero.Init``), trained on random tokens, DeepSpeed through
``TrainingArguments(deepspeed=...)``.

Run as a user would: ``deepspeed hf_trainer_train.py --deepspeed ds.json
--per_device_train_batch_size 4``. The config may say "auto" where the Trainer fills values in.
``--use_cpu`` is the Trainer's flag, off by default as in run_clm.py. ``--collate_ms C`` makes the
data collator sleep C x (batch size)^2 milliseconds per batch: per-batch work of the script that
grows faster than the batch, which no cost model of the engine can know.
"""

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, GPT2Config, Trainer, TrainingArguments, default_data_collator

parser = argparse.ArgumentParser()
parser.add_argument("--local_rank", type=int, default=-1)
parser.add_argument("--deepspeed", required=True)
parser.add_argument("--per_device_train_batch_size", type=int, default=2)
parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
parser.add_argument("--max_steps", type=int, default=20)
parser.add_argument("--output_dir", default="hf_trainer_out")
parser.add_argument("--use_cpu", default="false", choices=["true", "false"])
parser.add_argument("--collate_ms", type=float, default=0.0)
args = parser.parse_args()


class RandomTokens(torch.utils.data.Dataset):
    def __len__(self):
        return 1_000_000

    def __getitem__(self, index):
        ids = torch.randint(0, 1024, (32,), generator=torch.Generator().manual_seed(index))
        return {"input_ids": ids, "labels": ids}


def collate(features):
    time.sleep(args.collate_ms * len(features) ** 2 / 1000.0)
    return default_data_collator(features)


training = TrainingArguments(
    output_dir=args.output_dir, per_device_train_batch_size=args.per_device_train_batch_size,
    gradient_accumulation_steps=args.gradient_accumulation_steps, max_steps=args.max_steps, deepspeed=args.deepspeed,
    report_to=[], save_strategy="no", logging_steps=10, use_cpu=args.use_cpu == "true",
    dataloader_num_workers=0, disable_tqdm=True)
model = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=1024, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                                                    bos_token_id=0, eos_token_id=0))
Trainer(model=model, args=training, train_dataset=RandomTokens(), data_collator=collate).train()
print(f"hf_trainer_train finished {args.max_steps} steps")
torch.distributed.destroy_process_group()
