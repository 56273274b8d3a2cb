"""Tasks as continuations: items built from the worlds, from JSONL files, and pure in-context tasks.

A task item is a prompt and a target continuation, optionally with choices (one
correct). Built-in tasks cut held-out world documents at the answer:

    arithmetic    "12 x 7 = " -> "84"               (arithmetic_ood: more digits than training)
    programs      "...\\n# prints " -> "8"           (programs_ood: deeper nesting than training)
    translation   "the dog runs => " -> "lu bunfera ..."
    facts         "Q: Where was X born? A: " -> "Vardel"   (facts_ood: people whose Q/A never appeared)
    arguments     "All a are b. ... => " -> "yes" | "no"   (arguments_ood: longer chains)
    hmm           a prefix of a Mess3 sequence -> its next symbol
    icl_mapping   a fresh random letter -> digit mapping per item, shown only in the shots: "e2h4c7e" -> "2"

The world tasks use the same world knobs and seed as the model's training data
(pass `world_spec`). Held out means never trained on: an in-distribution task
draws its items from the world's held-out part (`worlds.base.Part`), which the
training corpus never samples, and its shots from the training part. The OOD
tasks draw from outside the training world's support altogether (more digits,
deeper nesting, longer chains, people whose Q/A lines never appear).

Few-shot examples come from a pool of solved items disjoint from the evaluated
ones. World shots are whole documents separated by end-of-text, exactly as
documents are separated in training; JSONL and in-context tasks join shots with
their `separator` string.
"""

from __future__ import annotations

import contextlib
import random
import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from nextlab.data import read_jsonl
from nextlab.errors import NextlabError
from nextlab.worlds.base import EmptyPart, Part
from nextlab.worlds.registry import WorldSpecError, make_world, parse_spec

SHOT_POOL = 16  # solved items kept per task for few-shot prompts


@dataclass
class Item:
    prompt: str
    target: str
    choices: list[str] | None = None
    answer: int | None = None  # index of the correct choice
    ends_document: bool = True  # the target is followed by end-of-text (a greedy answer must stop there)
    shots: list[Item] | None = None  # item-specific shot pool (pure in-context tasks)


@dataclass
class Task:
    name: str
    items: list[Item]
    shots: list[Item] = field(default_factory=list)
    separator: str | None = None  # None: shots are separate documents; else joined by this string
    description: str = ""


def _world_knobs(world_spec: dict | None, name: str, seed: int) -> dict:
    for world, _, knobs in parse_spec(world_spec or {}):
        if world == name:
            return {"seed": seed, **knobs}
    return {"seed": seed}


def _cut(text: str, span) -> Item:
    start, end = span
    return Item(text[:start], text[start:end])


def _world_items(world, rng: random.Random, n: int, make_item, keep=lambda doc: True, patience: int = 10_000) -> list[Item]:
    """Up to n distinct items, drawn until there are n or `patience` draws in a row bring nothing new."""
    items, seen, idle = [], set(), 0
    while len(items) < n and idle < patience:
        doc = world.sample(rng)
        idle += 1
        if doc.text in seen or not keep(doc):
            continue
        seen.add(doc.text)
        item = make_item(doc)
        if item is not None:
            items.append(item)
            idle = 0
    return items


def _split_items(world, rng: random.Random, n: int, make_item, keep, part: str | None) -> tuple[list[Item], list[Item]]:
    """(items, shots): for part "heldout", items from the held-out part and shots from the training part;
    otherwise both from the training part ("train") or from the whole world (None)."""
    if part != "heldout":
        items = _world_items(Part(world, heldout=False) if part == "train" else world, rng, n + SHOT_POOL, make_item, keep)
        return items[SHOT_POOL:], items[:SHOT_POOL]
    items = _world_items(Part(world, heldout=True), rng, n, make_item, keep)
    return items, _world_items(Part(world, heldout=False), rng, SHOT_POOL, make_item, keep)


@contextlib.contextmanager
def notes_to(log):
    """Say a finite world's "only N items" warnings (and any other) through `log`, as `note: ...` lines, where a run
    has a log of its own rather than a terminal for warnings."""
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        yield
    for note in notes:
        log(f"note: {note.message}")


