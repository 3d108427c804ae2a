#!/usr/bin/python3
"""Reference fixtures for lmforge's ops, computed with PyTorch in float64.

Each fixtures/ops_<op>.json holds a list of cases; a case has named inputs (float32 values, or
integer ids/targets), the op's parameters, the output, loss weights W and the gradient of
loss = sum(out * W) with respect to every float input. Inputs are drawn in float32 and then
promoted to float64, so the C++ op sees exactly the values the reference used and the only
difference left is its own float32 arithmetic. tests/ops/test_torch_parity.cpp reads them.
Re-run: /usr/bin/python3 make_op_fixtures.py (torch 1.13; needs no GPU). The primitive ops draw
from a generator of their own, so adding cases there leaves the other files unchanged;
LMF_ONLY_PRIMITIVES=1 writes only the primitive ops' files.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
GEN = torch.Generator().manual_seed(20240611)


def randn(*shape, std=1.0):
    return (torch.randn(tuple(shape), generator=GEN, dtype=torch.float32) * std).double()


def pack(t):
    t = t.detach()
    if t.dtype.is_floating_point:
        data = [float(f"{v:.10g}") for v in t.reshape(-1).tolist()]
    else:
        data = [int(v) for v in t.reshape(-1).tolist()]
    return {"shape": list(t.shape), "data": data}


def case(name, fn, inputs, params=None, constants=()):
    """Runs fn(**inputs) in float64 and differentiates sum(out * W) for every float input not
    named in `constants` (tables such as rotary cos/sin that the op does not differentiate)."""
    leaves = {k: (v.clone().requires_grad_(True) if v.dtype.is_floating_point and k not in constants else v)
              for k, v in inputs.items()}
    out = fn(**leaves)
    weights = randn(*out.shape)
    (out * weights).sum().backward()
    return {
        "name": name,
        "params": params or {},
        "inputs": {k: pack(v) for k, v in inputs.items()},
        "output": pack(out),
        "loss_weights": pack(weights),
        "grads": {k: pack(v.grad) for k, v in leaves.items()
                  if v.dtype.is_floating_point and v.grad is not None},
    }


def causal_attention(q, k, v):
    t, hs = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(hs)
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def rms_norm(x, w, eps):
    """Hugging Face's LlamaRMSNorm: x * rsqrt(mean(x^2) + eps), then times the weight."""
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary(x, cos, sin, offset):
    """HF's apply_rotary_pos_emb on x (B, NH, T, HS) with half tables (L, HS/2) at positions offset + t."""
    t = x.shape[-2]
    c = torch.cat((cos, cos), dim=-1)[offset:offset + t]
    s = torch.cat((sin, sin), dim=-1)[offset:offset + t]
    return x * c + rotate_half(x) * s


def rotary_tables(positions, hs, theta):
    inv_freq = 1.0 / theta ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    # Rounded to float32 like every other input, so the C++ op sees the same values.
    return angles.cos().float().double(), angles.sin().float().double()


