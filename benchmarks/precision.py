"""Precision and attention on this CPU: a training step (forward + backward) under float32 and bf16 autocast,
with SDPA and with the explicit matmul-softmax attention, across model widths.

    python benchmarks/precision.py [--widths 64 128 256 384] [--threads 2]

This is what `train.dtype = "auto"` and `model.attention = "auto"` rest on.
The variants alternate within each round, so machine noise hits all of them.
"""

from __future__ import annotations

import argparse
import time

import torch

from nextlab.model import GPT, ModelConfig
from nextlab.train import autocast, cpu_has_fast_bf16

VARIANTS = [("float32", "sdpa"), ("float32", "manual"), ("bfloat16", "sdpa"), ("bfloat16", "manual")]


def step_seconds(model: GPT, x, y, dtype: torch.dtype, manual: bool, repeats: int) -> float:
    model.set_attention(manual)
    t0 = time.perf_counter()
    for _ in range(repeats):
        with autocast(torch.device("cpu"), dtype):
            _, loss = model(x, y)
        loss.backward()
        model.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 384])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"native bf16 on this CPU: {cpu_has_fast_bf16()}; {args.layers} layers, block {args.block}, batch {args.batch}")
    print(f"{'width':>5} " + " ".join(f"{d[:4]}+{a:<6}" for d, a in VARIANTS) + "  (tokens/s)   bf16+manual / fp32+sdpa")
    for width in args.widths:
        cfg = ModelConfig(vocab_size=257, block_size=args.block, n_embd=width, n_head=max(1, width // 64), n_layer=args.layers)
        torch.manual_seed(0)
        model = GPT(cfg)
        x = torch.randint(0, 257, (args.batch, args.block))
        y = torch.randint(0, 257, (args.batch, args.block))
        best = {v: float("inf") for v in VARIANTS}
        for v in VARIANTS:  # warm-up
            step_seconds(model, x, y, getattr(torch, v[0]), v[1] == "manual", 1)
        for _ in range(args.rounds):
            for v in VARIANTS:
                best[v] = min(best[v], step_seconds(model, x, y, getattr(torch, v[0]), v[1] == "manual", 2))
        tokens = args.batch * args.block
        cells = " ".join(f"{tokens / best[v]:>11,.0f}" for v in VARIANTS)
        print(f"{width:>5} {cells}  {best[VARIANTS[0]] / best[VARIANTS[3]]:>10.2f}x")


if __name__ == "__main__":
    main()
