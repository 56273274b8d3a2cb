"""The in-context learning section: the phase change on one step axis, and the checks against the targets."""

from __future__ import annotations

import html

from nextlab.icl import describe_transition
from nextlab.report.page import Section, figure_png

REFERENCE_STYLE = {"uniform": ("uniform", ":"), "unigram": ("in-context unigram", "--"), "bayes": ("Bayes floor", "-")}


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return " -> ".join(_value(x) for x in v) if all(isinstance(x, float) for x in v) else html.escape(str(v))
    return html.escape(str(v))


def checks_table(checks: list[dict]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c['claim'])}</td><td>{html.escape(c['measure'])}</td><td>{_value(c['value'])}</td>"
        f"<td>{html.escape(c['threshold'])}</td><td>{'met' if c['met'] else '<b>not met</b>'}</td></tr>" for c in checks)
    return f"<table><tr><th>claim</th><th>measure</th><th>value</th><th>target</th><th></th></tr>{rows}</table>"


def phase_change_figure(curve: dict, transition: dict) -> str:
    """Loss with its references (top, a broken axis: uniform far above, the drop to the floor magnified),
    the heads and icl_mapping accuracy (bottom), on one step axis."""
    import matplotlib.pyplot as plt

    rows, refs = curve["rows"], curve["references"]
    steps, loss = [r["step"] for r in rows], [r["markov_loss"] for r in rows]
    fig, (high, low, bottom) = plt.subplots(3, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [0.35, 1, 1.2]})
    gap = refs["unigram"] - refs["bayes"]
    high.set_ylim(refs["unigram"] + 1.5 * gap, max(refs["uniform"], loss[1] if len(loss) > 1 else 0) + 0.1)
    low.set_ylim(refs["bayes"] - 0.3 * gap, refs["unigram"] + 1.5 * gap)
    for ax in (high, low):
        ax.plot(steps, loss, "o-", ms=3, color="k", label="model")
        for name, (label, style) in REFERENCE_STYLE.items():
            ax.axhline(refs[name], ls=style, color="C3", lw=1, label=f"{label} {refs[name]:.3f}")
    high.spines["bottom"].set_visible(False)
    low.spines["top"].set_visible(False)
    high.tick_params(bottom=False)
    high.legend(fontsize=7, loc="upper right", ncol=2)
    low.set_ylabel("markov_icl loss\n(nats / symbol)")
    layer, head = transition["head"]
    series = transition["series"]
    bottom.plot(steps, series["statistical"], "o-", ms=3, color="C0", label=f"statistical induction, layer {layer} head {head}")
    bottom.plot(steps, [r["heads"]["statistical_baseline"] for r in rows], "--", lw=1, color="C0", label="its even-attention baseline")
    bottom.plot(steps, series["previous_token"], "s-", ms=2, color="C2",
                label="previous token, layer {}, head {}".format(*transition["previous_token_head"]))
    bottom.plot(steps, [r["heads"]["previous_token_baseline"] for r in rows], "--", lw=1, color="C2")
    for k, color in zip(rows[-1]["icl_mapping"], ("C7", "C1")):
        bottom.plot(steps, [r["icl_mapping"][k]["accuracy"] for r in rows], "^-", ms=3, color=color, label=f"icl_mapping accuracy, k = {k}")
    bottom.axhline(curve["chance"], ls=":", color="C7", lw=1, label=f"chance ({curve['chance']:.3f})")
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("score / accuracy")
    bottom.set_xlabel("training step")
    bottom.legend(fontsize=7, loc="center right")
    for ax in (high, low, bottom):
        if transition["loss_window"]:
            ax.axvspan(*transition["loss_window"], color="C3", alpha=0.1)
        ax.grid(alpha=0.3)
    bottom.axvspan(*transition["sharpest_rise"], color="C0", alpha=0.15)
    fig.tight_layout(h_pad=0.3)
    png = figure_png(fig)
    plt.close(fig)
    return f'<img alt="in-context learning forming" src="data:image/png;base64,{png}">'


def icl_section(study: dict) -> Section:
    curve, t = study["curve"], study["transition"]
    refs = curve["references"]
    chars = refs["characters"]
    letters = (f"written with {refs['n_symbols']} characters that are also drawn anew from <code>{html.escape(chars)}</code>"
               if refs["pool"] else f"written <code>{html.escape(chars)}</code>")
    k0, k8 = curve["rows"][-1]["icl_mapping"]
    body = (
        "<p>A model trained only to predict the next token learns to learn from its prompt. A separate small run "
        f"({study['params']:,} parameters, {study['steps']} steps, {study['train_s']:.0f} s of training) sees only two "
        "worlds whose generator changes with every document, so nothing about any one document can be memorized: "
        f"<code>markov_icl</code> draws a fresh Markov chain over {refs['n_symbols']} symbols per document, {letters}, and "
        "<code>recall</code> a fresh letter-to-digit mapping shown as repeating pairs (<code>e2h4f5e2</code>). Predicting "
        "the chain's next symbol as well as possible means counting, in context, what followed the current symbol before: "
        f"the entropy floor <i>is</i> the Bayes-optimal in-context learner ({refs['bayes']:.3f} nats/symbol), below the "
        f"in-context unigram predictor ({refs['unigram']:.3f}) and uniform guessing over {len(chars)} characters "
        f"({refs['uniform']:.3f}). Measured at step 0 and every checkpoint on {curve['n_docs']} held-out documents (from "
        f"symbol {curve['first_measured'] + 1} on: the first ones also say which world a document is from): the loss; every "
        "attention head's share of attention on the tokens that followed earlier occurrences of the current token "
        "(statistical induction, Edelman et al., 2024) and on the previous token, each beside what even attention gives; "
        f"and <code>icl_mapping</code> (a fresh mapping per item, {curve['n_items']} items, chance {curve['chance']:.3f}) "
        f"with {k0} and with {k8} solved examples before the query.</p>"
        f"{phase_change_figure(curve, t)}"
        "<p>Shaded red: from the checkpoint before the loss first reaches the in-context unigram level to the first at or "
        "below halfway from it to the floor. Shaded blue: the checkpoint interval of the induction head's sharpest rise.</p>"
        f"<p><b>{html.escape(describe_transition(t))}</b></p>{checks_table(t['checks'])}"
    )
    return Section("In-context learning forms", body)
