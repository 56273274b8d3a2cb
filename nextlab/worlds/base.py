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

Held out means never trained on. A world whose documents make task items
(arithmetic, programs, translation, facts, arguments) also has

    item_hash(text: str) -> int | None          # 64-bit hash of the document's item key; None: not an item
    heldout_mass() -> float                     # P(held-out part) under the world, exact or estimated

The key is what makes an item (for a deterministic world, the prompt: the text up
to the answer), so two documents that are the same task item always hash alike.
A document is held out when its hash falls below HELDOUT_SHARE of the 64-bit
range. `Part(world, heldout)` is one side of that split: training samples from
Part(world, False), the built-in tasks from Part(world, True), and each side's
log_prob is the world's restricted to it and renormalized, so the entropy floor
of training data is computed under the distribution it was drawn from.

Pure Python: nothing here imports torch or the rest of nextlab.
"""

from __future__ import annotations

import hashlib
import math
import random
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

NEG_INF = float("-inf")

# The share of task items held out. It must leave enough items in the smallest item space a
# built-in task draws from (facts: 640 Q/A lines by default, so about 64 held-out items, the
# demo's count; 5% would leave 32) while costing training little: every world keeps 90% of
# its items (the algorithmic ones have 10^4 to 10^20 and more), and each training document's
# -log P drops by -log P(training part), about 0.105 nats.
HELDOUT_SHARE = 0.1
HELDOUT_CUT = int(HELDOUT_SHARE * 2**64)  # held out: item_hash(text) < HELDOUT_CUT
MASS_SAMPLES = 20_000  # documents drawn to estimate P(held-out part) where it cannot be enumerated
MAX_REJECTIONS = 100_000  # consecutive draws outside a part before sampling it gives up


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


def hash64(key: str) -> int:
    """A stable 64-bit hash of a string (the same on every machine and Python run, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def prompt_hash(text: str, marker: str) -> int | None:
    """The hash of a document's prompt, its text up to and including the last `marker` (None without one)."""
    if not isinstance(text, str) or marker not in text:
        return None
    return hash64(text[: text.rindex(marker) + len(marker)])


def is_heldout(h: int | None) -> bool:
    return h is not None and h < HELDOUT_CUT


def exact_heldout_mass(world, support: dict[str, float]) -> float:
    """P(held-out part) summed over an enumerated support {text: log P(text)}."""
    return math.fsum(math.exp(lp) for text, lp in support.items() if is_heldout(world.item_hash(text)))


def estimated_heldout_mass(world, n: int = MASS_SAMPLES, seed: str = "heldout-mass") -> float:
    """P(held-out part) estimated from n documents drawn with a fixed seed (so floors are reproducible).

    The count of held-out draws is binomial, so the estimate's standard error is
    sqrt(p (1 - p) / n): 0.0021 at p = 0.1, n = 20,000, whatever the world. The training
    part's log-mass log(1 - p) is then off by about 0.0023 nats per document (0.01 at
    4.4 standard errors): some 1e-4 bits per byte of a ~100-byte document, far below
    anything the floor is read for.
    """
    rng = random.Random(seed)
    return sum(is_heldout(world.item_hash(world.sample(rng).text)) for _ in range(n)) / n


_MASSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def heldout_mass(world: World) -> float:
    """world.heldout_mass(), computed once per world object (an estimate may take a second)."""
    if world not in _MASSES:
        _MASSES[world] = world.heldout_mass()
    return _MASSES[world]


class EmptyPart(ValueError):
    """A part of a world that sampling cannot find (no document, or almost none, falls in it)."""


class Part:
    """One side of a world's held-out split: its training part (heldout=False) or held-out part.

    sample draws from the world until a document falls on this side; log_prob is
    the world's restricted to this side and renormalized: log P(doc) - log P(part)
    inside, -inf outside.
    """

    def __init__(self, world: World, heldout: bool) -> None:
        self.world, self.heldout, self.name = world, heldout, world.name

    def holds(self, text: str) -> bool:
        return is_heldout(self.world.item_hash(text)) == self.heldout

    def log_mass(self) -> float:
        held = heldout_mass(self.world)
        mass = held if self.heldout else 1.0 - held
        return math.log(mass) if mass > 0 else NEG_INF

    def sample(self, rng: random.Random) -> Document:
        for _ in range(MAX_REJECTIONS):
            doc = self.world.sample(rng)
            if self.holds(doc.text):
                return doc
        side = "held-out" if self.heldout else "training"
        raise EmptyPart(f"{self.name}: no document of the {side} part in {MAX_REJECTIONS} draws (the part is empty or tiny)")

    def log_prob(self, text: str) -> float:
        lp = self.world.log_prob(text)
        if lp == NEG_INF or not self.holds(text):
            return NEG_INF
        return lp - self.log_mass()


def training_part(world: World) -> World:
    """What training draws from: the world's training part, or the whole world if it holds no task items."""
    return Part(world, heldout=False) if hasattr(world, "item_hash") else world


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
