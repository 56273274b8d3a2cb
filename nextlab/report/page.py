"""The page every section goes on: `Section`, `render`, and inline PNGs.

A report is a list of sections, each a title and a block of HTML; `render`
puts them in one self-contained page (plots are inline PNGs, no external
files or scripts).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window


@dataclass
class Section:
    title: str
    html: str


def figure_png(fig) -> str:
    """A matplotlib figure as base64 PNG, for an inline <img>."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


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


def render(title: str, sections: list[Section]) -> str:
    body = "\n".join(f"<section><h2>{html.escape(s.title)}</h2>\n{s.html}\n</section>" for s in sections)
    return PAGE.format(title=html.escape(title), sections=body)
