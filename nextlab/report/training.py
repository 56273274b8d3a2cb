"""Sections on the training run: the model card, the loss curve, the distance to each world's entropy floor."""

from __future__ import annotations

import html

from nextlab.checkpoint import model_card
from nextlab.report.page import Section, figure_png


def loss_curve_section(metrics: list[dict], floor_label: str | None = None) -> Section:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    val = [r for r in metrics if r.get("val_loss") is not None]
    trn = [r for r in metrics if r.get("train_loss") is not None]
    ax.plot([r["tokens"] for r in trn], [r["train_loss"] for r in trn], label="train (mean since last eval)", alpha=0.7)
    ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", label="validation", ms=3)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    png = figure_png(fig)
    plt.close(fig)
    last = val[-1]
    body = (
        f'<img alt="loss curve" src="data:image/png;base64,{png}">'
        f"<p>Final validation loss {last['val_loss']:.4f} nats/token = {last['val_bpb']:.3f} bits/byte, "
        f"after {last['tokens']:,} tokens ({last['train_s']:.0f} s of training).</p>"
    )
    return Section("Loss curve", body)


def floor_section(metrics: list[dict]) -> Section | None:
    """Excess of the model's bits per byte over each world's entropy floor, over training."""
    rows = [r for r in metrics if r.get("worlds")]
    if not rows:
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name in rows[-1]["worlds"]:
        pts = [(r["tokens"], r["worlds"][name]["excess_bpb"]) for r in rows if name in r["worlds"]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=name)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("model minus floor (bits / byte)")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    png = figure_png(fig)
    plt.close(fig)
    final = rows[-1]["worlds"]
    table = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{w['bpb']:.3f}</td><td>{w['floor_bpb']:.3f}</td><td>{w['excess_bpb']:.3f}</td></tr>"
        for n, w in final.items()
    )
    body = (
        "<p>Each world's text comes from a generator whose probability of every document is known, so the best "
        "possible loss is a number: the entropy floor, -log2 P(document) per byte. The gap between the model and "
        "that floor, on whole held-out documents, is what the model has not yet learned about the process that "
        "produced the text.</p>"
        f'<img alt="excess over the floor" src="data:image/png;base64,{png}">'
        "<table><tr><th>world</th><th>model bits/byte</th><th>floor bits/byte</th><th>excess</th></tr>"
        f"{table}</table>"
    )
    return Section("How close to the floor", body)


def model_card_section(config: dict) -> Section:
    body = "<table>" + "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in model_card(config)) + "</table>"
    return Section("Model", body)
