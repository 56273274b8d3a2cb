"""Instruction data: world tasks phrased as requests in plain words, and conversations from JSONL files.

Each built-in example takes a held-out world item (the world's own text cut at the
answer, see nextlab/evals/tasks.py) and asks for the answer in words, through one of
several paraphrase templates:

    arithmetic   "What is 37 plus 45?"                            -> "82"
    arguments    "Does the conclusion follow? All a are b. ..."   -> "yes" | "no"
    translation  "Translate into the target language: a dog runs" -> "bupu di ..."
    facts        "Question: Where was Feve Zoov born?"            -> "Vardel"

Every task keeps some templates out of tuning (`split="heldout"`), to measure whether
tuning generalizes to phrasings it never saw. The answer is exactly the world's
answer and nothing else, so right or wrong (the reward) and "in the expected
form" (format-following) are both checkable.

A JSONL file has one conversation per line: {"messages": [{"role": "user", "content": ...},
{"role": "assistant", "content": ...}, ...]}.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from nextlab.data import read_jsonl
from nextlab.errors import NextlabError
from nextlab.evals.tasks import get_task
from nextlab.tokenizer import check_messages

OPS = {"+": "plus", "-": "minus", "x": "times"}

# {names} come from parse(); every task has training templates and held-out ones.
TEMPLATES = {
    "arithmetic": {
        "train": ["What is {a} {word} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {word} {b}, please.",
                  "{a} {op} {b} is how much?", "Work out {a} {word} {b}."],
        "heldout": ["Tell me the result of {a} {word} {b}.", "I need the value of {a} {op} {b}."],
    },
    "arguments": {
        "train": ["Does the conclusion follow? {premises} Conclusion: {conclusion}",
                  "{premises} Does it follow that {question} Answer yes or no.",
                  "Premises: {premises} Is the conclusion valid? {conclusion}"],
        "heldout": ["Given these facts: {premises} Can we conclude that {question}",
                    "Check this argument. {premises} Therefore {conclusion}"],
    },
    "translation": {
        "train": ["Translate into the target language: {source}", "How do you say \"{source}\" in the other language?",
                  "Translation, please: {source}"],
        "heldout": ["Render this in the target language: {source}", "What is \"{source}\" when translated?"],
    },
    "facts": {
        "train": ["{question}", "Question: {question}", "Please answer: {question}"],
        "heldout": ["I would like to know: {question}", "Quick question. {question}"],
    },
}
TASKS = tuple(TEMPLATES)
FORMATS = {  # what a well-formed answer looks like (format-following)
    "arithmetic": re.compile(r"-?\d+"),
    "arguments": re.compile(r"yes|no"),
    "translation": re.compile(r"[a-z]+( [a-z]+)*"),
    "facts": re.compile(r"[A-Za-z0-9][A-Za-z0-9 '-]*"),
}
_ARITH = re.compile(r"(-?\d+) ([+\-x]) (-?\d+) = $")


@dataclass
class Example:
    task: str
    request: str  # the user's message
    answer: str  # the one right reply
    native_prompt: str  # the same question in the world's own text (what the base model saw in pretraining)
    template: int  # index into the split's templates


def parse(task: str, prompt: str) -> dict:
    """The fields a template needs, read from a world item's prompt."""
    if task == "arithmetic":
        m = _ARITH.search(prompt)
        if not m:
            raise ValueError(f"not an arithmetic prompt: {prompt!r}")
        a, op, b = m.groups()
        return {"a": a, "op": op, "b": b, "word": OPS[op]}
    if task == "arguments":
        body = prompt.removesuffix(" => ").strip()
        premises, _, conclusion = body.rpartition(" So ")
        conclusion = conclusion.strip()
        return {"premises": premises.strip(), "conclusion": conclusion, "question": conclusion.removesuffix(".") + "?"}
    if task == "translation":
        return {"source": prompt.removesuffix(" => ").strip()}
    if task == "facts":
        return {"question": prompt.removeprefix("Q: ").removesuffix(" A: ").strip()}
    raise NextlabError(f"unknown instruction task {task!r}; known: {', '.join(TASKS)}")


def world_examples(tasks: list[str], n_per_task: int, split: str = "train", seed: int = 0,
                   world_spec: dict | None = None, world_seed: int = 0) -> list[Example]:
    """n_per_task requests per task, phrased with the split's templates, from world documents: the "train"
    split's from each world's training part, the "heldout" split's from its held-out part (never trained on).

    `world_spec` and `world_seed` should be the checkpoint's own (its training data), so the
    questions are about the same worlds (the same people, the same language) the model learned.
    """
    if split not in ("train", "heldout"):
        raise NextlabError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(f"{seed}-{split}")
    out = []
    for task in tasks:
        if task not in TEMPLATES:
            raise NextlabError(f"unknown instruction task {task!r}; known: {', '.join(TASKS)}")
        # held-out requests are new items as well as new phrasings: tuning trains on the worlds' training part only
        items = get_task(task, n_per_task, seed=seed * 2 + (split == "heldout") + 7, world_spec=world_spec, world_seed=world_seed,
                         part="heldout" if split == "heldout" else "train").items
        templates = TEMPLATES[task][split]
        for item in items:
            k = rng.randrange(len(templates))
            out.append(Example(task, templates[k].format(**parse(task, item.prompt)), item.target, item.prompt, k))
    rng.shuffle(out)
    return out


def conversation(example: Example) -> list[dict]:
    return [{"role": "user", "content": example.request}, {"role": "assistant", "content": example.answer}]


def load_conversations(path: str | Path) -> list[list[dict]]:
    """Conversations from a JSONL file, each checked (the line number names any fault)."""
    out = []
    for where, obj in read_jsonl(path, "conversations file"):
        if not isinstance(obj, dict) or "messages" not in obj:
            raise NextlabError(f"{where}: each line must be an object with \"messages\"")
        messages = check_messages(obj["messages"], where)
        if messages[-1]["role"] != "assistant":
            raise NextlabError(f"{where}: the last message must be the assistant's (it is what tuning learns)")
        out.append(messages)
    if not out:
        raise NextlabError(f"{path}: no conversations")
    return out


def reward(task: str, reply: str, answer: str, stopped: bool) -> float:
    """The verifiable reward: 1 for exactly the right answer followed by end of turn, else 0."""
    return float(stopped and reply == answer)


def well_formed(task: str, reply: str, stopped: bool) -> bool:
    """Did the reply take the expected form (a number, yes/no, ...) and end its turn?"""
    return stopped and FORMATS[task].fullmatch(reply) is not None
