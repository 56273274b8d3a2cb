"""The reasoning section: answers on held-out items, the rise of each metric over training in one figure,
the carry probe, out-of-distribution length, and held-out prompts marked right or wrong."""

from __future__ import annotations

import html
import json
import math

import numpy as np

from nextlab.reasoning import CARRY_MARGIN, CARRY_TARGET, EMERGENCE_TASK, SHARPNESS_RATIO, TARGET, width_ratio
from nextlab.report.page import Section, figure_png
from nextlab.scaling.emergence import sigmoid
from nextlab.worlds import make_world

METRIC_STYLE = {"exact_match": ("exact match", "C3", "o-"), "token_accuracy": ("per-token accuracy", "C0", "s-"),
                "logprob_per_char": ("log-probability per character (right axis)", "C2", "^-")}


def rise_figure(task: str, run: dict) -> str:
    """Exact match and per-token accuracy (left axis) and log-probability per character (right axis) against
    training tokens, log scale, each with its fitted sigmoid and its 10-90% span shaded."""
    import matplotlib.pyplot as plt

    curve = [r for r in run["curve"] if r["tokens"] > 0]
    tokens = np.array([r["tokens"] for r in curve], float)
    fig, left = plt.subplots(figsize=(8, 4.2))
    right = left.twinx()
    dense = np.geomspace(tokens.min(), tokens.max(), 200)
    for metric, (label, color, style) in METRIC_STYLE.items():
        ax = right if metric == "logprob_per_char" else left
        ax.plot(tokens, [r[metric] for r in curve], style, ms=3, color=color, lw=1, label=label)
        sharp = run["sharpness"][metric]
        if sharp["width_decades"] is not None:
            ax.plot(dense, sigmoid(np.log10(dense), *sharp["fit"]), "-", color=color, lw=2, alpha=0.35)
            ax.axvspan(sharp["tokens_10"], sharp["tokens_90"], color=color, alpha=0.08)
    left.set_xscale("log")
    left.set_ylim(-0.02, 1.02)
    left.set_xlabel("training tokens")
    left.set_ylabel("exact match / per-token accuracy")
    right.set_ylabel("log-probability per character (nats)")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper left")
    left.grid(alpha=0.3)
    left.set_title(f"{task}: held-out items over training", fontsize=10)
    fig.tight_layout()
    png = figure_png(fig)
    plt.close(fig)
    return f'<img alt="{html.escape(task)} over training" src="data:image/png;base64,{png}">'


def _width(sharp: dict) -> str:
    if sharp["width_decades"] is None:
        return f"no sigmoid ({html.escape(sharp['note'])})"
    note = f"; {html.escape(sharp['note'])}" if sharp["note"] else ""
    return (f"{sharp['width_decades']:.2f} decades ({sharp['tokens_10']:,.0f} to {sharp['tokens_90']:,.0f} tokens, "
            f"fit R<sup>2</sup> {sharp['r2']:.2f}{note})")


# per task: what its out-of-distribution items are, what a score near the in-distribution one means, what a low one means
OOD_MEANING = {
    "arithmetic": ("inputs longer than any in training",
                   "the procedure carries over to longer inputs than any it trained on.",
                   "what it learned is tied to the lengths it trained on: it computes answers for new items of those "
                   "lengths, not a procedure that carries over to longer ones (length generalization is a known hard "
                   "problem for transformers trained on fixed lengths)."),
    "facts": ("questions about people who appear only in biographies, never in a Q/A line",
              "what biographies state can be asked for even about people the model was never quizzed on.",
              "the model answers from biographies about people it was also quizzed on, but knowledge read only in "
              "biographies is mostly not extractable by a question (as Allen-Zhu and Li, 2023, found for "
              "biographies without per-person Q/A training)."),
}


def ood_sentence(task: str, run: dict) -> str:
    """What the out-of-distribution score says, from the numbers."""
    names = [name for name in run["tasks"] if name.endswith("_ood")]
    if not names:
        return ""
    ood, held = run["tasks"][names[0]], run["tasks"][task]
    about, carries, tied = OOD_MEANING.get(task, ("items unlike any in training", "it carries over.", "it does not carry over."))
    if held["exact_match"] == 0:
        meaning = "the model did not learn the task in distribution either."
    elif ood["exact_match"] >= 0.5 * held["exact_match"]:
        meaning = carries
    else:
        meaning = tied
    return (f"Out of distribution (<code>{names[0]}</code>: {about}), exact match is "
            f"{ood['exact_match']:.3f} against {held['exact_match']:.3f} in distribution: {meaning}")


