"""Goodness-of-fit helpers shared by the world tests: Pearson's chi-square and its critical value."""

import math
from collections import Counter
from statistics import NormalDist


def chi2_critical(df: int, p: float = 0.001) -> float:
    """Upper p-quantile of chi-square(df) by Wilson-Hilferty: (X/df)^(1/3) is close to Normal(1 - 2/(9df), 2/(9df))."""
    z = NormalDist().inv_cdf(1 - p)
    c = 2 / (9 * df)
    return df * (1 - c + z * math.sqrt(c)) ** 3


def chi_square(counts: Counter, probs: dict, n: int) -> tuple[float, int]:
    """Pearson statistic and degrees of freedom, pooling the rarest categories until every expected count is >= 5.

    Ties in probability are broken by the category itself, never by what was observed (that would bias the statistic).
    """
    assert set(counts) <= {w for w, p in probs.items() if p > 0}, "sampled a document of probability zero"
    cells, pool_o, pool_e = [], 0, 0.0
    for w in sorted(probs, key=lambda w: (probs[w], w)):  # rarest first, so only rare categories get pooled
        pool_o, pool_e = pool_o + counts.get(w, 0), pool_e + n * probs[w]
        if pool_e >= 5:
            cells.append((pool_o, pool_e))
            pool_o, pool_e = 0, 0.0
    if pool_e > 0:  # leftover mass (< 5 expected) joins the last cell
        o, e = cells.pop()
        cells.append((o + pool_o, e + pool_e))
    assert len(cells) > 1 and all(e >= 5 for _, e in cells)
    return sum((o - e) ** 2 / e for o, e in cells), len(cells) - 1


def chi_square_coarse(observed: Counter, probs: dict, n: int, coarse) -> tuple[float, int]:
    """Pearson's statistic and degrees of freedom. Texts expecting >= 5 draws are bins of their own; rarer
    texts are pooled by coarse(text), and pools still under 5 are pooled together."""
    assert set(observed) <= set(probs), "sampled a text outside the support"
    bins: dict = {}
    for text, p in probs.items():
        key = ("text", text) if n * p >= 5 else ("pool", coarse(text))
        b = bins.setdefault(key, [0.0, 0])
        b[0] += n * p
        b[1] += observed.get(text, 0)
    small = [k for k, b in bins.items() if b[0] < 5]
    if len(small) > 1 or (small and len(bins) > 1):
        rest = [0.0, 0]
        for k in small:
            e, o = bins.pop(k)
            rest[0] += e
            rest[1] += o
        bins[("rest",)] = rest
    assert all(e >= 5 for e, _ in bins.values()) and len(bins) > 1
    return sum((o - e) ** 2 / e for e, o in bins.values()), len(bins) - 1