def gqa_attention(q, k, v):
    """Causal attention written out: query head h reads key/value head h // (NH // NKV), and the Tq
    queries are the last Tq of the Tk positions (query i sees keys 0 .. Tk - Tq + i)."""
    nh, tq, hs = q.shape[1], q.shape[2], q.shape[3]
    nkv, tk = k.shape[1], k.shape[2]
    k = k.repeat_interleave(nh // nkv, dim=1)
    v = v.repeat_interleave(nh // nkv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hs)
    visible = torch.arange(tk)[None, :] <= (tk - tq + torch.arange(tq))[:, None]
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def write_attention_gqa():
    """Its own generator, so these cases leave every other fixture's draws unchanged."""
    global GEN
    saved, GEN = GEN, torch.Generator().manual_seed(20261202)
    write("attention_gqa", [
        case("gqa_hs5", gqa_attention,
             {"q": randn(2, 4, 7, 5), "k": randn(2, 2, 7, 5), "v": randn(2, 2, 7, 5)}),
        case("behind_cache", gqa_attention,
             {"q": randn(1, 3, 3, 6), "k": randn(1, 3, 8, 6), "v": randn(1, 3, 8, 6)}),
        case("mqa_one_query", gqa_attention,
             {"q": randn(2, 4, 1, 9), "k": randn(2, 1, 5, 9), "v": randn(2, 1, 5, 9)}),
    ])
    GEN = saved


def write(op, cases):
    path = os.path.join(HERE, "fixtures", f"ops_{op}.json")
    with open(path, "w") as f:
        json.dump({"op": op, "generator": "make_op_fixtures.py", "cases": cases}, f, separators=(",", ":"))
    print(f"{path}: {os.path.getsize(path)} bytes")


def positive(*shape):
    """Inputs for log, sqrt, rsqrt, pow and divisors: float32 draws in [0.5, 2.5)."""
    return (torch.rand(tuple(shape), generator=GEN, dtype=torch.float32) * 2.0 + 0.5).double()


def away_from_zero(*shape):
    """Inputs for relu: |x| >= 0.1 so no element sits on the kink."""
    x = torch.randn(tuple(shape), generator=GEN, dtype=torch.float32)
    return (x + torch.sign(x) * 0.1).double()


# Shape pairs for the broadcasting binary ops: the fast periodic forms (same shape, suffix, (1, 1, C),
# scalar) and the strided ones (a (B, T, 1) gate, (1, C) + (R, 1), a broadcast a, a (T, HS) table
# against (B, NH, T, HS), b with more dims than a).
BINARY_SHAPES = [
    ("same", (2, 3, 4), (2, 3, 4)),
    ("suffix", (2, 3, 4), (4,)),
    ("leading_ones", (2, 3, 4), (1, 1, 4)),
    ("scalar", (2, 3, 4), ()),
    ("btc_bt1", (2, 3, 1), (2, 3, 4)),
    ("row_col", (1, 5), (4, 1)),
    ("table_bnth", (3, 4), (2, 2, 3, 4)),
    ("middle", (2, 1, 4), (1, 3, 1)),
]


def primitive_fixtures():
    """Fixtures of the primitive ops, drawn from their own generator."""
    global GEN
    saved, GEN = GEN, torch.Generator().manual_seed(20261202)
    try:
        write_primitives()
    finally:
        GEN = saved


def write_primitives():
    torch_binary = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}
    for op, fn in torch_binary.items():
        write(op, [case(name, lambda a, b, fn=fn: fn(a, b),
                        {"a": randn(*sa), "b": positive(*sb) if op == "div" else randn(*sb)})
                   for name, sa, sb in BINARY_SHAPES])
    write("neg", [case("plain", lambda x: -x, {"x": randn(3, 5)})])
    write("exp", [case("plain", lambda x: torch.exp(x), {"x": randn(3, 5)})])
    write("log", [case("plain", lambda x: torch.log(x), {"x": positive(3, 5)})])
    write("sqrt", [case("plain", lambda x: torch.sqrt(x), {"x": positive(3, 5)})])
    write("rsqrt", [case("plain", lambda x: torch.rsqrt(x), {"x": positive(3, 5)})])
    write("tanh", [case("plain", lambda x: torch.tanh(x), {"x": randn(3, 5, std=2.0)})])
    write("sigmoid", [case("plain", lambda x: torch.sigmoid(x), {"x": randn(3, 5, std=2.0)})])
    write("silu", [case("plain", lambda x: F.silu(x), {"x": randn(3, 5, std=2.0)})])
    write("relu", [case("plain", lambda x: torch.relu(x), {"x": away_from_zero(3, 5)})])
    write("pow", [
        case("cube", lambda x: torch.pow(x, 3.0), {"x": randn(3, 5)}, {"exponent": 3.0}),
        case("fractional", lambda x: torch.pow(x, -0.5), {"x": positive(3, 5)}, {"exponent": -0.5}),
    ])
    write("sum_dim", [
        case(f"dim{d}_keep{int(k)}", lambda x, d=d, k=k: torch.sum(x, dim=d, keepdim=k),
             {"x": randn(2, 3, 4)}, {"dim": d, "keepdim": k})
        for d, k in [(0, False), (1, True), (-1, False), (2, True)]])
    write("mean_dim", [
        case(f"dim{d}_keep{int(k)}", lambda x, d=d, k=k: torch.mean(x, dim=d, keepdim=k),
             {"x": randn(2, 3, 4)}, {"dim": d, "keepdim": k})
        for d, k in [(0, True), (1, False), (-1, True)]])
    write("max", [
        case(f"dim{d}_keep{int(k)}", lambda x, d=d, k=k: torch.max(x, dim=d, keepdim=k).values,
             {"x": randn(2, 3, 4)}, {"dim": d, "keepdim": k})
        for d, k in [(0, False), (1, True), (-1, False)]])
    write("cat", [
        case("dim1", lambda x0, x1, x2: torch.cat([x0, x1, x2], dim=1),
             {"x0": randn(2, 1, 3), "x1": randn(2, 4, 3), "x2": randn(2, 2, 3)}, {"dim": 1}),
        case("last", lambda x0, x1: torch.cat([x0, x1], dim=-1),
             {"x0": randn(3, 2), "x1": randn(3, 5)}, {"dim": -1}),
    ])
    # split and chunk: the pieces joined back with a weight per piece, so each piece's gradient differs.
    write("split", [
        case("sizes", lambda x: torch.cat([p * (i + 1) for i, p in enumerate(torch.split(x, [1, 3, 2], dim=1))], 1),
             {"x": randn(2, 6, 3)}, {"sizes": [1, 3, 2], "dim": 1}),
    ])
    write("chunk", [
        case("uneven", lambda x: torch.cat([p * (i + 1) for i, p in enumerate(torch.chunk(x, 3, dim=-1))], -1),
             {"x": randn(2, 7)}, {"chunks": 3, "dim": -1}),
    ])
    cond = (torch.rand((3, 1), generator=GEN) > 0.5).double()
    write("where", [
        case("broadcast", lambda cond, a, b: torch.where(cond != 0, a, b),
             {"cond": cond, "a": randn(2, 3, 4), "b": randn(4)}),
        case("b_grows", lambda cond, a, b: torch.where(cond != 0, a, b),
             {"cond": (torch.rand((4,), generator=GEN) > 0.5).double(), "a": randn(3, 1), "b": randn(2, 3, 4)}),
    ])
    write("gather", [
        case("repeated", lambda x, index: torch.gather(x, -1, index),
             {"x": randn(2, 3, 5), "index": torch.tensor([[[0, 4, 4, 1], [2, 2, 2, 2], [3, 0, 1, 4]],
                                                          [[1, 1, 0, 3], [4, 3, 2, 1], [0, 0, 0, 0]]])}),
    ])
    write("expand", [
        case("bt1_to_btc", lambda x: x.expand(-1, 3, 4) * 1.0, {"x": randn(2, 3, 1)}, {"shape": [-1, 3, 4]}),
        case("new_leading", lambda x: x.expand(2, 3, 4) * 1.0, {"x": randn(1, 4)}, {"shape": [2, 3, 4]}),
    ])


def main():
    os.makedirs(os.path.join(HERE, "fixtures"), exist_ok=True)
    if os.environ.get("LMF_ONLY_PRIMITIVES"):
        primitive_fixtures()
        return
    write("layer_norm", [
        case("with_bias", lambda x, w, b: F.layer_norm(x, (8,), w, b, eps=1e-5),
             {"x": randn(2, 3, 8, std=2.0) + 1.5, "w": randn(8, std=0.3) + 1.0, "b": randn(8, std=0.3)},
             {"eps": 1e-5}),
        case("no_bias", lambda x, w: F.layer_norm(x, (8,), w, None, eps=1e-5),
             {"x": randn(4, 8), "w": randn(8, std=0.3) + 1.0}, {"eps": 1e-5}),
    ])
    write("gelu", [case("tanh", lambda x: F.gelu(x, approximate="tanh"), {"x": randn(5, 9, std=3.0)})])
    write("softmax", [case("rows", lambda x: torch.softmax(x, dim=-1), {"x": randn(3, 4, 10, std=2.0)})])
    write("attention", [
        case("causal", causal_attention,
             {"q": randn(2, 2, 6, 4), "k": randn(2, 2, 6, 4), "v": randn(2, 2, 6, 4)}),
    ])
    targets = torch.tensor([3, -1, 10, 0, 7, -1, 2], dtype=torch.int64)
    write("cross_entropy", [
        case("ignore_index", lambda logits, targets: F.cross_entropy(logits, targets, ignore_index=-1),
             {"logits": randn(7, 11, std=2.0), "targets": targets}, {"ignore_index": -1}),
        case("btv", lambda logits, targets: F.cross_entropy(logits.reshape(-1, 13), targets.reshape(-1),
                                                             ignore_index=-100),
             {"logits": randn(2, 3, 13), "targets": torch.tensor([[1, 12, 0], [5, 5, 9]])},
             {"ignore_index": -100}),
    ])
    write("linear", [
        case("with_bias", lambda x, w, b: F.linear(x, w, b),
             {"x": randn(2, 3, 5), "w": randn(4, 5), "b": randn(4)}),
        case("no_bias", lambda x, w: F.linear(x, w), {"x": randn(6, 5), "w": randn(3, 5)}),
    ])
    write("embedding", [
        case("repeated_ids", lambda weight, ids: F.embedding(ids, weight),
             {"weight": randn(10, 6), "ids": torch.tensor([[1, 4, 1, 9], [0, 4, 4, 1]])}),
    ])
    write("matmul", [
        case("shared_b", lambda a, b: a @ b, {"a": randn(2, 3, 4), "b": randn(4, 5)},
             {"trans_a": False, "trans_b": False}),
        case("batched_transposed", lambda a, b: a.transpose(-1, -2) @ b.transpose(-1, -2),
             {"a": randn(2, 4, 3), "b": randn(2, 5, 4)}, {"trans_a": True, "trans_b": True}),
    ])
    primitive_fixtures()

    write("rms_norm", [
        case("rows", lambda x, w: rms_norm(x, w, 1e-5),
             {"x": randn(2, 3, 8, std=2.0) + 0.5, "w": randn(8, std=0.3) + 1.0}, {"eps": 1e-5}),
        case("eps_large", lambda x, w: rms_norm(x, w, 1e-2), {"x": randn(5, 6, std=0.2), "w": randn(6)},
             {"eps": 1e-2}),
    ])
    cos, sin = rotary_tables(12, 8, 10000.0)
    write("rotary_embedding", [
        case("heads_first", lambda x, cos, sin: rotary(x, cos, sin, 0),
             {"x": randn(2, 3, 5, 8), "cos": cos, "sin": sin}, {"offset": 0, "time_first": False},
             constants=("cos", "sin")),
        case("time_first_offset", lambda x, cos, sin: rotary(x.transpose(1, 2), cos, sin, 4),
             {"x": randn(2, 5, 3, 8), "cos": cos, "sin": sin}, {"offset": 4, "time_first": True},
             constants=("cos", "sin")),
    ])
    write("swiglu", [
        case("gate", lambda gate, up: F.silu(gate) * up, {"gate": randn(4, 7, std=3.0), "up": randn(4, 7)}),
    ])


if __name__ == "__main__":
    main()
    write_attention_gqa()
