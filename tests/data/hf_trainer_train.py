"""A Hugging Face Trainer script, as users write them: a tiny GPT-2 built from a config (random
weights) trained on random tokens, DeepSpeed through ``TrainingArguments(deepspeed=...)``.

Run as a user would: ``deepspeed hf_trainer_train.py --deepspeed ds.json
--per_device_train_batch_size 4``. The config may say "auto" where the Trainer fills values in.
"""

import argparse

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

parser = argparse.ArgumentParser()
parser.add_argument("--local_rank", type=int, default=-1)
parser.add_argument("--deepspeed", required=True)
parser.add_argument("--per_device_train_batch_size", type=int, default=2)
parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
parser.add_argument("--max_steps", type=int, default=20)
parser.add_argument("--output_dir", default="hf_trainer_out")
args = parser.parse_args()


class RandomTokens(torch.utils.data.Dataset):
    def __len__(self):
        return 1_000_000

    def __getitem__(self, index):
        ids = torch.randint(0, 1024, (32,), generator=torch.Generator().manual_seed(index))
        return {"input_ids": ids, "labels": ids}


model = GPT2LMHeadModel(GPT2Config(vocab_size=1024, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                                   bos_token_id=0, eos_token_id=0))
training = TrainingArguments(
    output_dir=args.output_dir, per_device_train_batch_size=args.per_device_train_batch_size,
    gradient_accumulation_steps=args.gradient_accumulation_steps, max_steps=args.max_steps, deepspeed=args.deepspeed,
    report_to=[], save_strategy="no", logging_steps=10, use_cpu=not torch.cuda.is_available(),
    dataloader_num_workers=0, disable_tqdm=True)
Trainer(model=model, args=training, train_dataset=RandomTokens()).train()
print(f"hf_trainer_train finished {args.max_steps} steps")
torch.distributed.destroy_process_group()