def world_task(name: str, n: int, seed: int = 1234, world_spec: dict | None = None, world_seed: int = 0,
               part: str = "heldout") -> Task:
    """A built-in task (see the module docstring) with n items and a disjoint pool of shots.

    part="train" draws the items of an in-distribution task from the training part instead: for
    instruction tuning, which trains on its items (they are in the pretraining distribution already).
    """
    if part not in ("heldout", "train"):
        raise NextlabError(f"part must be 'heldout' or 'train', got {part!r}")
    base, _, split = name.partition("_")
    knobs = _world_knobs(world_spec, base, world_seed)
    rng = random.Random(seed)
    keep = lambda doc: True  # noqa: E731
    make_item = None
    try:
        if base == "arithmetic":
            if split == "ood":
                top = knobs.get("max_digits", 3)
                knobs.update(min_digits=top + 1, max_digits=top + 2)
            make_item = lambda d: _cut(d.text, d.latents["answer_span"])  # noqa: E731
        elif base == "programs":
            if split == "ood":
                top = knobs.get("max_depth", 2)
                knobs["max_depth"] = top + 2
                keep = lambda d: max(line["depth"] for line in d.latents["lines"]) > top  # noqa: E731
            make_item = lambda d: _cut(d.text, d.latents["answer_span"])  # noqa: E731
        elif base == "translation":
            make_item = lambda d: _cut(d.text, d.latents["target_span"])  # noqa: E731
        elif base == "arguments":
            if split == "ood":
                top = knobs.get("max_depth", 4)
                knobs.update(min_depth=top + 1, max_depth=top + 3)

            def make_item(d):
                item = _cut(d.text, d.latents["answer_span"])
                item.choices, item.answer = ["yes", "no"], ["yes", "no"].index(item.target)
                return item
        elif base == "facts":
            world = make_world("facts", **knobs)
            if split == "ood":  # knowledge extraction: bios were in training, these Q/A never were
                docs = world.heldout_qa()
                rng.shuffle(docs)
                items = [_cut(d.text, d.latents["answer_span"]) for d in docs]
                if len(items) - SHOT_POOL < n:
                    n_have = len(items) - SHOT_POOL
                    warnings.warn(f"facts_ood has only {n_have} items (4 per held-out person); using them all", stacklevel=2)
                return Task(name, items[SHOT_POOL : SHOT_POOL + n], items[:SHOT_POOL], description="Q/A about held-out people")
            keep = lambda d: d.latents["kind"] == "qa"  # noqa: E731
            make_item = lambda d: _cut(d.text, d.latents["answer_span"])  # noqa: E731
        elif base == "hmm":
            world = make_world("hmm", **knobs)
            alphabet = list(world.alphabet)

            def make_item(d):
                t = rng.randrange(1, len(d.text))
                return Item(d.text[:t], d.text[t], choices=alphabet, answer=alphabet.index(d.text[t]), ends_document=False)
        elif base == "icl":
            return icl_mapping_task(n, seed)
        if make_item is None or (split and split != "ood") or (split == "ood" and base not in OOD_WORLDS):
            raise NextlabError(f"unknown task {name!r}; known tasks: {', '.join(BUILTIN_TASKS)}")
        world = make_world(base, **knobs)
        # out of distribution the whole world lies outside the training support; hmm's task is next-symbol, not items
        items, shots = _split_items(world, rng, n, make_item, keep, part if not split and hasattr(world, "item_hash") else None)
    except WorldSpecError as e:
        raise NextlabError(f"task {name!r}: {e}") from None
    except EmptyPart as e:
        raise NextlabError(f"task {name!r}: {e}") from None
    if not items or len(shots) < SHOT_POOL:
        raise NextlabError(f"task {name!r}: the world produced only {len(items)} distinct items and {len(shots)} shots; "
                           f"{n} and {SHOT_POOL} needed")
    if len(items) < n:  # a small finite world (e.g. facts: 640 Q/A lines, a tenth held out) has no more to give
        warnings.warn(f"{name} has only {len(items)} distinct items; using them all", stacklevel=2)
    drawn_from = "training-part" if part == "train" and not split else "held-out"
    description = f"{drawn_from} {base} documents" + (" (out of distribution)" if split else "")
    return Task(name, items, shots, description=description)


