"""The compression section: the model as a coder against the classic compressors."""

from __future__ import annotations

import html

from nextlab.report.page import Section


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
