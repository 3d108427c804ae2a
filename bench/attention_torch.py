#!/usr/bin/env python3
"""PyTorch SDPA (causal, bf16) forward + backward at the shapes of bench_attention, for comparison.

Usage: python3 bench/attention_torch.py [iterations]
Prints the same columns as bench_attention: T, HS, NH, B, fwd ms, fwd TF/s, bwd ms, bwd TF/s.
"""
import sys

import torch
import torch.nn.functional as F


def main() -> int:
    if not torch.cuda.is_available():
        print("attention_torch: skipped: no CUDA GPU")
        return 0
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print(f"device: {torch.cuda.get_device_name()} (torch {torch.__version__}, SDPA bf16)")
    print(f"{'T':<6} {'HS':<5} {'NH':<4} {'B':<4} {'fwd ms':>10} {'fwd TF/s':>10} {'bwd ms':>10} {'bwd TF/s':>10}")
    B, C = 8, 768
    for t in (1024, 2048):
        for hs in (64, 128):
            nh = C // hs
            q, k, v = (torch.randn(B, nh, t, hs, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for _ in range(3))
            dout = torch.randn(B, nh, t, hs, device="cuda", dtype=torch.bfloat16)
            for _ in range(3):  # warm-up
                F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)
            fwd = bwd = 0.0
            for _ in range(iterations):
                e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
                e0.record()
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                e1.record()
                out.backward(dout)
                e2.record()
                torch.cuda.synchronize()
                fwd += e0.elapsed_time(e1)
                bwd += e1.elapsed_time(e2)
            fwd /= iterations
            bwd /= iterations
            flops = 4.0 * B * nh * t * t * hs / 2
            print(f"{t:<6} {hs:<5} {nh:<4} {B:<4} {fwd:10.3f} {flops / fwd / 1e9:10.2f} "
                  f"{bwd:10.3f} {2.5 * flops / bwd / 1e9:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
