#!/usr/bin/python3
# PyTorch reference for bench/cpu_vs_torch: nanoGPT's model (GPT-2 architecture, tied head, GPT-2
# init with scaled residual projections) in plain torch, trained with nanoGPT's loop on the same
# token files lmforge trains on, so the two trainers differ only in their implementation.
# Best setting of Debian's torch 1.13 on an AVX-512 CPU: OpenBLAS with OPENBLAS_CORETYPE=SkylakeX
# and one thread per core (set by bench/cpu_vs_torch before python starts).
#   shakespeare: train_torch_cpu.py shakespeare --data DIR [--steps 2000 --threads N]
#   gpt2 step:   train_torch_cpu.py gpt2 [--batch 4 --seq 64 --steps 5 --threads N]
#   llama step:  train_torch_cpu.py llama [--layers 30 --hidden 576 --heads 9 --kv-heads 3
#                --intermediate 1536 --vocab 49152 --batch 4 --seq 512 --steps 3 --threads N]
#                (SmolLM2-135M's shape in plain torch, as bench_llama_step builds it)
# Prints "RESULT key=value ..." lines for the runner script.
import argparse
import math
import time

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.attn_proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd)
        mask = torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size)
        self.register_buffer("mask", mask)

    def attn(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, NH, T, HS)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # torch 1.13: no SDPA
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList([Block(n_embd, n_head, block_size) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)

    def forward(self, idx, targets):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, dtype=torch.long))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class LlamaBlock(nn.Module):
    def __init__(self, c, nh, nkv, inter, block_size):
        super().__init__()
        self.nh, self.nkv, self.hs = nh, nkv, c // nh
        self.input_layernorm = RMSNorm(c)
        self.q_proj = nn.Linear(c, nh * self.hs, bias=False)
        self.k_proj = nn.Linear(c, nkv * self.hs, bias=False)
        self.v_proj = nn.Linear(c, nkv * self.hs, bias=False)
        self.o_proj = nn.Linear(nh * self.hs, c, bias=False)
        self.post_attention_layernorm = RMSNorm(c)
        self.gate_proj = nn.Linear(c, inter, bias=False)
        self.up_proj = nn.Linear(c, inter, bias=False)
        self.down_proj = nn.Linear(inter, c, bias=False)
        mask = torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size)
        self.register_buffer("mask", mask)

    def attn(self, x, cos, sin):
        B, T, _ = x.size()
        q = self.q_proj(x).view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, NH, T, HS)
        k = self.k_proj(x).view(B, T, self.nkv, self.hs).transpose(1, 2)  # (B, NKV, T, HS)
        v = self.v_proj(x).view(B, T, self.nkv, self.hs).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        # transformers' repeat_kv: each K/V head copied for the query heads of its group
        k = k.repeat_interleave(self.nh // self.nkv, dim=1)
        v = v.repeat_interleave(self.nh // self.nkv, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hs))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).contiguous().view(B, T, self.nh * self.hs))

    def forward(self, x, cos, sin):
        x = x + self.attn(self.input_layernorm(x), cos, sin)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_kv_head, n_embd, inter, theta=100000.0):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, n_embd)
        self.layers = nn.ModuleList([LlamaBlock(n_embd, n_head, n_kv_head, inter, block_size) for _ in range(n_layer)])
        self.norm = RMSNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.embed_tokens.weight  # tied, as SmolLM2
        hs = n_embd // n_head
        inv = 1.0 / theta ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs)
        freqs = torch.outer(torch.arange(block_size, dtype=torch.float32), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos())
        self.register_buffer("sin", emb.sin())
        for p in self.parameters():
            if p.dim() >= 2:
                torch.nn.init.normal_(p, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        T = idx.size(1)
        x = self.embed_tokens(idx)
        cos, sin = self.cos[:T], self.sin[:T]
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())


def adamw(model, lr, betas, weight_decay):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def read_tokens(path):  # llm.c shard: 256 int32 header (magic, version, count), then uint16 tokens
    header = np.fromfile(path, dtype=np.int32, count=256)
    assert header[0] == 20240520, f"{path}: not a token shard"
    return np.fromfile(path, dtype=np.uint16, offset=256 * 4, count=int(header[2])).astype(np.int64)