def icl_mapping_task(n: int, seed: int = 1234, n_symbols: int = 8) -> Task:
    """A fresh random mapping from letters to digits for every item, shown only in the shots.

    Each pair is a letter and its digit, written together as in the `recall` world's documents:
    with 3 shots "e2h4c7e" -> "2". Zero-shot the prompt ("e") carries no
    information about the mapping, so every model is at chance (1 / n_symbols) by construction;
    with k shots the query's own pair is among them, so a model that learned to use its context
    can copy the answer.
    """
    rng = random.Random(seed)
    letters = list(string.ascii_lowercase[:n_symbols])
    digits = [str(d) for d in range(n_symbols)]
    items = []
    for _ in range(n):
        mapping = dict(zip(letters, rng.sample(digits, n_symbols)))
        query = rng.choice(letters)
        # The query's pair first: every k >= 1 shows it (the runner takes the first k, then shuffles them).
        others = [c for c in letters if c != query]
        rng.shuffle(others)
        pool = [Item(c, mapping[c]) for c in [query] + others]
        answer = digits.index(mapping[query])
        # Not the end of a document: a model that follows the shots writes the digit and then another letter.
        items.append(Item(query, mapping[query], choices=digits, answer=answer, ends_document=False, shots=pool))
    return Task("icl_mapping", items, separator="", description="pure in-context: a new mapping per item")


def load_jsonl_task(path: str | Path) -> Task:
    """A task file: one JSON object per line, {"prompt", "target"} or {"prompt", "choices", "answer"}.

    The items after the first SHOT_POOL lines are evaluated; those first lines are the shot pool
    when the file has more than 2 * SHOT_POOL items, otherwise shots come from the other items.
    """
    path = Path(path)
    items = [_item_from_json(obj, where) for where, obj in read_jsonl(path, "task file")]
    if not items:
        raise NextlabError(f"{path}: the task file has no items")
    shots = items[:SHOT_POOL] if len(items) > 2 * SHOT_POOL else []
    evaluated = items[len(shots) :]
    return Task(path.stem, evaluated, shots, separator="\n\n", description=f"from {path.name}")


def _item_from_json(obj, where: str) -> Item:
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
        raise NextlabError(f"{where}: expected an object with a string 'prompt'")
    if "choices" in obj:
        choices, answer = obj["choices"], obj.get("answer")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise NextlabError(f"{where}: 'choices' must be a list of at least 2 strings")
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise NextlabError(f"{where}: 'answer' must be the index of the correct choice (0..{len(choices) - 1})")
        return Item(obj["prompt"], choices[answer], choices=choices, answer=answer, ends_document=False)
    if not isinstance(obj.get("target"), str) or not obj["target"]:
        raise NextlabError(f"{where}: expected a non-empty string 'target' (or 'choices' and 'answer')")
    return Item(obj["prompt"], obj["target"], ends_document=False)


OOD_WORLDS = ("arithmetic", "programs", "arguments", "facts")
BUILTIN_TASKS = ("arithmetic", "programs", "translation", "facts", "arguments", "hmm", "icl_mapping") + tuple(
    f"{w}_ood" for w in OOD_WORLDS
)


def get_task(name: str, n: int, seed: int = 1234, world_spec: dict | None = None, world_seed: int = 0,
             part: str = "heldout") -> Task:
    """A built-in task by name (its items from the world's held-out `part`, or "train": see world_task), or a JSONL task file by path."""
    if name not in BUILTIN_TASKS and (name.endswith(".jsonl") or Path(name).is_file()):
        task = load_jsonl_task(name)
        task.items = task.items[:n]
        return task
    if name not in BUILTIN_TASKS:
        raise NextlabError(f"unknown task {name!r}; known tasks: {', '.join(BUILTIN_TASKS)} (or a .jsonl file)")
    return world_task(name, n, seed, world_spec, world_seed, part)
