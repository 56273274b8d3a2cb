"""In-context recall: a fresh key -> value mapping for every document, shown as pairs that repeat.

A document is drawn as

    m   a random one-to-one mapping from the n_keys keys (the first n_keys lowercase letters)
        to the n_keys values (the digits 0 .. n_keys - 1), uniform over all n_keys! of them
    k_i n_pairs keys, each uniform over the keys, independently (so keys repeat)

and written as the pairs, each key followed by its value, with nothing between them:
`e2h4f5e2c3...`, the format of the `icl_mapping` task, whose items show a fresh mapping in
their shots. The mapping is new
in every document, so what training teaches is reading the document, not any mapping:
`icl_mapping` stays a pure in-context task. A value stands right after its key, so a head
that attends to what followed earlier occurrences of the current token (an induction head)
reads it off. (Measured: with a space between pairs, a 2-layer model trained beside
markov_icl was still on its plateau on this world after 800 steps; with the pairs written
together it had left it.)

Exact probability: each key costs log n_keys. A key seen before in the document has its
value already, with certainty; a new key's value is uniform over the values no earlier
key has taken (the mapping is one-to-one):

    log P(text) = sum over pairs of [-log n_keys - (0 if the key repeats else log(n_keys - distinct keys so far))]

and any text that gives a key two values, or two keys one value, has probability 0.

Knobs (keyword-only): n_keys=8 (2..10), n_pairs=16 (>= 1), seed=0 (unused: nothing is
fixed per world; kept for a uniform interface).

Latents:

  "mapping":       the document's mapping (key -> value).
  "repeats":       per pair, whether its key appeared in an earlier pair.
  "value_offsets": per pair, the character offset of its value.
"""

from __future__ import annotations

import math
import random
import string

from nextlab.worlds.base import NEG_INF, Document

MAX_KEYS = 10  # values are single digits


class Recall:
    name = "recall"

    def __init__(self, *, n_keys: int = 8, n_pairs: int = 16, seed: int = 0) -> None:
        if isinstance(n_keys, bool) or not isinstance(n_keys, int) or not 2 <= n_keys <= MAX_KEYS:
            raise ValueError(f"n_keys must be an integer in 2..{MAX_KEYS}, got {n_keys!r}")
        if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
            raise ValueError(f"n_pairs must be a positive integer, got {n_pairs!r}")
        self.n_keys, self.n_pairs, self.seed = n_keys, n_pairs, seed
        self.keys = string.ascii_lowercase[:n_keys]
        self.values = string.digits[:n_keys]

    def sample(self, rng: random.Random) -> Document:
        mapping = dict(zip(self.keys, rng.sample(self.values, self.n_keys)))
        keys = [self.keys[rng.randrange(self.n_keys)] for _ in range(self.n_pairs)]
        repeats = [key in keys[:i] for i, key in enumerate(keys)]
        offsets = [2 * i + 1 for i in range(self.n_pairs)]
        text = "".join(key + mapping[key] for key in keys)
        return Document(text, {"mapping": mapping, "repeats": repeats, "value_offsets": offsets})

    def log_prob(self, text: str) -> float:
        if not isinstance(text, str) or len(text) != 2 * self.n_pairs:
            return NEG_INF
        pairs = [text[i : i + 2] for i in range(0, len(text), 2)]
        if any(key not in self.keys or value not in self.values for key, value in pairs):
            return NEG_INF
        mapping: dict[str, str] = {}
        total = 0.0
        for key, value in pairs:
            total -= math.log(self.n_keys)
            if key in mapping:
                if mapping[key] != value:
                    return NEG_INF
            elif value in mapping.values():
                return NEG_INF
            else:
                total -= math.log(self.n_keys - len(mapping))
                mapping[key] = value
        return total
