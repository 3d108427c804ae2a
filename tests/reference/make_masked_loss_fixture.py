#!/usr/bin/python3
"""Reference for the masked (assistant-only) training loss: the mean cross-entropy over the trained
targets of a whole optimizer step, and its gradient, for a tiny GPT-2 in float64 PyTorch.

Writes fixtures/masked_loss/: config.json and model.safetensors (a Hugging Face GPT-2 directory
with random float32 weights), and case.json: eight conversations (token ids and per-token mask
flags in the shard mask's encoding: 1 trained, 2 conversation start), the block size, the loss
and the gradient of every weight under its Hugging Face name and layout. Each conversation has at
most block_size + 1 tokens, so it is exactly one window of `lmforge prepare --format chat`'s
layout: inputs padded with 0 after its end, targets -1 where untrained or past the end. The
first two conversations have no trained token, so a step cut into four micro-batches of two
windows has an all-masked micro-batch. Shares no code with lmforge.
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

from eval_reference import gpt2_logits

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "masked_loss")
CFG = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 8, "vocab_size": 24,
       "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
T = CFG["n_positions"]


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        data = t.detach().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    g = torch.Generator().manual_seed(13)
    C, V = CFG["n_embd"], CFG["vocab_size"]
    shapes = {"wte.weight": (V, C), "wpe.weight": (T, C), "ln_f.weight": (C,), "ln_f.bias": (C,),
              "h.0.ln_1.weight": (C,), "h.0.ln_1.bias": (C,), "h.0.attn.c_attn.weight": (C, 3 * C),
              "h.0.attn.c_attn.bias": (3 * C,), "h.0.attn.c_proj.weight": (C, C), "h.0.attn.c_proj.bias": (C,),
              "h.0.ln_2.weight": (C,), "h.0.ln_2.bias": (C,), "h.0.mlp.c_fc.weight": (C, 4 * C),
              "h.0.mlp.c_fc.bias": (4 * C,), "h.0.mlp.c_proj.weight": (4 * C, C), "h.0.mlp.c_proj.bias": (C,)}
    params = {}
    for name, shape in shapes.items():
        base = 1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight" else 0.0
        w = (base + 0.3 * torch.randn(shape, generator=g)).float()  # float32 values, as lmforge reads them
        params[name] = w.double().requires_grad_(True)
    os.makedirs(OUT, exist_ok=True)
    write_safetensors(os.path.join(OUT, "model.safetensors"), params)
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(CFG, f, indent=1)

    conversations = []
    for i in range(8):
        length = int(torch.randint(3, T + 2, (1,), generator=g))
        ids = torch.randint(0, V, (length,), generator=g).tolist()
        flags = [2] + [0] * (length - 1)
        if i >= 2:
            # a prompt part, then an assistant part that runs to the end (at least one token)
            first = int(torch.randint(1, length, (1,), generator=g))
            for t in range(first, length):
                flags[t] = 1
        conversations.append({"ids": ids, "flags": flags})

    x = torch.zeros(8, T, dtype=torch.long)
    y = torch.full((8, T), -1, dtype=torch.long)
    for b, c in enumerate(conversations):
        n = len(c["ids"])
        for t in range(T):
            if t < n:
                x[b, t] = c["ids"][t]
            if t + 1 < n and c["flags"][t + 1] & 1:
                y[b, t] = c["ids"][t + 1]
    logits = gpt2_logits(params, CFG, x)
    loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=-1, reduction="sum")
    trained = int((y != -1).sum())
    loss = loss / trained
    loss.backward()
    case = {"block_size": T, "conversations": conversations, "trained_targets": trained, "loss": loss.item(),
            "grads": {name: p.grad.reshape(-1).tolist() for name, p in params.items()},
            "grad_shapes": {name: list(p.shape) for name, p in params.items()}}
    assert math.isfinite(case["loss"])
    with open(os.path.join(OUT, "case.json"), "w") as f:
        json.dump(case, f)
    print(f"loss {loss.item():.6f} over {trained} trained targets")


if __name__ == "__main__":
    main()
