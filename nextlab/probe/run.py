"""The probing study: per layer, how well a linear probe reads a world's latent, beside its controls."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nextlab.errors import NextlabError
from nextlab.model import GPT
from nextlab.probe.activations import DEFAULT_LATENT, collect, world_documents
from nextlab.probe.probes import probe_layers, ridge_fit_predict
from nextlab.worlds.registry import WorldSpecError, parse_spec, world_class

PROBE_DOC_SEED = 10_007  # documents drawn for probing, not the training stream's


@dataclass
class ProbeResult:
    world: str
    latent: str
    continuous: bool
    metric: str  # "R^2" or "accuracy"
    rows: list[dict]  # one per hook point: score, random_model, shuffled, selectivity, chance
    n_train_docs: int
    n_positions: int
    simplex: dict = field(default_factory=dict)  # HMM beliefs: true and probed points in the simplex, for the picture

    def table(self) -> str:
        head = f"{'layer':<26}{self.metric:>9}{'random model':>14}{'shuffled':>10}{'selectivity':>13}{'chance':>8}"
        lines = [f"{self.world}/{self.latent}: linear probe {self.metric} on held-out documents ({self.n_positions} positions)", head]
        for r in self.rows:
            lines.append(f"{r['hook']:<26}{r['score']:>9.3f}{r.get('random_model', math.nan):>14.3f}{r['shuffled']:>10.3f}"
                         f"{r['selectivity']:>13.3f}{r['chance']:>8.3f}")
        return "\n".join(lines)


def world_knobs(config: dict, world: str) -> dict:
    """The knobs (and structure seed) the checkpoint's training used for `world`, so the probe sees the same world."""
    data = config.get("run", {}).get("data", {})
    try:
        spec = {name: knobs for name, _, knobs in parse_spec(data.get("worlds") or {})}
    except WorldSpecError:
        spec = {}
    return {"seed": data.get("world_seed", 0), **spec.get(world, {})}


def random_init_like(model: GPT, seed: int) -> GPT:
    """A model of the same shape with every matrix random. The modern preset's own init starts each
    block's output projections at zero, which would leave this control a bare embedding lookup."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        control = GPT(model.cfg).eval()
        with torch.no_grad():
            for name, p in control.named_parameters():
                if name.endswith(("o_proj.weight", "down_proj.weight")) and not p.any():
                    bound = math.sqrt(3.0 / p.size(1))
                    p.uniform_(-bound, bound)
    return control


def probe(model: GPT, tokenizer, world: str, latent: str | None = None, *, n_docs: int = 300, seed: int = 0,
          knobs: dict | None = None) -> ProbeResult:
    """Fit probes for world/latent at every layer of `model`, with a random-init model and shuffled labels as controls."""
    try:
        world_class(world)  # an unknown world is named as one, not as a world without a default latent
    except WorldSpecError as e:
        raise NextlabError(str(e)) from None
    latent = latent or DEFAULT_LATENT.get(world)
    if latent is None:
        raise NextlabError(f"world {world!r} has no default latent; pass --latent (known: {', '.join(DEFAULT_LATENT)} or 'token')")
    try:
        docs = world_documents(world, n_docs, PROBE_DOC_SEED + seed, knobs)
    except WorldSpecError as e:
        raise NextlabError(str(e)) from None
    try:
        data, continuous = collect(model, tokenizer, docs, latent, world)
        control_model = random_init_like(model, seed)
        random_data, _ = collect(control_model, tokenizer, docs, latent, world)
        rows = probe_layers(data, random_data, continuous, seed=seed)
    except ValueError as e:
        raise NextlabError(str(e)) from None
    result = ProbeResult(world, latent, continuous, "R^2" if continuous else "accuracy", rows,
                         int(0.7 * len(np.unique(data.doc))), len(data.labels))
    if continuous and data.labels.shape[1] == 3:  # a 3-state belief: the simplex picture from the best layer
        best = max(rows, key=lambda r: r["score"])["hook"]
        docs_idx = np.unique(data.doc)
        is_train = np.isin(data.doc, docs_idx[: len(docs_idx) * 7 // 10])
        x = data.acts[best]
        pred = ridge_fit_predict(x[is_train], data.labels[is_train], x[~is_train], 1e-2)
        result.simplex = {"hook": best, "true": data.labels[~is_train].tolist(), "probed": pred.tolist()}
    return result


def simplex_xy(p: np.ndarray) -> np.ndarray:
    """Barycentric (a, b, c) -> 2-D points in an equilateral triangle."""
    p = np.asarray(p, float)
    return np.stack([p[:, 1] + p[:, 2] / 2, p[:, 2] * math.sqrt(3) / 2], axis=1)


def plot_probe(result: ProbeResult, path: str | Path) -> Path:
    """Score per layer against its controls; for 3-state beliefs also the true and probed belief simplex."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if result.simplex else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    layers = range(len(result.rows))
    for key, label, style in (("score", "trained model", "o-"), ("random_model", "random-init model", "s--"),
                              ("shuffled", "shuffled labels", "^:"), ("chance", "chance", "k-")):
        ax.plot(layers, [r.get(key, math.nan) for r in result.rows], style, ms=4, label=label, lw=1)
    ax.set_xticks(list(layers), ["emb"] + [str(i) for i in range(len(result.rows) - 1)])
    ax.set_xlabel("residual stream after block")
    ax.set_ylabel(result.metric)
    ax.set_title(f"{result.world}/{result.latent}", fontsize=10)
    ax.legend(fontsize=7)
    if result.simplex:
        true, probed = np.array(result.simplex["true"]), np.clip(np.array(result.simplex["probed"]), 0, None)
        probed = probed / np.maximum(probed.sum(1, keepdims=True), 1e-9)
        colors = np.clip(true, 0, 1)
        for ax, points, title in ((axes[0][1], true, "true belief (Bayes)"),
                                  (axes[0][2], probed, f"linear probe of {result.simplex['hook']}")):
            xy = simplex_xy(points)
            ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=3, alpha=0.6)
            ax.plot([0, 1, 0.5, 0], [0, 0, math.sqrt(3) / 2, 0], "k-", lw=0.5)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
