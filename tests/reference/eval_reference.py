#!/usr/bin/python3
"""Independent reference for `lmforge eval`: GPT-2 forward in plain PyTorch (float64).

Reads a Hugging Face GPT-2 directory (config.json + model.safetensors, parsed here from the raw
header without the safetensors or transformers packages) and an llm.c token shard, evaluates
consecutive non-overlapping windows of --block-size tokens (targets shifted by one, last partial
window dropped) and prints the mean cross-entropy over every predicted token as
`loss: <value>`. Shares no code with lmforge, so agreement checks the C++ model, not a copy of it.

With --mask (a chat shard's X.bin.mask, docs/formats.md), windows follow conversations instead, as
docs/data.md describes for masked datasets: each conversation (from one start flag to the next) is
cut into windows of up to T + 1 tokens starting at its first token and every T tokens after; with
--loss assistant only the targets flagged as trained count. Each window is evaluated at its own
length (no padding), which also checks that lmforge's padding after a short window changes nothing.
"""
import argparse
import json
import math
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    data = raw[8 + header_len :]
    tensors = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        begin, end = spec["data_offsets"]
        chunk = data[begin:end]
        shape = spec["shape"]
        dtype = spec["dtype"]
        if dtype == "F32":
            array = np.frombuffer(chunk, dtype="<f4").astype(np.float64)
        elif dtype == "F16":
            array = np.frombuffer(chunk, dtype="<f2").astype(np.float64)
        elif dtype == "BF16":
            bits = np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32).astype(np.float64)
        else:
            raise SystemExit(f"{path}: unsupported dtype {dtype} for {name}")
        tensors[name] = torch.from_numpy(array.copy()).reshape(shape)
    return tensors


def read_shard(path):
    with open(path, "rb") as f:
        raw = f.read()
    header = np.frombuffer(raw[:1024], dtype="<i4")
    magic, version, count = int(header[0]), int(header[1]), int(header[2])
    if magic == 20240520 and version == 1:
        tokens = np.frombuffer(raw[1024:], dtype="<u2")
    elif magic == 20240801 and version == 2:
        count += int(header[3]) << 32
        tokens = np.frombuffer(raw[1024:], dtype="<u4")
    else:
        raise SystemExit(f"{path}: not a token shard (magic {magic}, version {version})")
    if len(tokens) != count:
        raise SystemExit(f"{path}: header says {count} tokens, file holds {len(tokens)}")
    return torch.from_numpy(tokens.astype(np.int64))


def read_mask(path, count):
    with open(path, "rb") as f:
        raw = f.read()
    header = np.frombuffer(raw[:1024], dtype="<i4")
    if int(header[0]) != 20261213 or int(header[1]) != 1:
        raise SystemExit(f"{path}: not a loss mask")
    n = int(header[2]) + (int(header[3]) << 32)
    flags = np.frombuffer(raw[1024:], dtype=np.uint8)
    if n != count or len(flags) != count:
        raise SystemExit(f"{path}: {len(flags)} flags for {count} tokens")
    return flags


def masked_windows(flags, T):
    starts = [i for i in range(len(flags)) if i == 0 or flags[i] & 2]
    ends = starts[1:] + [len(flags)]
    for begin, end in zip(starts, ends):
        p = begin
        while p + 1 < end:
            yield p, min(T + 1, end - p)
            p += T


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def layer_norm(x, w, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * w + b


def gpt2_logits(p, cfg, ids):
    """ids (B, T) -> logits (B, T, V). Conv1D weights are (IN, OUT): y = x @ W + b."""
    B, T = ids.shape
    C, NH = cfg["n_embd"], cfg["n_head"]
    HS = C // NH
    x = p["wte.weight"][ids] + p["wpe.weight"][:T][None]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(cfg["n_layer"]):
        h = f"h.{i}."
        a = layer_norm(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"])
        qkv = a @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.view(B, T, NH, HS).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"]
        m = layer_norm(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"])
        m = gelu_tanh(m @ p[h + "mlp.c_fc.weight"] + p[h + "mlp.c_fc.bias"])
        x = x + m @ p[h + "mlp.c_proj.weight"] + p[h + "mlp.c_proj.bias"]
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
    return x @ p["wte.weight"].T


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--block-size", type=int, default=0)
    parser.add_argument("--mask", default="")
    parser.add_argument("--loss", choices=["all", "assistant"], default="all")
    args = parser.parse_args()

    with open(f"{args.checkpoint}/config.json") as f:
        cfg = json.load(f)
    raw = read_safetensors(f"{args.checkpoint}/model.safetensors")
    params = {}
    for name, t in raw.items():
        params[name[len("transformer.") :] if name.startswith("transformer.") else name] = t
    tokens = read_shard(args.data)

    T = args.block_size or cfg["n_positions"]
    if args.mask:
        flags = read_mask(args.mask, len(tokens))
        total, count = 0.0, 0
        with torch.no_grad():
            for start, length in masked_windows(flags, T):
                chunk = tokens[start : start + length]
                logits = gpt2_logits(params, cfg, chunk[:-1][None])[0]
                losses = F.cross_entropy(logits, chunk[1:], reduction="none")
                keep = torch.ones(length - 1, dtype=torch.bool)
                if args.loss == "assistant":
                    keep = torch.from_numpy((flags[start + 1 : start + length] & 1) != 0)
                total += losses[keep].sum().item()
                count += int(keep.sum())
        print(f"loss: {total / count:.12f}")
        print(f"tokens: {count}")
        return 0
    windows = (len(tokens) - 1) // T
    if windows < 1:
        raise SystemExit(f"{args.data}: too few tokens")
    total, count = 0.0, 0
    with torch.no_grad():
        for w in range(windows):
            chunk = tokens[w * T : w * T + T + 1]
            logits = gpt2_logits(params, cfg, chunk[:-1][None])
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), chunk[1:], reduction="sum")
            total += loss.item()
            count += T
    print(f"loss: {total / count:.12f}")
    print(f"tokens: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
