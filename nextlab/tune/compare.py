"""Measured reshaping: a base model and its tuned versions, side by side, on held-out requests and on ordinary text.

    nextlab tune compare runs/demo runs/demo-sft runs/demo-rl

On requests phrased with the templates tuning used (new items) and with held-out
templates (new items and phrasings never seen in tuning), for each model:

- exact match: the greedy reply is exactly the answer, and ends its turn;
- format-following: the reply has the expected form (a number, yes/no, ...) and ends;
- p(answer): the probability of the answer's first token at the answer position;
- entropy (bits) of the next-token distribution at the answer position.

The base model is asked in plain text (the request and a newline) and, as a
reference, in its own pretraining format (the world's text, e.g. "37 + 45 = ");
tuned models in the chat format. On ordinary pretraining validation text: each
model's loss (the "alignment tax" is the tuned loss minus the base loss) and the
KL divergence KL(base || tuned) of the next-token distributions, in nats per token.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from nextlab.checkpoint import Checkpoint, load_checkpoint
from nextlab.data import even_offsets, windows
from nextlab.errors import NextlabError
from nextlab.sample import greedy_continuations, last_logprobs
from nextlab.tokenizer import chat_prompt_ids, is_chat
from nextlab.tune.data import Example, well_formed, world_examples
from nextlab.tune.sft import checkpoint_worlds, default_tasks, pretraining_text

METRICS = ("exact", "format", "p_answer", "entropy_bits")


def request_context(tokenizer, example: Example, style: str) -> list[int]:
    """How a model is asked: "plain" text, the world's "native" text, or the "chat" format."""
    if style == "chat":
        return chat_prompt_ids(tokenizer, [{"role": "user", "content": example.request}])
    text = example.request + "\n" if style == "plain" else example.native_prompt
    return [tokenizer.eot_id] + tokenizer.encode(text)


@torch.inference_mode()
def answer_metrics(model, tokenizer, examples: list[Example], style: str, max_new_tokens: int = 32) -> dict:
    """The four answer-position metrics over `examples`, overall and per task, with a few replies to look at."""
    contexts = [request_context(tokenizer, e, style) for e in examples]
    # one token more than allowed: a reply of exactly max_new_tokens that then ends is still a stop
    replies = greedy_continuations(model, tokenizer, contexts, [max_new_tokens + 1] * len(examples))
    lps = last_logprobs(model, contexts)
    per_item = []
    for e, out, lp in zip(examples, replies, lps):
        stopped = len(out) <= max_new_tokens  # greedy_continuations stops before end-of-text
        reply = tokenizer.decode(out[:max_new_tokens])
        first = tokenizer.encode(e.answer)[0]
        entropy = float(-(lp.exp() * lp).nansum()) / math.log(2)
        per_item.append({"task": e.task, "exact": float(stopped and reply == e.answer),
                         "format": float(well_formed(e.task, reply, stopped)), "p_answer": float(lp[first].exp()),
                         "entropy_bits": entropy, "reply": reply, "answer": e.answer,
                         "request": e.request})
    result = {m: sum(r[m] for r in per_item) / len(per_item) for m in METRICS}
    result["per_task"] = {}
    for task in sorted({r["task"] for r in per_item}):
        rows = [r for r in per_item if r["task"] == task]
        result["per_task"][task] = {m: sum(r[m] for r in rows) / len(rows) for m in METRICS}
    result["samples"] = per_item[:6]
    result["n"] = len(per_item)
    return result


@torch.inference_mode()
def ordinary_text(base: Checkpoint, models: dict[str, Checkpoint], n_windows: int = 32) -> dict[str, dict]:
    """Validation loss of each model and its KL from the base, on the base's own validation windows."""
    corpus = pretraining_text(base)
    block = base.model.cfg.block_size
    offsets = even_offsets(corpus.val, n_windows, min(block, len(corpus.val) - 2))
    x, y = windows(corpus.val, offsets, min(block, len(corpus.val) - 2))
    base_lp = F.log_softmax(base.model(x)[0].float(), -1)
    out = {}
    for name, ckpt in models.items():
        lp = base_lp if ckpt is base else F.log_softmax(ckpt.model(x)[0].float(), -1)
        loss = float(F.nll_loss(lp.reshape(-1, lp.size(-1)), y.reshape(-1)))
        kl = float((base_lp.exp() * (base_lp - lp)).sum(-1).mean())
        out[name] = {"val_loss": loss, "kl_from_base": kl}
    return out


