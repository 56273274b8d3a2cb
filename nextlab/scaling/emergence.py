"""Emergence as a number: how sharply a capability curve rises with compute.

A capability curve is a task score against x = log10 training compute. fit_sigmoid fits

    score = lo + (hi - lo) / (1 + exp(-(x - x0) / s))

and reports the midpoint x0 and the width of the 10%-90% transition in decades of compute, 2 ln 9 |s|.
"Emergent" means a small width. Schaeffer et al. (2023) showed that the width depends on the metric as
much as on the model: exact match of an L-token answer behaves like p^L and rises far more sharply than
the per-token accuracy p it is built from. So compare widths across metrics of one task, not only across tasks.

s may be negative: the fit follows falling curves as well as rising ones, and the width uses |s|. For a
table it reads better to pass a score where higher is better (1 - edit distance, log-prob rather than
negative log-prob). A flat curve, or one with fewer than 3 points, gives a fit with an infinite width
and a note instead of an error: emergence runs over many tasks, and one flat task must not stop the table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit

from nextlab.errors import NextlabError

WIDTH_PER_S = 2 * math.log(9)  # logistic 10% -> 90% spans x0 - s ln 9 .. x0 + s ln 9
FLAT = "flat: no transition in this range"


@dataclass(frozen=True)
class SigmoidFit:
    """score = lo + (hi - lo) * sigmoid((x - x0) / s) over x = log10 compute; lo <= hi, s < 0 for a falling curve."""

    x0: float  # midpoint, log10 compute
    s: float  # scale in decades
    lo: float
    hi: float
    width_decades: float  # 10%-90% transition width, 2 ln 9 |s|; inf when there is no transition to fit
    r2: float
    contained: bool  # the midpoint lies within the observed compute range
    n_points: int
    note: str = ""

    def predict(self, log10_compute) -> np.ndarray:
        return sigmoid(np.asarray(log10_compute, dtype=float), self.x0, self.s, self.lo, self.hi)

    def summary(self) -> str:
        if not math.isfinite(self.width_decades):
            return f"no sigmoid ({self.note})"
        text = f"midpoint 10^{self.x0:.2f}, 10-90% width {self.width_decades:.2f} decades, R^2 {self.r2:.3f}"
        return text + (f"  [{self.note}]" if self.note else "")

    def to_dict(self) -> dict:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in asdict(self).items()}


def sigmoid(x: np.ndarray, x0: float, s: float, lo: float, hi: float) -> np.ndarray:
    return lo + (hi - lo) * expit((x - x0) / s)


def no_transition(n: int, note: str) -> SigmoidFit:
    return SigmoidFit(math.nan, math.nan, math.nan, math.nan, math.inf, math.nan, False, n, note)


def fit_sigmoid(log10_compute, score, *, lower: float | None = None, upper: float | None = None) -> SigmoidFit:
    """Fit a logistic in log10 compute; `lower` / `upper` fix the asymptotes (e.g. 0 and 1 for exact match).

    Points with a non-finite x or score are dropped. With fewer points than free parameters + 1, free
    asymptotes are fixed at the observed minimum and maximum (and the note says so).
    """
    x, y = np.asarray(log10_compute, dtype=float).reshape(-1), np.asarray(score, dtype=float).reshape(-1)
    if x.size != y.size:
        raise NextlabError(f"log10_compute has {x.size} values but score has {y.size}; give one score per compute value")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = x.size
    if n < 3 or np.unique(x).size < 3:
        return no_transition(n, f"too few points: a sigmoid needs at least 3 compute values, got {np.unique(x).size}")
    if np.ptp(y) <= 1e-12 * max(1.0, np.abs(y).max()):
        return no_transition(n, FLAT)
    notes = []
    if n < 2 + (lower is None) + (upper is None) + 1:
        lower = y.min() if lower is None else lower
        upper = y.max() if upper is None else upper
        notes.append("too few points to fit the asymptotes: fixed at the observed min and max")

    span, y_span = np.ptp(x), np.ptp(y)
    free_lo, free_hi = lower is None, upper is None

    def unpack(p):
        lo = p[2] if free_lo else lower
        hi = p[2 + free_lo] if free_hi else upper
        return p[0], p[1], lo, hi

    def residuals(p):
        return sigmoid(x, *unpack(p)) - y

    # starts over midpoints across the range, three widths, and both directions; the cost surface has
    # flat plateaus (a midpoint far outside the data), so one start is not enough
    n_asym = free_lo + free_hi
    best = None
    for sign in (1.0, -1.0):
        s_bounds = sorted([sign * span * 1e-3, sign * span * 10])
        bounds = ([x.min() - span, s_bounds[0]] + [y.min() - y_span] * n_asym, [x.max() + span, s_bounds[1]] + [y.max() + y_span] * n_asym)
        for x0 in np.linspace(x.min(), x.max(), 5):
            for width in (span / 20, span / 5, span):
                p0 = [x0, sign * width / WIDTH_PER_S] + [y.min()] * free_lo + [y.max()] * free_hi
                res = least_squares(residuals, p0, bounds=bounds)
                if best is None or res.cost < best.cost:
                    best = res

    x0, s, lo, hi = (float(v) for v in unpack(best.x))
    if lo > hi and free_lo and free_hi:  # the same curve with the asymptotes named the other way round
        lo, hi, s = hi, lo, -s
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - 2 * float(best.cost) / ss_tot
    width = WIDTH_PER_S * abs(s)
    contained = bool(x.min() <= x0 <= x.max())
    if not contained:
        notes.append("midpoint outside the observed compute range: the transition is not contained")
    else:
        xs = np.unique(x)
        i = min(max(int(np.searchsorted(xs, x0)), 1), xs.size - 1)
        gap = float(xs[i] - xs[i - 1])
        if width < gap:  # any width below the gap fits as well: the data bound it, they do not measure it
            notes.append(f"sharper than the sampling: the transition falls between compute values {gap:.2g} decades apart")
    return SigmoidFit(x0, s, lo, hi, width, r2, contained, n, "; ".join(notes))


def sharpness_table(
    points: list[dict], metrics: list[str], x_key: str = "compute", *, bounds: dict[str, tuple[float | None, float | None]] | None = None
) -> list[dict]:
    """One row per metric: midpoint (log10 of x_key), width_decades, r2, contained, note, and the fitted
    [x0, s, lo, hi] as "fit" (None where there is no transition to fit).

    points are dicts holding x_key (compute, > 0) and metric values; a point without a metric is skipped
    for that metric. bounds maps a metric to its fixed (lower, upper) asymptotes, e.g. {"exact_match": (0, 1)}.
    """
    for i, point in enumerate(points):
        c = point.get(x_key)
        if not (isinstance(c, int | float | np.number) and math.isfinite(c) and c > 0):
            raise NextlabError(f"point {i} has {x_key} = {c!r}; every point needs a positive {x_key} to place it on the curve")
    rows = []
    for metric in metrics:
        have = [p for p in points if p.get(metric) is not None]
        x = np.log10([float(p[x_key]) for p in have])
        y = np.array([float(p[metric]) for p in have])
        lower, upper = (bounds or {}).get(metric, (None, None))
        fit = fit_sigmoid(x, y, lower=lower, upper=upper)
        row = {
            "metric": metric,
            "n_points": fit.n_points,
            "midpoint": fit.x0,
            "width_decades": fit.width_decades,
            "r2": fit.r2,
            "contained": fit.contained,
            "note": fit.note,
        }
        row = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}
        rows.append({**row, "fit": [fit.x0, fit.s, fit.lo, fit.hi] if math.isfinite(fit.width_decades) else None})
    return rows
