"""Markov chains learned in context: a fresh chain for every document.

A document is drawn as

    P   for every context c (the previous `order` symbols; there are k^order of them)
        a transition row P[c] ~ Dirichlet(alpha, ..., alpha) over the k symbols
    x   the first `order` symbols uniform over the alphabet, then x_t ~ P[x_{t-order} .. x_{t-1}]

and written as the `length` symbols with nothing between them (`abbacab...`). The chain
is never the same twice, so nothing about P can be learned from training: the only way to
predict well is to learn P from the document itself, in context (Edelman et al., 2024,
"The Evolution of Statistical Induction Heads").

The exact probability integrates P out. With n[c][j] the number of times symbol j has
followed context c so far, the Dirichlet-multinomial posterior predictive is

    p(x_t = j | x_<t) = (n[c][j] + alpha) / (sum_j' n[c][j'] + k * alpha)

so log P(text) = -order * log k + the sum of these log-predictives. That predictor is the
Bayes-optimal in-context learner, and the world's entropy floor is its loss.
`reference_log_probs` gives it per symbol beside two weaker references a report draws as
lines: uniform (log 1/k) and the in-context unigram predictor (the same rule with the
counts of symbols regardless of context, which is all a model without bigram statistics
can use).

With `pool` set, the symbols change with every document too: each document writes its k
abstract symbols as k distinct characters drawn at random from the pool (in random order).
Then even which characters a document uses must be read from the document, and a model
needs an induction mechanism that works for any token, not statistics of three fixed ones.
The predictive generalizes exactly: a character already seen in the document gets the rule
above; each of the P - m pool characters not yet seen (m seen) gets an equal share of the
mass of the k - m symbols not yet seen, (k - m) * alpha / (sum_j' n[c][j'] + k * alpha) / (P - m).
(With no pool, P = k and this is the same rule.) The uniform reference is then 1/P.

Knobs (keyword-only): n_symbols=3 (k, 2..26), alpha=1.0 (> 0), length=128 (> order),
order=1 (1 or 2), alphabet=None (k distinct characters; default the first k lowercase
letters), pool=None (more than k distinct characters to draw each document's symbols from;
excludes `alphabet`), seed=0 (unused: nothing is fixed per world; kept for a uniform interface).

Latents:

  "symbols":    the document's k characters (the alphabet, or k drawn from the pool).
  "transition": the rows P[c] that generated the document, as a dict keyed by the
                context string (one character for order 1, two for order 2), each row
                over `symbols` in that order.
  "counts":     counts[t] for every predicted position t >= order: the counts n[c_t][.]
                over `symbols` of what has followed the current context c_t before
                position t: the sufficient statistic the Bayes-optimal predictor reads.
"""

from __future__ import annotations

import itertools
import math
import random
import string
from collections import Counter

from nextlab.worlds.base import NEG_INF, Document

MAX_SYMBOLS = 26


def predictive(counts: Counter, symbol: str, seen: set, k: int, n_pool: int, alpha: float) -> float:
    """p(next = symbol) under the Dirichlet-multinomial posterior predictive, given the counts of what followed
    the current context, the characters seen so far in the document, k symbols, and a pool of n_pool characters."""
    total = sum(counts.values()) + k * alpha
    if symbol in seen:
        return (counts[symbol] + alpha) / total
    return (k - len(seen)) * alpha / total / (n_pool - len(seen))


