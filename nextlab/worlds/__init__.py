"""Worlds: text whose generator is known exactly, so the best possible loss is a number.

Each world lives in its own module (arithmetic, programs, translation, facts,
arguments, hmm, markov for markov_icl, recall); `base` holds the interface, the held-out split and the floor, `registry` builds
worlds and mixtures by name.
"""

from nextlab.worlds.base import HELDOUT_SHARE, Document, Mixture, Part, World, optimal_bits_per_byte
from nextlab.worlds.registry import ALL_WORLDS, WORLDS, make_mixture, make_world

__all__ = ["ALL_WORLDS", "HELDOUT_SHARE", "WORLDS", "Document", "Mixture", "Part", "World", "make_mixture", "make_world",
           "optimal_bits_per_byte"]
