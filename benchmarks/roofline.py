"""The roofline: this machine's measured peaks, and each hot loop's FLOP/s and bytes/s against the roof that applies.

    python benchmarks/roofline.py [--threads 2] [--repeats 5]

Roofs, measured here: matmul FLOP/s in float32 and bfloat16, at a large square (the largest side up to 2048 whose
matmul takes under 50 ms: an emulated dtype stops small) and, where bf16 is native, at the shapes the
models multiply (a training step's tokens x width x 4 width, a batch-1 decoding step's 1 x width x width);
memory bandwidth as a read (a sum) and a copy, at each loop's own working set (a set that fits in cache reads
faster than one that streams from memory).

Hot loops, each timed alone (best of --repeats, after a warm-up), with its FLOPs and bytes counted from the
shapes: a training step (the demo model and 6 x 384, in the dtype training picks, the project's optimizers);
batch-1 sampling (one decoding step with the context half full); the compressor's static step (4 x 192; B = streams)
in the model kernel (the model's forward, its cache five eighths full on average; 64 streams, the old default) and
in the ring kernel (the default: the last block_size / 2 keys) at 64 and at 512 streams (static mode's default),
in float32 and, where the CPU has bf16 dot products (the coder's default there), in bfloat16 at 512 streams,
all with torch.bmm's attention (what a process with more than one thread runs), and as one of static mode's
one-thread workers runs it: 256 streams (its share of 512 on 2 threads), attention.py's loops, against one thread's roofs;
and its adaptive update (per 64 steps of 64 streams); a batched serving step
(32 rows of the demo model). Bytes count the weights read once per step (and, for training, the gradients and
optimizer state) plus the keys and values a step reads; activations are left out, so bytes are a floor.

For each loop: achieved FLOP/s and bytes/s, the arithmetic intensity (FLOPs per byte), the roof that applies
(the lower of the matmul peak and intensity x bandwidth: "compute" or "memory") and the fraction reached.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from nextlab.compress.coder import default_window, native_bf16
from nextlab.compress.ring import RingStep
from nextlab.model import GPT, ModelConfig
from nextlab.report import demo_config
from nextlab.roofline import (
    best_seconds,
    copy_bandwidth,
    flops_per_token,
    matmul_flops,
    multiplying_weights,
    peak_matmul,
    read_bandwidth,
)
from nextlab.train import autocast, build_optimizers, pick_dtype

CPU = torch.device("cpu")


@dataclass
class Loop:
    name: str
    seconds: float  # one step
    flops: float  # per step
    bytes: float  # per step (a floor: weights, gradients, optimizer state, keys and values)
    dtype: torch.dtype  # of the matmuls
    threads: int = 0  # that it ran with (0 = the --threads of the run), and whose roofs apply


def decode_flops(model: GPT, rows: int, context: int) -> float:
    """One token per row: 2 per weight, plus scores and weighted sums over `context` keys (4 x layers x width)."""
    return rows * (2 * multiplying_weights(model) + 4 * model.cfg.n_layer * model.cfg.n_embd * context)


def kv_bytes(model: GPT, rows: int, context: int) -> float:
    cfg = model.cfg
    return 2 * rows * cfg.n_layer * cfg.n_kv_head * cfg.head_dim * context * 4


def training_step(name: str, cfg: ModelConfig, batch: int, repeats: int) -> Loop:
    from nextlab.config import TrainConfig

    torch.manual_seed(0)
    model = GPT(cfg)
    dtype = pick_dtype("auto", CPU, cfg)
    model.set_attention(dtype == torch.bfloat16)  # as training does on the CPU under bf16
    optimizers = build_optimizers(model, TrainConfig())
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size))

    def step():
        with autocast(CPU, dtype):
            _, loss = model(x, x)
        loss.backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)

    seconds = best_seconds(step, CPU, repeats)
    tokens = batch * cfg.block_size
    params = model.num_params()
    # weights read forward and backward, gradients written and read, optimizer state read and written (2 tensors)
    return Loop(name, seconds, flops_per_token(model, cfg.block_size) * tokens, params * 4 * (2 + 2 + 4 + 2), dtype)


@torch.inference_mode()
def decoding_step(name: str, model: GPT, rows: int, context: int, repeats: int) -> Loop:
    """One token for each of `rows` sequences whose caches hold `context` tokens."""
    cache = model.make_cache(rows)
    model(torch.randint(0, model.cfg.vocab_size, (rows, context)), cache=cache)
    token = torch.zeros(rows, 1, dtype=torch.long)

    def step():
        cache.length = context
        model(token, cache=cache)

    seconds = best_seconds(step, CPU, repeats)
    return Loop(name, seconds, decode_flops(model, rows, context), multiplying_weights(model) * 4 + kv_bytes(model, rows, context),
                torch.float32)


@torch.inference_mode()
def ring_step(model: GPT, rows: int, window: int, repeats: int, dtype: torch.dtype = torch.float32,
              attention: str = "torch", threads: int = 0) -> Loop:
    """The compressor's static step: one token for each of `rows` streams through RingStep, its ring full."""
    ring = RingStep(model, rows, window, dtype, attention)
    tokens = torch.zeros(rows, dtype=torch.long)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        for _ in range(window):
            ring(tokens)
        seconds = best_seconds(lambda: ring(tokens), CPU, repeats)
    finally:
        torch.set_num_threads(before)
    size = dtype.itemsize  # weights and keys in the ring's dtype (kv_bytes counts fp32)
    name = f"compressor static, ring {window} {'bf16' if dtype == torch.bfloat16 else 'fp32'}, {attention}"
    return Loop(f"{name}, B{rows}" + (f", {threads} thread" if threads else ""), seconds, decode_flops(model, rows, window),
                multiplying_weights(model) * size + kv_bytes(model, rows, window) * size // 4, dtype, threads)


def adaptive_update(model: GPT, rows: int, window: int, repeats: int) -> Loop:
    """The adaptive coder's Adam step on the newest `window` tokens of `rows` streams (once per 64 steps)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=False)
    x = torch.randint(0, model.cfg.vocab_size, (rows, window))

    def step():
        _, loss = model(x, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = best_seconds(step, CPU, repeats)
    return Loop("compressor adaptive update", seconds, flops_per_token(model, window) * rows * window,
                model.num_params() * 4 * 10, torch.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    demo = demo_config().model
    demo.vocab_size = 257
    demo = demo.resolved()
    wide = ModelConfig(vocab_size=257, n_layer=6, n_head=6, n_embd=384, block_size=256).resolved()
    coder = ModelConfig(vocab_size=257, n_layer=4, n_head=4, n_embd=192, block_size=256).resolved()
    torch.manual_seed(0)
    demo_model, wide_model, coder_model = GPT(demo).eval(), GPT(wide).eval(), GPT(coder).eval()

    loops = [
        training_step("train step, demo 4 x 128", demo, 16, args.repeats),
        training_step("train step, 6 x 384", wide, 16, args.repeats),
        decoding_step("sampling, batch 1, demo", demo_model, 1, demo.block_size // 2, args.repeats * 20),
        decoding_step("sampling, batch 1, 6 x 384", wide_model, 1, wide.block_size // 2, args.repeats * 20),
        decoding_step("compressor static, model kernel, B64", coder_model, 64, 5 * coder.block_size // 8, args.repeats * 4),
        ring_step(coder_model, 64, default_window(coder_model, "static"), args.repeats * 4),
        ring_step(coder_model, 512, default_window(coder_model, "static"), args.repeats * 2),
        *([ring_step(coder_model, 512, default_window(coder_model, "static"), args.repeats * 2, torch.bfloat16)]
          if native_bf16() else []),
        ring_step(coder_model, 256, default_window(coder_model, "static"), args.repeats * 2,
                  torch.bfloat16 if native_bf16() else torch.float32, "numba", threads=1),
        adaptive_update(coder_model.train(), 64, 64, args.repeats),
        decoding_step("serving step, 32 rows, demo", demo_model, 32, 48, args.repeats * 20),
    ]

    print(f"\nroofs, {args.threads} thread(s), best of {args.repeats}\n")
    peaks, sides = {}, {}
    for dt in (torch.float32, torch.bfloat16):
        peaks[dt], sides[dt] = peak_matmul(dt, repeats=args.repeats)
    emulated = peaks[torch.bfloat16] < peaks[torch.float32]  # no native bf16 here: model shapes would take minutes
    print(f"{'matmul':<34} {'float32 GFLOP/s':>16} {'bfloat16 GFLOP/s':>17}")
    print(f"{'peak: square, side ' + '/'.join(str(sides[d]) for d in peaks):<34} "
          f"{peaks[torch.float32] / 1e9:>16.1f} {peaks[torch.bfloat16] / 1e9:>17.1f}")
    shapes = [("train: 4096 x 128 x 512", 4096, 128, 512), ("train: 4096 x 384 x 1536", 4096, 384, 1536),
              ("decode: 1 x 384 x 384", 1, 384, 384), ("decode: 64 x 192 x 768", 64, 192, 768)]
    for label, m, k, n in shapes:
        f32 = matmul_flops(m, k, n, torch.float32, repeats=args.repeats)
        bf16 = "emulated" if emulated else f"{matmul_flops(m, k, n, torch.bfloat16, repeats=args.repeats) / 1e9:.1f}"
        print(f"{label:<34} {f32 / 1e9:>16.1f} {bf16:>17}")
    peaks_at = {args.threads: peaks}
    for threads in sorted({loop.threads for loop in loops} - {0, args.threads}):
        torch.set_num_threads(threads)
        peaks_at[threads] = {dt: peak_matmul(dt, repeats=args.repeats)[0] for dt in peaks}
        print(f"{f'peak: square, {threads} thread(s)':<34} {peaks_at[threads][torch.float32] / 1e9:>16.1f} "
              f"{peaks_at[threads][torch.bfloat16] / 1e9:>17.1f}")
    torch.set_num_threads(args.threads)
    print(f"\n{'memory':<34} {'read GB/s':>16} {'copy GB/s':>17}")
    bandwidth = {}
    for mb in (4, 16, 64, 400):
        bandwidth[mb] = read_bandwidth(mb, repeats=args.repeats)
        print(f"{f'{mb} MB':<34} {bandwidth[mb] / 1e9:>16.1f} {copy_bandwidth(mb, repeats=args.repeats) / 1e9:>17.1f}")

    print(f"\n{'hot loop':<52} {'ms/step':>8} {'GFLOP/s':>8} {'GB/s':>6} {'FLOP/B':>7} {'bound':>8} {'roof':>8} {'of roof':>8}")
    for loop in loops:
        threads = loop.threads or args.threads
        torch.set_num_threads(threads)  # the roofs of the threads it ran with
        megabytes = loop.bytes / 2**20
        bw = read_bandwidth(max(1.0, megabytes), repeats=args.repeats)  # at this loop's own working set
        torch.set_num_threads(args.threads)
        flops, nbytes = loop.flops / loop.seconds, loop.bytes / loop.seconds
        intensity = loop.flops / loop.bytes
        compute, memory = peaks_at[threads][loop.dtype], intensity * bw
        bound, roof = ("compute", compute) if compute <= memory else ("memory", memory)
        print(f"{loop.name:<52} {loop.seconds * 1e3:>8.2f} {flops / 1e9:>8.1f} {nbytes / 1e9:>6.1f} {intensity:>7.1f} "
              f"{bound:>8} {roof / 1e9:>8.1f} {flops / roof:>8.1%}")
    print("\nroof: the lower of the matmul peak (the square, the loop's dtype) and intensity x read bandwidth at the "
          "loop's working set; 'of roof': achieved FLOP/s over it. Bytes are a floor (no activations).")


if __name__ == "__main__":
    main()
