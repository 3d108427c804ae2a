#!/usr/bin/python3
"""Reference scores for `lmforge eval --task` and `--text` (tests/train/test_task_eval.cpp,
tests/e2e/test_cli_eval_tasks.cpp), computed the way lm-evaluation-harness computes them.

Writes fixtures/task_eval/gpt2/: a small random GPT-2 as a Hugging Face directory (config.json,
model.safetensors in float32) with a small byte-level BPE learned here (vocab.json, merges.txt in
GPT-2's layout, <|endoftext|> last), a task file (task.jsonl: 9 examples of 4 endings), a text
(text.txt) and reference.json. Everything is computed here without lmforge: the BPE encoder (GPT-2's
pre-tokenization with Python's `re`; the texts avoid characters where `re` and `\\p{L}`/`\\p{N}`
disagree), lm-evaluation-harness's request forming (context/continuation split of
`_encode_pair`, the eot token for an empty context, left truncation to the last n_positions + 1
tokens), its acc/acc_norm (argmax of summed log-likelihoods, and of them divided by the ending's
length in characters), its rolling windows for loglikelihood_rolling, and bits-per-byte = -sum of
log-likelihoods / (ln 2 * UTF-8 bytes). The GPT-2 forward is eval_reference.py's, in float64, on
the float32 weights written to the file.

A second directory, fixtures/task_eval/llama/, scores a tiny task with the Llama-family
checkpoint of make_llama_fixtures.py (llama_gqa_llama3, its own float64 forward) and a character
tokenizer written here in lmforge's format.

Re-run: /usr/bin/python3 tests/reference/make_task_eval_fixtures.py (torch 1.13, CPU).
"""
import json
import math
import os
import re
import shutil
import struct
import sys
from collections import Counter

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from eval_reference import gpt2_logits, read_safetensors  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "task_eval")
GEN = torch.Generator().manual_seed(20261202)
EOT = "<|endoftext|>"

# ---- byte-level BPE, GPT-2 style --------------------------------------------------------------


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


B2U = bytes_to_unicode()
# GPT-2's pattern with \p{L} -> [^\W\d_] and \p{N} -> \d (equal on the texts used here).
PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


def pretokens(text):
    return ["".join(B2U[b] for b in piece.encode("utf-8")) for piece in PAT.findall(text)]


def learn_merges(corpus, count):
    words = Counter(tuple(p) for p in pretokens(corpus))
    merges = []
    for _ in range(count):
        pairs = Counter()
        for word, n in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges


