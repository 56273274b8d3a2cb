"""The transformer: a decoder-only next-token model, readable top to bottom.

Two presets share one code path:

- `gpt2`: nanoGPT's architecture, the reference baseline: learned positions,
  LayerNorm, GELU MLP, biases, tied input/output embeddings.
- `modern` (default): rotary positions, RMSNorm, SwiGLU MLP, optional QK-norm,
  no biases, untied embeddings. Parameter names follow Hugging Face Llama/Qwen3
  (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj) so the model
  can be exported one-to-one.

The model knows nothing of training, data or files; it maps token ids to
next-token logits, with a KV cache for generation: `KVCache` for one batch of
sequences that grow together, `BatchKVCache` for continuous batching, where
sequences of different lengths step together and join and leave between steps.

Hook points, named as in TransformerLens, for looking inside (`GPT.capture`):
`hook_embed` (the residual stream entering block 0), `blocks.{i}.hook_resid_post`
(the residual stream after block i) and `blocks.{i}.attn.hook_pattern` (attention
weights, batch x head x query x key; captured through the explicit attention).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("modern", "gpt2")
ATTENTION_IMPLS = ("auto", "sdpa", "manual")
GELUS = ("exact", "tanh")


@dataclass
class ModelConfig:
    arch: str = "modern"  # "modern" or "gpt2"
    vocab_size: int = 0  # 0 = taken from the tokenizer
    # Tokens the model predicts: the first output_vocab ids (0 = all of them). The ids above are
    # input-only (chat role markers, see nextlab/tune/chat.py): they have embeddings but no output row.
    output_vocab: int = 0
    block_size: int = 256  # context length in tokens
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 0  # 0 = n_head; fewer gives grouped-query attention (modern only)
    n_embd: int = 128
    mlp_hidden: int = 0  # 0 = 4*n_embd (gpt2) or 8/3*n_embd rounded up to 32 (modern)
    qk_norm: bool = True  # RMSNorm on queries and keys per head (modern only)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0
    bias: bool = True  # gpt2's biases in every linear layer and LayerNorm (nanoGPT's own config turns them off)
    gelu: str = "exact"  # gpt2's MLP: "exact" (erf) or "tanh" (the approximation real GPT-2 checkpoints were trained with)
    # "manual" is an explicit matmul-softmax; under bf16 on CPU its backward is
    # much faster than SDPA's. "auto" picks manual when training under bf16.
    attention: str = "auto"

    def resolved(self) -> ModelConfig:
        """A copy with the 0 = automatic fields filled in (what a model is built from)."""
        n_kv_head = self.n_kv_head or self.n_head
        mlp_hidden = self.mlp_hidden or (4 * self.n_embd if self.arch == "gpt2" else 32 * math.ceil(8 * self.n_embd / 96))
        return dataclasses.replace(self, n_kv_head=n_kv_head, mlp_hidden=mlp_hidden)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def problems(self) -> list[str]:
        """Every reason this config cannot build a model (empty if it can)."""
        out = []
        if self.arch not in ARCHS:
            out.append(f"model.arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.attention not in ATTENTION_IMPLS:
            out.append(f"model.attention must be one of {', '.join(ATTENTION_IMPLS)}, got {self.attention!r}")
        for name in ("block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                out.append(f"model.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("n_kv_head", "mlp_hidden"):
            if getattr(self, name) < 0:
                out.append(f"model.{name} must be at least 0 (0 = automatic), got {getattr(self, name)}")
        kv = self.n_kv_head or self.n_head
        if self.n_head >= 1 and self.n_embd % self.n_head:
            out.append(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        elif self.arch == "modern" and self.n_head >= 1 and self.head_dim % 2:
            out.append(f"model.n_embd / model.n_head = {self.head_dim} must be even for rotary positions")
        if kv >= 1 and self.n_head % kv:
            out.append(f"model.n_head ({self.n_head}) must be divisible by model.n_kv_head ({kv})")
        if self.arch == "gpt2" and kv != self.n_head:
            out.append("model.n_kv_head must equal model.n_head for the gpt2 preset")
        if self.output_vocab < 0 or (self.vocab_size and self.output_vocab > self.vocab_size):
            out.append(f"model.output_vocab must be between 0 (all tokens) and vocab_size, got {self.output_vocab}")
        if self.output_vocab and self.arch == "gpt2":
            out.append("model.output_vocab (input-only tokens) needs an untied output layer: use the modern preset")
        if self.gelu not in GELUS:
            out.append(f"model.gelu must be one of {', '.join(GELUS)}, got {self.gelu!r}")
        elif self.gelu != "exact" and self.arch != "gpt2":
            out.append("model.gelu applies to the gpt2 preset only (modern uses SwiGLU)")
        if not self.bias and self.arch != "gpt2":
            out.append("model.bias = false applies to the gpt2 preset only (modern has no biases)")
        if not 0.0 <= self.dropout < 1.0:
            out.append(f"model.dropout must be in [0, 1), got {self.dropout}")
        return out


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to block_size."""

    def __init__(self, cfg: ModelConfig, batch_size: int, device, dtype) -> None:
        shape = (cfg.n_layer, batch_size, cfg.n_kv_head, cfg.block_size, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # tokens stored
        self.capacity = cfg.block_size

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k.size(2)
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int, batch: int) -> None:
        self.length += n