def world_sentence(run: dict) -> str:
    """The run's world and knobs, as trained; for reversed answers, how to read them (from the first example);
    for facts, what a held-out question asks."""
    knobs = "; ".join(f"<code>{html.escape(w)}</code> {html.escape(json.dumps(k))}" for w, k in run["worlds"].items())
    text = f"Trained on {knobs}."
    if run["worlds"].get("arithmetic", {}).get("reverse") and run["examples"]:
        e = run["examples"][0]
        sign = "-" if e["target"].startswith("-") else ""
        plain = sign + e["target"].removeprefix("-")[::-1]
        text += (f" Answers are written least significant digit first, the order a sum is computed in: "
                 f"<code>{html.escape(e['prompt'] + e['target'])}</code> says {html.escape(e['prompt'])}{html.escape(plain)}.")
    if "facts" in run["worlds"]:
        bios = make_world("facts", **run["worlds"]["facts"]).p_bio  # the knob as given, or the world's default
        text += (f" {bios:.0%} of the documents are biographies of invented people, each stating a person's birth city, "
                 "birth year, employer and field in one of several phrasings; the others are question/answer lines asking "
                 "for one of those facts. A held-out question was never in training as a Q/A line: its answer was stated "
                 "only in biographies, so answering it means retrieving a fact read in one form when asked in another.")
    return text


def sharpness_paragraph(task: str, run: dict) -> str:
    """Each metric's 10-90% width over training, and how much more sharply exact match rose (the target applies
    to EMERGENCE_TASK only)."""
    sharp = run["sharpness"]
    ratio = width_ratio({m: w["width_decades"] for m, w in sharp.items()}) or math.nan
    target = f" (target &ge; {SHARPNESS_RATIO:g}x)" if task == EMERGENCE_TASK else ""
    return ("<p>How abruptly each metric rises over training, as the 10-90% width of a sigmoid fitted against log tokens "
            f"from the end of the warmup ({run['sharpness_from_tokens']:,} tokens; before it, at a rising learning rate, "
            "the model learns the alphabet and the format, which moves the per-token scores and not the answers), shaded: "
            f"exact match {_width(sharp['exact_match'])}; per-token accuracy {_width(sharp['token_accuracy'])}; "
            f"log-probability {_width(sharp['logprob_per_char'])}. Exact match rises "
            + (f"{ratio:.1f}x" if math.isfinite(ratio) else "an unmeasured factor")
            + f" more sharply than log-probability{target}: an answer of L tokens is right only "
            "when every token is, so its exact match behaves like p<sup>L</sup> and stays near 0 while the per-token "
            "scores climb (Schaeffer et al., 2023). Both are the same model on the same items.</p>")


def reasoning_section(runs: dict) -> Section:
    parts = ["<p>Predicting the next token of a true equation means computing its answer; of an answer to a question "
             "about a person, recalling what a biography said. Models trained each on one world alone, with nothing but "
             "next-token prediction, are asked to continue prompts they never trained on: "
             "each world's items are split by a hash of the prompt, the training stream never contains a held-out item "
             "(a test checks it), and every score below is on held-out items, greedy decoding, no examples in the "
             f"prompt. Target: exact match &ge; {TARGET}.</p>"]
    for task, run in runs.items():
        scores = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{s['exact_match']:.3f} &plusmn; {s['exact_match_se']:.3f}</td><td>{s['n']}</td>"
            f"<td>{s['token_accuracy']:.3f}</td><td>{s['logprob_per_char']:.3f}</td></tr>" for name, s in run["tasks"].items())
        parts.append(
            f"<h3>{html.escape(task)}</h3><p>{world_sentence(run)} {run['params']:,} parameters, {run['tokens']:,} tokens, "
            f"{run['train_seconds']:.0f} s of training.</p>"
            "<table><tr><th>items</th><th>exact match</th><th>n</th><th>per-token accuracy</th><th>log-prob per character</th></tr>"
            f"{scores}</table>{rise_figure(task, run)}{sharpness_paragraph(task, run)}<p>{ood_sentence(task, run)}</p>"
        )
        if "carry_probe" in run:
            c = run["carry_probe"]
            parts.append(
                f"<p>The carries, the intermediate results a sum needs, are linearly readable from the residual stream at "
                f"the position before each answer digit: accuracy {c['accuracy']:.3f} at <code>{html.escape(c['layer'])}</code>, "
                f"against {c['random_model']:.3f} for a random-init model of the same shape at its best layer, "
                f"<code>{html.escape(c['random_model_layer'])}</code> (chance {c['chance']:.3f}; "
                f"target &ge; {CARRY_TARGET} and &ge; {CARRY_MARGIN} above the random model).</p>")
    return Section("Reasoning appears from prediction", "".join(parts))
