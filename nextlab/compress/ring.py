"""The coder's lean decoding step (the "ring" kernel): one token per stream, keys and values in a ring.

The model's own forward with a KVCache (the "model" kernel) rebuilds its cache whenever it
fills, and spends a third of its step on small ops. This step computes the same model for
the one case the coder has, every stream one token further, with less work:

- a ring of `window` key/value slots per stream: slot = position % window. Attention sums
  over a set of keys, so their order in memory does not matter; rotary positions are
  relative, so a key keeps its absolute rotation and no cache is ever rebuilt. The model
  sees the last `window` tokens at every step, a context it had in training (window <=
  block_size), and never the long prefill a rebuild costs.
- fused weights: one matmul for queries, keys and values, one for the MLP's gate and up
  projections; each RMSNorm's gain folded into the matmul after it, the attention scale
  into the query norm's gain; residual adds fused into the output matmuls (addmm).
- rotary angles computed in float64 from the absolute position (no table to outgrow).

Its floats differ from the model kernel's (same model, other rounding), so a file records
which kernel wrote it, and the decoder runs that one. Modern models only: GPT-2's learned
positions stop at block_size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nextlab.model import GPT


def supports(model: GPT) -> bool:
    return model.cfg.arch == "modern"


class RingStep:
    """Call with one token per stream (B,) to get the next-token logits (B, vocab)."""

    def __init__(self, model: GPT, streams: int, window: int) -> None:
        cfg = model.cfg
        if not supports(model):
            raise ValueError("the ring kernel runs modern models only (rotary positions)")
        if not 1 <= window <= cfg.block_size:
            raise ValueError(f"window must be between 1 and block_size ({cfg.block_size}), got {window}")
        self.model, self.cfg, self.window = model, cfg, window
        self.group = cfg.n_head // cfg.n_kv_head
        shape = (cfg.n_layer, streams, cfg.n_kv_head, window, cfg.head_dim)
        p = next(model.parameters())
        self.k = torch.zeros(shape, dtype=p.dtype)
        self.v = torch.zeros(shape, dtype=p.dtype)
        self.position = 0  # tokens stepped so far (every stream)
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
        self.inv_freq = torch.cat([inv_freq, inv_freq])
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Rebuild the fused weights from the model's (after an adaptive update changed them)."""
        cfg, m = self.cfg, self.model
        self.embed = m.embed_tokens.weight.detach().clone()
        self.layers = []
        for block in m.layers:
            a, mlp = block.attn, block.mlp
            qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]) * block.attn_norm.weight
            scale = 1.0 / math.sqrt(cfg.head_dim)
            if a.use_qk_norm:
                q_gain, k_gain = a.q_norm.weight * scale, a.k_norm.weight.clone()
            else:  # no query norm: the scale goes into the query rows
                qkv[: cfg.n_head * cfg.head_dim] *= scale
                q_gain = k_gain = None
            gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]) * block.mlp_norm.weight
            self.layers.append((qkv.t().contiguous(), q_gain, k_gain, a.o_proj.weight.t().contiguous(),
                                gate_up.t().contiguous(), mlp.down_proj.weight.t().contiguous(),
                                block.attn_norm.eps, block.mlp_norm.eps, a.q_norm.eps if a.use_qk_norm else 0.0))
        self.head = (m.lm_head.weight * m.norm.weight).t().contiguous()
        self.head_eps = m.norm.eps

    def _rotary(self) -> tuple[torch.Tensor, torch.Tensor]:
        angles = self.position * self.inv_freq
        dtype = self.k.dtype
        return angles.cos().to(dtype), angles.sin().to(dtype)

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        B, H, KV, hd = tokens.size(0), cfg.n_head, cfg.n_kv_head, cfg.head_dim
        slot, n = self.position % self.window, min(self.position + 1, self.window)
        cos, sin = self._rotary()
        x = self.embed[tokens]
        for i, (qkv_w, q_gain, k_gain, o_w, gu_w, down_w, eps1, eps2, qk_eps) in enumerate(self.layers):
            qkv = _rms(x, eps1) @ qkv_w
            qk = qkv[:, : (H + KV) * hd].view(B, H + KV, hd)
            v = qkv[:, (H + KV) * hd :].view(B, KV, hd)
            if q_gain is not None:
                qk = _rms(qk, qk_eps) * torch.cat([q_gain.expand(H, hd), k_gain.expand(KV, hd)])
            half = hd // 2
            qk = qk * cos + torch.cat([-qk[..., half:], qk[..., :half]], dim=-1) * sin
            q, k = qk[:, :H], qk[:, H:]
            keys, values = self.k[i], self.v[i]
            keys[:, :, slot] = k
            values[:, :, slot] = v
            keys, values = keys.view(B * KV, self.window, hd)[:, :n], values.view(B * KV, self.window, hd)[:, :n]
            scores = torch.bmm(q.reshape(B * KV, self.group, hd), keys.transpose(1, 2))
            y = torch.bmm(torch.softmax(scores, dim=-1), values)
            x = torch.addmm(x, y.view(B, H * hd), o_w)
            gate, up = (_rms(x, eps2) @ gu_w).chunk(2, dim=-1)
            x = torch.addmm(x, F.silu(gate) * up, down_w)
        self.position += 1
        return _rms(x, self.head_eps) @ self.head


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without its gain (folded into the next matmul)."""
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
