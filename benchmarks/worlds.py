"""Worlds: how fast each generates and scores documents, and how close the demo model gets to each floor.

    python benchmarks/worlds.py [--seconds 2] [--mixture-mb 10] [--checkpoint runs/demo]

Table 1: per world, documents and kilobytes per second for `sample` and for the
exact `log_prob`, on one process.
Table 2: wall seconds to generate `--mixture-mb` MB of text from the mixture of all worlds.
Table 3 (if the checkpoint exists, e.g. after `make demo`): per world, the model's bits per byte
on whole held-out documents, the entropy floor, and the excess.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from nextlab.checkpoint import load_checkpoint
from nextlab.config import config_from_dict
from nextlab.data import WORLD_FLOOR_DOCS, prepare_corpus
from nextlab.train import evaluate_worlds, pick_dtype, world_eval_docs
from nextlab.worlds import ALL_WORLDS, WORLDS, make_mixture, make_world


def throughput(name: str, seconds: float) -> dict:
    world = make_world(name)
    rng = random.Random(0)
    texts, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        texts.append(world.sample(rng).text)
    sample_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for text in texts:
        world.log_prob(text)
    score_s = time.perf_counter() - t0
    kb = sum(len(t.encode()) for t in texts) / 1000
    return {
        "world": name,
        "docs": len(texts),
        "bytes_per_doc": kb * 1000 / len(texts),
        "sample_docs_s": len(texts) / sample_s,
        "sample_kb_s": kb / sample_s,
        "score_docs_s": len(texts) / score_s,
        "score_kb_s": kb / score_s,
    }


def mixture_seconds(megabytes: float) -> tuple[float, int]:
    mixture = make_mixture(ALL_WORLDS)
    rng = random.Random(0)
    n_bytes, n_docs, t0 = 0, 0, time.perf_counter()
    while n_bytes < megabytes * 1e6:
        n_bytes += len(mixture.sample(rng).text.encode()) + 1
        n_docs += 1
    return time.perf_counter() - t0, n_docs


def demo_excess(checkpoint: str) -> tuple[dict, int]:
    ckpt = load_checkpoint(checkpoint)
    run = config_from_dict(ckpt.config["run"])
    corpus = prepare_corpus(run.data, ckpt.tokenizer, log=lambda *a: None)
    docs = world_eval_docs(corpus, ckpt.tokenizer, WORLD_FLOOR_DOCS)
    dtype = pick_dtype(run.train.dtype, torch.device("cpu"), ckpt.model.cfg)
    return evaluate_worlds(ckpt.model, ckpt.tokenizer.eot_id, docs, torch.device("cpu"), dtype), len(docs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="sampling time per world for table 1")
    p.add_argument("--mixture-mb", type=float, default=10.0)
    p.add_argument("--checkpoint", default="runs/demo", help="the demo model (skipped if absent)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    header = ("world", "docs", "bytes/doc", "sample docs/s", "sample KB/s", "log_prob docs/s", "log_prob KB/s")
    print(f"{header[0]:<12} " + " ".join(f"{h:>{max(7, len(h))}}" for h in header[1:]))
    for name in WORLDS:
        r = throughput(name, args.seconds)
        print(
            f"{name:<12} {r['docs']:>7} {r['bytes_per_doc']:>9.1f} {r['sample_docs_s']:>13,.0f} {r['sample_kb_s']:>11,.0f} "
            f"{r['score_docs_s']:>15,.0f} {r['score_kb_s']:>13,.0f}"
        )
    seconds, n_docs = mixture_seconds(args.mixture_mb)
    print(f"\nmixture of all worlds: {args.mixture_mb:g} MB ({n_docs:,} documents) generated in {seconds:.1f} s")

    if Path(args.checkpoint).exists():
        excess, n = demo_excess(args.checkpoint)
        print(f"\n{args.checkpoint}: whole held-out documents (up to {WORLD_FLOOR_DOCS} per world, {n} in all), bits per byte")
        print(f"{'world':<12} {'model':>7} {'floor':>7} {'excess':>7}")
        for name, w in excess.items():
            print(f"{name:<12} {w['bpb']:>7.3f} {w['floor_bpb']:>7.3f} {w['excess_bpb']:>7.3f}")
    else:
        print(f"\n{args.checkpoint} not found: run `make demo` first for the excess-over-floor table")


if __name__ == "__main__":
    main()
