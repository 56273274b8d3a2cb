"""The coder's lean decoding step (the "ring" kernel): one token per stream, keys and values in a ring.

The model's own forward with a KVCache (the "model" kernel) rebuilds its cache whenever it
fills, and spends a third of its step on small ops. This step computes the same model for
the one case the coder has, every stream one token further, with less work:

- a ring of `window` key/value slots per stream and layer: slot = position % window.
  Attention sums over a set of keys, so their order in memory does not matter; rotary
  positions are relative, so a key keeps its absolute rotation and no cache is ever
  rebuilt. Each layer attends to the last `window` positions (window <= block_size, a
  span the model had in training); the keys cached there were computed from their own
  windows, so deeper layers carry older context, up to n_layer * (window - 1) tokens
  back. No step pays the long prefill a rebuild costs.
- fused weights: one matmul for queries, keys and values, one for the MLP's gate and up
  projections; each RMSNorm's gain folded into the matmul after it, the attention scale
  into the query norm's gain; residual adds fused into the output matmuls (addmm).
- rotary angles computed in float64 from the absolute position (no table to outgrow).
- optionally bfloat16 weights and keys/values (`dtype`): on a CPU with bf16 dot products (AVX512-BF16)
  the step is about 1.5x faster, for the same bits per byte to four places on benchmarks/compress.py's
  stdlib file. The residual stream, norms, rotary, softmax and the output head stay fp32; each
  matmul's input is rounded to bf16 and its output widened back.
- the attention itself (one query per stream and head against its ring) in attention.py's
  compiled loops (`attention="numba"`), which read the ring in one pass, or with two torch.bmm
  calls (`"torch"`: what files before format version 4 were coded with), which pay a fixed cost
  for each of the thousands of tiny matrices.

Its floats differ from the model kernel's (same model, other rounding), and the two attentions'
from each other, so a file records which kernel and attention wrote it, and the decoder runs
those. Modern models only: GPT-2's learned positions stop at block_size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from nextlab.compress import attention
from nextlab.model import GPT

ATTENTIONS = ("numba", "torch")  # who computes the attention: attention.py's loops, or torch.bmm (files before version 4)
# How attention.py's loops see the ring's dtype: as its bits (NumPy has no bfloat16).
STORAGE = {torch.bfloat16: (torch.int16, np.uint16), torch.float32: (torch.int32, np.uint32)}


def supports(model: GPT) -> bool:
    return model.cfg.arch == "modern"


class _Layer(NamedTuple):
    """One block's fused weights, transposed for x @ w."""

    qkv: torch.Tensor  # (n_embd, (H + 2 KV) hd): attn_norm's gain folded in
    qk_gain: torch.Tensor | None  # (H + KV, hd): the q and k norms' gains, the attention scale in q's; None without qk-norm
    o: torch.Tensor
    gate_up: torch.Tensor  # mlp_norm's gain folded in
    down: torch.Tensor


