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

from nextlab.checkpoint import CHECKPOINTS_DIR, load_checkpoint, model_card
from nextlab.compress.files import measure_compression
from nextlab.config import RunConfig, load_config
from nextlab.data import prepare_corpus
from nextlab.errors import NextlabError
from nextlab.evals import evaluate, get_task
from nextlab.evals.run import default_tasks
from nextlab.probe import plot_probe, probe, world_knobs
from nextlab.probe.heads import best_head, checkpoint_induction_scores, heads_over_training
from nextlab.sample import TokenScore, generate, score
from nextlab.scaling import emergence, fit_sweep, plot_sweep, run_sweep
from nextlab.train import train
from nextlab.tune import RLConfig, SFTConfig, rl, sft
from nextlab.tune.compare import answer_distributions, compare, plot_answer_distributions, telling_example
from nextlab.tune.data import world_examples
from nextlab.tune.sft import checkpoint_worlds
from nextlab.worlds import ALL_WORLDS

REPORT_FILE = "report.html"
TRAINING_TASKS = ("arithmetic", "programs", "translation", "facts", "arguments", "hmm")
ICL_SHOTS = (0, 1, 2, 4, 8)
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
        train = {"steps": 60, "batch_size": 16, "eval_every": 20, "eval_windows": 64, "warmup_steps": 10, "eval_world_docs": 16,
                 "eval_tasks": ["arithmetic", "arguments"], "eval_tasks_every": 60, "eval_task_items": 8,
                 "save_every": 20, "keep_last": 3}
        model = {"block_size": 128}
        data["world_bytes"] = 300_000
    else:
        # checkpoints every 75 steps, all kept: the induction-head curve is read from them
        train = {"steps": 750, "batch_size": 16, "eval_every": 50, "eval_windows": 128, "warmup_steps": 30,
                 "save_every": 75, "keep_last": 10,
                 "muon_lr": 0.04, "lr": 6e-3, "schedule": "wsd", "eval_tasks": list(TRAINING_TASKS), "eval_tasks_every": 100}
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


def _cell(r: dict, metric: str) -> str:
    return f"{r[metric]['mean']:.3f} ± {r[metric]['se']:.3f}" if metric in r else ""


