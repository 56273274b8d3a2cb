"""The probes section: latents read from the residual stream, and induction heads over training."""

from __future__ import annotations

import html
from pathlib import Path

from nextlab.report.page import Section, figure_png, png_file_img


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
