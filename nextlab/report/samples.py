"""Sections on the model's text: sampled continuations, and held-out text coloured by surprisal."""

from __future__ import annotations

import html
import math

from nextlab.report.page import Section
from nextlab.sample import TokenScore


def examples_table(examples: list[dict]) -> str:
    """Held-out prompts with the model's greedy answer, the true answer, and whether they match."""
    rows = "".join(
        f"<tr><td><code>{html.escape(e['prompt'][-90:])}</code></td><td><code>{html.escape(e['answer'])}</code></td>"
        f"<td><code>{html.escape(e['target'])}</code></td><td>{'right' if e['right'] else '<b>wrong</b>'}</td></tr>" for e in examples)
    return f"<table><tr><th>held-out prompt (its end)</th><th>answer</th><th>true answer</th><th></th></tr>{rows}</table>"


def samples_section(samples: list[tuple[str, str]], temperature: float, held_out: dict[str, list[dict]] | None = None) -> Section:
    """Sampled continuations of the demo model; and, per reasoning run, held-out prompts answered greedily."""
    items = "".join(
        f"<pre><b>{html.escape(p)}</b>{html.escape(c)}</pre>" for p, c in samples
    )
    answers = "".join(f"<h3>{html.escape(task)}</h3>{examples_table(examples)}" for task, examples in (held_out or {}).items())
    if answers:
        answers = ("<p>Prompts the reasoning runs never trained on (held-out items), each model's greedy answer, and "
                   "whether it is exactly right (answers in the world's own format: see the reasoning section):</p>"
                   f"{answers}")
    return Section("Samples", f"<p>Continuations of the bold prompts by the demo model, temperature {temperature}.</p>{items}{answers}")


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
