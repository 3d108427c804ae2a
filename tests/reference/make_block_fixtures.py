#!/usr/bin/python3
"""Reference fixtures for lmforge's Llama-style building blocks (nn::RMSNorm, nn::RotaryEmbedding,
nn::SwiGLUMLP, nn::Attention), computed in float64 from the equations of Hugging Face transformers'
Llama/Qwen2/Qwen3 modeling code, written out here (no transformers import):

  RMSNorm      w * (x * rsqrt(mean(x^2) + eps))
  rotary       inv_freq = 1 / theta^(2i/HS); "linear": / factor; "llama3": _compute_llama3_parameters;
               cos/sin of cat(freqs, freqs); q * cos + rotate_half(q) * sin
  SwiGLU MLP   down_proj(silu(gate_proj(x)) * up_proj(x))
  Attention    q/k/v projections (optional biases), per-head RMSNorm of q and k (Qwen3) before the
               rotation, repeat_kv for grouped-query heads, causal softmax(q k^T / sqrt(HS)) v, o_proj

Each case stores the config, parameters under Hugging Face's names (Linear weights (out, in)),
inputs, the output, loss weights W and the gradient of sum(out * W) for the input and every
parameter. Values are drawn in float32 and promoted, so the C++ side sees the same numbers.
fixtures/nn_blocks.json is read by tests/nn/test_rms_norm.cpp, test_rotary.cpp, test_swiglu_mlp.cpp
and test_attention.cpp. Re-run: /usr/bin/python3 make_block_fixtures.py (torch 1.13, no GPU).
"""
import json
import math
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
GEN = torch.Generator().manual_seed(20261202)


def randn(*shape, std=1.0):
    return (torch.randn(tuple(shape), generator=GEN, dtype=torch.float32) * std).double()


def pack(t, digits=12):
    t = t.detach()
    return {"shape": list(t.shape), "data": [float(f"{v:.{digits}g}") for v in t.reshape(-1).tolist()]}


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def inv_freq_of(cfg):
    hs, theta = cfg["head_dim"], cfg["theta"]
    inv_freq = 1.0 / theta ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    scaling = cfg.get("scaling") or {}
    kind = scaling.get("type", "none")
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


def cos_sin(cfg, positions):
    freqs = positions.double()[:, None] * inv_freq_of(cfg)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def linear(x, p, name):
    y = x @ p[name + ".weight"].T
    bias = p.get(name + ".bias")
    return y if bias is None else y + bias


def swiglu_mlp(x, p):
    return linear(torch.nn.functional.silu(linear(x, p, "gate_proj")) * linear(x, p, "up_proj"), p, "down_proj")


def attention(x, p, cfg):
    b, t, _ = x.shape
    nh, nkv, hs = cfg["n_head"], cfg["n_kv_head"], cfg["head_dim"]
    q = linear(x, p, "q_proj").view(b, t, nh, hs)
    k = linear(x, p, "k_proj").view(b, t, nkv, hs)
    v = linear(x, p, "v_proj").view(b, t, nkv, hs).transpose(1, 2)
    if cfg["qk_norm"]:
        q = rms_norm(q, p["q_norm.weight"], cfg["norm_eps"])
        k = rms_norm(k, p["k_norm.weight"], cfg["norm_eps"])
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    cos, sin = cos_sin(dict(cfg["rotary"], head_dim=hs), torch.arange(t))
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    rep = nh // nkv  # repeat_kv: query head h reads key/value head h // rep
    k = k[:, :, None].expand(b, nkv, rep, t, hs).reshape(b, nh, t, hs)
    v = v[:, :, None].expand(b, nkv, rep, t, hs).reshape(b, nh, t, hs)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hs)
    scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, nh * hs)
    return linear(y, p, "o_proj")


def case(name, kind, config, fn, x, params):
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    xl = x.clone().requires_grad_(True)
    out = fn(xl, leaves)
    weights = randn(*out.shape)
    (out * weights).sum().backward()
    grads = {k: pack(v.grad) for k, v in leaves.items()}
    grads["x"] = pack(xl.grad)
    return {"name": name, "kind": kind, "config": config, "x": pack(x),
            "params": {k: pack(v) for k, v in params.items()}, "output": pack(out),
            "loss_weights": pack(weights), "grads": grads}