class RingStep:
    """Call with one token per stream (B,) to get the next-token logits (B, vocab)."""

    def __init__(self, model: GPT, streams: int, window: int, dtype: torch.dtype = torch.float32,
                 attention: str = "numba") -> None:
        cfg = model.cfg
        if not supports(model):
            raise ValueError("the ring kernel runs modern models only (rotary positions)")
        if not 1 <= window <= cfg.block_size:
            raise ValueError(f"window must be between 1 and block_size ({cfg.block_size}), got {window}")
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        self.model, self.cfg, self.window, self.dtype, self.attention = model, cfg, window, dtype, attention
        self.group = cfg.n_head // cfg.n_kv_head
        rows = streams * cfg.n_kv_head
        if attention == "numba":  # keys transposed: attention.scores runs over contiguous slots
            self.k = torch.zeros((cfg.n_layer, rows, cfg.head_dim, window), dtype=dtype)
        else:
            self.k = torch.zeros((cfg.n_layer, rows, window, cfg.head_dim), dtype=dtype)
        self.v = torch.zeros((cfg.n_layer, rows, window, cfg.head_dim), dtype=dtype)
        self.position = 0  # tokens stepped so far (every stream)
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
        self.inv_freq = torch.cat([inv_freq, inv_freq])
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Rebuild the fused weights from the model's (after an adaptive update changed them)."""
        cfg, m = self.cfg, self.model
        self.embed = m.embed_tokens.weight.detach().clone()
        scale = 1.0 / math.sqrt(cfg.head_dim)
        self.layers = []
        for block in m.layers:
            a, mlp = block.attn, block.mlp
            qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]) * block.attn_norm.weight
            if a.use_qk_norm:
                qk_gain = torch.cat([(a.q_norm.weight * scale).expand(cfg.n_head, -1),
                                     a.k_norm.weight.expand(cfg.n_kv_head, -1)])
            else:  # no query norm: the scale goes into the query rows
                qkv[: cfg.n_head * cfg.head_dim] *= scale
                qk_gain = None
            gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]) * block.mlp_norm.weight
            weights = (qkv, a.o_proj.weight, gate_up, mlp.down_proj.weight)
            qkv, o, gate_up, down = (w.t().to(self.dtype).contiguous() for w in weights)
            self.layers.append(_Layer(qkv, qk_gain, o, gate_up, down))
        self.head = (m.lm_head.weight * m.norm.weight).t().contiguous()  # fp32: the logits keep full precision

    def _rotary(self) -> tuple[torch.Tensor, torch.Tensor]:
        angles = self.position * self.inv_freq
        return angles.cos().float(), angles.sin().float()

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        B, H, KV, hd = tokens.size(0), cfg.n_head, cfg.n_kv_head, cfg.head_dim
        slot, n = self.position % self.window, min(self.position + 1, self.window)
        cos, sin = self._rotary()
        eps, half = cfg.norm_eps, hd // 2
        x = self.embed[tokens]  # the residual stream stays fp32
        for i, layer in enumerate(self.layers):
            qkv = _matmul(_rms(x, eps), layer.qkv)
            qk = qkv[:, : (H + KV) * hd].view(B, H + KV, hd)
            v = qkv[:, (H + KV) * hd :].view(B, KV, hd)
            if layer.qk_gain is not None:
                qk = _rms(qk, eps) * layer.qk_gain
            qk = qk * cos + torch.cat([-qk[..., half:], qk[..., :half]], dim=-1) * sin
            attend = self._attend_numba if self.attention == "numba" else self._attend_torch
            y = attend(i, qk[:, :H], qk[:, H:], v, slot, n)
            x = _add_matmul(x, y.view(B, H * hd), layer.o)
            gate, up = _matmul(_rms(x, eps), layer.gate_up).chunk(2, dim=-1)
            x = _add_matmul(x, F.silu(gate) * up, layer.down)
        self.position += 1
        return _rms(x, eps) @ self.head

    def _attend_torch(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot: int, n: int) -> torch.Tensor:
        """Layer i's attention with torch.bmm over the ring (q (B, H, hd), k and v (B, KV, hd)): (B, H, hd)."""
        hd = q.size(-1)
        keys, values = self.k[i], self.v[i]
        keys[:, slot] = k.reshape(-1, hd)
        values[:, slot] = v.reshape(-1, hd)
        scores = torch.bmm(q.reshape(keys.size(0), self.group, hd).to(self.dtype), keys[:, :n].transpose(1, 2))
        return torch.bmm(torch.softmax(scores.float(), dim=-1).to(self.dtype), values[:, :n])

    def _attend_numba(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot: int, n: int) -> torch.Tensor:
        """The same with attention.py's loops, which also write k and v into the ring; fp32 queries."""
        hd = q.size(-1)
        q = q.reshape(-1, hd).contiguous()
        scores = torch.empty(q.size(0), n)
        attention.scores(q.numpy(), _bits(self.k[i]), _bits(k.reshape(-1, hd).to(self.dtype).contiguous()), slot, n,
                         scores.numpy())
        y = torch.empty_like(q)
        attention.mix(torch.softmax(scores, dim=-1).numpy(), _bits(self.v[i]),
                      _bits(v.reshape(-1, hd).to(self.dtype).contiguous()), slot, n, y.numpy())
        return y


def _bits(t: torch.Tensor) -> np.ndarray:
    """A contiguous bf16 or fp32 tensor's storage as unsigned integers (STORAGE), sharing memory."""
    same_size, unsigned = STORAGE[t.dtype]
    return t.view(same_size).numpy().view(unsigned)


def load_attention(dtype: torch.dtype) -> None:
    """attention.py's loops for a ring in this dtype, compiled in this process (see attention.load)."""
    attention.load(STORAGE[dtype][1])


def _matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ w in w's dtype, widened back to fp32 (no copies when w is fp32)."""
    return (x.to(w.dtype) @ w).float()


def _add_matmul(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x + y @ w with x fp32: one fused addmm when w is fp32 too."""
    if w.dtype == x.dtype:
        return torch.addmm(x, y.to(w.dtype), w)
    return x + (y.to(w.dtype) @ w).float()


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without its gain (folded into the next matmul)."""
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