def results_table(rows: list[dict], metrics: tuple[str, ...]) -> str:
    head = "".join(f"<th>{m}</th>" for m in ("task", "k", "n", *metrics))
    body = "".join(
        f"<tr><td>{html.escape(r['task'])}</td><td>{r['shots']}" + (f" ({r['shots_used']:.1f} fit)" if r["shots_used"] < r["shots"] else "")
        + f"</td><td>{r['n']}</td>" + "".join(f"<td>{_cell(r, m)}</td>" for m in metrics) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def tasks_section(results: list[dict], metrics_rows: list[dict]) -> Section:
    """Per-task scores in both metric families, the in-context learning curve, ID vs OOD, and capability over training."""
    import matplotlib.pyplot as plt

    from nextlab.evals import CONTINUOUS, DISCONTINUOUS

    top_k = max(r["shots"] for r in results)
    main = [r for r in results if r["shots"] in (0, top_k) and r["task"] != "icl_mapping"]
    icl = sorted((r for r in results if r["task"] == "icl_mapping"), key=lambda r: r["shots"])
    pairs = [(r, next(o for o in results if o["task"] == r["task"] + "_ood" and o["shots"] == 0))
             for r in results if r["shots"] == 0 and any(o["task"] == r["task"] + "_ood" for o in results)]
    parts = [
        "<p>No task was trained: each item is a prompt whose most likely continuation is the answer, cut from "
        "held-out world documents. Discontinuous metrics (exact match, multiple-choice accuracy) next to continuous "
        "ones (log-probability of the target per character, per-token accuracy under teacher forcing, normalized "
        "edit distance, Brier score); mean ± standard error over n items; k solved examples before each prompt.</p>",
        results_table(main, DISCONTINUOUS + tuple(m for m in CONTINUOUS if m != "target_logprob")),
    ]
    if pairs:
        rows = "".join(
            f"<tr><td>{html.escape(a['task'])}</td>" + "".join(f"<td>{_cell(a, m)}</td><td>{_cell(b, m)}</td>"
            for m in ("exact_match", "token_accuracy", "logprob_per_char")) + "</tr>" for a, b in pairs
        )
        parts.append(
            "<h3>In distribution vs out of distribution</h3><p>Each OOD split differs from training in one controlled way: "
            "more digits, deeper nesting, longer chains, people whose Q/A never appeared (k = 0).</p>"
            "<table><tr><th>task</th><th>exact match ID</th><th>OOD</th><th>token acc ID</th><th>OOD</th>"
            f"<th>log p/char ID</th><th>OOD</th></tr>{rows}</table>"
        )
    if icl:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ks = [r["shots"] for r in icl]
        acc = [r["mc_accuracy"]["mean"] for r in icl]
        err = [r["mc_accuracy"]["se"] for r in icl]
        ax.errorbar(ks, acc, yerr=err, marker="o", capsize=3, label="icl_mapping accuracy")
        ax.axhline(1 / 8, color="gray", ls="--", label="chance (8 choices)")
        ax.set_xlabel("shots k")
        ax.set_ylabel("multiple-choice accuracy")
        ax.set_xticks(ks)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        parts.append(
            "<h3>Learning from the prompt</h3><p>icl_mapping draws a fresh letter-to-digit mapping for every item, shown only "
            "in the shots: at k = 0 every model is at chance by construction, so any rise with k is learned from the "
            f'prompt, not from training.</p><img alt="in-context learning curve" src="data:image/png;base64,{figure_png(fig)}">'
            + results_table(icl, ("mc_accuracy", "brier", "logprob_per_char"))
        )
        plt.close(fig)
    over = [r for r in metrics_rows if r.get("tasks")]
    if len(over) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for name in over[-1]["tasks"]:
            pts = [(r["tokens"], r["tasks"][name]) for r in over if name in r["tasks"]]
            axes[0].plot([p[0] for p in pts], [p[1]["exact_match"] for p in pts], "o-", ms=3, label=name)
            axes[1].plot([p[0] for p in pts], [p[1]["logprob_per_char"] for p in pts], "o-", ms=3, label=name)
        axes[0].set_ylabel("exact match (discontinuous)")
        axes[1].set_ylabel("log p(target) per char (continuous)")
        for ax in axes:
            ax.set_xlabel("tokens seen")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)
        parts.append(
            "<h3>Capability over training</h3><p>The same tasks scored during training (k = 0): the continuous metric "
            f'moves from the start; exact match stays near zero until the answer is nearly right.</p>'
            f'<img alt="capability over training" src="data:image/png;base64,{figure_png(fig)}">'
        )
        plt.close(fig)
    return Section("Tasks fall out of prediction", "".join(parts))


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
    body = "<table>" + "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in model_card(config)) + "</table>"
    return Section("Model", body)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }}
