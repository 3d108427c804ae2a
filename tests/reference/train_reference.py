#!/usr/bin/python3
"""Independent reference for `lmforge train`: fine-tunes a Hugging Face GPT-2 directory in plain
PyTorch (float64) and prints one training loss per step.

Same recipe as the trainer's sequential order with a constant learning rate: each step reads
B·T+1 consecutive tokens of the shard (inputs and targets shifted by one), advances by B·T and
wraps to the start when the next read would run past the end; torch.optim.AdamW with weight decay
on tensors of two or more dims only; torch.nn.utils.clip_grad_norm_. Shares no code with lmforge.
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F

from eval_reference import gpt2_logits, read_safetensors, read_shard


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--block-size", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--beta1", type=float, default=0.9)
    parser.add_argument("--beta2", type=float, default=0.95)
    parser.add_argument("--eps", type=float, default=1e-8)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    args = parser.parse_args()

    with open(f"{args.checkpoint}/config.json") as f:
        cfg = json.load(f)
    params = {}
    for name, t in read_safetensors(f"{args.checkpoint}/model.safetensors").items():
        name = name[len("transformer."):] if name.startswith("transformer.") else name
        params[name] = t.clone().requires_grad_(True)
    tokens = read_shard(args.data)

    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps)

    B, T = args.batch_size, args.block_size
    position = 0
    for step in range(args.steps):
        if position + B * T + 1 > len(tokens):
            position = 0
        chunk = tokens[position: position + B * T + 1]
        position += B * T
        x, y = chunk[:-1].view(B, T), chunk[1:].view(B, T)
        optimizer.zero_grad()
        logits = gpt2_logits(params, cfg, x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), args.grad_clip)
        optimizer.step()
        print(f"step {step + 1} loss {loss.item():.12f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
