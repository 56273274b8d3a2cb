"""Induction heads and in-context learning (Olsson et al., 2022; Edelman et al., 2024).

Three per-head scores, each the mean share of a head's attention that lands where a given kind of
head would put it, and each beside its baseline: the same share under even causal attention (query t
spreading 1/(t+1) over positions 0..t), which a head with no preference scores.

- classic induction: on end-of-text + R + R, R random tokens from a large alphabet, the attention
  from a token in the second copy to the ONE position after its first occurrence. Baseline: the mean
  of 1/(q+1) over the queried positions q (about 1/(1.5 x context)). The alphabet is the tokens seen
  in the validation text, or the whole output vocabulary when that text has fewer than 16 distinct
  tokens, so a repeated random sequence rarely repeats a token inside one copy.
- statistical induction (bigram counting; Edelman et al., "The Evolution of Statistical Induction
  Heads"): on real text, the attention from position t to S_t = {s : 1 <= s <= t, x_{s-1} = x_t},
  EVERY position that followed an earlier occurrence of the current token. Averaging the values there
  counts the bigrams that start with x_t. Baseline: the mean of |S_t| / (t+1). On a small alphabet
  S_t is large and this score sees a head the classic score cannot.
- previous token: on real text, the attention from t to t-1 (the first half of the induction
  circuit). Baseline: the mean of 1/(t+1) over t >= 1.

The in-context learning score is the loss late in the context minus the loss early in it (Olsson et
al. use token 500 minus token 50 of 512; here the same fractions of the model's context): negative
when later tokens are predicted better because the model uses what came before. Over a run's
checkpoints the scores and the ICL curve show the phase change (`heads_over_training`,
`plot_heads_over_training`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from nextlab.model import GPT

MIN_POOL = 16  # fewer distinct tokens in the text than this: draw the repeated sequences from the whole vocabulary
SCORE_NAMES = ("classic", "statistical", "previous_token")


# --- scores on attention patterns -------------------------------------------------------------------


def repeated_sequences(pool: torch.Tensor, length: int, batch: int, seed: int, eot_id: int) -> torch.Tensor:
    """batch rows of end-of-text + R + R, R of `length` tokens drawn uniformly from `pool`."""
    gen = torch.Generator().manual_seed(seed)
    r = pool[torch.randint(0, len(pool), (batch, length), generator=gen)]
    return torch.cat([torch.full((batch, 1), eot_id), r, r], dim=1)


def _classic_queries(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    j = torch.arange(length - 1)
    return 1 + length + j, 2 + j  # R[j] in the second copy; the token after R[j] in the first


def induction_score_from_pattern(pattern: torch.Tensor, length: int) -> np.ndarray:
    """Per head: mean attention from position 1+length+j to position 2+j (j < length-1), batch-averaged.

    pattern: (batch, heads, T, T) attention weights over `end-of-text + R + R` sequences.
    """
    queries, keys = _classic_queries(length)
    return pattern[:, :, queries, keys].mean(dim=(0, 2)).cpu().numpy()


def induction_baseline(length: int) -> float:
    """The classic score of even causal attention: mean of 1/(q+1) over the queried positions q."""
    queries, _ = _classic_queries(length)
    return float((1.0 / (queries + 1).double()).mean())


def statistical_mask(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, T) bool: [b, t, s] is True when 1 <= s <= t and tokens[b, s-1] == tokens[b, t]."""
    B, T = tokens.shape
    follows = tokens[:, :, None] == tokens[:, None, :-1]  # [b, t, s-1]: x_{s-1} == x_t
    mask = torch.cat([torch.zeros(B, T, 1, dtype=torch.bool, device=tokens.device), follows], dim=2)
    return mask & torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()


