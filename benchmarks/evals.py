"""Evaluation speed: seconds per 1,000 items of each built-in task on the demo model, with its scores.

    python benchmarks/evals.py [--checkpoint runs/demo] [--n 1000] [--shots 0] [--tasks arithmetic,hmm]

Each row is one `evaluate_task` call: building the prompts, batched teacher-forced
scoring of targets (and choices), and greedy generation with the KV cache for
exact match and edit distance. Target: under 30 s per 1,000 items on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import torch

from nextlab.checkpoint import load_checkpoint
from nextlab.evals import evaluate_task, get_task
from nextlab.evals.run import default_tasks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/demo")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--tasks", help="comma-separated (default: the demo model's tasks)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    data = ckpt.config["run"]["data"]
    names = args.tasks.split(",") if args.tasks else default_tasks(data)
    print(f"{ckpt.path}: {args.n} items per task, k = {args.shots}, {args.threads} threads")
    print(f"{'task':<16} {'n':>5} {'seconds':>8} {'s/1000':>7} {'exact':>6} {'mc acc':>6} {'tok acc':>7} {'logp/char':>9}")
    for name in names:
        task = get_task(name, args.n, 1234, data.get("worlds"), data.get("world_seed", 0))
        t0 = time.perf_counter()
        r = evaluate_task(ckpt.model, ckpt.tokenizer, task, args.shots)
        seconds = time.perf_counter() - t0
        mc = f"{r['mc_accuracy']['mean']:.3f}" if "mc_accuracy" in r else "-"
        print(
            f"{name:<16} {r['n']:>5} {seconds:>8.1f} {seconds / r['n'] * 1000:>7.1f} {r['exact_match']['mean']:>6.3f} {mc:>6} "
            f"{r['token_accuracy']['mean']:>7.3f} {r['logprob_per_char']['mean']:>9.3f}"
        )


if __name__ == "__main__":
    main()
