"""Is train_speed.py's baseline as fast as nanoGPT itself? Its training step against nanoGPT's, side by side.

    python benchmarks/baseline_parity.py --nanogpt path/to/nanoGPT [--rounds 6] [--steps 50] [--threads 2]

`--nanogpt` is a checkout of https://github.com/karpathy/nanoGPT (nothing is downloaded); its
`model.py` builds the "baby GPT" of config/train_shakespeare_char.py at the CPU sizes nanoGPT's README
gives (4 layers, 4 heads, 128 wide, block 64, batch 12, no dropout, no biases) with the AdamW its
`configure_optimizers` makes. nextlab's is the model and optimizers of train_speed.py's baseline.
One step is what both training loops do per iteration: forward, backward, clip the gradient norm to
1.0, read the loss, optimizer step, zero the gradients. The two alternate, `--steps` steps at a time,
for `--rounds` rounds on the same random batch, so a slow spell of the machine hits both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from nextlab.config import load_config
from nextlab.model import GPT
from nextlab.train import build_optimizers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import RECIPES  # noqa: E402

VOCAB, BLOCK, BATCH = 65, 64, 12  # character-level Shakespeare


def nanogpt_model(checkout: Path):
    sys.path.insert(0, str(checkout))
    try:
        from model import GPT as NanoGPT  # nanoGPT's own model.py
        from model import GPTConfig
    finally:
        sys.path.remove(str(checkout))
    model = NanoGPT(GPTConfig(block_size=BLOCK, vocab_size=VOCAB, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False))
    return model, [model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")]


def nextlab_model():
    cfg = load_config(None, RECIPES["baseline"] + [f"model.vocab_size={VOCAB}"])
    model = GPT(cfg.model.resolved())
    return model, build_optimizers(model, cfg.train)


def stepper(model, optimizers, x, y):
    def step():
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        loss.item()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt", required=True, help="a checkout of karpathy/nanoGPT")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    checkout = Path(args.nanogpt)
    if not (checkout / "model.py").is_file():
        raise SystemExit(f"error: {checkout}: no model.py here (pass --nanogpt path/to/a/nanoGPT/checkout)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.randint(0, VOCAB, (BATCH, BLOCK)), torch.randint(0, VOCAB, (BATCH, BLOCK))
    steps = {"nanoGPT": stepper(*nanogpt_model(checkout), x, y), "nextlab baseline": stepper(*nextlab_model(), x, y)}
    for step in steps.values():  # warm-up
        for _ in range(10):
            step()
    ms: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            ms[name].append((time.perf_counter() - t0) / args.steps * 1e3)

    print(f"\nbaby GPT training step, batch {BATCH} x {BLOCK}, {args.threads} threads, {args.rounds} rounds of {args.steps} steps")
    print(f"{'loop':<17} {'median ms':>9} {'tokens/s':>9}  rounds (ms/step)")
    for name, v in ms.items():
        med = statistics.median(v)
        print(f"{name:<17} {med:>9.1f} {BATCH * BLOCK / med * 1e3:>9,.0f}  {' '.join(f'{t:.1f}' for t in v)}")
    ratio = statistics.median(ms["nanoGPT"]) / statistics.median(ms["nextlab baseline"])
    print(f"\nnextlab's baseline runs at {ratio:.2f}x nanoGPT's speed (above 1: faster)")


if __name__ == "__main__":
    main()
