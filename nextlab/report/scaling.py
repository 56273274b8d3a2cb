"""The scaling section: the demo's sweep (`reasoning.reasoning_sweep`), its fits and its emergence table."""

from __future__ import annotations

import html
from pathlib import Path

from nextlab.report.page import Section, png_file_img


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
        f"<p>A sweep of {len(rows)} ordinary training runs on the arithmetic world alone: model size (depth, with width "
        f"32 per layer) against token budget; the largest run is the arithmetic model of the reasoning section. Loss falls "
        f"smoothly with parameters N, tokens D and compute C = 6ND towards the world's entropy floor; "
        f"the fits (Huber loss on log residuals, bootstrap intervals, as Hoffmann et al. with Besiroglu et al.'s "
        f"corrections) say how fast.</p><pre>{html.escape(fit_report(fits))}</pre>{imgs}"
        f"<table><tr><th>run</th><th>N</th><th>D</th><th>C</th><th>val loss</th><th>time</th></tr>{runs}</table>"
        f"<p>How abruptly each task rises with compute, as the 10-90% width of a sigmoid fitted in log compute "
        f"(decades; smaller is more abrupt). Exact match of a many-token answer behaves like p<sup>L</sup> and can look "
        f"sudden where per-token accuracy and log-probability rise smoothly (Schaeffer et al., 2023).</p>"
        f"<table><tr><th>task</th><th>metric</th><th>width (decades)</th><th>note</th></tr>{sharp}</table>"
    )
    return Section("Scale does the heavy lifting", body)
