"""Worlds by name, and mixtures built from a config table.

    make_world("arithmetic", max_digits=3, seed=1)
    make_mixture({"arithmetic": 1.0, "hmm": {"weight": 2.0, "process": "mess3"}})
    make_mixture(spec, train_only=True)   # what training draws from: no held-out task items
"""

from __future__ import annotations

import difflib
import importlib

from nextlab.worlds.base import Mixture, World, training_part

# name -> (module, class); imported on first use so `nextlab` starts fast.
WORLDS = {
    "arithmetic": ("nextlab.worlds.arithmetic", "Arithmetic"),
    "arguments": ("nextlab.worlds.arguments", "Arguments"),
    "hmm": ("nextlab.worlds.hmm", "HMM"),
    "programs": ("nextlab.worlds.programs", "Programs"),
    "translation": ("nextlab.worlds.translation", "Translation"),
    "facts": ("nextlab.worlds.facts", "Facts"),
    "markov_icl": ("nextlab.worlds.markov", "MarkovICL"),
    "recall": ("nextlab.worlds.recall", "Recall"),
}


class WorldSpecError(ValueError):
    """An unknown world or knob; the message names it."""


def world_class(name: str):
    if name not in WORLDS:
        close = difflib.get_close_matches(name, WORLDS, n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; choose from {', '.join(WORLDS)}"
        raise WorldSpecError(f"unknown world {name!r}{hint}")
    module, cls = WORLDS[name]
    return getattr(importlib.import_module(module), cls)


def make_world(name: str, **knobs) -> World:
    cls = world_class(name)
    try:
        return cls(**knobs)
    except TypeError as e:
        raise WorldSpecError(f"world {name!r}: {e}") from None
    except ValueError as e:
        raise WorldSpecError(f"world {name!r}: {e}") from None


def parse_spec(spec: dict) -> list[tuple[str, float, dict]]:
    """{name: weight | {weight: w, knob: value}} -> [(name, weight, knobs)] in a stable order."""
    out = []
    for name, value in spec.items():
        if isinstance(value, bool) or not isinstance(value, int | float | dict):
            raise WorldSpecError(f"world {name!r}: expected a weight or a table of knobs, got {value!r}")
        knobs = dict(value) if isinstance(value, dict) else {}
        weight = knobs.pop("weight", 1.0) if isinstance(value, dict) else value
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            raise WorldSpecError(f"world {name!r}: weight must be a positive number, got {weight!r}")
        out.append((name, float(weight), knobs))
    return out


def make_mixture(spec: dict, seed: int = 0, train_only: bool = False) -> Mixture:
    """A mixture from a config table; each world's structure seed defaults to `seed`.

    With train_only, each world that holds task items contributes only its training part
    (base.Part): its held-out items are never drawn, and log_prob is renormalized to match.
    """
    parsed = parse_spec(spec)
    if not parsed:
        raise WorldSpecError("no worlds given")
    worlds = [make_world(name, **{"seed": seed, **knobs}) for name, _, knobs in parsed]
    if train_only:
        worlds = [training_part(w) for w in worlds]
    return Mixture(worlds, [w for _, w, _ in parsed])


ALL_WORLDS = {name: 1.0 for name in WORLDS}
