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

Knobs (keyword-only): n_symbols=3 (k, 2..26), alpha=1.0 (> 0), length=128 (> order),
order=1 (1 or 2), alphabet=None (k distinct characters; default the first k lowercase
letters), seed=0 (unused: nothing is fixed per world; kept for a uniform interface).

Latents:

  "transition": the rows P[c] that generated the document, as a dict keyed by the
                context string (one character for order 1, two for order 2).
  "counts":     counts[t] for every predicted position t >= order: the counts n[c_t][.]
                of what has followed the current context c_t before position t (lists of
                k ints): the sufficient statistic the Bayes-optimal predictor reads.
"""

from __future__ import annotations

import itertools
import math
import random
import string

from nextlab.worlds.base import NEG_INF, Document

MAX_SYMBOLS = 26


def context_predictive(counts: list[int], alpha: float) -> list[float]:
    """The Dirichlet-multinomial posterior predictive over the next symbol given a context's counts."""
    total = sum(counts) + len(counts) * alpha
    return [(n + alpha) / total for n in counts]


class MarkovICL:
    name = "markov_icl"

    def __init__(self, *, n_symbols: int = 3, alpha: float = 1.0, length: int = 128, order: int = 1,
                 alphabet: str | None = None, seed: int = 0) -> None:
        if isinstance(n_symbols, bool) or not isinstance(n_symbols, int) or not 2 <= n_symbols <= MAX_SYMBOLS:
            raise ValueError(f"n_symbols must be an integer in 2..{MAX_SYMBOLS}, got {n_symbols!r}")
        if order not in (1, 2) or isinstance(order, bool):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0 or math.isinf(alpha):
            raise ValueError(f"alpha must be a positive number, got {alpha!r}")
        if isinstance(length, bool) or not isinstance(length, int) or length <= order:
            raise ValueError(f"length must be an integer above order ({order}), got {length!r}")
        alphabet = string.ascii_lowercase[:n_symbols] if alphabet is None else alphabet
        if not isinstance(alphabet, str) or len(alphabet) != n_symbols or len(set(alphabet)) != n_symbols:
            raise ValueError(f"alphabet must be {n_symbols} distinct characters, got {alphabet!r}")
        self.n_symbols, self.alpha, self.length, self.order = n_symbols, float(alpha), length, order
        self.alphabet, self.seed = alphabet, seed
        self._index = {c: i for i, c in enumerate(alphabet)}
        self.contexts = ["".join(c) for c in itertools.product(alphabet, repeat=order)]

    def _dirichlet(self, rng: random.Random) -> list[float]:
        draws = [rng.gammavariate(self.alpha, 1.0) for _ in range(self.n_symbols)]
        total = sum(draws)
        if total == 0.0:  # every gamma draw underflowed (tiny alpha): the mass sits on one symbol
            draws[rng.randrange(self.n_symbols)], total = 1.0, 1.0
        return [d / total for d in draws]

    def sample(self, rng: random.Random) -> Document:
        transition = {c: self._dirichlet(rng) for c in self.contexts}
        symbols = [self.alphabet[rng.randrange(self.n_symbols)] for _ in range(self.order)]
        while len(symbols) < self.length:
            row = transition["".join(symbols[-self.order :])]
            symbols.append(self.alphabet[rng.choices(range(self.n_symbols), weights=row)[0]])
        text = "".join(symbols)
        return Document(text, {"transition": transition, "counts": self.running_counts(text)})

    def running_counts(self, text: str) -> list[list[int]]:
        """counts[t - order]: what followed the context of position t before t, for t = order .. len - 1."""
        counts = {c: [0] * self.n_symbols for c in self.contexts}
        out = []
        for t in range(self.order, len(text)):
            row = counts[text[t - self.order : t]]
            out.append(list(row))
            row[self._index[text[t]]] += 1
        return out

    def _valid(self, text) -> bool:
        return isinstance(text, str) and len(text) == self.length and all(c in self._index for c in text)

    def reference_log_probs(self, text: str) -> dict[str, list[float]]:
        """Per symbol, the natural-log probability under three predictors (see the module docstring).

        "bayes" (the exact in-context posterior predictive: the floor), "unigram" (the in-context
        unigram predictor) and "uniform". The first `order` symbols are uniform under all three.
        """
        if not self._valid(text):
            raise ValueError(f"{self.name} cannot produce the document {text[:60]!r}")
        k, a = self.n_symbols, self.alpha
        uniform = [-math.log(k)] * len(text)
        unigram_counts = [0] * k
        bayes, unigram = [], []
        for t, ch in enumerate(text):
            j = self._index[ch]
            if t < self.order:
                bayes.append(-math.log(k))
                unigram.append(-math.log(k))
            else:
                unigram.append(math.log(context_predictive(unigram_counts, a)[j]))
            unigram_counts[j] += 1
        for counts, ch in zip(self.running_counts(text), text[self.order :]):
            bayes.append(math.log(context_predictive(counts, a)[self._index[ch]]))
        return {"bayes": bayes, "unigram": unigram, "uniform": uniform}

    def log_prob(self, text: str) -> float:
        if not self._valid(text):
            return NEG_INF
        return sum(self.reference_log_probs(text)["bayes"])
