"""Instruction tuning (SFT): next-token training on conversations, the loss only on the assistant's tokens.

    nextlab tune sft runs/demo --out runs/demo-sft                 # built-in requests from the checkpoint's worlds
    nextlab tune sft runs/demo --data chats.jsonl --out runs/mine  # your own conversations

The objective is unchanged, cross-entropy on the next token; what changes is the
text: a user's request, then the reply. A checkpoint without chat tokens gets them
first (`add_chat_tokens`). The result is an ordinary checkpoint directory.
"""

from __future__ import annotations

import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from nextlab.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from nextlab.config import config_from_dict
from nextlab.data import prepare_corpus, random_offsets, windows
from nextlab.errors import NextlabError
from nextlab.files import lock_beside, run_lock
from nextlab.model import GPT
from nextlab.tokenizer import IGNORE, ChatTokenizer, is_chat, render_chat
from nextlab.tune.chat import add_chat_tokens
from nextlab.tune.data import TASKS, conversation, load_conversations, world_examples


@dataclass
class SFTConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-4  # peak; linear warm-up, then linear decay to zero (nanochat's SFT schedule)
    warmup_steps: int = 10
    weight_decay: float = 0.0
    examples_per_task: int = 2000  # built-in requests per task (ignored with a data file)
    tasks: list[str] = field(default_factory=list)  # built-in tasks; empty = those the checkpoint's worlds support
    # Weight of ordinary next-token loss on the checkpoint's own training text, mixed into every step
    # (pretrain_windows windows of up to 128 tokens): the usual lever on the alignment tax. 0 = off.
    # On the demo model 0.3 cut the tax from +0.063 to +0.0003 nats/token at the same format-following.
    pretrain_mix: float = 0.3
    pretrain_windows: int = 8
    seed: int = 0
    threads: int = 0  # 0 = PyTorch's default

    def check(self) -> SFTConfig:
        for name in ("steps", "batch_size", "examples_per_task"):
            if getattr(self, name) < 1:
                raise NextlabError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise NextlabError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.pretrain_mix < 1:
            raise NextlabError(f"pretrain_mix must be in [0, 1), got {self.pretrain_mix}")
        return self


def checkpoint_worlds(ckpt: Checkpoint) -> tuple[dict, int]:
    """The world mixture and world seed the checkpoint was trained on (empty if none)."""
    data = ckpt.config.get("run", {}).get("data", {})
    return dict(data.get("worlds") or {}), int(data.get("world_seed", 0))


def default_tasks(ckpt: Checkpoint) -> list[str]:
    worlds, _ = checkpoint_worlds(ckpt)
    return [t for t in TASKS if t in worlds]


def builtin_conversations(ckpt: Checkpoint, tasks: list[str], n_per_task: int, seed: int) -> list[list[dict]]:
    worlds, world_seed = checkpoint_worlds(ckpt)
    tasks = tasks or default_tasks(ckpt)
    if not tasks:
        raise NextlabError(f"{ckpt.path}: trained on no world with built-in requests ({', '.join(TASKS)}); pass --data FILE.jsonl")
    missing = [t for t in tasks if t not in worlds]
    if missing:
        raise NextlabError(f"{ckpt.path}: was not trained on the {', '.join(missing)} world(s); its worlds: {', '.join(worlds) or 'none'}")
    return [conversation(e) for e in world_examples(tasks, n_per_task, "train", seed, worlds, world_seed)]


def chat_model(ckpt: Checkpoint, seed: int = 0) -> tuple[GPT, ChatTokenizer]:
    """The checkpoint's model and tokenizer, with chat tokens added if it has none yet."""
    if is_chat(ckpt.tokenizer):
        return ckpt.model, ckpt.tokenizer
    return add_chat_tokens(ckpt.model, ckpt.tokenizer, seed)


