"""The tasks section: scores in both metric families, in-context learning, ID vs OOD, capability over training."""

from __future__ import annotations

import html

from nextlab.report.page import Section, figure_png


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
            "prompt, not from training. This model never saw a document that rewards reading such pairs; the run in "
            "the section on in-context learning did.</p>"
            f'<img alt="in-context learning curve" src="data:image/png;base64,{figure_png(fig)}">'
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
