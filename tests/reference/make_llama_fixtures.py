#!/usr/bin/python3
"""Small random Hugging Face directories of Llama-family models and their float64 reference
outputs, for tests/nn/test_llama.cpp and tests/io/test_hf_llama.cpp.

The model math is written out here, in float64 PyTorch, from the equations of transformers'
LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM / MistralForCausalLM (transformers is not
imported): embed_tokens; per layer x += o_proj(attn(rope(q_norm?(q_proj(rms(x)))), rope(k_norm?(...)),
v)) with repeat_kv for grouped-query heads and causal softmax(q k^T / sqrt(HS)); x += down_proj(
silu(gate_proj(h)) * up_proj(h)) with h = rms(x); logits = lm_head(rms(x)) (lm_head = embed_tokens
when tied); rope on (x[:HS/2], x[HS/2:]) halves (rotate_half) with inv_freq of rope_theta, linear
or llama3 scaling.

Each case directory holds config.json, model.safetensors (F32, BF16 or F16; or two shards with
model.safetensors.index.json) and reference.json: ids, targets (one -1 = ignored), logits, the mean
cross-entropy loss and its gradient for a few parameters. Weights are drawn in float32, rounded to
the file dtype, and the reference uses exactly those rounded values, so the C++ side sees the same
numbers. Re-run: /usr/bin/python3 make_llama_fixtures.py (torch 1.13, CPU).
"""
import json
import math
import os
import shutil
import struct

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "llama")
GEN = torch.Generator().manual_seed(20261212)
DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def randn(*shape, std=1.0):
    return torch.randn(tuple(shape), generator=GEN, dtype=torch.float32) * std


def pack(t, digits=12):
    t = t.detach()
    return {"shape": list(t.shape), "data": [float(f"{v:.{digits}g}") for v in t.reshape(-1).tolist()]}


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def inv_freq(cfg):
    hs = head_dim(cfg)
    freq = 1.0 / cfg["rope_theta"] ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    rs = cfg.get("rope_scaling")
    if not rs:
        return freq
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return freq / rs["factor"]
    assert kind == "llama3"
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    l0 = rs["original_max_position_embeddings"]
    out = []
    for f in freq.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < l0 / high:      # high frequency: kept
            out.append(f)
        elif wavelen > l0 / low:     # low frequency: divided by factor
            out.append(f / factor)
        else:                        # between: interpolated
            s = (l0 / wavelen - low) / (high - low)
            out.append((1 - s) * f / factor + s * f)
    return torch.tensor(out, dtype=torch.float64)


