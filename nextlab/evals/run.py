"""Run tasks on a model: few-shot prompts, both families of metrics, standard errors.

Discontinuous metrics: exact match of the greedy continuation, multiple-choice accuracy.
Continuous metrics: log-probability of the target (total and per character), per-token
accuracy of the target under teacher forcing, normalized edit distance between the greedy
output and the target, Brier score for multiple choice. Every metric comes with its
standard error (standard deviation of the per-item values / sqrt(n)) and n.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from nextlab.evals.tasks import Item, Task
from nextlab.model import GPT
from nextlab.sample import greedy_continuations, score_continuations
from nextlab.tokenizer import Tokenizer

DISCONTINUOUS = ("exact_match", "mc_accuracy")
CONTINUOUS = ("target_logprob", "logprob_per_char", "token_accuracy", "edit_distance", "brier")


@dataclass
class Prompted:
    context: list[int]  # token ids the target follows
    target: list[int]
    shots: int  # shots actually used (fewer than asked when they did not fit)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def mean_and_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def build_context(task: Task, item: Item, k: int, tokenizer: Tokenizer, block_size: int, rng: random.Random) -> Prompted:
    """EOT, then k solved examples, then the prompt; shots are dropped, last first, until it fits the context.

    Shots come from the item's own pool (in priority order), else the task's pool, else the task's other items.
    """
    if item.shots is not None:  # an item-specific pool in priority order (in-context tasks: the query's pair first)
        shots = item.shots[:k]
    else:
        pool = task.shots or [other for other in task.items if other is not item]
        shots = rng.sample(pool, min(k, len(pool))) if k else []
    arrangement = rng.random()  # seeds the order of in-context shots, drawn once so dropping one does not reshuffle
    target = tokenizer.encode(item.target)
    eot = tokenizer.eot_id
    while True:
        shown = shots[:]
        if item.shots is not None:  # the query's pair must not always sit in the same place
            random.Random(arrangement).shuffle(shown)
        if task.separator is None:  # each shot is its own document
            ids = [eot]
            for s in shown:
                ids += tokenizer.encode(s.prompt + s.target) + [eot]
            ids += tokenizer.encode(item.prompt)
        else:
            text = "".join(s.prompt + s.target + task.separator for s in shown) + item.prompt
            ids = [eot] + tokenizer.encode(text)
        if len(ids) + len(target) + 1 <= block_size or not shots:
            break
        shots = shots[:-1]
    return Prompted(ids, target, len(shots))


@torch.inference_mode()
def evaluate_task(
    model: GPT, tokenizer: Tokenizer, task: Task, shots: int = 0, seed: int = 0, batch_size: int = 32, greedy: bool = True
) -> dict:
    """Both metric families for one task at k = `shots`: {metric: {"mean", "se"}}, n, shots used, and per item the
    target's log-probability (and each choice's) under "items"."""
    rng = random.Random(seed)
    block = model.cfg.block_size
    prompted = [build_context(task, item, shots, tokenizer, block, rng) for item in task.items]
    scores = score_continuations(model, [p.context for p in prompted], [p.target for p in prompted], batch_size)
    per_item: dict[str, list[float]] = {m: [] for m in DISCONTINUOUS + CONTINUOUS}
    for item, s in zip(task.items, scores):
        lp = float(s.logprobs.sum())
        per_item["target_logprob"].append(lp)
        per_item["logprob_per_char"].append(lp / max(1, len(item.target)))
        per_item["token_accuracy"].append(float(s.greedy.float().mean()) if len(s.greedy) else 0.0)
    if greedy:  # one token past a document-ending answer: a greedy answer must also stop there
        max_new = [len(p.target) + (1 if item.ends_document else 0) for item, p in zip(task.items, prompted)]
        outputs = greedy_continuations(model, tokenizer, [p.context for p in prompted], max_new)
        for item, ids in zip(task.items, outputs):
            out = tokenizer.decode(ids)
            per_item["exact_match"].append(float(out == item.target))
            per_item["edit_distance"].append(edit_distance(out, item.target) / max(1, len(out), len(item.target)))
    mc = [(i, item) for i, item in enumerate(task.items) if item.choices]
    choice_logprobs: dict[int, list[float]] = {}
    if mc:
        contexts, continuations = [], []
        for i, item in mc:
            for choice in item.choices:
                contexts.append(prompted[i].context)
                continuations.append(tokenizer.encode(choice))
        choice_scores = score_continuations(model, contexts, continuations, batch_size)
        at = 0
        for i, item in mc:
            lps = torch.tensor([float(choice_scores[at + j].logprobs.sum()) for j in range(len(item.choices))])
            choice_logprobs[i] = lps.tolist()
            at += len(item.choices)
            probs = torch.softmax(lps, 0)
            onehot = torch.zeros_like(probs)
            onehot[item.answer] = 1.0
            per_item["mc_accuracy"].append(float(int(lps.argmax()) == item.answer))
            per_item["brier"].append(float(((probs - onehot) ** 2).sum()))
    result = {"task": task.name, "shots": shots, "n": len(task.items)}
    result["shots_used"] = sum(p.shots for p in prompted) / max(1, len(prompted))
    # per item, for comparing with other harnesses item by item: the target's log-probability (and each choice's)
    result["items"] = [{"target_logprob": lp, **({"choice_logprobs": choice_logprobs[i]} if i in choice_logprobs else {})}
                       for i, lp in enumerate(per_item["target_logprob"])]
    for metric, values in per_item.items():
        if values:
            mean, se = mean_and_se(values)
            result[metric] = {"mean": mean, "se": se}
    return result


def means(result: dict) -> dict:
    """A result row's metrics as {metric: mean} (evaluate_task gives {metric: {"mean", "se"}})."""
    return {metric: v["mean"] for metric, v in result.items() if isinstance(v, dict)}


def default_tasks(run_data: dict) -> list[str]:
    """The built-in tasks that fit a model: those of the worlds it trained on, their OOD splits, and icl_mapping."""
    from nextlab.evals.tasks import BUILTIN_TASKS

    worlds = set((run_data or {}).get("worlds") or {})
    return [t for t in BUILTIN_TASKS if t.removesuffix("_ood") in worlds] + ["icl_mapping"]


def evaluate(model: GPT, tokenizer: Tokenizer, tasks: list[Task], shots: list[int], seed: int = 0, progress=None) -> list[dict]:
    """Every task at every k; a list of result rows (see evaluate_task)."""
    rows = []
    for task in tasks:
        for k in shots:
            rows.append(evaluate_task(model, tokenizer, task, k, seed))
            if progress is not None:
                progress()
    return rows