class MarkovICL:
    name = "markov_icl"

    def __init__(self, *, n_symbols: int = 3, alpha: float = 1.0, length: int = 128, order: int = 1,
                 alphabet: str | None = None, pool: str | None = None, seed: int = 0) -> None:
        if isinstance(n_symbols, bool) or not isinstance(n_symbols, int) or not 2 <= n_symbols <= MAX_SYMBOLS:
            raise ValueError(f"n_symbols must be an integer in 2..{MAX_SYMBOLS}, got {n_symbols!r}")
        if order not in (1, 2) or isinstance(order, bool):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0 or math.isinf(alpha):
            raise ValueError(f"alpha must be a positive number, got {alpha!r}")
        if isinstance(length, bool) or not isinstance(length, int) or length <= order:
            raise ValueError(f"length must be an integer above order ({order}), got {length!r}")
        if pool is not None:
            if alphabet is not None:
                raise ValueError("pool and alphabet exclude each other: give one")
            if not isinstance(pool, str) or len(set(pool)) != len(pool) or len(pool) <= n_symbols:
                raise ValueError(f"pool must be more than n_symbols ({n_symbols}) distinct characters, got {pool!r}")
        alphabet = string.ascii_lowercase[:n_symbols] if alphabet is None and pool is None else alphabet
        if pool is None and (not isinstance(alphabet, str) or len(alphabet) != n_symbols or len(set(alphabet)) != n_symbols):
            raise ValueError(f"alphabet must be {n_symbols} distinct characters, got {alphabet!r}")
        self.n_symbols, self.alpha, self.length, self.order = n_symbols, float(alpha), length, order
        self.alphabet, self.pool, self.seed = alphabet, pool, seed
        self.characters = pool if pool is not None else alphabet  # every character a document may use

    def _dirichlet(self, rng: random.Random) -> list[float]:
        draws = [rng.gammavariate(self.alpha, 1.0) for _ in range(self.n_symbols)]
        total = sum(draws)
        if total == 0.0:  # every gamma draw underflowed (tiny alpha): the mass sits on one symbol
            draws[rng.randrange(self.n_symbols)], total = 1.0, 1.0
        return [d / total for d in draws]

    def sample(self, rng: random.Random) -> Document:
        symbols = self.alphabet if self.pool is None else "".join(rng.sample(self.pool, self.n_symbols))
        contexts = ["".join(c) for c in itertools.product(symbols, repeat=self.order)]
        transition = {c: self._dirichlet(rng) for c in contexts}
        text = [symbols[rng.randrange(self.n_symbols)] for _ in range(self.order)]
        while len(text) < self.length:
            row = transition["".join(text[-self.order :])]
            text.append(symbols[rng.choices(range(self.n_symbols), weights=row)[0]])
        text = "".join(text)
        counts = [[c[s] for s in symbols] for c in self._context_counts(text)[self.order :]]
        return Document(text, {"symbols": symbols, "transition": transition, "counts": counts})

    def _context_counts(self, text: str) -> list[Counter]:
        """For every position t, the counts of what followed text[t - order : t] before t (empty for t < order)."""
        seen: dict[str, Counter] = {}
        out = []
        for t, ch in enumerate(text):
            if t < self.order:
                out.append(Counter())
                continue
            row = seen.setdefault(text[t - self.order : t], Counter())
            out.append(Counter(row))
            row[ch] += 1
        return out

    def _valid(self, text) -> bool:
        return (isinstance(text, str) and len(text) == self.length and set(text) <= set(self.characters)
                and len(set(text)) <= self.n_symbols)

    def reference_log_probs(self, text: str) -> dict[str, list[float]]:
        """Per symbol, the natural-log probability under three predictors (see the module docstring).

        "bayes" (the exact in-context posterior predictive: the floor), "unigram" (the same rule on the
        counts of every earlier symbol, regardless of context) and "uniform" (1 / the characters a document
        may use). The first `order` symbols are uniform over the k symbols under "bayes".
        """
        if not self._valid(text):
            raise ValueError(f"{self.name} cannot produce the document {text[:60]!r}")
        k, n_pool, a = self.n_symbols, len(self.characters), self.alpha
        bayes, unigram, seen, every = [], [], set(), Counter()
        for ch, counts in zip(text, self._context_counts(text)):
            bayes.append(math.log(predictive(counts, ch, seen, k, n_pool, a)))
            unigram.append(math.log(predictive(every, ch, seen, k, n_pool, a)))
            seen.add(ch)
            every[ch] += 1
        return {"bayes": bayes, "unigram": unigram, "uniform": [-math.log(n_pool)] * len(text)}

    def log_prob(self, text: str) -> float:
        if not self._valid(text):
            return NEG_INF
        return sum(self.reference_log_probs(text)["bayes"])