def rms(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def rope(x, cos, sin):  # x (B, H, T, HS)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


def forward(cfg, P, ids):
    B, T = ids.shape
    C, NH, HS = cfg["hidden_size"], cfg["num_attention_heads"], head_dim(cfg)
    NKV = cfg.get("num_key_value_heads") or NH
    eps = cfg["rms_norm_eps"]
    angles = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq(cfg)[None, :]
    angles = torch.cat((angles, angles), dim=-1)  # (T, HS)
    cos, sin = angles.cos(), angles.sin()
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    x = P["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."

        def proj(name, h):
            y = h @ P[p + name + ".weight"].T
            return y + P[p + name + ".bias"] if p + name + ".bias" in P else y

        h = rms(x, P[p + "input_layernorm.weight"], eps)
        q = proj("self_attn.q_proj", h).view(B, T, NH, HS)
        k = proj("self_attn.k_proj", h).view(B, T, NKV, HS)
        v = proj("self_attn.v_proj", h).view(B, T, NKV, HS).transpose(1, 2)
        if p + "self_attn.q_norm.weight" in P:
            q = rms(q, P[p + "self_attn.q_norm.weight"], eps)
            k = rms(k, P[p + "self_attn.k_norm.weight"], eps)
        q = rope(q.transpose(1, 2), cos, sin)
        k = rope(k.transpose(1, 2), cos, sin)
        k = k.repeat_interleave(NH // NKV, dim=1)  # query head h reads K/V head h // (NH / NKV)
        v = v.repeat_interleave(NH // NKV, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(HS)
        scores = scores.masked_fill(~causal, float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, NH * HS)
        x = x + proj("self_attn.o_proj", y)
        h = rms(x, P[p + "post_attention_layernorm.weight"], eps)
        g = proj("mlp.gate_proj", h)
        x = x + proj("mlp.down_proj", g * torch.sigmoid(g) * proj("mlp.up_proj", h))
    x = rms(x, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else P["lm_head.weight"]
    return x @ head.T


def make_params(cfg):
    C, NH, HS, I, V = cfg["hidden_size"], cfg["num_attention_heads"], head_dim(cfg), cfg["intermediate_size"], cfg["vocab_size"]
    NKV = cfg.get("num_key_value_heads") or NH
    qkv_bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)
    o_bias = cfg["model_type"] != "qwen2" and cfg.get("attention_bias", False)
    # Weights of unit-scale activations (std 1/sqrt(fan_in)), so logits are O(1) and an error shows.
    # A tied table is also the head: smaller entries keep its logits O(1) too.
    P = {"model.embed_tokens.weight": randn(V, C, std=0.3 if cfg["tie_word_embeddings"] else 1.0)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        P[p + "input_layernorm.weight"] = 1 + randn(C, std=0.2)
        for name, rows in (("q_proj", NH * HS), ("k_proj", NKV * HS), ("v_proj", NKV * HS)):
            P[p + f"self_attn.{name}.weight"] = randn(rows, C, std=C ** -0.5)
            if qkv_bias:
                P[p + f"self_attn.{name}.bias"] = randn(rows, std=0.2)
        P[p + "self_attn.o_proj.weight"] = randn(C, NH * HS, std=(NH * HS) ** -0.5)
        if o_bias:
            P[p + "self_attn.o_proj.bias"] = randn(C, std=0.2)
        if cfg["model_type"] == "qwen3":
            P[p + "self_attn.q_norm.weight"] = 1 + randn(HS, std=0.2)
            P[p + "self_attn.k_norm.weight"] = 1 + randn(HS, std=0.2)
        P[p + "post_attention_layernorm.weight"] = 1 + randn(C, std=0.2)
        P[p + "mlp.gate_proj.weight"] = randn(I, C, std=C ** -0.5)
        P[p + "mlp.up_proj.weight"] = randn(I, C, std=C ** -0.5)
        P[p + "mlp.down_proj.weight"] = randn(C, I, std=I ** -0.5)
    P["model.norm.weight"] = 1 + randn(C, std=0.2)
    if not cfg["tie_word_embeddings"]:
        P["lm_head.weight"] = randn(V, C, std=C ** -0.5)
    return P


def write_safetensors(path, tensors, dtype):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.to(DTYPES[dtype]).contiguous()
        raw = (data.view(torch.int16) if dtype == "BF16" else data).numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


CASES = [
    # GQA (4 query heads on 2 K/V heads), llama3 rope scaling, untied head, F32, one file.
    ("llama_gqa_llama3", "F32", False, {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64, "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16},
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32"}),
    # q/k/v biases, tied head, linear rope scaling, BF16 in two shards with an index.
    ("qwen2_bias_tied", "BF16", True, {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 64, "hidden_size": 48,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu",
        "rope_scaling": {"type": "linear", "factor": 2.0}, "tie_word_embeddings": True,
        "use_sliding_window": False, "sliding_window": 32, "max_window_layers": 2, "torch_dtype": "bfloat16"}),
    # q/k norms, head_dim 16 != 32 / 4, multi-query (1 K/V head), untied head, F16, one file.
    ("qwen3_qknorm_mqa", "F16", False, {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 64, "hidden_size": 32,
        "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
        "head_dim": 16, "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "hidden_act": "silu", "rope_scaling": None, "tie_word_embeddings": False, "attention_bias": False,
        "torch_dtype": "float16"}),
    # Mistral: full multi-head attention, sliding_window null, tied, F32.
    ("mistral_mha_tied", "F32", False, {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 64, "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
        "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "float32"}),
]

GRAD_NAMES = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
              "model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.k_norm.weight",
              "model.layers.0.input_layernorm.weight", "model.layers.0.mlp.down_proj.weight",
              "model.norm.weight", "lm_head.weight"]


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    for name, dtype, sharded, cfg in CASES:
        d = os.path.join(OUT, name)
        os.makedirs(d)
        params = make_params(cfg)
        # What the file holds, promoted: the reference computes with exactly these values.
        P = {k: v.to(DTYPES[dtype]).double().requires_grad_(True) for k, v in params.items()}
        B, T, V = 2, 8, cfg["vocab_size"]
        ids = torch.randint(0, V, (B, T), generator=GEN)
        targets = torch.randint(0, V, (B, T), generator=GEN)
        targets[1, 3] = -1
        logits = forward(cfg, P, ids)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1)
        loss.backward()
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        if sharded:
            names = list(params)
            half = len(names) // 2
            shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
            weight_map = {}
            for shard, members in shards.items():
                write_safetensors(os.path.join(d, shard), {k: params[k] for k in members}, dtype)
                weight_map.update({k: shard for k in members})
            with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)
        else:
            write_safetensors(os.path.join(d, "model.safetensors"), params, dtype)
        ref = {"ids": ids.tolist(), "targets": targets.tolist(), "logits": pack(logits),
               "loss": float(loss), "grads": {k: pack(P[k].grad) for k in GRAD_NAMES if k in P}}
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump(ref, f)
        print(name, "loss", float(loss))


if __name__ == "__main__":
    main()