def shakespeare(args):
    train, val = read_tokens(f"{args.data}/train.bin"), read_tokens(f"{args.data}/val.bin")
    vocab = int(max(train.max(), val.max())) + 1
    B, T, steps = 12, 64, args.steps
    lr, min_lr, warmup = 1e-3, 1e-4, 100
    torch.manual_seed(1337)
    rng = np.random.default_rng(1337)
    model = GPT(vocab, T, 4, 4, 128)
    opt = adamw(model, lr, (0.9, 0.99), 0.1)

    def batch(data):
        ix = rng.integers(0, len(data) - T - 1, size=B)
        x = torch.from_numpy(np.stack([data[i:i + T] for i in ix]))
        y = torch.from_numpy(np.stack([data[i + 1:i + 1 + T] for i in ix]))
        return x, y

    def lr_at(it):  # nanoGPT: linear warmup, cosine to min_lr at lr_decay_iters = max_iters
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        ratio = (it - warmup) / (steps - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    @torch.no_grad()
    def val_loss():
        model.eval()
        loss = sum(model(*batch(val)).item() for _ in range(20)) / 20
        model.train()
        return loss

    window, windows = 0.0, []  # training time per 50 steps, evaluation excluded
    for it in range(1, steps + 1):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(it - 1)
        x, y = batch(train)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window += time.perf_counter() - t0
        if it % 50 == 0 or it == steps:
            windows.append(window / (it - 50 * len(windows)))
            window = 0.0
        if it % 250 == 0 or it == steps:
            v = val_loss()
            print(f"step {it} | loss {loss.item():.4f} | val_loss {v:.4f} | "
                  f"{1e3 * windows[-1]:.2f} ms/step", flush=True)
    ms = 1e3 * sorted(windows)[len(windows) // 2]  # median over 50-step windows, as lmforge logs
    print(f"RESULT trainer=torch recipe=shakespeare_char steps={steps} ms_per_step={ms:.3f} "
          f"tokens_per_s={B * T / ms * 1e3:.1f} val_loss={v:.4f}", flush=True)


def gpt2(args):
    torch.manual_seed(1337)
    B, T, V = args.batch, args.seq, 50257
    model = GPT(V, 1024, 12, 12, 768)
    opt = adamw(model, 6e-4, (0.9, 0.95), 0.1)
    gen = torch.Generator().manual_seed(42)
    data = torch.randint(0, V, (B * T + 1,), generator=gen)
    x, y = data[:-1].view(B, T), data[1:].view(B, T)
    times, cpu_times = [], []  # process CPU time: with one thread, the work itself
    for s in range(args.steps + 1):  # step 0 warms up and is not timed
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss = loss.item()
        if s > 0:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    ms = 1e3 * sorted(times)[len(times) // 2]
    cpu_ms = 1e3 * sorted(cpu_times)[len(cpu_times) // 2]
    flops = (6 * model.num_parameters() + 12 * 12 * 768 * T) * B * T
    print(f"RESULT trainer=torch recipe=gpt2_124m B={B} T={T} ms_per_step={ms:.1f} "
          f"tokens_per_s={B * T / ms * 1e3:.1f} gflops={flops / ms * 1e-6:.1f} cpu_ms={cpu_ms:.1f} loss={loss:.4f}", flush=True)


def llama(args):
    torch.manual_seed(1337)
    B, T, V, L, C = args.batch, args.seq, args.vocab, args.layers, args.hidden
    model = Llama(V, T, L, args.heads, args.kv_heads, C, args.intermediate)
    opt = adamw(model, 6e-4, (0.9, 0.95), 0.1)
    gen = torch.Generator().manual_seed(42)
    data = torch.randint(0, V, (B * T + 1,), generator=gen)
    x, y = data[:-1].view(B, T), data[1:].view(B, T)
    times = []
    for s in range(args.steps + 1):  # step 0 warms up and is not timed
        t0 = time.perf_counter()
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss = loss.item()
        if s > 0:
            times.append(time.perf_counter() - t0)
    ms = 1e3 * sorted(times)[len(times) // 2]
    n = model.num_parameters()
    flops = (6 * n + 12 * L * C * T) * B * T
    print(f"RESULT trainer=torch recipe=llama L={L} C={C} params={n} B={B} T={T} ms_per_step={ms:.1f} "
          f"tokens_per_s={B * T / ms * 1e3:.1f} gflops={flops / ms * 1e-6:.1f} loss={loss:.4f}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("recipe", choices=["shakespeare", "gpt2", "llama"])
    p.add_argument("--data", default="data/shakespeare_char")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--heads", type=int, default=9)
    p.add_argument("--kv-heads", type=int, default=3)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=49152)
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    if args.recipe == "shakespeare":
        args.steps = args.steps or 2000
        shakespeare(args)
    elif args.recipe == "gpt2":
        args.steps = args.steps or 5
        gpt2(args)
    else:
        args.steps = args.steps or 3
        llama(args)