class BPE:
    def __init__(self, merges):
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.vocab = {}
        for b in range(256):
            self.vocab[B2U[b]] = len(self.vocab)
        for a, b in merges:
            self.vocab[a + b] = len(self.vocab)
        self.vocab[EOT] = len(self.vocab)
        self.eot = self.vocab[EOT]

    def encode_piece(self, piece):
        parts = list(piece)
        while len(parts) > 1:
            ranked = [(self.ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(ranked)
            if rank == math.inf:
                break
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
        return [self.vocab[p] for p in parts]

    def encode(self, text):
        return [t for piece in pretokens(text) for t in self.encode_piece(piece)]


# ---- lm-evaluation-harness's request forming and scoring --------------------------------------


def encode_pair(tok, context, continuation):
    """_encode_pair: trailing whitespace of the context moves to the continuation."""
    if context == "":
        return [tok.eot], tok.encode(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok.encode(context + continuation)
    ctx = tok.encode(context)
    return ctx, whole[len(ctx) :]


def loglikelihood(logits_fn, max_length, ctx, cont):
    """_loglikelihood_tokens for one request: the last max_length + 1 tokens, minus the last."""
    inp = (ctx + cont)[-(max_length + 1) :][:-1]
    logits = logits_fn(torch.tensor([inp]))[0]  # (T, V)
    logp = torch.log_softmax(logits[len(inp) - len(cont) :], dim=-1)
    return float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum()), len(ctx + cont) - 1 > max_length


def score_task(logits_fn, max_length, tok, docs):
    out, right, right_norm = [], 0, 0
    for doc in docs:
        ctx_text = doc["ctx"] if "ctx" in doc else (doc["ctx_a"] + (" " + doc["ctx_b"] if doc.get("ctx_b") else ""))
        label = int(doc["label"])
        lls, reqs, truncated = [], [], False
        for ending in doc["endings"]:
            ctx, cont = encode_pair(tok, ctx_text, " " + ending)
            ll, cut = loglikelihood(logits_fn, max_length, ctx, cont)
            truncated |= cut
            lls.append(ll)
            reqs.append({"context": ctx, "continuation": cont})
        lens = np.array([float(len(e)) for e in doc["endings"]])
        pred, pred_norm = int(np.argmax(lls)), int(np.argmax(np.array(lls) / lens))
        right += pred == label
        right_norm += pred_norm == label
        out.append({"requests": reqs, "loglik": lls, "prediction": pred, "prediction_norm": pred_norm,
                    "truncated": truncated})
    n = len(docs)
    return {"examples": out, "acc": right / n, "acc_norm": right_norm / n, "count": n}


def rolling_windows(tokens, prefix, max_len):
    """get_rolling_token_windows with context_len 1: (inputs, targets) pairs predicting each token once."""
    first = min(max_len, len(tokens))
    yield [prefix] + tokens[: first - 1], tokens[:first]
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, max_len)
        end = predicted + n
        inp = tokens[end - max_len - 1 : end - 1]
        yield inp, tokens[end - n : end]
        predicted += n


def bits_per_byte(logits_fn, max_length, tok_encode, prefix, text):
    tokens = tok_encode(text)
    total, count = 0.0, 0
    for inp, targets in rolling_windows(tokens, prefix, max_length):
        # The targets are the last len(targets) next-token predictions of the window.
        full = inp + [targets[-1]]
        logits = logits_fn(torch.tensor([full[:-1]]))[0]
        logp = torch.log_softmax(logits[len(full) - 1 - len(targets) :], dim=-1)
        total += float(logp[torch.arange(len(targets)), torch.tensor(targets)].sum())
        count += len(targets)
    n_bytes = len(text.encode("utf-8"))
    return {"block_size": max_length, "tokens": count, "bytes": n_bytes, "nll": -total,
            "loss": -total / count, "bits_per_byte": -total / (math.log(2) * n_bytes), "ids": tokens}


# ---- data -------------------------------------------------------------------------------------

CORPUS = """The cat sat on the mat. The dog ran to the park and the children played there.
A man is seen standing on a ladder, then he paints the wall with a roller.
She opens the oven, takes out the bread and puts it on the table to cool.
Café owners in Zürich serve coffee; the straße is busy, and people say "grüß Gott".
Numbers like 42 and 1999 appear too, as do symbols: $5, 10% and a_b.
"""

LONG_CONTEXT = ("A woman stands in a kitchen holding a bowl. She cracks two eggs into the bowl and whisks "
                "them with a fork, then pours milk in and keeps stirring while the pan heats on the stove. "
                "Finally she")

TASK = [
    {"ctx": "The cat sat on the", "endings": ["mat.", "moon and sang a long song.", "car", "dog's bed, asleep."], "label": 0},
    {"ctx": "A man is seen standing on a ladder. He", "endings": ["paints the wall with a roller.", "eats.",
                                                                  "jumps into the pool below", "is a ladder"], "label": 1},
    # Trailing whitespace in the context: it moves into the continuation.
    {"ctx": "She opens the oven, takes out the bread and ", "endings": ["puts it on the table to cool.", "sings",
                                                                         "café au lait ☕ for everyone", "runs."], "label": 0},
    # Longer than the 48-token window: left-truncated.
    {"ctx": LONG_CONTEXT, "endings": ["flips the omelette onto a plate.", "leaves.", "calls the dog, who barks at the door.",
                                      "grüßt die Nachbarn"], "label": 2},
    # HellaSwag's raw layout with a string label.
    {"ctx_a": "Children play in the park.", "ctx_b": "they", "endings": ["run around the trees laughing.", "sleep",
                                                                         "are 42 years old", "fly away!"], "label": "3"},
    # An empty context: the ending is conditioned on <|endoftext|> alone.
    {"ctx": "", "endings": ["The dog ran to the park.", "Zürich", "a_b and $5", "Numbers like 1999 appear."], "label": 1},
    {"ctx": "Café owners in Zürich serve", "endings": ["coffee.", "coffee; the straße is busy.", "tea", "nothing at all"],
     "label": 1},
    {"ctx": "Numbers like 42 and", "endings": ["1999", "10% appear too.", "symbols", "the cat"], "label": 2},
    # Two-byte characters: acc_norm divides by characters (3 wins); by UTF-8 bytes 2 would win.
    {"ctx": "In Zürich the cat", "endings": ["Η γάτα κάθεται.", "γάτα", "Ünïcödé", "grüß Gott"], "label": 3},
]

TEXT = (CORPUS + "Η γάτα κάθεται. Ünïcödé text with emoji 🙂 and quotes — long dashes too.\n"
        "The man paints the wall, the woman bakes bread, and the children play in the park until dark.\n")


def pack_params(cfg):
    C, V, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_layer"]
    P = {}

    def rnd(*shape, mean=0.0, std=0.3):
        return (torch.randn(*shape, generator=GEN) * std + mean).float()

    P["wte.weight"] = rnd(V, C)
    P["wpe.weight"] = rnd(cfg["n_positions"], C)
    for i in range(L):
        h = f"h.{i}."
        P[h + "ln_1.weight"], P[h + "ln_1.bias"] = rnd(C, mean=1.0, std=0.2), rnd(C)
        P[h + "attn.c_attn.weight"], P[h + "attn.c_attn.bias"] = rnd(C, 3 * C), rnd(3 * C)
        P[h + "attn.c_proj.weight"], P[h + "attn.c_proj.bias"] = rnd(C, C), rnd(C)
        P[h + "ln_2.weight"], P[h + "ln_2.bias"] = rnd(C, mean=1.0, std=0.2), rnd(C)
        P[h + "mlp.c_fc.weight"], P[h + "mlp.c_fc.bias"] = rnd(C, 4 * C), rnd(4 * C)
        P[h + "mlp.c_proj.weight"], P[h + "mlp.c_proj.bias"] = rnd(4 * C, C), rnd(C)
    P["ln_f.weight"], P["ln_f.bias"] = rnd(C, mean=1.0, std=0.2), rnd(C)
    return P


def write_safetensors_f32(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.float().contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def make_gpt2():
    out = os.path.join(OUT, "gpt2")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    merges = learn_merges(CORPUS + LONG_CONTEXT, 48)
    tok = BPE(merges)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(tok.vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32,
           "n_positions": 48, "n_ctx": 48, "vocab_size": 320, "layer_norm_epsilon": 1e-5,
           "activation_function": "gelu_new", "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
           "tie_word_embeddings": True}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_safetensors_f32(os.path.join(out, "model.safetensors"), pack_params(cfg))
    with open(os.path.join(out, "task.jsonl"), "w", encoding="utf-8") as f:
        for doc in TASK:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with open(os.path.join(out, "text.txt"), "w", encoding="utf-8") as f:
        f.write(TEXT)

    # The reference reads the weights back from the file (float32 -> float64).
    params = read_safetensors(os.path.join(out, "model.safetensors"))

    def logits_fn(ids):
        return gpt2_logits(params, cfg, ids)

    with torch.no_grad():
        task = score_task(logits_fn, cfg["n_positions"], tok, TASK)
        task_short = score_task(logits_fn, 32, tok, TASK)
        text = [bits_per_byte(logits_fn, T, tok.encode, tok.eot, TEXT) for T in (48, 16)]
    ref = {"task": task, "task_block_32": task_short, "text": text, "eot": tok.eot}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(f"gpt2: acc {task['acc']} acc_norm {task['acc_norm']}; block 32: acc {task_short['acc']} "
          f"acc_norm {task_short['acc_norm']}; bpb {text[0]['bits_per_byte']:.6f} ({text[0]['tokens']} tokens, "
          f"{text[0]['bytes']} bytes), block 16: {text[1]['bits_per_byte']:.6f}")


# ---- a Llama-family model with a character tokenizer ------------------------------------------

LLAMA_TASK = [
    {"ctx": "the cat sat on the", "endings": ["mat", "moon and sang", "hat"], "label": 0},
    {"ctx": "a man paints a wall with ", "endings": ["a roller", "tea", "the cat on the mat"], "label": 1},
    {"ctx": "", "endings": ["dogs run", "cats"], "label": 1},
    {"ctx": "she bakes bread and then she eats it and then she bakes more bread and then she bakes",
     "endings": ["cakes", "bread again and again", "nothing"], "label": 2},
]
LLAMA_TEXT = "the cat sat on the mat and the dog ran to the park; she bakes bread, he paints a wall.\n" * 2


def make_llama():
    import make_llama_fixtures as ml

    src = os.path.join(ml.OUT, "llama_gqa_llama3")
    out = os.path.join(OUT, "llama")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(src, name), out)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    symbols = sorted(set("".join(d["ctx"] + "".join(" " + e for e in d["endings"]) for d in LLAMA_TASK) + LLAMA_TEXT))
    vocab = symbols
    eot = len(vocab)
    assert eot < cfg["vocab_size"]
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump({"format": "lmforge-tokenizer", "version": 1, "type": "char", "vocab": vocab,
                   "special_tokens": {EOT: eot}}, f, ensure_ascii=False)

    class CharTok:
        def __init__(self):
            self.eot = eot

        def encode(self, text):
            return [vocab.index(c) for c in text]

    tok = CharTok()
    raw = read_safetensors(os.path.join(out, "model.safetensors"))
    max_len = cfg["max_position_embeddings"]

    def logits_fn(ids):
        return ml.forward(cfg, raw, ids)

    with open(os.path.join(out, "task.jsonl"), "w", encoding="utf-8") as f:
        for doc in LLAMA_TASK:
            f.write(json.dumps(doc) + "\n")
    with open(os.path.join(out, "text.txt"), "w", encoding="utf-8") as f:
        f.write(LLAMA_TEXT)
    with torch.no_grad():
        task = score_task(logits_fn, max_len, tok, LLAMA_TASK)
        text = [bits_per_byte(logits_fn, max_len, tok.encode, eot, LLAMA_TEXT)]
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"task": task, "text": text, "eot": eot}, f, indent=1)
    print(f"llama: acc {task['acc']} acc_norm {task['acc_norm']}; bpb {text[0]['bits_per_byte']:.6f}")


def main():
    torch.set_default_dtype(torch.float64)
    make_gpt2()
    make_llama()


if __name__ == "__main__":
    main()