pre {{ background: #f6f6f6; padding: .6em; white-space: pre-wrap; word-break: break-all; }}
pre.tokens span {{ border-radius: 2px; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} th, td {{ text-align: left; padding: 2px 10px; border-bottom: 1px solid #ddd; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{title}</h1>
{sections}
</body></html>
"""


def png_file_img(path: Path) -> str:
    """A PNG file written by a study, inlined as an <img> (the report stays one self-contained file)."""
    return f'<img alt="{path.stem}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def demo_sweep(cfg: RunConfig, quick: bool = False):
    """The demo's scaling sweep: the demo's corpus, depths 1-5 at four token budgets (--quick: 2 x 2)."""
    from nextlab.scaling import sweep_from_dict

    data = dict(vars(cfg.data))
    tasks = [t for t in cfg.train.eval_tasks if t in ("arithmetic", "arguments", "facts")] or ["arithmetic"]
    train = {"batch_size": 16, "warmup_steps": 10, "schedule": "wsd", "eval_windows": 32, "eval_world_docs": 16,
             "eval_tasks": tasks, "eval_task_items": 32, "lr": 6e-3, "muon_lr": 0.04}
    grid = {"depth": [1, 2] if quick else [1, 2, 3, 4, 5], "aspect": 32, "head_dim": 32,
            "tokens": [60_000, 120_000] if quick else [100_000, 200_000, 400_000, 800_000], "seed": [0]}
    return sweep_from_dict({"out": str(Path(cfg.out) / "sweep"), "grid": grid, "data": data,
                            "model": {"block_size": 128}, "train": train})


def scaling_section(rows: list[dict], fits: dict, table: dict, plots: list[Path]) -> Section:
    from nextlab.scaling.analysis import fit_report

    imgs = "".join(png_file_img(p) for p in plots)
    runs = "".join(
        f"<tr><td>{r['name']}</td><td>{r['N']:,}</td><td>{r['D']:,}</td><td>{r['C']:.2e}</td><td>{r['val_loss']:.4f}</td>"
        f"<td>{r['wall_s']:.0f} s</td></tr>" for r in sorted(rows, key=lambda r: r["C"])
    )
    sharp = ""
    for task, metric_rows in table.items():
        cells = "".join(
            f"<tr><td>{task}</td><td>{m['metric']}</td><td>"
            + ("no transition" if m["width_decades"] is None else f"{m['width_decades']:.2f}")
            + f"</td><td>{html.escape(m['note'] or '')}</td></tr>" for m in metric_rows
        )
        sharp += cells
    body = (
        f"<p>A sweep of {len(rows)} ordinary training runs on the demo's corpus: model size (depth, with width "
        f"32 per layer) against token budget. Loss falls smoothly with parameters N, tokens D and compute C = 6ND; "
        f"the fits (Huber loss on log residuals, bootstrap intervals, as Hoffmann et al. with Besiroglu et al.'s "
        f"corrections) say how fast.</p><pre>{html.escape(fit_report(fits))}</pre>{imgs}"
        f"<table><tr><th>run</th><th>N</th><th>D</th><th>C</th><th>val loss</th><th>time</th></tr>{runs}</table>"
        f"<p>How abruptly each task rises with compute, as the 10-90% width of a sigmoid fitted in log compute "
        f"(decades; smaller is more abrupt). Exact match of a many-token answer behaves like p<sup>L</sup> and can look "
        f"sudden where per-token accuracy and log-probability rise smoothly (Schaeffer et al., 2023).</p>"
        f"<table><tr><th>task</th><th>metric</th><th>width (decades)</th><th>note</th></tr>{sharp}</table>"
    )
    return Section("Scale does the heavy lifting", body)


def probe_section(results: list, plots: list[Path], heads: list[dict], best_head: tuple[int, int, float]) -> Section:
    """Probe scores per layer beside their controls, the belief simplex, and the induction / ICL curve."""
    import matplotlib.pyplot as plt

    tables = "".join(f"<pre>{html.escape(r.table())}</pre>" for r in results)
    imgs = "".join(png_file_img(p) for p in plots)
    curve = ""
    if len(heads) > 1:
        fig, ax = plt.subplots(figsize=(7, 3.4))
        tokens = [h["tokens"] for h in heads]
        ax.plot(tokens, [h["best_induction"] for h in heads], "o-", ms=3, label="best induction score (left)")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("induction score")
        ax2 = ax.twinx()
        ax2.plot(tokens, [h["icl_score"] for h in heads], "s--", ms=3, color="C1", label="ICL score = late - early loss (right)")
        ax2.set_ylabel("nats / token")
        fig.legend(fontsize=7, loc="upper center")
        fig.tight_layout()
        curve = f'<img alt="induction over training" src="data:image/png;base64,{figure_png(fig)}">'
        plt.close(fig)
    layer, head, score = best_head
    body = (
        "<p>To predict text well a model has to model what produced it, so the generator's hidden variables should "
        "be readable from the residual stream, and not from an untrained model of the same shape. Linear probes, "
        "trained on some held-out world documents and scored on others, per layer; beside each score its controls: "
        "the same probe on a randomly initialized model, and on shuffled labels, whose gap to the real score is the "
        "selectivity (Hewitt and Liang, 2019).</p>"
        f"{tables}{imgs}"
        f"<p>Induction heads (Olsson et al., 2022): on random tokens repeated twice, the best head (layer {layer}, "
        f"head {head}) puts {score:.3f} of its attention on the token after the previous occurrence. Over training, "
        "its rise and the in-context learning score (loss late in the context minus loss early in it) show the "
        f"phase change:</p>{curve}"
    )
    return Section("The model models what produced the text", body)


def compression_section(r: dict, source: str) -> Section:
    """Bits per byte of held-out text: the model in both modes against the classic compressors."""
    import math

    rows = [(f"nextlab {mode}", m["bits_per_byte"], f"{m['compress_kb_per_s']:.1f} / {m['decompress_kb_per_s']:.1f} KB/s")
            for mode, m in r["modes"].items()]
    rows += [(name, bpb, "") for name, bpb in r["baselines"].items()]
    table = "".join(f"<tr><td>{html.escape(n)}</td><td>{b:.3f}</td><td>{t}</td></tr>" for n, b, t in sorted(rows, key=lambda x: x[1]))
    nats = r["scorer_nats_per_byte"]
    static = r["modes"].get("static")
    identity = ""
    if static:
        identity = (
            f"<p>The identity, on these numbers: the scorer's cross-entropy on this text is {nats:.4f} nats per byte; "
            f"divided by ln 2 = {math.log(2):.4f} that is <b>{nats / math.log(2):.4f} bits per byte</b>. The static coder "
            f"spent {static['ideal_bits_per_byte']:.4f} bits per byte by its own probabilities (the text is cut into "
            f"{static['streams']} streams, each starting cold) and wrote {static['bits_per_byte']:.4f}: the range coder's "
            f"overhead is {100 * static['coder_overhead']:.3f}%, the rest is the file's header. Counting the model at 2 bytes "
            f"per parameter, as Del&eacute;tang et al. do, gives {static['adjusted_bits_per_byte']:.1f} bits per byte: "
            f"a model pays for itself only on much more text.</p>"
        )
    body = (
        f"<p>Arithmetic coding spends -log<sub>2</sub> p(token) bits on each token, so a model that predicts well "
        f"compresses well. {r['bytes']:,} bytes of {html.escape(source)}, compressed by the demo model with fixed weights "
        f"(static) and while it keeps learning from what it has coded (adaptive), and by the standard compressors "
        f"(bits per byte, lower is better; throughput compress / decompress on this machine). Every nextlab result "
        f"was decompressed and checked byte for byte.</p>"
        f"<table><tr><th>compressor</th><th>bits/byte</th><th>throughput</th></tr>{table}</table>{identity}"
    )
    return Section("Prediction is compression", body)


def demo_tuning(ckpt_path: Path, out: Path, quick: bool = False, log=print) -> dict:
    """SFT, then reward tuning, of the demo model; the comparison and the answer-position picture."""
    base = out / "tuned"
    sft_cfg = SFTConfig(steps=20 if quick else 300, examples_per_task=200 if quick else 2000)
    rl_cfg = RLConfig(steps=4 if quick else 100)
    shutil.rmtree(base, ignore_errors=True)
    sft_path = sft(ckpt_path, base / "sft", sft_cfg, log=log)
    rl_path = rl(sft_path, base / "sft-rl", rl_cfg, log=log)
    log("comparing base and tuned models")
    result = compare(ckpt_path, [sft_path, rl_path], n_per_task=8 if quick else 50, log=log)
    base_ckpt, sft_ckpt, rl_ckpt = (load_checkpoint(p) for p in (ckpt_path, sft_path, rl_path))
    worlds, world_seed = checkpoint_worlds(base_ckpt)
    example = telling_example(sft_ckpt, world_examples(result["tasks"], 10, "heldout", 4321, worlds, world_seed))
    dists = answer_distributions([("base, plain text", base_ckpt, "plain"), ("base, its own format", base_ckpt, "native"),
                                  ("SFT, chat", sft_ckpt, "chat"), ("SFT + RL, chat", rl_ckpt, "chat")], example)
    result["picture"] = plot_answer_distributions(dists, example, base / "answer_distribution.png")
    return result


def tuning_section(result: dict) -> Section:
    """The before/after table, the alignment tax and KL, and the distribution at the answer position."""
    labels = {}
    for name, tuning in result["tuning"].items():
        labels[name] = " + ".join(t["method"].upper() for t in tuning)
    base_name = next(iter(result["ordinary"]))
    labels[base_name] = "base"
    rows = "".join(
        f"<tr><td>{labels[r['model']]}</td><td>{r['prompting']}</td><td>{r['phrasing']}</td><td>{r['exact']:.3f}</td>"
        f"<td>{r['format']:.3f}</td><td>{r['p_answer']:.3f}</td><td>{r['entropy_bits']:.2f}</td></tr>" for r in result["rows"])
    base_loss = result["ordinary"][base_name]["val_loss"]
    ordinary = "".join(
        f"<tr><td>{labels[n]}</td><td>{o['val_loss']:.4f}</td><td>{o['val_loss'] - base_loss:+.4f}</td>"
        f"<td>{o['kl_from_base']:.4f}</td></tr>"
        for n, o in result["ordinary"].items())
    timing = "".join(f"<li>{labels[n]}: {t[-1]['steps']} steps, {t[-1]['seconds']:.0f} s ({t[-1]['seconds_per_step']:.2f} s/step)</li>"
                     for n, t in result["tuning"].items())
    samples = ""
    for r in result["rows"]:
        if r["phrasing"] == "held-out" and r["samples"]:
            s0 = r["samples"][0]
            samples += (f"<tr><td>{labels[r['model']]} ({r['prompting']})</td><td>{html.escape(s0['request'][:80])}</td>"
                        f"<td>{html.escape(repr(s0['reply'][:40]))}</td><td>{html.escape(s0['answer'])}</td></tr>")
    body = (
        "<p>Pretraining built the distribution; tuning reshapes it so a request in plain words is treated as a task. "
        "The engine stays next-token prediction: supervised fine-tuning (SFT) on conversations with the loss only on "
        "the assistant's tokens, then reward tuning (group-relative policy gradient, reward 1 for exactly the right "
        f"answer). Requests from the worlds ({', '.join(result['tasks'])}), {result['n_per_task']} per task, new items, "
        "phrased with the templates tuning used (seen) and with templates it never saw (held-out). The base model is "
        "asked in plain text (the request and a newline), and for reference in its own pretraining format.</p>"
        "<table><tr><th>model</th><th>prompting</th><th>phrasing</th><th>exact match</th><th>format-following</th>"
        f"<th>p(answer's first token)</th><th>entropy at the answer (bits)</th></tr>{rows}</table>"
        "<p>What it cost on ordinary text (the demo's validation windows): the loss, its change (the alignment tax) and "
        "KL(base || model) of the next-token distributions, in nats per token.</p>"
        f"<table><tr><th>model</th><th>val loss</th><th>tax</th><th>KL from base</th></tr>{ordinary}</table>"
        "<p>The next-token distribution at the answer position, for the first of a few held-out requests where the SFT "
        f"model's most likely token starts the right answer (orange: that token):</p>{png_file_img(result['picture'])}"
        f"<p>First held-out reply of each:</p><table><tr><th>model</th><th>request</th><th>reply</th><th>answer</th></tr>{samples}</table>"
        f"<p>Time on this machine:</p><ul>{timing}</ul>"
    )
    return Section("Instruction tuning reshapes the distribution", body)


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


def held_out_text(cfg: RunConfig, tokenizer, n_bytes: int) -> bytes:
    """The first n_bytes of the validation split: held-out files of the corpus (world documents come after them)."""
    corpus = prepare_corpus(cfg.data, tokenizer, log=lambda *a: None)
    ids = corpus.val[: 4 * n_bytes].tolist()
    eot = tokenizer.eot_id
    return tokenizer.decode_bytes([i for i in ids if i != eot])[:n_bytes]


def run_demo(quick: bool = False, out: str = "runs/demo", log=print) -> Path:
    """Train the demo model and write its report; returns the report's path."""
    cfg = demo_config(quick, out)
    if quick:
        cfg.train.progress = False
    # The demo owns its run directory: a new demo replaces the last one.
    shutil.rmtree(Path(out) / CHECKPOINTS_DIR, ignore_errors=True)
    shutil.rmtree(Path(out) / "sweep", ignore_errors=True)
    shutil.rmtree(Path(out) / "tuned", ignore_errors=True)
    result = train(cfg, log=log)
    ckpt = load_checkpoint(result.checkpoint)
    temperature = 0.8
    samples = [
        (p, generate(ckpt.model, ckpt.tokenizer, p, max_new_tokens=200 if quick else 400, temperature=temperature, seed=i))
        for i, p in enumerate(DEMO_PROMPTS)
    ]
    passage = held_out_passage(cfg, ckpt.tokenizer)
    log("evaluating tasks")
    names = default_tasks(ckpt.config["run"]["data"])
    n_items = 16 if quick else 64
    tasks = [get_task(name, n_items, 1234, cfg.data.worlds, cfg.data.world_seed) for name in names]
    icl = [t for t in tasks if t.name == "icl_mapping"]
    results = evaluate(ckpt.model, ckpt.tokenizer, [t for t in tasks if t.name != "icl_mapping"], [0, ICL_SHOTS[-1]])
    results += evaluate(ckpt.model, ckpt.tokenizer, icl, list(ICL_SHOTS))
    log("compressing held-out text")
    held_out = held_out_text(cfg, ckpt.tokenizer, 8_000 if quick else 48_000)
    compression = measure_compression(held_out, ckpt.model, ckpt.tokenizer)
    sections = [
        model_card_section(ckpt.config),
        loss_curve_section(result.metrics),
        floor_section(result.metrics),
        tasks_section(results, result.metrics),
        samples_section(samples, temperature),
        surprisal_section(score(ckpt.model, ckpt.tokenizer, passage), "validation split of the built-in corpus"),
        compression_section(compression, "held-out Python source (validation files of the built-in corpus)"),
    ]
    log("probing")
    probes = [probe(ckpt.model, ckpt.tokenizer, w, n_docs=120 if quick else 400, knobs=world_knobs(ckpt.config, w))
              for w in ("hmm", "arithmetic", "arguments")]
    probe_plots = [plot_probe(r, Path(out) / f"probe_{r.world}_{r.latent}.png") for r in probes]
    scores = checkpoint_induction_scores(ckpt)
    sections.append(probe_section(probes, probe_plots, heads_over_training(out), best_head(scores)))
    log("scaling sweep")
    sweep = demo_sweep(cfg, quick)
    rows = run_sweep(sweep, log=log)
    try:
        fits = fit_sweep(rows, n_bootstrap=50)
        sections.append(scaling_section(rows, fits, emergence(rows), plot_sweep(rows, fits, Path(sweep.out) / "plots")))
    except NextlabError as e:  # a --quick sweep is too small for some fits: say so in the report
        sections.append(Section("Scale does the heavy lifting", f"<p>No fit: {html.escape(str(e))}</p>"))
    log("instruction tuning")
    sections.append(tuning_section(demo_tuning(ckpt.path, Path(out), quick, log=log)))
    sections = [s for s in sections if s is not None]
    path = Path(out) / REPORT_FILE
    path.write_text(render("nextlab demo: next-token prediction on Python source and worlds", sections))
    log(f"wrote {path}")
    return path