class BatchKVCache:
    """Keys and values of up to `rows` independent sequences, each at its own length (continuous batching).

    Rows 0..B-1 of a step hold the B sequences stepping; each step feeds one token per row. A sequence's
    prompt is prefilled alone in a `KVCache` and copied into a row (`put`); a row is freed by moving the
    last one into it (`move`), so the stepping rows stay contiguous. Rows all at one length step as a
    plain batch (no mask); otherwise each row's keys past its length are masked out.
    """

    def __init__(self, cfg: ModelConfig, rows: int, device, dtype) -> None:
        self.cfg = cfg
        shape = (cfg.n_layer, rows, cfg.n_kv_head, cfg.block_size, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = [0] * rows  # tokens stored in each row
        self.capacity = cfg.block_size
        self.key_mask: torch.Tensor | None = None  # (B, 1, 1, S) during a step: which keys each row may see
        self._at: torch.Tensor | int = 0  # during a step: where each row's new key goes

    @property
    def rows(self) -> int:
        return self.k.size(1)

    def put(self, row: int, cache: KVCache) -> None:
        """A sequence prefilled alone (batch 1) becomes row `row`."""
        n = cache.length
        self.k[:, row, :, :n] = cache.k[:, 0, :, :n]
        self.v[:, row, :, :n] = cache.v[:, 0, :, :n]
        self.lengths[row] = n

    def move(self, src: int, dst: int) -> None:
        n = self.lengths[src]
        self.k[:, dst, :, :n] = self.k[:, src, :, :n]
        self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.lengths[dst] = n

    def resized(self, rows: int) -> BatchKVCache:
        """A copy with room for `rows` rows (at least those in use)."""
        out = BatchKVCache(self.cfg, rows, self.k.device, self.k.dtype)
        keep = min(rows, self.rows)
        out.k[:, :keep], out.v[:, :keep], out.lengths[:keep] = self.k[:, :keep], self.v[:, :keep], self.lengths[:keep]
        return out

    def begin_step(self, batch: int) -> int | torch.Tensor:
        """Where the tokens rows 0..batch-1 are fed now go: one position if the rows are at one length,
        else each row's, (batch, 1), with key_mask set to hide each row's keys past its own length."""
        lengths = self.lengths[:batch]
        longest = max(lengths)
        if longest >= self.capacity:
            raise ValueError(f"a row of the batch is full ({self.capacity} tokens); it must be rebuilt before it steps")
        if min(lengths) == longest:
            self._at, self.key_mask = longest, None
            return longest
        at = torch.tensor(lengths, device=self.k.device)
        self._at = at
        self.key_mask = (torch.arange(longest + 1, device=at.device) <= at[:, None]).view(batch, 1, 1, longest + 1)
        return at[:, None]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, at = k.size(0), self._at
        if isinstance(at, int):
            self.k[layer, :batch, :, at] = k[:, :, 0]
            self.v[layer, :batch, :, at] = v[:, :, 0]
            keys = at + 1
        else:
            rows = torch.arange(batch, device=k.device)
            self.k[layer, rows, :, at] = k[:, :, 0]
            self.v[layer, rows, :, at] = v[:, :, 0]
            keys = self.key_mask.size(-1)
        return self.k[layer, :batch, :, :keys], self.v[layer, :batch, :, :keys]

    def advance(self, n: int, batch: int) -> None:
        for row in range(batch):
            self.lengths[row] += n
        self.key_mask = None


def rotary_tables(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
    angles = torch.outer(torch.arange(cfg.block_size, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # Llama's "rotate half" layout
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def make_norm(cfg: ModelConfig, dim: int) -> nn.Module:
    if cfg.arch == "gpt2":
        return nn.LayerNorm(dim, eps=cfg.norm_eps, bias=cfg.bias)
    return nn.RMSNorm(dim, eps=cfg.norm_eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.cfg, self.layer = cfg, layer
        bias = cfg.arch == "gpt2" and cfg.bias
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_head * hd, bias=bias)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * hd, bias=bias)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * hd, bias=bias)
        self.o_proj = nn.Linear(cfg.n_head * hd, cfg.n_embd, bias=bias)
        self.use_qk_norm = cfg.arch == "modern" and cfg.qk_norm
        if self.use_qk_norm:
            self.q_norm = nn.RMSNorm(hd, eps=cfg.norm_eps)
            self.k_norm = nn.RMSNorm(hd, eps=cfg.norm_eps)
        self.manual = False  # set by GPT.set_attention
        self.hook_pattern: Callable[[torch.Tensor], None] | None = None  # set by GPT.capture

    def forward(self, x, rotary, cache: KVCache | None) -> torch.Tensor:
        cfg = self.cfg
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, cfg.n_head, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
        if self.use_qk_norm:  # weights cast to the activations' dtype, so bf16 takes the fused kernel
            q = F.rms_norm(q, (cfg.head_dim,), self.q_norm.weight.to(q.dtype), self.q_norm.eps)
            k = F.rms_norm(k, (cfg.head_dim,), self.k_norm.weight.to(k.dtype), self.k_norm.eps)
        if rotary is not None:
            cos, sin = rotary
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        past, mask = 0, None
        if isinstance(cache, KVCache):
            past = cache.length
        elif cache is not None:  # BatchKVCache: one new token per row, each row at its own length
            mask = cache.key_mask
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        if cfg.n_kv_head != cfg.n_head:
            k = k.repeat_interleave(cfg.n_head // cfg.n_kv_head, dim=1)
            v = v.repeat_interleave(cfg.n_head // cfg.n_kv_head, dim=1)
        S = k.size(2)
        dropout = cfg.dropout if self.training else 0.0
        # Query i (absolute position past+i) may attend to keys 0..past+i.
        if T > 1:
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=past)
        if self.manual:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(cfg.head_dim))
            if mask is not None:
                att = att.masked_fill(~mask, float("-inf"))
            att = F.dropout(F.softmax(att.float(), dim=-1).to(q.dtype), p=dropout, training=self.training)
            if self.hook_pattern is not None:
                self.hook_pattern(att)
            y = att @ v
        elif T > 1 and past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(B, T, cfg.n_head * cfg.head_dim)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gpt2 = cfg.arch == "gpt2"
        self.approximate = "tanh" if cfg.gelu == "tanh" else "none"
        if self.gpt2:
            self.up_proj = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=cfg.bias)
        else:
            self.gate_proj = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
            self.up_proj = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=self.gpt2 and cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gpt2:
            return self.down_proj(F.gelu(self.up_proj(x), approximate=self.approximate))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = make_norm(cfg, cfg.n_embd)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = make_norm(cfg, cfg.n_embd)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, rotary, cache):
        x = x + self.dropout(self.attn(self.attn_norm(x), rotary, cache))
        x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        problems = cfg.problems() + ([] if cfg.vocab_size >= 1 else ["model.vocab_size must be at least 1"])
        if problems:
            raise ValueError("; ".join(problems))
        cfg = cfg.resolved()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.arch == "gpt2":
            self.embed_positions = nn.Embedding(cfg.block_size, cfg.n_embd)
        else:
            cos, sin = rotary_tables(cfg)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = make_norm(cfg, cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.output_vocab or cfg.vocab_size, bias=False)
        if cfg.arch == "gpt2":
            self.lm_head.weight = self.embed_tokens.weight  # tied
        self.hooks: dict[str, Callable[[torch.Tensor], None]] = {}  # hook point -> function (see capture)
        self.reset_parameters()
        self.set_attention(cfg.attention == "manual")

    def set_attention(self, manual: bool) -> None:
        """Choose the explicit matmul-softmax (True) or SDPA (False); the math is the same."""
        for layer in self.layers:
            layer.attn.manual = manual

    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.cfg
        if cfg.arch == "gpt2":  # nanoGPT / GPT-2 init
            for name, p in self.named_parameters():
                if p.dim() == 1:
                    if name.endswith("bias"):
                        p.zero_()
                    else:
                        p.fill_(1.0)
                else:
                    std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)
            return
        # modern: nanochat-style. Unit-variance embeddings, fan-in scaled matrices,
        # residual outputs start at zero so every block begins as the identity.
        for name, p in self.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            elif name == "embed_tokens.weight":
                nn.init.normal_(p, 0.0, 1.0)
            elif name == "lm_head.weight":
                nn.init.normal_(p, 0.0, 0.001)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.zeros_(p)
            else:
                bound = math.sqrt(3.0 / p.size(1))
                nn.init.uniform_(p, -bound, bound)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | BatchKVCache | None = None):
        """Logits (B, T, vocab) for token ids (B, T); with targets, also the mean cross-entropy.

        With a cache, idx holds only the new tokens and is appended after the cached ones
        (a BatchKVCache takes one token for each of its first B rows).
        """
        B, T = idx.shape
        if isinstance(cache, BatchKVCache):
            if T != 1:
                raise ValueError(f"a BatchKVCache steps one token per row, got {T}")
            start = cache.begin_step(B)  # an int when every row is at one length, else each row's (B, 1)
        else:
            start = cache.length if cache is not None else 0
            if start + T > self.cfg.block_size:
                raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.cfg.block_size}")
        x = self.embed_tokens(idx)
        rotary = None
        if self.cfg.arch == "gpt2":
            x = x + self.embed_positions(torch.arange(start, start + T, device=idx.device) if isinstance(start, int) else start)
        elif isinstance(start, int):
            rotary = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])
        else:  # per row: (B, 1, 1, head_dim), to broadcast over heads
            rotary = (self.rope_cos[start].unsqueeze(1), self.rope_sin[start].unsqueeze(1))
        x = self.dropout(x)
        self._hook("hook_embed", x)
        for i, layer in enumerate(self.layers):
            x = layer(x, rotary, cache)
            self._hook(f"blocks.{i}.hook_resid_post", x)
        if cache is not None:
            cache.advance(T, B)
        logits = self.lm_head(self.norm(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def _hook(self, name: str, x: torch.Tensor) -> None:
        fn = self.hooks.get(name)
        if fn is not None:
            fn(x)

    def hook_names(self) -> list[str]:
        names = ["hook_embed"]
        for i in range(self.cfg.n_layer):
            names += [f"blocks.{i}.hook_resid_post", f"blocks.{i}.attn.hook_pattern"]
        return names

    @contextlib.contextmanager
    def capture(self, names: Iterable[str]) -> Iterator[dict[str, list[torch.Tensor]]]:
        """Record activations at the named hook points during every forward pass inside the block.

            with model.capture(["blocks.0.hook_resid_post"]) as acts:
                model(idx)
            acts["blocks.0.hook_resid_post"][0]  # (B, T, n_embd), detached, float32

        Capturing attention patterns switches to the explicit attention for the duration.
        """
        names = list(names)
        unknown = sorted(set(names) - set(self.hook_names()))
        if unknown:
            raise ValueError(f"unknown hook point(s) {unknown}; the model has {self.hook_names()[:3]} ... (see hook_names())")
        acts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        manual = [layer.attn.manual for layer in self.layers]
        for name in names:
            record = (lambda store: lambda x: store.append(x.detach().float()))(acts[name])
            if name.endswith("attn.hook_pattern"):
                attn = self.layers[int(name.split(".")[1])].attn
                attn.hook_pattern, attn.manual = record, True
            else:
                self.hooks[name] = record
        try:
            yield acts
        finally:
            self.hooks.clear()
            for layer, was_manual in zip(self.layers, manual):
                layer.attn.hook_pattern, layer.attn.manual = None, was_manual

    def make_cache(self, batch_size: int = 1) -> KVCache:
        p = self.embed_tokens.weight
        return KVCache(self.cfg, batch_size, p.device, p.dtype)

    def make_batch_cache(self, rows: int) -> BatchKVCache:
        p = self.embed_tokens.weight
        return BatchKVCache(self.cfg, rows, p.device, p.dtype)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; non_embedding drops the token and position embeddings (Kaplan's N).

        The untied output head of the modern preset counts as non-embedding.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed_tokens.weight.numel()
            if self.cfg.arch == "gpt2":
                n -= self.embed_positions.weight.numel()
        return n
