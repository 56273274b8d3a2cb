"""What every world is: a seeded generator of documents whose exact probability is computable.

A world is any object with

    name: str                                   # short, lowercase, e.g. "arithmetic"
    sample(rng: random.Random) -> Document      # one document, drawn with `rng`
    log_prob(text: str) -> float                # exact natural-log probability of the whole document

`log_prob` sums over the hidden choices the text does not determine, includes
the generator's decision to end the document where it ends, and is `-inf` for
any text the world cannot produce (never an exception). Structure that is fixed
per world (a lexicon, a fact base, a random HMM) is drawn from the world's own
`seed` when it is built; `sample`'s `rng` draws only the documents.

Pure Python: nothing here imports torch or the rest of nextlab.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

NEG_INF = float("-inf")


@dataclass
class Document:
    text: str
    latents: dict = field(default_factory=dict)  # world-specific, JSON-serializable


class World(Protocol):
    name: str

    def sample(self, rng: random.Random) -> Document: ...

    def log_prob(self, text: str) -> float: ...


def logsumexp(values: Iterable[float]) -> float:
    values = [v for v in values if v != NEG_INF]
    if not values:
        return NEG_INF
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def log_choice(n: int) -> float:
    """log-probability of one uniform choice among n."""
    return -math.log(n)


class Mixture:
    """Draw a world by weight, then a document from it. log_prob sums over the worlds."""

    def __init__(self, worlds: Sequence[World], weights: Sequence[float] | None = None) -> None:
        if not worlds:
            raise ValueError("a mixture needs at least one world")
        weights = list(weights) if weights is not None else [1.0] * len(worlds)
        if len(weights) != len(worlds) or any(w <= 0 for w in weights):
            raise ValueError("a mixture needs one positive weight per world")
        total = sum(weights)
        self.worlds = list(worlds)
        self.weights = [w / total for w in weights]
        self.name = "+".join(w.name for w in self.worlds)

    def sample(self, rng: random.Random) -> Document:
        i = rng.choices(range(len(self.worlds)), weights=self.weights)[0]
        doc = self.worlds[i].sample(rng)
        return Document(doc.text, {"world": self.worlds[i].name, **doc.latents})

    def log_prob(self, text: str) -> float:
        return logsumexp(math.log(w) + world.log_prob(text) for w, world in zip(self.weights, self.worlds))


def optimal_bits_per_byte(world: World, texts: Iterable[str]) -> float:
    """The entropy floor of these documents under their generator: -log2 P(doc) summed, per UTF-8 byte.

    Independent of any tokenizer. Averaged over documents sampled from the world
    it estimates the best bits per byte any model can reach on them.
    """
    bits = n_bytes = 0.0
    for text in texts:
        lp = world.log_prob(text)
        if lp == NEG_INF:
            raise ValueError(f"{world.name} cannot produce the document {text[:60]!r}")
        bits -= lp / math.log(2)
        n_bytes += len(text.encode())
    return bits / n_bytes
