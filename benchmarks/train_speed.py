"""Training speed on character-level Shakespeare: nanoGPT's baby GPT against nextlab's fastest CPU recipe.

    python benchmarks/train_speed.py [--data ../shared/data/tinyshakespeare/input.txt] [--seeds 1 2]

(a) `baseline`: the gpt2 preset with nanoGPT's CPU "baby GPT" recipe (4 layers, 4 heads,
    128 wide, block 64, batch 12, AdamW lr 1e-3, 2000 iterations, cosine to 1e-4, no dropout,
    no biases as in nanoGPT's config).
(b) `nextlab`: the recipe in RECIPES["nextlab"]: a smaller modern model (4 x 96, SwiGLU 192 wide) with Muon
    and a warmup-stable-decay schedule. Smaller than the baseline on purpose: on 2 cores it runs 1.3-1.5x the
    tokens per second, and it reaches the baseline's final loss in about a fifth of the tokens (measured against
    4 x 128 with a 352-wide MLP, and 3-layer and 64-wide variants: those were slower to the same loss).

Both train through `nextlab.train.train` on the same 90/10 split and are evaluated
on the same fixed validation windows of 64 tokens (the baseline's context), so
the losses compare like for like. Times are training seconds (evaluation
excluded). The recipes alternate, seed by seed, so machine noise hits both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from nextlab.config import load_config
from nextlab.train import train

BASELINE = [
    "model.arch=gpt2",
    "model.n_layer=4",
    "model.n_head=4",
    "model.n_embd=128",
    "model.block_size=64",
    "model.dropout=0.0",
    "model.bias=false",
    "train.steps=2000",
    "train.batch_size=12",
    "train.optimizer=adamw",
    "train.lr=1e-3",
    "train.min_lr_ratio=0.1",
    "train.schedule=cosine",
    "train.warmup_steps=100",
    "train.weight_decay=0.1",
    "train.beta2=0.99",
    "train.grad_clip=1.0",
    "train.dtype=float32",
    "train.eval_every=50",
]

RECIPES = {
    "baseline": BASELINE,
    "nextlab": [
        "model.arch=modern",
        "model.n_layer=4",
        "model.n_head=3",
        "model.n_embd=96",
        "model.mlp_hidden=192",
        "model.block_size=64",
        "train.steps=170",
        "train.batch_size=32",
        "train.optimizer=muon",
        "train.muon_lr=0.04",
        "train.lr=6e-3",
        "train.schedule=wsd",
        "train.warmup_steps=30",
        "train.eval_every=5",
    ],
}
EVAL = ["train.eval_context=64", "train.eval_windows=256", "train.progress=false", "data.tokenizer=chars", "data.val_fraction=0.1"]
THRESHOLDS = (2.0, 1.8)


def run(name: str, seed: int, data: str, threads: int, out: Path) -> list[dict]:
    overrides = RECIPES[name] + EVAL + [f"train.seed={seed}", f"train.threads={threads}", f"data.path={json.dumps(data)}"]
    overrides.append(f"out={json.dumps(str(out / f'{name}-{seed}'))}")
    return train(load_config(None, overrides), log=lambda *a: None).metrics


def time_to(metrics: list[dict], loss: float) -> float | None:
    """Training seconds at the first evaluation whose validation loss is at or below `loss`."""
    return next((r["train_s"] for r in metrics if r["val_loss"] <= loss), None)


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare/input.txt"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if not Path(args.data).is_file():
        raise SystemExit(f"error: {args.data}: not found (pass --data path/to/tinyshakespeare/input.txt)")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            order = ("baseline", "nextlab") if seed % 2 else ("nextlab", "baseline")
            results = {name: run(name, seed, args.data, args.threads, Path(tmp)) for name in order}
            final = results["baseline"][-1]["val_loss"]
            for name in ("baseline", "nextlab"):
                m = results[name]
                rows.append(
                    {
                        "recipe": name,
                        "seed": seed,
                        "final_loss": m[-1]["val_loss"],
                        "to_2.0": time_to(m, 2.0),
                        "to_1.8": time_to(m, 1.8),
                        "to_baseline_final": time_to(m, final),
                        "tokens_per_s": m[-1]["tokens"] / m[-1]["train_s"],
                        "train_s": m[-1]["train_s"],
                    }
                )

    print(f"\ncharacter-level Shakespeare, {args.threads} threads; seconds of training to reach a validation loss (nats/token)")
    print(f"{'recipe':<9} {'seed':>4} {'final':>7} {'to 2.0':>7} {'to 1.8':>7} {'to (a) final':>12} {'tokens/s':>9} {'total s':>8}")
    for r in rows:
        print(
            f"{r['recipe']:<9} {r['seed']:>4} {r['final_loss']:>7.4f} {fmt(r['to_2.0']):>7} {fmt(r['to_1.8']):>7} "
            f"{fmt(r['to_baseline_final']):>12} {r['tokens_per_s']:>9,.0f} {r['train_s']:>8.1f}"
        )
    print("\nratio (a)/(b) of training time to reach (a)'s final loss:")
    ratios = []
    for seed in args.seeds:
        a, b = (next(r for r in rows if r["recipe"] == n and r["seed"] == seed) for n in ("baseline", "nextlab"))
        if b["to_baseline_final"] is None:
            print(f"  seed {seed}: (b) never reached (a)'s final loss {a['final_loss']:.4f}")
        else:
            ratios.append(a["to_baseline_final"] / b["to_baseline_final"])
            print(f"  seed {seed}: {ratios[-1]:.2f}x")
    if ratios:
        print(f"  mean {sum(ratios) / len(ratios):.2f}x, min {min(ratios):.2f}x")


if __name__ == "__main__":
    main()
