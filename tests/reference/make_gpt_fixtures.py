#!/usr/bin/python3
"""Reference fixtures for the GPT model and AdamW, computed with PyTorch in float64.

A small GPT-2 is written out here from the paper's equations (no `transformers` dependency), with
random weights, so the C++ model is checked against an independent implementation. Outputs:
  fixtures/gpt_forward.json  config, weights, batch, logits, loss and every parameter gradient
  fixtures/gpt_adamw.json    losses, gradient norms and the parameters after three steps of
                             clip_grad_norm_(1.0) + torch.optim.AdamW (wd on >= 2-D tensors only)
Linear weights are stored (out, in), the layout of torch.nn.Linear and of lmforge; names are
Hugging Face GPT-2's without the "transformer." prefix. Re-run: /usr/bin/python3 make_gpt_fixtures.py
"""
import json
import math
import os

import torch
import torch.nn.functional as F

CONFIG = dict(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=31)
B, T = 2, 7  # T < block_size: the last wpe row gets no gradient, so only weight decay moves it
ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
MAX_NORM = 1.0
STEPS = 3
IGNORE_INDEX = -1
HERE = os.path.dirname(os.path.abspath(__file__))


def make_params(gen):
    """Random weights in lmforge's registration order. Not GPT-2's init: larger values and random
    biases and LayerNorm gains make every parameter matter to the outputs."""
    C, V, L = CONFIG["n_embd"], CONFIG["vocab_size"], CONFIG["n_layer"]

    def randn(*shape, std=0.2, mean=0.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean)

    p = {"wte.weight": randn(V, C, std=0.3), "wpe.weight": randn(CONFIG["block_size"], C, std=0.1)}
    for i in range(L):
        h = f"h.{i}."
        p[h + "ln_1.weight"] = randn(C, std=0.1, mean=1.0)
        p[h + "ln_1.bias"] = randn(C, std=0.1)
        p[h + "attn.c_attn.weight"] = randn(3 * C, C, std=0.3)
        p[h + "attn.c_attn.bias"] = randn(3 * C, std=0.1)
        p[h + "attn.c_proj.weight"] = randn(C, C, std=0.2)
        p[h + "attn.c_proj.bias"] = randn(C, std=0.1)
        p[h + "ln_2.weight"] = randn(C, std=0.1, mean=1.0)
        p[h + "ln_2.bias"] = randn(C, std=0.1)
        p[h + "mlp.c_fc.weight"] = randn(4 * C, C, std=0.2)
        p[h + "mlp.c_fc.bias"] = randn(4 * C, std=0.1)
        p[h + "mlp.c_proj.weight"] = randn(C, 4 * C, std=0.1)
        p[h + "mlp.c_proj.bias"] = randn(C, std=0.1)
    p["ln_f.weight"] = randn(C, std=0.1, mean=1.0)
    p["ln_f.bias"] = randn(C, std=0.1)
    return p


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, w, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as GPT-2
    return (x - mean) / torch.sqrt(var + 1e-5) * w + b


