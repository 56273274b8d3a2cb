"""Reward-based tuning: on-policy policy gradient with verifiable rewards from the worlds.

    nextlab tune rl runs/demo-sft --out runs/demo-rl [--kl 0.05]

The simple form nanochat uses for GSM8K (a group-relative REINFORCE): every step
takes a few training requests, samples several replies to each from the current
model, scores each reply 1 if it is exactly the world's answer followed by end of
turn, else 0, and uses reward minus the group's mean reward as the advantage of
every token of that reply. The loss is -advantage x log p(token), summed over the
batch and divided by the number of sampled tokens (token-level normalization), with
p the distribution the replies were sampled from (at the sampling temperature). With
one gradient step per batch of fresh samples the policy ratio of PPO/GRPO is exactly
1, so there is nothing to clip. `--kl` adds beta x KL(policy || starting model) per
token (the k3 estimator, as GRPO), keeping the distribution near where it started.

Why policy gradient and not DPO: the worlds give an exact, free reward for any
reply the model can produce, so the model can learn from its own samples (on-policy)
rather than from a fixed set of preference pairs; and a group mean is all the
baseline it needs, with no reference model unless the KL term is switched on.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from nextlab.checkpoint import load_checkpoint, save_checkpoint
from nextlab.errors import NextlabError
from nextlab.files import lock_beside, run_lock
from nextlab.sample import sample_batch
from nextlab.tokenizer import chat_prompt_ids, is_chat
from nextlab.tune.data import reward, world_examples
from nextlab.tune.sft import checkpoint_worlds, default_tasks, tuned_info


@dataclass
class RLConfig:
    steps: int = 100
    prompts_per_step: int = 8
    samples_per_prompt: int = 8
    max_new_tokens: int = 32
    temperature: float = 1.0
    lr: float = 5e-4
    kl: float = 0.0  # beta of the KL penalty to the starting model; 0 = off
    tasks: list[str] = field(default_factory=list)  # empty = those the checkpoint's worlds support
    examples_per_task: int = 2000
    seed: int = 0
    threads: int = 0

    def check(self) -> RLConfig:
        for name in ("steps", "prompts_per_step", "samples_per_prompt", "max_new_tokens", "examples_per_task"):
            if getattr(self, name) < 1:
                raise NextlabError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.samples_per_prompt < 2:
            raise NextlabError("samples_per_prompt must be at least 2: the advantage compares replies to the same request")
        if not self.lr > 0 or self.kl < 0 or not self.temperature > 0:
            raise NextlabError("lr and temperature must be positive and kl non-negative")
        return self


def sequence_logprobs(model, sequences: list[tuple[list[int], list[int]]], temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """log p of every reply token given its prompt, (B, T) right-padded, and the mask of real reply tokens.

    Under the distribution the replies were sampled from: softmax(logits / temperature).
    """
    length = max(len(p) + len(r) for p, r in sequences) - 1
    x = torch.zeros((len(sequences), length), dtype=torch.long)
    y = torch.zeros((len(sequences), length), dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, (p, r) in enumerate(sequences):
        seq = p + r
        x[row, : len(seq) - 1] = torch.tensor(seq[:-1])
        y[row, len(p) - 1 : len(seq) - 1] = torch.tensor(r)  # elsewhere 0: prompts hold input-only role markers
        mask[row, len(p) - 1 : len(seq) - 1] = True
    logits, _ = model(x)
    lp = F.log_softmax(logits.float() / temperature, -1).gather(-1, y[..., None])[..., 0]
    return lp, mask


def policy_loss(lp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, ref_lp: torch.Tensor | None = None,
                kl: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """-advantage x log p summed over reply tokens / number of reply tokens, plus kl x KL(policy || reference).

    The KL is GRPO's k3 estimator per sampled token, exp(ref - lp) - (ref - lp) - 1: unbiased, never
    negative, zero where the policy equals the reference. Returns (loss, the KL term alone).
    """
    n_tokens = mask.sum()
    loss = -(advantages[:, None] * lp * mask).sum() / n_tokens
    kl_term = torch.zeros(())
    if ref_lp is not None:
        delta = ref_lp - lp
        kl_term = ((delta.exp() - delta - 1) * mask).sum() / n_tokens
        loss = loss + kl * kl_term
    return loss, kl_term.detach()


def rl(checkpoint: str | Path, out: str | Path, cfg: RLConfig | None = None, log=print) -> Path:
    """Reward-tune an instruction-tuned checkpoint and save the result to `out`.

    Holds a lock beside `out` while it runs (files.run_lock): one writer per output."""
    with run_lock(lock_beside(out), "nextlab tune rl", log):
        return _rl(checkpoint, out, cfg, log)


def _rl(checkpoint: str | Path, out: str | Path, cfg: RLConfig | None = None, log=print) -> Path:
    cfg = cfg.check() if cfg else RLConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    ckpt = load_checkpoint(checkpoint)
    if not is_chat(ckpt.tokenizer):
        raise NextlabError(f"{ckpt.path}: no chat format yet; instruction-tune it first (nextlab tune sft)")
    model, tokenizer = ckpt.model, ckpt.tokenizer
    worlds, world_seed = checkpoint_worlds(ckpt)
    tasks = cfg.tasks or default_tasks(ckpt)
    if not tasks:
        raise NextlabError(f"{ckpt.path}: trained on no world with a verifiable reward")
    # a different item seed from SFT's: reward tuning sees requests SFT did not
    examples = world_examples(tasks, cfg.examples_per_task, "train", cfg.seed + 1000, worlds, world_seed)
    reference = copy.deepcopy(model).eval() if cfg.kl else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.eval()  # sampling and the gradient see the same function (no dropout); gradients still flow
    block = model.cfg.block_size
    log(f"rl: {cfg.steps} steps, {cfg.prompts_per_step} requests x {cfg.samples_per_prompt} samples, lr {cfg.lr}, kl {cfg.kl}")
    t0 = time.perf_counter()
    history = []
    for step in range(cfg.steps):
        batch, rewards = [], []
        for ex in rng.sample(examples, cfg.prompts_per_step):
            prompt = chat_prompt_ids(tokenizer, [{"role": "user", "content": ex.request}])
            room = min(cfg.max_new_tokens, block - len(prompt))
            if room < 1:
                continue
            replies = sample_batch(model, prompt, cfg.samples_per_prompt, room, tokenizer.eot_id, cfg.temperature, gen)
            r = [reward(ex.task, tokenizer.decode([t for t in rep if t != tokenizer.eot_id]), ex.answer,
                        bool(rep) and rep[-1] == tokenizer.eot_id) for rep in replies]
            rewards += r
            mean = sum(r) / len(r)
            # replies no better or worse than their group carry no policy gradient, only (with --kl) the KL term
            batch += [(prompt, rep, ri - mean) for rep, ri in zip(replies, r) if rep and (ri != mean or cfg.kl)]
        kl_value = 0.0
        if batch:
            sequences = [(p, rep) for p, rep, _ in batch]
            lp, mask = sequence_logprobs(model, sequences, cfg.temperature)
            ref_lp = None
            if reference is not None:
                with torch.no_grad():
                    ref_lp, _ = sequence_logprobs(reference, sequences, cfg.temperature)
            loss, kl_term = policy_loss(lp, mask, torch.tensor([a for _, _, a in batch]), ref_lp, cfg.kl)
            kl_value = float(kl_term)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        mean_reward = sum(rewards) / max(1, len(rewards))
        history.append({"step": step + 1, "reward": mean_reward, "trained_replies": len(batch), "kl": kl_value})
        if (step + 1) % max(1, cfg.steps // 10) == 0 or step + 1 == cfg.steps:
            recent = history[-max(1, cfg.steps // 10) :]
            log(f"  step {step + 1:>4}/{cfg.steps}  reward {sum(h['reward'] for h in recent) / len(recent):.3f}"
                f"{f'  kl {kl_value:.4f}' if cfg.kl else ''}  ({(time.perf_counter() - t0) / (step + 1):.2f} s/step)")
    seconds = time.perf_counter() - t0
    entry = {"method": "rl", "from": str(ckpt.path), "steps": cfg.steps, "data": "built-in: " + ", ".join(tasks),
             "config": asdict(cfg), "reward_first": history[0]["reward"], "reward_last": history[-1]["reward"],
             "history": history, "seconds": seconds, "seconds_per_step": seconds / cfg.steps}
    path = save_checkpoint(out, model, tokenizer, tuned_info(ckpt, entry))
    log(f"saved {path} ({seconds:.1f} s, {seconds / cfg.steps:.2f} s/step)")
    return path
