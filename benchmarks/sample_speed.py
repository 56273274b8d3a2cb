"""Generation speed: nextlab's KV cache against recomputing the whole context for every new token, and against
Hugging Face transformers' `generate` on the same weights (exported with `nextlab export`), at batch 1 and 8.

    python benchmarks/sample_speed.py [--checkpoint runs/demo] [--tokens 256] [--repeats 3]
    python benchmarks/sample_speed.py --width 384 --layers 6      # the 6 x 384 shape

Uses the default demo model (a fresh, randomly initialised one unless a
checkpoint is given: speed does not depend on the weights); --width, --layers
and --block size a fresh model otherwise. Every way produces the same greedy
tokens; the run checks that, then times them alternately. transformers
(the `hf` extra) is optional: without it its rows are skipped. Greedy, no
stop at end-of-text, as many new tokens as fit in the context after the prompt.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from nextlab.checkpoint import load_checkpoint, save_checkpoint
from nextlab.hf import export_checkpoint
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


@torch.inference_mode()
def nextlab_batch(model: GPT, ids: list[int], n: int, batch: int) -> list[int]:
    """Greedy decoding of `batch` copies of one prompt together with the KV cache (greedy_continuations' loop,
    without its stop at end-of-text); returns the first row."""
    cache = model.make_cache(batch)
    logits, _ = model(torch.tensor([ids] * batch), cache=cache)
    out = []
    for _ in range(n):
        nxt = logits[:, -1].argmax(-1)
        out.append(int(nxt[0]))
        if len(out) < n:
            logits, _ = model(nxt[:, None], cache=cache)
    return out


def transformers_generate(hf, ids: list[int], n: int, batch: int) -> list[int]:
    x = torch.tensor([ids] * batch)
    with torch.inference_mode():
        out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          eos_token_id=None, pad_token_id=ids[0])
    return out[0, len(ids):].tolist()


def load_transformers(model: GPT, tokenizer, workdir: Path):
    """The same weights as a transformers model, through `nextlab export`; None without transformers."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        print("transformers is not installed (pip install -e '.[hf]'): its rows are skipped")
        return None
    save_checkpoint(workdir / "ckpt", model, tokenizer, {})
    return AutoModelForCausalLM.from_pretrained(export_checkpoint(workdir / "ckpt", workdir / "hf"), dtype=torch.float32).eval()


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
    n = min(args.tokens, model.cfg.block_size - len(prompt_ids))  # within the context, every way sees the same tokens
    recipes = {
        "nextlab, kv cache": (1, lambda: with_cache(model, tokenizer, prompt, n)),
        "nextlab, recompute": (1, lambda: generate_without_cache(model, prompt_ids, n)),
        "nextlab, batch 8": (8, lambda: nextlab_batch(model, prompt_ids, n, 8)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        hf = load_transformers(model, tokenizer, Path(tmp))
    if hf is not None:
        recipes["transformers generate"] = (1, lambda: transformers_generate(hf, prompt_ids, n, 1))
        recipes["transformers, batch 8"] = (8, lambda: transformers_generate(hf, prompt_ids, n, 8))
    reference = recipes["nextlab, kv cache"][1]()
    for name, (_, run) in recipes.items():
        assert run() == reference, f"{name} disagrees with the kv cache"

    times = {name: [] for name in recipes}
    for _ in range(args.repeats):  # alternate, so machine noise hits every recipe alike
        for name, (_, run) in recipes.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)

    print(f"\nmodel: {model.num_params() / 1e6:.2f}M parameters, context {model.cfg.block_size}, {n} new tokens, {args.threads} threads")
    print(f"{'method':<22} {'batch':>5} {'best s':>8} {'tokens/s':>9}")
    for name, ts in times.items():
        batch = recipes[name][0]
        print(f"{name:<22} {batch:>5} {min(ts):>8.3f} {batch * n / min(ts):>9.1f}")
    print(f"\nspeed-up of the KV cache over recomputing: {min(times['nextlab, recompute']) / min(times['nextlab, kv cache']):.2f}x")
    if hf is not None:
        for ours, theirs in (("nextlab, kv cache", "transformers generate"), ("nextlab, batch 8", "transformers, batch 8")):
            print(f"{ours} over {theirs}: {min(times[theirs]) / min(times[ours]):.2f}x the tokens/s")


if __name__ == "__main__":
    main()
