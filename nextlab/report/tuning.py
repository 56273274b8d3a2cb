"""The tuning section: SFT then reward tuning of the demo model, and how they reshape its distribution."""

from __future__ import annotations

import html
import shutil
from pathlib import Path

from nextlab.checkpoint import load_checkpoint
from nextlab.report.page import Section, png_file_img
from nextlab.tune import RLConfig, SFTConfig, rl, sft
from nextlab.tune.compare import answer_distributions, compare, plot_answer_distributions, telling_example
from nextlab.tune.data import world_examples
from nextlab.tune.sft import checkpoint_worlds


def demo_tuning(ckpt_path: Path, out: Path, quick: bool = False, log=print) -> dict:
    """SFT, then reward tuning, of the demo model; the comparison and the answer-position picture."""
    base = out / "tuned"
    sft_cfg = SFTConfig(steps=20 if quick else 200, examples_per_task=200 if quick else 2000)
    rl_cfg = RLConfig(steps=4 if quick else 100)
    shutil.rmtree(base, ignore_errors=True)
    sft_path = sft(ckpt_path, base / "sft", sft_cfg, log=log)
    rl_path = rl(sft_path, base / "sft-rl", rl_cfg, log=log)
    log("comparing base and tuned models")
    result = compare(ckpt_path, [sft_path, rl_path], n_per_task=4 if quick else 50, log=log)
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
