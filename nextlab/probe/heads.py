"""Induction heads and in-context learning (Olsson et al., 2022).

An induction head completes patterns: at a token it has seen before, it attends to
the token that followed the earlier occurrence. On a sequence of random tokens
(drawn from those seen in the validation text) repeated twice, `induction_score` is each head's mean attention from a token in the
second copy to the token after its first occurrence (1/position for a uniform head,
near 1 for a perfect one).

The in-context learning score is the loss late in the context minus the loss
early in it (Olsson et al. use token 500 minus token 50 of 512; here the same
fractions of the model's context): negative when later tokens are predicted
better because the model uses what came before. Over a run's checkpoints both
curves show the phase change.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nextlab.model import GPT


def repeated_sequences(pool: torch.Tensor, length: int, batch: int, seed: int, eot_id: int) -> torch.Tensor:
    """batch rows of end-of-text + R + R, R of `length` tokens drawn uniformly from `pool`."""
    gen = torch.Generator().manual_seed(seed)
    r = pool[torch.randint(0, len(pool), (batch, length), generator=gen)]
    return torch.cat([torch.full((batch, 1), eot_id), r, r], dim=1)


def induction_score_from_pattern(pattern: torch.Tensor, length: int) -> np.ndarray:
    """Per head: mean attention from position 1+length+j to position 2+j (j < length-1), batch-averaged.

    pattern: (batch, heads, T, T) attention weights over `exclude + R + R` sequences.
    """
    j = torch.arange(length - 1)
    queries, keys = 1 + length + j, 2 + j
    return pattern[:, :, queries, keys].mean(dim=(0, 2)).numpy()


@torch.inference_mode()
def induction_scores(model: GPT, eot_id: int, batch: int = 16, seed: int = 0, pool: torch.Tensor | None = None) -> np.ndarray:
    """(n_layer, n_head) induction scores on repeated random sequences filling the context.

    `pool`: the token ids to draw from (default: every id but end-of-text). Pass the ids the model
    saw in training: for a byte-level model, random bytes are mostly control characters it never saw.
    """
    if pool is None:
        pool = torch.tensor([i for i in range(model.cfg.vocab_size) if i != eot_id])
    length = (model.cfg.block_size - 1) // 2
    x = repeated_sequences(pool, length, batch, seed, eot_id)
    hooks = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layer)]
    with model.capture(hooks) as acts:
        model(x)
    return np.stack([induction_score_from_pattern(acts[h][0], length) for h in hooks])


@torch.inference_mode()
def in_context_learning_score(model: GPT, windows: torch.Tensor) -> dict:
    """Loss at 90% of the context minus loss at 10% (each a 5%-wide band), over windows (B, T+1) of text."""
    logits, _ = model(windows[:, :-1])
    losses = F.cross_entropy(logits.float().transpose(1, 2), windows[:, 1:], reduction="none").mean(0)  # (T,)
    T = losses.numel()
    band = max(1, T // 20)
    early = float(losses[max(0, T // 10 - band // 2) : T // 10 - band // 2 + band].mean())
    late = float(losses[9 * T // 10 - band // 2 : 9 * T // 10 - band // 2 + band].mean())
    return {"early_loss": early, "late_loss": late, "icl_score": late - early, "loss_by_position": losses.tolist()}


def validation_windows(config: dict, tokenizer, block_size: int, n: int = 32) -> torch.Tensor:
    """n evenly spread windows of block_size + 1 tokens from the checkpoint's validation split."""
    from nextlab.config import config_from_dict
    from nextlab.data import even_offsets, prepare_corpus

    data_cfg = config_from_dict({"data": config.get("run", {}).get("data", {})}).data
    val = prepare_corpus(data_cfg, tokenizer, log=lambda *a: None).val
    idx = even_offsets(val, n, block_size + 1).numpy()[:, None] + np.arange(block_size + 1)
    return torch.from_numpy(val[idx].astype(np.int64))


def seen_tokens(windows: torch.Tensor, eot_id: int) -> torch.Tensor:
    """The distinct token ids in some text, end-of-text excluded: the pool for the repeated sequences."""
    ids = windows.unique()
    return ids[ids != eot_id]


def checkpoint_induction_scores(ckpt, seed: int = 0, windows: torch.Tensor | None = None) -> np.ndarray:
    """Induction scores of a loaded checkpoint, on tokens drawn from its validation text (or `windows`)."""
    if windows is None:
        windows = validation_windows(ckpt.config, ckpt.tokenizer, ckpt.model.cfg.block_size)
    eot = ckpt.tokenizer.eot_id
    return induction_scores(ckpt.model, eot, seed=seed, pool=seen_tokens(windows, eot))


def best_head(scores: np.ndarray) -> tuple[int, int, float]:
    """(layer, head, score) of the highest induction score."""
    layer, head = divmod(int(scores.argmax()), scores.shape[1])
    return layer, head, float(scores.max())


def heads_over_training(run_dir, n_windows: int = 32) -> list[dict]:
    """For every checkpoint of a run: tokens seen, the best induction score, and the in-context learning score."""
    from nextlab.checkpoint import list_checkpoints, load_checkpoint

    rows, windows = [], None
    for path in list_checkpoints(run_dir):
        ckpt = load_checkpoint(path)
        if windows is None:
            windows = validation_windows(ckpt.config, ckpt.tokenizer, ckpt.model.cfg.block_size, n_windows)
        scores = checkpoint_induction_scores(ckpt, windows=windows)
        icl = in_context_learning_score(ckpt.model, windows)
        rows.append({"checkpoint": path.name, "step": ckpt.config.get("step"), "tokens": ckpt.config.get("tokens_seen"),
                     "best_induction": float(scores.max()), "icl_score": icl["icl_score"],
                     "early_loss": icl["early_loss"], "late_loss": icl["late_loss"]})
    return rows
