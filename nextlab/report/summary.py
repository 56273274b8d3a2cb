"""`summary.json`: the report's headline figures in one machine-readable file beside `report.html`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

SUMMARY_FILE = "summary.json"


def strict_json(value):
    """The value with every NaN or infinity as null: summary.json is strict JSON, readable by any parser."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def write_summary(out: str | Path, summary: dict) -> Path:
    """Write `summary` as OUT/summary.json (through a temporary file, so a reader never sees half of it)."""
    path = Path(out) / SUMMARY_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(strict_json(summary), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