def batch_tensors(examples: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and targets (padding is never attended to by real tokens, and never trained)."""
    length = max(len(ids) - 1 for ids, _ in examples)
    x = torch.zeros((len(examples), length), dtype=torch.long)
    y = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    for row, (ids, targets) in enumerate(examples):
        x[row, : len(ids) - 1] = torch.tensor(ids[:-1])
        y[row, : len(targets)] = torch.tensor(targets)
    return x, y


def tuned_info(ckpt: Checkpoint, entry: dict) -> dict:
    """The tuned checkpoint's config.json contents: the base's description plus the tuning history."""
    keep = {k: v for k, v in ckpt.config.items() if k not in ("model", "tokenizer", "nextlab_version", "val_loss", "val_bpb")}
    keep["base_val_loss"] = ckpt.config.get("base_val_loss", ckpt.config.get("val_loss"))
    keep["tuning"] = list(ckpt.config.get("tuning", [])) + [entry]
    return keep


def pretraining_text(ckpt: Checkpoint):
    """The checkpoint's own training corpus, tokenized as for training (usually straight from the cache)."""
    run = ckpt.config.get("run")
    if not run:
        raise NextlabError(f"{ckpt.path}: no run config recorded, so its training text is unknown")
    return prepare_corpus(config_from_dict(run).data, ckpt.tokenizer.base if is_chat(ckpt.tokenizer) else ckpt.tokenizer,
                          log=lambda *a, **k: None)


def linear_schedule(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (steps - step) / max(1, steps - warmup))


def sft(checkpoint: str | Path, out: str | Path, cfg: SFTConfig | None = None, data: str | Path | None = None, log=print) -> Path:
    """Instruction-tune `checkpoint` and save the result to `out` (a checkpoint directory).

    Holds a lock beside `out` while it runs (files.run_lock): one writer per output."""
    with run_lock(lock_beside(out), "nextlab tune sft", log):
        return _sft(checkpoint, out, cfg, data, log)


def _sft(checkpoint: str | Path, out: str | Path, cfg: SFTConfig | None = None, data: str | Path | None = None, log=print) -> Path:
    cfg = (cfg or SFTConfig()).check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    ckpt = load_checkpoint(checkpoint)
    model, tokenizer = chat_model(ckpt, cfg.seed)
    conversations = load_conversations(data) if data else builtin_conversations(ckpt, cfg.tasks, cfg.examples_per_task, cfg.seed)
    block = model.cfg.block_size
    rendered = [render_chat(tokenizer, c) for c in conversations]
    fits = [r for r in rendered if len(r[0]) - 1 <= block]
    if len(fits) < len(rendered):
        log(f"skipping {len(rendered) - len(fits)} of {len(rendered)} conversations longer than the context ({block} tokens)")
    if not fits:
        raise NextlabError(f"no conversation fits in this model's context of {block} tokens")
    rng = random.Random(cfg.seed)
    corpus = None
    if cfg.pretrain_mix:
        try:
            corpus = pretraining_text(ckpt)
        except NextlabError as e:
            warnings.warn(f"{e}; tuning without mixing it in (--pretrain-mix 0 says so explicitly)", stacklevel=2)
    if corpus is not None:
        length = min(block, 128, len(corpus.train) - 1)
        text_gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    log(f"sft: {len(fits):,} conversations, {cfg.steps} steps of {cfg.batch_size}, lr {cfg.lr}"
        + (f", pretraining text mixed in at weight {cfg.pretrain_mix}" if corpus is not None else ""))
    t0 = time.perf_counter()
    losses = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * linear_schedule(step, cfg.steps, cfg.warmup_steps)
        x, y = batch_tensors(rng.sample(fits, min(cfg.batch_size, len(fits))))
        _, loss = model(x, y)
        total = loss
        if corpus is not None:
            xt, yt = windows(corpus.train, random_offsets(corpus.train, cfg.pretrain_windows, length, text_gen), length)
            total = (1 - cfg.pretrain_mix) * loss + cfg.pretrain_mix * model(xt, yt)[1]
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % max(1, cfg.steps // 10) == 0 or step + 1 == cfg.steps:
            recent = losses[-max(1, cfg.steps // 10) :]
            per_step = (time.perf_counter() - t0) / (step + 1)
            log(f"  step {step + 1:>5}/{cfg.steps}  loss {sum(recent) / len(recent):.4f}  ({per_step:.3f} s/step)")
    seconds = time.perf_counter() - t0
    model.eval()
    entry = {"method": "sft", "from": str(ckpt.path), "steps": cfg.steps, "conversations": len(fits),
             "data": str(data) if data else "built-in: " + ", ".join(cfg.tasks or default_tasks(ckpt)),
             "config": asdict(cfg), "final_loss": sum(losses[-10:]) / len(losses[-10:]), "seconds": seconds,
             "seconds_per_step": seconds / cfg.steps}
    path = save_checkpoint(out, model, tokenizer, tuned_info(ckpt, entry))
    log(f"saved {path} ({seconds:.1f} s, {seconds / cfg.steps:.3f} s/step)")
    return path
