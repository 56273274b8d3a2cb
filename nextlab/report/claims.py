"""Claims at a glance: one row per claim of the project, the figure of this run that tests it, the
threshold, and whether it was met, computed from the run's summary (never written by hand).

`claim_rows` reads the summary that `report.demo` assembles (the keys documented in the README); a figure
missing from it gives a row marked not met with no value, never a guess.
"""

from __future__ import annotations

import html

from nextlab.icl import EXCESS_TARGET, MAPPING_TARGET
from nextlab.reasoning import CARRY_MARGIN, CARRY_TARGET, SHARPNESS_RATIO, TARGET, carry_met, width_ratio
from nextlab.report.page import Section

FLOOR_TARGET = 0.05  # bits per byte above the entropy floor, the arithmetic run at the end
SWEEP_LOW, SWEEP_HIGH = 0.1, 0.9  # exact match at the sweep's smallest and largest compute
FORMAT_GAIN = 0.5  # format-following of plain-word requests, tuned minus base


def _get(record: dict, *keys):
    for key in keys:
        if not isinstance(record, dict) or record.get(key) is None:
            return None
        record = record[key]
    return record


def _row(claim: str, measure: str, value, threshold: str, test) -> dict:
    met = value is not None and bool(test(value))
    return {"claim": claim, "measure": measure, "value": value, "threshold": threshold, "met": met}


def claim_rows(summary: dict) -> list[dict]:
    """The claims-at-a-glance rows from a run summary: {"claim", "measure", "value", "threshold", "met"} each."""
    second = _get(summary, "second_task")  # none yet: the row says "not measured" rather than reuse arithmetic
    reasoning_task = _get(summary, "reasoning_task") or "arithmetic"
    sweep = _get(summary, "sweep_exact_match", reasoning_task)
    ratio = width_ratio(_get(summary, "sharpness", reasoning_task) or {})
    carry = _get(summary, "carry_probe")
    compression = _get(summary, "compression") or {}
    tuning = _get(summary, "tuning") or {}
    gain = (tuning["tuned_format_following"] - tuning["base_format_following"]
            if tuning.get("tuned_format_following") is not None and tuning.get("base_format_following") is not None else None)
    return [
        _row("One objective, and its floor",
             f"arithmetic run: loss above the entropy floor on {_get(summary, 'floor', 'documents')} held-out documents (bits/byte)",
             _get(summary, "floor", "excess_bpb"), f"<= {FLOOR_TARGET}", lambda v: v <= FLOOR_TARGET),
        _row("Tasks are continuations of a prompt",
             f"{second or 'a second task (programs, arguments or facts)'}: exact match of the greedy continuation, held-out items",
             _get(summary, "tasks", second, "exact_match"), f">= {TARGET}", lambda v: v >= TARGET),
        _row("In-context learning", "markov_icl: loss above the Bayes-optimal in-context learner (nats/symbol)",
             _get(summary, "icl", "markov_excess_nats"), f"<= {EXCESS_TARGET}", lambda v: v <= EXCESS_TARGET),
        _row("In-context learning", "icl_mapping accuracy with 8 solved examples (a fresh mapping per item)",
             _get(summary, "icl", "icl_mapping_k8"), f">= {MAPPING_TARGET}", lambda v: v >= MAPPING_TARGET),
        _row("Reasoning from prediction", "held-out sums of two 3-digit numbers: exact match",
             _get(summary, "tasks", "arithmetic_3digit", "exact_match"), f">= {TARGET}", lambda v: v >= TARGET),
        _row("Modelling what produced the text", "carry probe accuracy at the best layer, and a random-init model's at its best",
             [carry["accuracy"], carry["random_model"]] if carry else None,
             f">= {CARRY_TARGET}, and >= {CARRY_MARGIN} above the random model",
             lambda v: carry_met(*v)),
        _row("Scaling and emergence", f"sweep: {reasoning_task} exact match at the smallest and at the largest compute",
             sweep, f"<= {SWEEP_LOW} and >= {SWEEP_HIGH}", lambda v: v[0] <= SWEEP_LOW and v[1] >= SWEEP_HIGH),
        _row("Scaling and emergence", f"{reasoning_task} over training: log-probability's 10-90% width / exact match's",
             ratio, f">= {SHARPNESS_RATIO:g}", lambda v: v >= SHARPNESS_RATIO),
        _row("Prediction is compression",
             f"{compression.get('bytes', 0):,} bytes of held-out Python source: nextlab's bits per byte (adaptive), and xz -9e's",
             [compression["nextlab_bpb"], compression["xz_bpb"]] if compression.get("xz_bpb") is not None else None,
             "below xz -9e", lambda v: v[0] < v[1]),
        _row("Tuning reshapes the distribution", "requests in plain words, held-out phrasing: format-following, tuned minus base",
             gain, f">= {FORMAT_GAIN}", lambda v: v >= FORMAT_GAIN),
    ]


def _value(v) -> str:
    if v is None:
        return "not measured"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return ", ".join(_value(x) for x in v)
    return html.escape(str(v))


def claims_section(rows: list[dict]) -> Section:
    met = sum(r["met"] for r in rows)
    table = "".join(
        f"<tr><td>{html.escape(r['claim'])}</td><td>{html.escape(r['measure'])}</td><td>{_value(r['value'])}</td>"
        f"<td>{html.escape(r['threshold'])}</td><td>{'met' if r['met'] else '<b>not met</b>'}</td></tr>" for r in rows)
    body = (f"<p>Each claim of the project, the figure of this run that tests it, and whether it met its threshold "
            f"({met} of {len(rows)} met). Every value is computed by this run; the sections below show how.</p>"
            f"<table><tr><th>claim</th><th>figure</th><th>value</th><th>threshold</th><th></th></tr>{table}</table>")
    return Section("Claims at a glance", body)