def _statistical_positions(tokens: torch.Tensor, min_pos: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The mask S_t (B, T, T), the counted (b, t) (S_t non-empty, t >= min_pos), and the sum of |S_t| / (t+1) over them."""
    T = tokens.shape[1]
    mask = statistical_mask(tokens)
    size = mask.sum(-1)  # (B, T) = |S_t|
    counted = (size > 0) & (torch.arange(T, device=tokens.device) >= min_pos)  # (B, T)
    even = size.double() / torch.arange(1, T + 1, device=tokens.device).double()
    return mask, counted, float(even[counted].sum())


def _attention_on(pattern: torch.Tensor, mask: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Per head: the attention on S_t summed over the counted (b, t)."""
    on_s = (pattern * mask[:, None].to(pattern.dtype)).sum(-1)  # (B, H, T)
    return (on_s * counted[:, None].to(pattern.dtype)).sum(dim=(0, 2)).double().cpu()


def statistical_induction_from_pattern(pattern: torch.Tensor, tokens: torch.Tensor, min_pos: int = 1) -> tuple[np.ndarray, float]:
    """(per-head score, even-attention baseline) of statistical induction.

    pattern: (batch, heads, T, T) attention weights; tokens: (batch, T) the ids they were computed on.
    Score: mean over (b, t) with S_t non-empty and t >= min_pos of sum_{s in S_t} pattern[b, h, t, s],
    S_t = {s : 1 <= s <= t, tokens[b, s-1] == tokens[b, t]}. Baseline: the same mean of |S_t| / (t+1).
    NaN when no position counts.
    """
    mask, counted, even = _statistical_positions(tokens.to(pattern.device), min_pos)
    n = int(counted.sum())
    if n == 0:
        return np.full(pattern.shape[1], np.nan), float("nan")
    return (_attention_on(pattern, mask, counted) / n).numpy(), even / n


def previous_token_from_pattern(pattern: torch.Tensor) -> np.ndarray:
    """Per head: mean over batch and t >= 1 of pattern[..., t, t-1]."""
    t = torch.arange(1, pattern.shape[-1], device=pattern.device)
    return pattern[:, :, t, t - 1].mean(dim=(0, 2)).cpu().numpy()


def previous_token_baseline(T: int) -> float:
    """The previous-token score of even causal attention over T positions: mean of 1/(t+1), 1 <= t < T."""
    return float((1.0 / torch.arange(2, T + 1).double()).mean()) if T > 1 else float("nan")


# --- scores of a model ------------------------------------------------------------------------------


@torch.inference_mode()
def attention_patterns(model: GPT, x: torch.Tensor, max_elements: int = 2**26) -> Iterator[tuple[slice, list[torch.Tensor]]]:
    """(rows, [pattern of each layer]) for chunks of the rows of x, each pattern (rows, n_head, T, T).

    Chunks hold at most about max_elements attention weights across all layers (256 MB of float32).
    """
    cfg = model.cfg
    x = x.to(next(model.parameters()).device)
    B, T = x.shape
    chunk = max(1, max_elements // (cfg.n_layer * cfg.n_head * T * T))
    hooks = [f"blocks.{i}.attn.hook_pattern" for i in range(cfg.n_layer)]
    for start in range(0, B, chunk):
        rows = slice(start, min(B, start + chunk))
        with model.capture(hooks) as acts:
            model(x[rows])
        yield rows, [acts[h][0] for h in hooks]


def output_ids(model: GPT, eot_id: int) -> torch.Tensor:
    """Every id the model predicts (its output vocabulary), end-of-text excluded."""
    n = model.cfg.output_vocab or model.cfg.vocab_size
    return torch.tensor([i for i in range(n) if i != eot_id])


def seen_tokens(windows: torch.Tensor, eot_id: int) -> torch.Tensor:
    """The distinct token ids in some text, end-of-text excluded."""
    ids = windows.unique().cpu()
    return ids[ids != eot_id]


def induction_pool(windows: torch.Tensor, eot_id: int, model: GPT, min_distinct: int = MIN_POOL) -> torch.Tensor:
    """The tokens to draw repeated sequences from: those seen in `windows`, or, when fewer than
    min_distinct, every id of the model's output vocabulary but end-of-text (a 3-letter world must
    not be scored on a 3-letter repeated sequence, where the token after a match is ambiguous)."""
    seen = seen_tokens(windows, eot_id)
    return seen if len(seen) >= min_distinct else output_ids(model, eot_id)


@torch.inference_mode()
def induction_scores(model: GPT, eot_id: int, batch: int = 16, seed: int = 0, pool: torch.Tensor | None = None) -> np.ndarray:
    """(n_layer, n_head) classic induction scores on repeated random sequences filling the context.

    `pool`: the token ids to draw from (default: the output vocabulary but end-of-text). Pass the ids
    the model saw in training (`induction_pool`): for a byte-level model, random bytes are mostly
    control characters it never saw.
    """
    if pool is None:
        pool = output_ids(model, eot_id)
    length = (model.cfg.block_size - 1) // 2
    x = repeated_sequences(pool, length, batch, seed, eot_id)
    total = np.zeros((model.cfg.n_layer, model.cfg.n_head))
    for rows, patterns in attention_patterns(model, x):
        total += np.stack([induction_score_from_pattern(p, length) for p in patterns]) * (rows.stop - rows.start)
    return total / batch


@dataclass
class HeadScores:
    """Per (layer, head) scores, each an (n_layer, n_head) array, and their even-attention baselines."""

    classic: np.ndarray
    statistical: np.ndarray
    previous_token: np.ndarray
    classic_baseline: float
    statistical_baseline: float
    previous_token_baseline: float

    NAMES: ClassVar[tuple[str, ...]] = SCORE_NAMES

    def score(self, name: str) -> np.ndarray:
        if name not in self.NAMES:
            raise ValueError(f"unknown head score {name!r}; one of {', '.join(self.NAMES)}")
        return getattr(self, name)

    def baseline(self, name: str) -> float:
        self.score(name)  # checks the name
        return getattr(self, f"{name}_baseline")

    def best(self, name: str = "classic") -> tuple[int, int, float]:
        """(layer, head, value) of the head with the highest score `name`."""
        return best_head(self.score(name))

    def to_dict(self) -> dict:
        """JSON-ready: the per-head arrays as nested lists, the baselines, and the best head per score."""
        out: dict = {}
        for name in self.NAMES:
            out[name] = self.score(name).tolist()
            out[f"{name}_baseline"] = self.baseline(name)
        out["best"] = {name: dict(zip(("layer", "head", "score"), self.best(name))) for name in self.NAMES}
        return out


@torch.inference_mode()
def head_scores(model: GPT, windows: torch.Tensor, eot_id: int, pool: torch.Tensor | None = None, seed: int = 0,
                batch: int = 16, min_pos: int = 1) -> HeadScores:
    """Classic, statistical and previous-token scores of every head, with their baselines.

    windows: (B, T) real text on which the statistical and previous-token scores are measured; rows
    longer than block_size are cut to it (validation_windows' rows carry one extra target token).
    The classic score uses `batch` repeated random sequences from `pool` (default: induction_pool of
    windows).
    """
    windows = windows[:, : model.cfg.block_size]
    if pool is None:
        pool = induction_pool(windows, eot_id, model)
    classic = induction_scores(model, eot_id, batch=batch, seed=seed, pool=pool)
    L, H = model.cfg.n_layer, model.cfg.n_head
    stat_sums, prev_sums = np.zeros((L, H)), np.zeros((L, H))
    counted, even = 0, 0.0
    for rows, patterns in attention_patterns(model, windows):
        mask, counted_here, even_here = _statistical_positions(windows[rows].to(patterns[0].device), min_pos)
        for i, p in enumerate(patterns):  # the positions S_t depend on the tokens only: once per chunk, not per layer
            stat_sums[i] += _attention_on(p, mask, counted_here).numpy()
            prev_sums[i] += previous_token_from_pattern(p) * (rows.stop - rows.start)
        counted, even = counted + int(counted_here.sum()), even + even_here
    T = windows.shape[1]
    return HeadScores(
        classic=classic,
        statistical=stat_sums / counted if counted else np.full((L, H), np.nan),
        previous_token=prev_sums / len(windows),
        classic_baseline=induction_baseline((model.cfg.block_size - 1) // 2),
        statistical_baseline=even / counted if counted else float("nan"),
        previous_token_baseline=previous_token_baseline(T),
    )


@torch.inference_mode()
def in_context_learning_score(model: GPT, windows: torch.Tensor) -> dict:
    """Loss at 90% of the context minus loss at 10% (each a 5%-wide band), over windows (B, T+1) of text."""
    windows = windows[:, : model.cfg.block_size + 1].to(next(model.parameters()).device)
    logits, _ = model(windows[:, :-1])
    losses = F.cross_entropy(logits.float().transpose(1, 2), windows[:, 1:], reduction="none").mean(0)  # (T,)
    T = losses.numel()
    band = max(1, T // 20)
    early = float(losses[max(0, T // 10 - band // 2) : T // 10 - band // 2 + band].mean())
    late = float(losses[9 * T // 10 - band // 2 : 9 * T // 10 - band // 2 + band].mean())
    return {"early_loss": early, "late_loss": late, "icl_score": late - early, "loss_by_position": losses.tolist()}


# --- checkpoints and runs ---------------------------------------------------------------------------


def validation_windows(config: dict, tokenizer, block_size: int, n: int = 32) -> torch.Tensor:
    """n evenly spread windows of block_size + 1 tokens from the checkpoint's validation split."""
    from nextlab.config import config_from_dict
    from nextlab.data import even_offsets, prepare_corpus

    data_cfg = config_from_dict({"data": config.get("run", {}).get("data", {})}).data
    val = prepare_corpus(data_cfg, tokenizer, log=lambda *a: None).val
    idx = even_offsets(val, n, block_size + 1).numpy()[:, None] + np.arange(block_size + 1)
    return torch.from_numpy(val[idx].astype(np.int64))


def _windows(ckpt, windows: torch.Tensor | None, n: int = 32) -> torch.Tensor:
    return windows if windows is not None else validation_windows(ckpt.config, ckpt.tokenizer, ckpt.model.cfg.block_size, n)


def checkpoint_head_scores(ckpt, seed: int = 0, windows: torch.Tensor | None = None) -> HeadScores:
    """head_scores of a loaded checkpoint on its validation text (or `windows`)."""
    return head_scores(ckpt.model, _windows(ckpt, windows), ckpt.tokenizer.eot_id, seed=seed)


def best_head(scores: np.ndarray) -> tuple[int, int, float]:
    """(layer, head, score) of the highest score in an (n_layer, n_head) array (NaN ignored)."""
    scores = np.asarray(scores, dtype=float)
    if np.isnan(scores).all():
        return 0, 0, float("nan")
    layer, head = divmod(int(np.nanargmax(scores)), scores.shape[1])
    return layer, head, float(scores[layer, head])


def heads_over_training(run_dir, windows: torch.Tensor | None = None, n_windows: int = 32, seed: int = 0) -> list[dict]:
    """For every checkpoint of a run, oldest first, a JSON-ready row.

    Keys: checkpoint, step, tokens; the per-head arrays `classic`, `statistical`, `previous_token`
    (nested lists) and their `*_baseline`s; `best` ({score name: {layer, head, score}}) and
    `best_induction` (the best classic score); icl_score, early_loss, late_loss.

    `windows` (B, T) is the text the statistical, previous-token and ICL scores are measured on, and
    whose tokens the repeated sequences are drawn from (default: n_windows windows of the first
    checkpoint's validation split). Pass e.g. documents of one world.
    """
    from nextlab.checkpoint import list_checkpoints, load_checkpoint

    rows = []
    for path in list_checkpoints(run_dir):
        ckpt = load_checkpoint(path)
        windows = _windows(ckpt, windows, n_windows)
        scores = checkpoint_head_scores(ckpt, seed=seed, windows=windows)
        icl = in_context_learning_score(ckpt.model, windows)
        rows.append({"checkpoint": path.name, "step": ckpt.config.get("step"), "tokens": ckpt.config.get("tokens_seen"),
                     **scores.to_dict(), "best_induction": scores.best("classic")[2], "icl_score": icl["icl_score"],
                     "early_loss": icl["early_loss"], "late_loss": icl["late_loss"]})
    return rows


def plot_heads_over_training(rows: list[dict], path: str | Path) -> Path:
    """The best head's classic, statistical and previous-token scores over tokens seen (rows from
    heads_over_training), each beside its even-attention baseline (dashed, same colour), y fixed to [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["tokens"] if r.get("tokens") is not None else r.get("step", i) for i, r in enumerate(rows)]
    labels = {"classic": "classic induction", "statistical": "statistical induction", "previous_token": "previous token"}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for k, name in enumerate(SCORE_NAMES):
        color = f"C{k}"
        ax.plot(x, [r["best"][name]["score"] for r in rows], "o-", ms=3, lw=1.2, color=color, label=f"{labels[name]} (best head)")
        ax.plot(x, [r[f"{name}_baseline"] for r in rows], "--", lw=1, color=color, label=f"{labels[name]}: even attention")
    ax.set_ylim(0, 1)
    ax.set_xlabel("tokens seen" if rows and rows[0].get("tokens") is not None else "step")
    ax.set_ylabel("share of attention")
    ax.set_title("attention heads over training", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