def forward(p, ids):
    C, NH = CONFIG["n_embd"], CONFIG["n_head"]
    HS = C // NH
    Bn, Tn = ids.shape
    x = p["wte.weight"][ids] + p["wpe.weight"][:Tn]  # (B, T, C)
    mask = torch.tril(torch.ones(Tn, Tn, dtype=torch.bool))
    for i in range(CONFIG["n_layer"]):
        h = f"h.{i}."
        a = layer_norm(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"])
        qkv = a @ p[h + "attn.c_attn.weight"].T + p[h + "attn.c_attn.bias"]  # (B, T, 3C)
        q, k, v = qkv.split(C, dim=2)
        q, k, v = (t.reshape(Bn, Tn, NH, HS).transpose(1, 2) for t in (q, k, v))  # (B, NH, T, HS)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(Bn, Tn, C)
        x = x + y @ p[h + "attn.c_proj.weight"].T + p[h + "attn.c_proj.bias"]
        m = layer_norm(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"])
        m = gelu_tanh(m @ p[h + "mlp.c_fc.weight"].T + p[h + "mlp.c_fc.bias"])
        x = x + m @ p[h + "mlp.c_proj.weight"].T + p[h + "mlp.c_proj.bias"]
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
    return x @ p["wte.weight"].T  # (B, T, V), head tied to wte


def loss_of(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def tensor_json(t):
    t = t.detach().to(torch.float64)
    return {"shape": list(t.shape), "data": [float(f"{v:.9g}") for v in t.reshape(-1).tolist()]}


def params_json(p):
    return {name: tensor_json(t) for name, t in p.items()}


def main():
    gen = torch.Generator().manual_seed(1234)
    p32 = make_params(gen)
    ids = torch.randint(0, CONFIG["vocab_size"], (B, T), generator=gen)
    targets = torch.randint(0, CONFIG["vocab_size"], (B, T), generator=gen)
    targets[1, 3] = IGNORE_INDEX  # one ignored position: the mean runs over the other B*T-1

    # float64 from the float32 weights the C++ side loads, so the reference error is negligible.
    p = {k: v.to(torch.float64).requires_grad_(True) for k, v in p32.items()}
    logits = forward(p, ids)
    loss = loss_of(logits, targets)
    loss.backward()
    forward_fixture = {
        "config": dict(CONFIG, dropout=0.0, bias=True),
        "ids": ids.tolist(),
        "targets": targets.tolist(),
        "ignore_index": IGNORE_INDEX,
        "params": params_json(p32),
        "logits": tensor_json(logits),
        "loss": loss.item(),
        "grads": {k: tensor_json(v.grad) for k, v in p.items()},
    }

    params = list(p.values())
    decay = [t for t in params if t.dim() >= 2]
    no_decay = [t for t in params if t.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"], foreach=False)
    # Key biases get an analytically zero gradient (softmax ignores a per-query constant); their
    # rounding noise is reported separately from the smallest genuine gradient.
    losses, norms, min_abs_grad, max_noise_grad = [], [], math.inf, 0.0
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=False)
        loss = loss_of(forward(p, ids), targets)
        loss.backward()
        for name, t in p.items():  # tiny gradients make Adam's sign-like update ill-conditioned
            g = t.grad.abs()
            if name.endswith("c_attn.bias"):
                C = CONFIG["n_embd"]
                max_noise_grad = max(max_noise_grad, g[C:2 * C].max().item())
                g = torch.cat([g[:C], g[2 * C:]])
            if (g > 0).any():
                min_abs_grad = min(min_abs_grad, g[g > 0].min().item())
        norms.append(torch.nn.utils.clip_grad_norm_(params, MAX_NORM).item())
        losses.append(loss.item())
        opt.step()
    adamw_fixture = {
        "lr": ADAMW["lr"], "beta1": ADAMW["betas"][0], "beta2": ADAMW["betas"][1],
        "eps": ADAMW["eps"], "weight_decay": ADAMW["weight_decay"], "max_norm": MAX_NORM,
        "steps": STEPS, "losses": losses, "grad_norms": norms,
        "min_abs_nonzero_grad": min_abs_grad, "max_key_bias_grad": max_noise_grad,
        "params_after": params_json(p),
    }

    out = os.path.join(HERE, "fixtures")
    os.makedirs(out, exist_ok=True)
    for name, obj in (("gpt_forward.json", forward_fixture), ("gpt_adamw.json", adamw_fixture)):
        with open(os.path.join(out, name), "w") as f:
            json.dump(obj, f, separators=(",", ":"))
        print(name, os.path.getsize(os.path.join(out, name)), "bytes")
    print("loss", forward_fixture["loss"], "grad norms", norms, "min |g|", min_abs_grad, "key-bias |g|", max_noise_grad)


if __name__ == "__main__":
    main()
