"""Generation speed: the KV cache against recomputing the whole context for every new token.

    python benchmarks/sample_speed.py [--checkpoint runs/demo] [--tokens 256] [--repeats 3]

Uses the default demo model (a fresh, randomly initialised one unless a
checkpoint is given: speed does not depend on the weights); --width, --layers
and --block size a fresh model otherwise. Both ways produce
the same greedy tokens; the run checks that, then times them alternately.
"""

from __future__ import annotations

import argparse
import time

import torch

from nextlab.checkpoint import load_checkpoint
from nextlab.model import GPT
from nextlab.report import demo_config
from nextlab.sample import generate_stream
from nextlab.tokenizer import ByteTokenizer


@torch.inference_mode()
def generate_without_cache(model: GPT, ids: list[int], n: int) -> list[int]:
    """Greedy decoding that runs the full context (up to block_size) through the model for each token."""
    ids = list(ids)
    out = []
    for _ in range(n):
        logits, _ = model(torch.tensor([ids[-model.cfg.block_size :]]))
        token = int(logits[0, -1].argmax())
        out.append(token)
        ids.append(token)
    return out


def with_cache(model, tokenizer, prompt, n) -> list[int]:
    stream = generate_stream(model, tokenizer, prompt, max_new_tokens=n, temperature=0, stop_at_eot=False)
    return [t.id for t in stream if t.id >= 0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="checkpoint or run directory (default: a fresh demo-sized model)")
    p.add_argument("--tokens", type=int, default=256, help="new tokens per generation")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--width", type=int, help="fresh model of this width instead of the demo's")
    p.add_argument("--layers", type=int, help="fresh model with this many layers")
    p.add_argument("--block", type=int, help="fresh model with this context length")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        model, tokenizer = ckpt.model, ckpt.tokenizer
    else:
        tokenizer = ByteTokenizer()
        cfg = demo_config().model
        cfg.vocab_size = tokenizer.vocab_size
        if args.width:
            cfg.n_embd, cfg.n_head = args.width, max(1, args.width // 64)
        cfg.n_layer = args.layers or cfg.n_layer
        cfg.block_size = args.block or cfg.block_size
        torch.manual_seed(0)
        model = GPT(cfg).eval()
        with torch.no_grad():  # the modern init starts some weights at zero; make the logits non-trivial
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.02)
    prompt = "def main():\n    "
    prompt_ids = [tokenizer.eot_id] + tokenizer.encode(prompt)
    n = args.tokens
    # Until the context fills, both see exactly the same tokens (after that each slides its window its own way).
    same = model.cfg.block_size - len(prompt_ids)
    assert with_cache(model, tokenizer, prompt, n)[:same] == generate_without_cache(model, prompt_ids, n)[:same], "they disagree"

    times = {"kv cache": [], "recompute": []}
    for _ in range(args.repeats):  # alternate, so machine noise hits both
        t0 = time.perf_counter()
        with_cache(model, tokenizer, prompt, n)
        times["kv cache"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        generate_without_cache(model, prompt_ids, n)
        times["recompute"].append(time.perf_counter() - t0)

    print(f"\nmodel: {model.num_params() / 1e6:.2f}M parameters, context {model.cfg.block_size}, {n} new tokens, {args.threads} threads")
    print(f"{'method':<10} {'best s':>8} {'tokens/s':>9}")
    for name, ts in times.items():
        print(f"{name:<10} {min(ts):>8.3f} {n / min(ts):>9.1f}")
    print(f"\nspeed-up of the KV cache: {min(times['recompute']) / min(times['kv cache']):.2f}x")


if __name__ == "__main__":
    main()