def compare(base_path: str | Path, tuned_paths: list[str | Path], n_per_task: int = 50, seed: int = 0,
            max_new_tokens: int = 32, n_windows: int = 32, tasks: list[str] | None = None, log=print) -> dict:
    """Every measurement above, for the base and each tuned checkpoint."""
    base = load_checkpoint(base_path)
    if is_chat(base.tokenizer):
        raise NextlabError(f"{base.path}: the base should be the pretrained model (this one is already chat-tuned)")
    tuned = {str(p): load_checkpoint(p) for p in tuned_paths}
    for name, ckpt in tuned.items():
        if not is_chat(ckpt.tokenizer):
            raise NextlabError(f"{name}: not a chat-tuned checkpoint (nextlab tune sft makes one)")
    worlds, world_seed = checkpoint_worlds(base)
    tasks = tasks or default_tasks(base)
    if not tasks:
        raise NextlabError(f"{base.path}: trained on no world with built-in requests")
    splits = {split: world_examples(tasks, n_per_task, split, 10_000 + seed, worlds, world_seed) for split in ("train", "heldout")}
    rows = []
    runs = [(str(base_path), base, "plain"), (str(base_path), base, "native")] + [(n, c, "chat") for n, c in tuned.items()]
    for name, ckpt, style in runs:
        for split, examples in splits.items():
            log(f"  {name} ({style}), {'seen' if split == 'train' else 'held-out'} phrasings: {len(examples)} requests")
            rows.append({"model": name, "prompting": style, "phrasing": "seen" if split == "train" else "held-out",
                         **answer_metrics(ckpt.model, ckpt.tokenizer, examples, style, max_new_tokens)})
    ordinary = ordinary_text(base, {str(base_path): base, **tuned}, n_windows)
    return {"tasks": tasks, "n_per_task": n_per_task, "rows": rows, "ordinary": ordinary,
            "tuning": {n: c.config.get("tuning", []) for n, c in tuned.items()}}


def compare_table(result: dict) -> str:
    """The comparison as aligned plain text."""
    lines = [f"{'model':<28} {'prompting':<9} {'phrasing':<9} {'exact':>6} {'format':>7} {'p(ans)':>7} {'H bits':>7}"]
    for r in result["rows"]:
        lines.append(f"{Path(r['model']).name[:28]:<28} {r['prompting']:<9} {r['phrasing']:<9} {r['exact']:>6.3f} {r['format']:>7.3f} "
                     f"{r['p_answer']:>7.3f} {r['entropy_bits']:>7.2f}")
    lines.append("")
    lines.append(f"{'model':<28} {'val loss':>9} {'tax':>8} {'KL(base||model)':>16}   (nats/token, ordinary validation text)")
    base_loss = next(iter(result["ordinary"].values()))["val_loss"]
    for name, o in result["ordinary"].items():
        lines.append(f"{Path(name).name[:28]:<28} {o['val_loss']:>9.4f} {o['val_loss'] - base_loss:>+8.4f} {o['kl_from_base']:>16.4f}")
    return "\n".join(lines)


@torch.inference_mode()
def telling_example(ckpt: Checkpoint, examples: list[Example], style: str = "chat") -> Example:
    """The first example whose answer starts with `ckpt`'s most likely token (else the first): one worth a picture."""
    for e in examples:
        lp = last_logprobs(ckpt.model, [request_context(ckpt.tokenizer, e, style)])[0]
        if int(lp.argmax()) == ckpt.tokenizer.encode(e.answer)[0]:
            return e
    return examples[0]


@torch.inference_mode()
def answer_distributions(models: list[tuple[str, Checkpoint, str]], example: Example, k: int = 8) -> list[dict]:
    """Top-k of the next-token distribution at the answer position, for each (label, checkpoint, prompting)."""
    out = []
    for label, ckpt, style in models:
        lp = last_logprobs(ckpt.model, [request_context(ckpt.tokenizer, example, style)])[0]
        p, i = lp.exp().topk(k)
        first = ckpt.tokenizer.encode(example.answer)[0]
        out.append({"label": label, "tokens": [ckpt.tokenizer.token_str(int(j)) for j in i], "probs": p.tolist(),
                    "answer_token": ckpt.tokenizer.token_str(first), "answer_prob": float(lp[first].exp())})
    return out


def plot_answer_distributions(dists: list[dict], example: Example, path: str | Path) -> Path:
    """Bar charts, one per model, of the distribution at the answer position (the right first token in orange)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(dists), figsize=(3.6 * len(dists), 3.2), sharey=True)
    for ax, d in zip(list(axes) if len(dists) > 1 else [axes], dists):
        labels = [repr(t)[1:-1] or "''" for t in d["tokens"]]
        colours = ["#e08a2c" if t == d["answer_token"] else "#8fb0ea" for t in d["tokens"]]
        ax.bar(range(len(labels)), d["probs"], color=colours)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(f"{d['label']}\np({d['answer_token']!r}) = {d['answer_prob']:.3f}", fontsize=9)
        ax.set_ylim(0, 1)
    axes_first = axes[0] if len(dists) > 1 else axes
    axes_first.set_ylabel("p(next token)")
    fig.suptitle(f"{example.request[:90]}  (answer: {example.answer})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
