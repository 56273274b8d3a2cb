"""The probes section: latents read from the residual stream, and induction heads over training."""

from __future__ import annotations

import html
from pathlib import Path

from nextlab.report.page import Section, png_file_img


def probe_section(results: list, plots: list[Path], heads_plot: Path | None, scores) -> Section:
    """Probe scores per layer beside their controls, the belief simplex, and the attention heads over training.

    `scores` is the final model's HeadScores; `heads_plot` the picture of the best heads over its checkpoints.
    """
    tables = "".join(f"<pre>{html.escape(r.table())}</pre>" for r in results)
    imgs = "".join(png_file_img(p) for p in plots)
    heads = "".join(
        f"<tr><td>{label}</td><td>layer {layer}, head {head}</td><td>{value:.3f}</td><td>{scores.baseline(name):.3f}</td></tr>"
        for name, label in (("classic", "classic induction"), ("statistical", "statistical induction"),
                            ("previous_token", "previous token"))
        for layer, head, value in [scores.best(name)]
    )
    body = (
        "<p>To predict text well a model has to model what produced it, so the generator's hidden variables should "
        "be readable from the residual stream, and not from an untrained model of the same shape. Linear probes, "
        "trained on some held-out world documents and scored on others, per layer; beside each score its controls: "
        "the same probe on a randomly initialized model, and on shuffled labels, whose gap to the real score is the "
        "selectivity (Hewitt and Liang, 2019).</p>"
        f"{tables}{imgs}"
        "<p>Attention heads of this model (Olsson et al., 2022; Edelman et al., 2024), each score the share of a head's "
        "attention that lands where that kind of head puts it, beside what even attention gives: classic induction (on "
        "random tokens repeated twice, the token after the earlier occurrence), statistical induction (on validation text, "
        "every token that followed an earlier occurrence of the current one) and previous token.</p>"
        f"<table><tr><th>score</th><th>best head</th><th>its score</th><th>even attention</th></tr>{heads}</table>"
        + (f"<p>The best heads over training:</p>{png_file_img(heads_plot)}" if heads_plot else "")
    )
    return Section("The model models what produced the text", body)