def attention_case(name, cfg, b=2, t=5):
    c, nh, nkv, hs = cfg["hidden_size"], cfg["n_head"], cfg["n_kv_head"], cfg["head_dim"]
    p = {}
    for proj, out_features in (("q_proj", nh * hs), ("k_proj", nkv * hs), ("v_proj", nkv * hs)):
        p[proj + ".weight"] = randn(out_features, c, std=0.3)
        if cfg["qkv_bias"]:
            p[proj + ".bias"] = randn(out_features, std=0.3)
    p["o_proj.weight"] = randn(c, nh * hs, std=0.3)
    if cfg["o_bias"]:
        p["o_proj.bias"] = randn(c, std=0.3)
    if cfg["qk_norm"]:
        p["q_norm.weight"] = randn(hs, std=0.3) + 1.0
        p["k_norm.weight"] = randn(hs, std=0.3) + 1.0
    return case(name, "attention", cfg, lambda x, q: attention(x, q, cfg), randn(b, t, c), p)


def attention_config(**kw):
    cfg = {"hidden_size": 12, "n_head": 4, "n_kv_head": 4, "head_dim": 6, "qkv_bias": False, "o_bias": False,
           "qk_norm": False, "norm_eps": 1e-6, "rotary": {"theta": 10000.0, "max_positions": 16}}
    cfg.update(kw)
    return cfg


def rotary_case(name, cfg, positions):
    inv_freq = inv_freq_of(cfg)
    half = cfg["head_dim"] // 2
    cos, sin = cos_sin(cfg, torch.tensor(positions))
    return {"name": name, "kind": "rotary", "config": cfg, "positions": positions, "inv_freq": pack(inv_freq, 17),
            "cos": pack(cos[:, :half]), "sin": pack(sin[:, :half])}


def main():
    cases = [
        case("rms_norm", "rms_norm", {"features": 16, "eps": 1e-5}, lambda x, p: rms_norm(x, p["weight"], 1e-5),
             randn(2, 3, 16, std=2.0), {"weight": randn(16, std=0.3) + 1.0}),
        case("swiglu_mlp", "swiglu_mlp", {"hidden_size": 8, "intermediate_size": 12, "bias": False}, swiglu_mlp,
             randn(2, 3, 8), {"gate_proj.weight": randn(12, 8, std=0.4), "up_proj.weight": randn(12, 8, std=0.4),
                              "down_proj.weight": randn(8, 12, std=0.4)}),
        rotary_case("default", {"head_dim": 16, "theta": 10000.0, "max_positions": 64}, [0, 1, 7, 63]),
        rotary_case("linear", {"head_dim": 16, "theta": 10000.0, "max_positions": 256,
                               "scaling": {"type": "linear", "factor": 4.0}}, [0, 3, 100, 255]),
        # Llama 3.1's values; HS 64 and theta 5e5 put frequencies in all three bands.
        rotary_case("llama3", {"head_dim": 64, "theta": 500000.0, "max_positions": 9000,
                               "scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
                    [0, 1, 500, 4097, 8999]),
        attention_case("mha_head_dim", attention_config()),
        attention_case("llama3_rope", attention_config(rotary={"theta": 500000.0, "max_positions": 16, "scaling": {
            "type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8}}, o_bias=True)),
        attention_case("qk_norm_mha", attention_config(qk_norm=True, head_dim=4)),
        attention_case("gqa_qkv_bias", attention_config(n_kv_head=2, qkv_bias=True)),
        attention_case("mqa_qk_norm", attention_config(n_kv_head=1, qk_norm=True, hidden_size=8)),
    ]
    path = os.path.join(HERE, "fixtures", "nn_blocks.json")
    with open(path, "w") as f:
        json.dump({"generator": "make_block_fixtures.py", "cases": cases}, f, separators=(",", ":"))
    print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
