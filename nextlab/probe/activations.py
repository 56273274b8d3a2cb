"""Residual-stream activations of world documents, aligned token by token with the generator's latents.

A latent is read at a character of the document: the residual stream of the
token that ends with that character (it has seen the text up to there). Each
extractor below turns one document into (character offset, label) pairs:

| world / latent        | read at                                   | label                                  |
|-----------------------|-------------------------------------------|----------------------------------------|
| hmm / belief          | every character                           | posterior over hidden states (vector)  |
| hmm / state           | every character                           | the hidden state (class)               |
| arithmetic / carry    | just before each answer digit above 10^0  | carry into that digit > 0 (class)      |
| arguments / valid     | just before the verdict                   | does the conclusion follow (class)     |
| facts / entity        | the last character of the person's name   | which person (class)                   |
| programs / value      | the end of each assignment line           | the value just assigned (class)        |
| (any) / token         | every character                           | the current token itself (a sanity check: trivially present) |
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable

import numpy as np
import torch

from nextlab.model import GPT
from nextlab.probe.probes import ProbeData
from nextlab.tokenizer import Tokenizer
from nextlab.worlds.base import Document
from nextlab.worlds.registry import make_world


def _hmm_belief(doc: Document):
    return [(t, b) for t, b in enumerate(doc.latents["beliefs"])]


def _hmm_state(doc: Document):
    return list(enumerate(doc.latents["states"]))


def _arithmetic_carry(doc: Document):
    offsets, carries = doc.latents["digit_offsets"], doc.latents["carries"]
    return [(offsets[i] - 1, int(carries[i - 1] > 0)) for i in range(1, len(offsets)) if i - 1 < len(carries)]


def _arguments_valid(doc: Document):
    return [(doc.latents["answer_span"][0] - 1, int(doc.latents["valid"]))]


def _programs_value(doc: Document):
    out = []
    for line in doc.latents["lines"]:
        start, end = line["span"]
        name = doc.text[start:end].split("=")[0].strip()
        if line["kind"] == "assign" and line["env"] and isinstance(line["env"].get(name), int):
            out.append((end - 1, line["env"][name]))
    return out


def _facts_entity(doc: Document):
    return [(doc.latents["name_span"][1] - 1, doc.latents["person"])]


# (world, latent) -> (extractor, continuous?)
LATENTS: dict[tuple[str, str], tuple[Callable[[Document], list], bool]] = {
    ("hmm", "belief"): (_hmm_belief, True),
    ("hmm", "state"): (_hmm_state, False),
    ("arithmetic", "carry"): (_arithmetic_carry, False),
    ("arguments", "valid"): (_arguments_valid, False),
    ("facts", "entity"): (_facts_entity, False),
    ("programs", "value"): (_programs_value, False),
}
DEFAULT_LATENT = {"hmm": "belief", "arithmetic": "carry", "arguments": "valid", "facts": "entity", "programs": "value"}
TOKEN_LATENT = "token"


def world_documents(world: str, n: int, seed: int, knobs: dict | None = None) -> list[Document]:
    w = make_world(world, **(knobs or {}))
    rng = random.Random(seed)
    return [w.sample(rng) for _ in range(n)]


def token_end_chars(tokenizer: Tokenizer, ids: list[int], text: str) -> list[int]:
    """For each token, the number of characters of `text` decoded once it is read."""
    out, raw = [], b""
    for i in ids:
        raw += tokenizer.decode_bytes([i])
        out.append(len(raw.decode("utf-8", errors="ignore")))
    return out


@torch.inference_mode()
def collect(
    model: GPT, tokenizer: Tokenizer, docs: list[Document], latent: str, world: str, hooks: list[str] | None = None
) -> tuple[ProbeData, bool]:
    """Activations at every hook point (default: embeddings and each block's output) for each labelled position;
    and whether the latent is continuous."""
    hooks = hooks or [h for h in model.hook_names() if not h.endswith("hook_pattern")]
    if latent == TOKEN_LATENT:
        extract, continuous = (lambda d: [(c, None) for c in range(len(d.text))]), False
    elif (world, latent) in LATENTS:
        extract, continuous = LATENTS[(world, latent)]
    else:
        known = ", ".join(f"{w}/{lat}" for w, lat in LATENTS) + f", any/{TOKEN_LATENT}"
        raise ValueError(f"no latent {latent!r} for world {world!r}; known: {known}")
    acts: dict[str, list[np.ndarray]] = {h: [] for h in hooks}
    labels, doc_index = [], []
    for k, doc in enumerate(docs):
        ids = tokenizer.encode(doc.text)[: model.cfg.block_size - 1]
        ends = token_end_chars(tokenizer, ids, doc.text)
        positions, values = [], []
        for char, label in extract(doc):
            t = bisect.bisect_right(ends, char)  # first token whose decoded text covers this character
            if t < len(ids):
                positions.append(t + 1)  # +1: the leading end-of-text token
                values.append(ids[t] if label is None else label)
        if not positions:
            continue
        x = torch.tensor([[tokenizer.eot_id] + ids])
        with model.capture(hooks) as captured:
            model(x)
        for h in hooks:
            acts[h].append(captured[h][0][0, positions].numpy())
        labels += values
        doc_index += [k] * len(positions)
    if not labels:
        raise ValueError(f"no {world}/{latent} positions in {len(docs)} documents (do they fit the context?)")
    y = np.array(labels, dtype=np.float64 if continuous else np.int64)
    return ProbeData({h: np.concatenate(v) for h, v in acts.items()}, y, np.array(doc_index)), continuous
