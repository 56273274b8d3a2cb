"""The demo: train the default model on the built-in corpus and write `report.html`.

A report is a list of sections, each a title and a block of HTML; `render`
puts them in one self-contained page (plots are inline PNGs, no external
files or scripts). Later studies add sections by returning more `Section`s;
this module only lays out what they return.
"""

from __future__ import annotations

import base64
import html
import io
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from nextlab.checkpoint import CHECKPOINTS_DIR, load_checkpoint
from nextlab.config import RunConfig, load_config
from nextlab.data import prepare_corpus
from nextlab.sample import TokenScore, generate, score
from nextlab.train import train
from nextlab.worlds import ALL_WORLDS

REPORT_FILE = "report.html"
DEMO_PROMPTS = ("def ", "import ", "23 + 58 =", "Q: Where was", "the small dog that sees the cats runs =>", "All ")


@dataclass
class Section:
    title: str
    html: str


def demo_config(quick: bool = False, out: str = "runs/demo") -> RunConfig:
    """The main job: the default `modern` model, byte-level, on the Python standard library and every world.

    The full demo is sized for about 5 minutes on 2 CPU cores; --quick for under a minute.
    """
    data = {"path": "stdlib", "worlds": dict(ALL_WORLDS), "world_bytes": 4_000_000}
    if quick:
        train = {"steps": 60, "batch_size": 16, "eval_every": 20, "eval_windows": 64, "warmup_steps": 10, "eval_world_docs": 16}
        model = {"block_size": 128}
        data["world_bytes"] = 300_000
    else:
        train = {"steps": 850, "batch_size": 16, "eval_every": 50, "eval_windows": 128, "warmup_steps": 30,
                 "muon_lr": 0.04, "lr": 6e-3, "schedule": "wsd"}
        model = {"block_size": 256}
    return load_config(overrides=[f"out={out!r}"], train=train, model=model, data=data)


def figure_png(fig) -> str:
    """A matplotlib figure as base64 PNG, for an inline <img>."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


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


def samples_section(samples: list[tuple[str, str]], temperature: float) -> Section:
    items = "".join(
        f"<pre><b>{html.escape(p)}</b>{html.escape(c)}</pre>" for p, c in samples
    )
    return Section("Samples", f"<p>Continuations of the bold prompts, temperature {temperature}.</p>{items}")


def surprisal_color(bits: float, max_bits: float = 12.0) -> str:
    """White (predictable) to red (surprising), on a log-ish scale of bits."""
    x = min(1.0, math.log1p(max(bits, 0.0)) / math.log1p(max_bits))
    g = int(255 - 200 * x)
    return f"rgb(255,{g},{g})"


def surprisal_html(scores: list[TokenScore]) -> str:
    spans = []
    for s in scores:
        bits = s.surprisal_bits
        text = html.escape(s.text).replace("\n", "↵\n")
        spans.append(f'<span style="background:{surprisal_color(bits)}" title="{bits:.2f} bits">{text}</span>')
    legend = " ".join(
        f'<span style="background:{surprisal_color(b)};padding:0 6px">{b} bits</span>' for b in (0, 1, 2, 4, 8, 12)
    )
    return f'<p>Legend: {legend}</p><pre class="tokens">{"".join(spans)}</pre>'


def surprisal_section(scores: list[TokenScore], source: str) -> Section:
    mean = sum(s.surprisal_bits for s in scores) / len(scores)
    n_bytes = len("".join(s.text for s in scores).encode())
    body = (
        f"<p>A passage the model never trained on ({html.escape(source)}), each token coloured by its surprisal "
        f"-log2 p(token | everything before it). Mean {mean:.2f} bits/token, "
        f"{sum(s.surprisal_bits for s in scores) / max(1, n_bytes):.2f} bits/byte. Hover a token for its value.</p>"
        + surprisal_html(scores)
    )
    return Section("Surprisal of held-out text", body)


def model_card_section(config: dict) -> Section:
    m, d = config["model"], config["data"]
    rows = [
        ("architecture", f"{m['arch']}: {m['n_layer']} layers, {m['n_head']} heads, {m['n_embd']} wide, context {m['block_size']}"),
        ("parameters", f"{config['params']:,} ({config['non_embedding_params']:,} non-embedding)"),
        ("tokenizer", f"{config['tokenizer']} ({m['vocab_size']} tokens)"),
        ("training data", f"{d['path']}{' + worlds ' + ', '.join(d['worlds']) if d.get('worlds') else ''}: "
                          f"{d['documents']:,} documents, {d['train_tokens']:,} train tokens"),
        ("tokens seen", f"{config['tokens_seen']:,} in {config['step']} steps"),
        ("validation loss", f"{config['val_loss']:.4f} nats/token, {config['val_bpb']:.3f} bits/byte"),
    ]
    body = "<table>" + "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows) + "</table>"
    return Section("Model", body)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }}
pre {{ background: #f6f6f6; padding: .6em; white-space: pre-wrap; word-break: break-all; }}
pre.tokens span {{ border-radius: 2px; }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: 2px 10px; border-bottom: 1px solid #ddd; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{title}</h1>
{sections}
</body></html>
"""


def render(title: str, sections: list[Section]) -> str:
    body = "\n".join(f"<section><h2>{html.escape(s.title)}</h2>\n{s.html}\n</section>" for s in sections)
    return PAGE.format(title=html.escape(title), sections=body)


def held_out_passage(cfg: RunConfig, tokenizer, n_tokens: int = 600) -> str:
    """The start of a validation document (or a stretch of it), at most n_tokens long."""
    corpus = prepare_corpus(cfg.data, tokenizer, log=lambda *a: None)
    start = len(corpus.val) // 3
    ids = corpus.val[start : start + 8 * n_tokens].tolist()
    eot = tokenizer.eot_id
    if eot in ids[:-n_tokens]:
        ids = ids[ids.index(eot) + 1 :]
    if eot in ids:
        ids = ids[: ids.index(eot)]
    return tokenizer.decode(ids[:n_tokens])


def run_demo(quick: bool = False, out: str = "runs/demo", log=print) -> Path:
    """Train the demo model and write its report; returns the report's path."""
    cfg = demo_config(quick, out)
    if quick:
        cfg.train.progress = False
    # The demo owns its run directory: a new demo replaces the last one.
    shutil.rmtree(Path(out) / CHECKPOINTS_DIR, ignore_errors=True)
    result = train(cfg, log=log)
    ckpt = load_checkpoint(result.checkpoint)
    temperature = 0.8
    samples = [
        (p, generate(ckpt.model, ckpt.tokenizer, p, max_new_tokens=200 if quick else 400, temperature=temperature, seed=i))
        for i, p in enumerate(DEMO_PROMPTS)
    ]
    passage = held_out_passage(cfg, ckpt.tokenizer)
    sections = [
        model_card_section(ckpt.config),
        loss_curve_section(result.metrics),
        floor_section(result.metrics),
        samples_section(samples, temperature),
        surprisal_section(score(ckpt.model, ckpt.tokenizer, passage), "validation split of the built-in corpus"),
    ]
    sections = [s for s in sections if s is not None]
    path = Path(out) / REPORT_FILE
    path.write_text(render("nextlab demo: next-token prediction on Python source and worlds", sections))
    log(f"wrote {path}")
    return path
