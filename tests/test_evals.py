"""Tasks as continuations: batched scoring, exact match vs teacher forcing, metrics, few-shot prompts, tasks, CLI.

Most tests use a tiny GPT with random (re-drawn, non-identity) weights and the byte tokenizer, so every
expectation is computed independently from a plain forward pass; a few use the session's tiny checkpoint.
"""

import json
import math
import os
import random
import re
import string
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli

from nextlab.errors import NextlabError
from nextlab.evals import BUILTIN_TASKS, Item, Task, evaluate_task, get_task, icl_mapping_task, load_jsonl_task
from nextlab.evals.run import build_context, edit_distance, mean_and_se
from nextlab.evals.tasks import SHOT_POOL
from nextlab.model import GPT, ModelConfig
from nextlab.sample import score_continuations, token_logprobs
from nextlab.tokenizer import ByteTokenizer
from nextlab.worlds.registry import make_world

TOK = ByteTokenizer()
EOT = TOK.eot_id
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: threads only contend (e.g. with a busy machine)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_gpt(arch: str = "modern", block_size: int = 32, seed: int = 0, eot_scale: float = 1.0) -> GPT:
    """A tiny GPT whose every weight is random (the modern init makes blocks the identity, i.e. a bigram model).

    Byte tokens 128..255 get half the output row of an ASCII byte, so the argmax is always ASCII (greedy text
    decodes cleanly); `eot_scale` > 1 makes end-of-text the argmax at some positions.
    """
    torch.manual_seed(seed)
    model = GPT(ModelConfig(arch=arch, vocab_size=TOK.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and name != "lm_head.weight":
                p.normal_(0.0, 1.0 if name.startswith("embed") else p.size(1) ** -0.5)
        w = model.lm_head.weight
        if arch == "modern":  # untied
            w.normal_(0.0, w.size(1) ** -0.5)
        w[128:256] = 0.5 * w[:128]
        w[EOT] *= eot_scale
    return model.eval()


def forward_logprobs(model: GPT, ids: list[int]) -> torch.Tensor:
    """log_softmax of one plain forward pass: row j is the distribution of ids[j + 1]."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    return F.log_softmax(logits[0].float(), -1)


def ascii_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + " .,") for _ in range(n))


def encode_prompt(text: str) -> list[int]:
    return [EOT] + TOK.encode(text)


# --- 1. batched scoring == one at a time == a direct forward pass -------------------------------------------------------------


@pytest.mark.parametrize("arch", ["modern", "gpt2"])
def test_batched_scoring_matches_single_and_direct_forward(arch):
    model = random_gpt(arch, block_size=32, seed=1)
    rng = random.Random(0)
    contexts, continuations = [], []
    for _ in range(18):
        contexts.append(encode_prompt(ascii_text(rng, rng.randint(0, 18))))
        continuations.append(TOK.encode(ascii_text(rng, rng.randint(1, 12))))
    # the edges of the window: exactly fits (c + n - 1 == block), one over, and far over (context alone too long)
    for c, n in ((20, 13), (20, 14), (40, 9)):
        contexts.append(encode_prompt(ascii_text(rng, c - 1)))
        continuations.append(TOK.encode(ascii_text(rng, n)))
    block = model.cfg.block_size
    too_long = [i for i in range(len(contexts)) if len(contexts[i]) + len(continuations[i]) - 1 > block]
    assert len(too_long) == 2 and any(len(contexts[i]) + len(continuations[i]) - 1 == block for i in range(len(contexts)))

    batched = score_continuations(model, contexts, continuations, batch_size=16)
    single = score_continuations(model, contexts, continuations, batch_size=1)
    assert len(batched) == len(single) == len(contexts)
    for i, (ctx, cont) in enumerate(zip(contexts, continuations)):
        b, s = batched[i], single[i]
        assert b.logprobs.shape == (len(cont),) and b.greedy.shape == (len(cont),)
        torch.testing.assert_close(b.logprobs, s.logprobs, atol=1e-5, rtol=0)
        assert torch.equal(b.greedy, s.greedy)
        if i in too_long:  # sliding-window fallback: the same numbers and greedy hits as token_logprobs
            expected, hits = token_logprobs(model, cont, context=ctx, greedy=True)
            torch.testing.assert_close(b.logprobs, expected, atol=1e-5, rtol=0)
            assert torch.equal(b.greedy, hits)
            continue
        lp = forward_logprobs(model, ctx + cont[:-1])
        rows = lp[len(ctx) - 1 : len(ctx) - 1 + len(cont)]
        direct = rows[torch.arange(len(cont)), torch.tensor(cont)]
        torch.testing.assert_close(b.logprobs, direct, atol=1e-5, rtol=0)
        assert torch.equal(b.greedy, rows.argmax(-1) == torch.tensor(cont))


def test_scoring_greedy_flags_hit_sometimes():
    """The greedy comparison above is not vacuous: continuations made of the model's own argmax are all hits."""
    model = random_gpt(block_size=32, seed=2)
    ctx = encode_prompt("hello")
    ids = list(ctx)
    for _ in range(6):
        ids.append(int(forward_logprobs(model, ids)[-1].argmax()))
    cont = ids[len(ctx) :]
    [s] = score_continuations(model, [ctx], [cont])
    assert s.greedy.all()
    wrong = cont[:-1] + [(cont[-1] + 1) % 128]
    [s] = score_continuations(model, [ctx], [wrong])
    assert s.greedy[:-1].all() and not s.greedy[-1]


# --- 2. exact match (greedy generation) agrees with teacher forcing ----------------------------------------------------------


def greedy_chain(model: GPT, ids: list[int], n: int) -> list[int]:
    """Up to n argmax tokens after ids by plain forward passes, stopping before an end-of-text."""
    out = []
    for _ in range(n):
        nxt = int(forward_logprobs(model, ids + out)[-1].argmax())
        if nxt == EOT:
            break
        out.append(nxt)
    return out


def teacher_forced(model: GPT, task: Task, item: Item) -> dict:
    """What exact match must be, computed from one forward pass over the zero-shot context + target."""
    p = build_context(task, item, 0, TOK, model.cfg.block_size, random.Random(0))
    lp = forward_logprobs(model, p.context + p.target)
    c, n = len(p.context), len(p.target)
    rows = lp[c - 1 : c - 1 + n]
    hits = rows.argmax(-1) == torch.tensor(p.target)
    eot_next = int(lp[c - 1 + n].argmax()) == EOT
    exact = bool(hits.all()) and (eot_next or not item.ends_document)
    return {"exact": exact, "hits": hits, "eot_next": eot_next, "logprob": float(rows[torch.arange(n), torch.tensor(p.target)].sum())}


def test_exact_match_iff_every_target_token_is_the_argmax():
    model = random_gpt(block_size=64, seed=3, eot_scale=3.0)
    rng = random.Random(1)
    items = []
    for _ in range(14):
        prompt = ascii_text(rng, rng.randint(2, 10))
        chain = greedy_chain(model, encode_prompt(prompt), 4)
        if not chain:
            continue
        target = TOK.decode(chain)
        items.append(Item(prompt, target, ends_document=True))  # exact iff end-of-text is next
        items.append(Item(prompt, target, ends_document=False))  # exact
        items.append(Item(prompt, target[:-1] + chr((ord(target[-1]) - 31) % 95 + 32), ends_document=False))  # last token wrong
        if len(target) > 1:
            items.append(Item(prompt, target[:-1], ends_document=True))  # exact iff the dropped token were end-of-text: never
    expected, got = [], []
    for item in items:
        task = Task("one", [item])
        truth = teacher_forced(model, task, item)
        r = evaluate_task(model, TOK, task, shots=0, seed=0)
        assert r["n"] == 1 and r["shots_used"] == 0
        assert r["exact_match"]["mean"] == float(truth["exact"]), (item, truth)
        assert (r["edit_distance"]["mean"] == 0.0) == truth["exact"]
        assert r["token_accuracy"]["mean"] == pytest.approx(float(truth["hits"].float().mean()))
        assert r["target_logprob"]["mean"] == pytest.approx(truth["logprob"], abs=1e-4)
        assert r["logprob_per_char"]["mean"] == pytest.approx(truth["logprob"] / len(item.target), abs=1e-4)
        expected.append(float(truth["exact"]))
        got.append(truth)
    # every branch was exercised: matches and misses, with and without end-of-text as the next argmax
    ends = [(t["exact"], t["eot_next"]) for t, it in zip(got, items) if it.ends_document and t["hits"].all()]
    assert (True, True) in ends and (False, False) in ends
    assert 0 < sum(expected) < len(expected)
    # the same items as one task: batched scoring, the same per-item metrics
    r = evaluate_task(model, TOK, Task("all", items), shots=0, seed=0, batch_size=8)
    assert r["n"] == len(items)
    assert r["exact_match"]["mean"] == pytest.approx(sum(expected) / len(expected))
    assert r["exact_match"]["se"] == pytest.approx(mean_and_se(expected)[1])


# --- 3. metrics -----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, d",
    [("kitten", "sitting", 3), ("", "", 0), ("", "abc", 3), ("abc", "", 3), ("same", "same", 0), ("flaw", "lawn", 2), ("ab", "ba", 2)],
)
def test_edit_distance(a, b, d):
    assert edit_distance(a, b) == d
    assert edit_distance(b, a) == d


def test_mean_and_se():
    mean, se = mean_and_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(math.sqrt((1.5**2 * 2 + 0.5**2 * 2) / 3 / 4))
    assert mean_and_se([0.0, 0.0, 0.0]) == (0.0, 0.0)
    mean, se = mean_and_se([7.0])
    assert mean == 7.0 and math.isnan(se)


def test_brier_and_mc_accuracy_match_an_independent_computation():
    model = random_gpt(block_size=32, seed=4)
    rng = random.Random(2)
    items, probs_all = [], []
    for i in range(12):
        prompt = ascii_text(rng, rng.randint(1, 8))
        choices = list(dict.fromkeys(ascii_text(rng, rng.randint(1, 4)) for _ in range(rng.randint(2, 4))))
        while len(choices) < 2:
            choices.append(ascii_text(rng, 5))
        ctx = encode_prompt(prompt)
        totals = []
        for choice in choices:  # each choice by its own forward pass
            ids = TOK.encode(choice)
            lp = forward_logprobs(model, ctx + ids)
            totals.append(float(lp[torch.arange(len(ctx) - 1, len(ctx) - 1 + len(ids)), torch.tensor(ids)].sum()))
        probs = torch.softmax(torch.tensor(totals, dtype=torch.float64), 0)
        best = int(probs.argmax())
        answer = best if i % 2 == 0 else (best + 1) % len(choices)  # half right, half wrong
        items.append(Item(prompt, choices[answer], choices=choices, answer=answer, ends_document=False))
        probs_all.append((probs, answer))
    r = evaluate_task(model, TOK, Task("mc", items), shots=0, seed=0, batch_size=5)
    acc = [float(int(p.argmax()) == a) for p, a in probs_all]
    brier = [float(sum((float(p[j]) - float(j == a)) ** 2 for j in range(len(p)))) for p, a in probs_all]
    assert r["mc_accuracy"]["mean"] == 0.5 == mean_and_se(acc)[0]
    assert r["mc_accuracy"]["se"] == pytest.approx(mean_and_se(acc)[1])
    assert r["brier"]["mean"] == pytest.approx(mean_and_se(brier)[0], abs=1e-5)
    assert r["brier"]["se"] == pytest.approx(mean_and_se(brier)[1], abs=1e-5)
    assert 0.0 < r["brier"]["mean"] < 2.0
    # tasks without choices report no multiple-choice metrics
    plain = evaluate_task(model, TOK, Task("plain", [Item("ab", "c")]), shots=0)
    assert "mc_accuracy" not in plain and "brier" not in plain and "exact_match" in plain


# --- 4. few-shot prompts -------------------------------------------------------------------------------------------------------


def doc(item: Item) -> str:
    return item.prompt + item.target


def split_eot(ids: list[int]) -> list[str]:
    pieces, current = [], []
    for i in ids:
        if i == EOT:
            pieces.append(TOK.decode(current))
            current = []
        else:
            current.append(i)
    return pieces + [TOK.decode(current)]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_world_shots_are_documents_separated_by_end_of_text(k):
    task = get_task("arithmetic", 30)
    pool = {doc(s) for s in task.shots}
    evaluated = {doc(it) for it in task.items}
    assert len(task.shots) == SHOT_POOL and not pool & evaluated
    rng = random.Random(5)
    for item in task.items:
        p = build_context(task, item, k, TOK, 1024, rng)
        assert p.shots == k and p.target == TOK.encode(item.target)
        pieces = split_eot(p.context)
        assert pieces[0] == "" and pieces[-1] == item.prompt and len(pieces) == k + 2
        shots = pieces[1:-1]
        assert len(set(shots)) == k and set(shots) <= pool


def test_separator_shots_and_determinism():
    shots = [Item(f"q{i}?", f"a{i}") for i in range(10)]
    task = Task("sep", [Item("query?", "answer")], shots, separator="\n##\n")
    item = task.items[0]
    p = build_context(task, item, 4, TOK, 1024, random.Random(9))
    assert p.context[0] == EOT and EOT not in p.context[1:] and p.shots == 4
    text = TOK.decode(p.context[1:])
    parts = text.split("\n##\n")
    assert parts[-1] == "query?" and len(parts) == 5
    assert len(set(parts[:-1])) == 4 and set(parts[:-1]) <= {doc(s) for s in shots}
    # the same seed gives the same prompt; other seeds give other draws
    assert build_context(task, item, 4, TOK, 1024, random.Random(9)).context == p.context
    assert len({tuple(build_context(task, item, 4, TOK, 1024, random.Random(s)).context) for s in range(10)}) > 1
    assert build_context(task, item, 0, TOK, 1024, random.Random(9)).context == encode_prompt("query?")


def test_shots_that_do_not_fit_are_dropped_last_first():
    task = get_task("arithmetic", 20)
    block = 48
    for seed, item in enumerate(task.items):
        full = build_context(task, item, 8, TOK, 10_000, random.Random(seed))
        cut = build_context(task, item, 8, TOK, block, random.Random(seed))
        assert full.shots == 8 and cut.shots < 8
        assert len(cut.context) + len(cut.target) + 1 <= block
        # the kept shots are the first ones drawn, and one more would not have fit
        kept = split_eot(cut.context)[1:-1]
        drawn = split_eot(full.context)[1:-1]
        assert kept == drawn[: cut.shots]
        one_more = 1 + sum(len(s) + 1 for s in drawn[: cut.shots + 1]) + len(item.prompt)
        assert one_more + len(cut.target) + 1 > block


def test_evaluate_task_reports_shots_used():
    task = get_task("arithmetic", 12)
    small = random_gpt(block_size=48, seed=5)
    rng = random.Random(3)
    expected = [build_context(task, item, 6, TOK, 48, rng).shots for item in task.items]
    r = evaluate_task(small, TOK, task, shots=6, seed=3)
    assert r["shots"] == 6 and r["shots_used"] == pytest.approx(sum(expected) / len(expected))
    assert 0 < r["shots_used"] < 6
    big = random_gpt(block_size=256, seed=5)
    r = evaluate_task(big, TOK, task, shots=6, seed=3)
    assert r["shots_used"] == 6
    assert evaluate_task(big, TOK, task, shots=0)["shots_used"] == 0


# --- 5. the pure in-context task -----------------------------------------------------------------------------------------------

PAIR = re.compile(r"^([a-z])([0-9])$")


def oracle_answer(context_text: str) -> str:
    """A perfect in-context learner: read the `xd` shots, answer the query from them (else a fixed guess, "0")."""
    *shots, query = [context_text[i : i + 2] for i in range(0, len(context_text), 2)]
    mapping = dict(PAIR.match(pair).groups() for pair in shots)
    return mapping.get(query, "0")


def test_icl_zero_shot_is_at_chance_by_construction():
    task = icl_mapping_task(4000, seed=7)
    assert len(task.items) == 4000 and task.separator == "" and not task.shots
    rng = random.Random(0)
    by_context: dict[tuple, Counter] = {}
    for item in task.items:
        p = build_context(task, item, 0, TOK, 256, rng)
        q = item.prompt[0]
        assert item.prompt == q and p.context == encode_prompt(item.prompt) and p.shots == 0
        assert item.choices == [str(d) for d in range(8)] and item.choices[item.answer] == item.target
        by_context.setdefault(tuple(p.context), Counter())[item.target] += 1
    assert len(by_context) == 8  # one zero-shot context per query letter...
    for counts in by_context.values():  # ...and given it, the answer is uniform over the 8 digits
        n = sum(counts.values())
        assert len(counts) == 8
        chi2 = sum((counts[str(d)] - n / 8) ** 2 / (n / 8) for d in range(8))
        assert chi2 < 24.32  # chi-square, 7 degrees of freedom, p = 0.001
    # the best ANY function of the zero-shot prompt can do: the most frequent answer per context
    best = sum(max(c.values()) for c in by_context.values()) / len(task.items)
    assert best < 0.16
    guess = sum(oracle_answer(TOK.decode(build_context(task, it, 0, TOK, 256, rng).context[1:])) == it.target for it in task.items)
    assert abs(guess / len(task.items) - 1 / 8) < 0.03


def test_icl_shots_show_the_items_own_mapping():
    task = icl_mapping_task(100, seed=3)
    rng = random.Random(0)
    for item in task.items:
        assert len(item.shots) == 8 and len({s.prompt for s in item.shots}) == 8
        assert len({s.target for s in item.shots}) == 8  # a bijection letter -> digit
        assert (item.shots[0].prompt, item.shots[0].target) == (item.prompt, item.target)  # the query's pair heads the pool
        p = build_context(task, item, 8, TOK, 256, rng)
        assert p.shots == 8
        assert oracle_answer(TOK.decode(p.context[1:])) == item.target


@pytest.mark.parametrize("k", [1, 3])
def test_icl_query_pair_is_always_among_the_shots(k):
    task = icl_mapping_task(200, seed=11)
    rng = random.Random(0)
    shown = correct = 0
    for item in task.items:
        p = build_context(task, item, k, TOK, 256, rng)
        text = TOK.decode(p.context[1:])
        pairs = [text[i : i + 2] for i in range(0, len(text) - 1, 2)]
        assert p.shots == len(pairs) == k
        shown += f"{item.prompt}{item.target}" in pairs
        correct += oracle_answer(TOK.decode(p.context[1:])) == item.target
    assert shown == correct == len(task.items)


class _OracleCache:
    def __init__(self) -> None:
        self.ids: list[int] = []
        self.length = 0


class InContextOracle(torch.nn.Module):
    """A stand-in model that is a perfect in-context learner of the icl_mapping format (logits 20 on its choice)."""

    def __init__(self, block_size: int = 256) -> None:
        super().__init__()
        self.cfg = ModelConfig(vocab_size=TOK.vocab_size, block_size=block_size)
        self.embed_tokens = torch.nn.Embedding(1, 1)

    def make_cache(self, batch_size: int = 1) -> _OracleCache:
        return _OracleCache()

    def next_token(self, ids: list[int]) -> int:
        text = TOK.decode(ids)
        if len(text) % 2 == 1 and text[-1:].isalpha():  # a query letter: its digit is next
            return TOK.encode(oracle_answer(text))[0]
        return TOK.encode("a")[0]

    def forward(self, idx, targets=None, cache=None):
        rows = idx.tolist()
        past = cache.ids if cache is not None else []
        logits = torch.zeros(len(rows), len(rows[0]), TOK.vocab_size)
        for b, row in enumerate(rows):
            seq = past + row
            for t in range(len(row)):
                prefix = [i for i in seq[: len(past) + t + 1] if i != EOT]
                logits[b, t, self.next_token(prefix)] = 20.0
        if cache is not None:
            cache.ids = past + rows[0]
            cache.length += len(rows[0])
        return logits, None


def test_icl_oracle_model_through_evaluate_task():
    task = icl_mapping_task(60, seed=5)
    oracle = InContextOracle()
    r = evaluate_task(oracle, TOK, task, shots=8, seed=0)
    assert r["shots_used"] == 8
    assert r["mc_accuracy"]["mean"] == 1.0 and r["token_accuracy"]["mean"] == 1.0
    assert r["target_logprob"]["mean"] > -1e-3 and r["brier"]["mean"] < 1e-6
    # zero-shot the same learner can only guess: it scores exactly the share of items whose answer is its guess
    r0 = evaluate_task(oracle, TOK, task, shots=0, seed=0)
    share = sum(it.target == "0" for it in task.items) / len(task.items)
    assert r0["mc_accuracy"]["mean"] == pytest.approx(share) and share < 0.3


# --- 6. built-in world tasks ---------------------------------------------------------------------------------------------------

ID_KNOBS = {"arithmetic": {}, "programs": {}, "translation": {}, "facts": {}, "arguments": {}}
OOD_KNOBS = {"arithmetic": {"min_digits": 4, "max_digits": 5}, "programs": {"max_depth": 4}, "arguments": {"min_depth": 5, "max_depth": 7}}


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_builtin_task_items(name):
    task = get_task(name, n=10)
    assert task.name == name and len(task.items) == 10
    for item in task.items:
        assert item.prompt and item.target
        if item.choices is not None:
            assert item.choices[item.answer] == item.target
    assert not {doc(s) for s in task.shots} & {doc(it) for it in task.items}
    assert len({doc(it) for it in task.items}) == 10
    base, _, split = name.partition("_")
    if base in ID_KNOBS and not (base == "facts" and split):
        world = make_world(base, seed=0, **(OOD_KNOBS.get(base, {}) if split else {}))
        for item in task.items + task.shots:
            assert world.log_prob(doc(item)) > float("-inf"), doc(item)
    if base == "hmm":
        world = make_world("hmm", seed=0)
        for item in task.items:
            assert not item.ends_document and item.choices == list(world.alphabet) and item.target in item.choices
            assert world.prefix_log_prob(doc(item)) > float("-inf")
    if name == "icl_mapping":
        assert task.separator == "" and all(it.shots for it in task.items)
    else:
        assert task.separator is None and len(task.shots) == SHOT_POOL
        assert all(it.ends_document for it in task.items) == (base != "hmm")


def test_ood_tasks_are_out_of_distribution():
    default = {w: make_world(w, seed=0) for w in ("arithmetic", "programs", "arguments", "facts")}
    for item in get_task("arithmetic_ood", 10).items:
        a, b = re.match(r"(\d+) . (\d+) = $", item.prompt).groups()
        assert max(len(a), len(b)) > 3
        assert default["arithmetic"].log_prob(doc(item)) == float("-inf")
    deep = make_world("arguments", seed=0, **OOD_KNOBS["arguments"])
    for item in get_task("arguments_ood", 10).items:
        stated = deep.parse(doc(item))[0]
        assert len(stated) - 1 > 4  # link premises: the chain's depth
        assert default["arguments"].log_prob(doc(item)) == float("-inf")
    nested = make_world("programs", seed=0, **OOD_KNOBS["programs"])
    for item in get_task("programs_ood", 10).items:
        assert max(line["depth"] for line in nested.parse(doc(item)).latents["lines"]) > 2
        assert default["programs"].log_prob(doc(item)) == float("-inf")
    facts = default["facts"]
    held = set(facts.heldout_people())
    for item in get_task("facts_ood", 10).items:
        assert facts.log_prob(doc(item)) == float("-inf")
        assert any(f" {name} " in item.prompt or f" {name}?" in item.prompt for name in held), item.prompt
    for item in get_task("facts", 10).items:
        assert facts.log_prob(doc(item)) > float("-inf")


def test_tasks_follow_the_training_world_spec():
    spec = {"arithmetic": {"weight": 2.0, "max_digits": 2}}
    for item in get_task("arithmetic", 20, world_spec=spec).items:
        assert make_world("arithmetic", max_digits=2).log_prob(doc(item)) > float("-inf")
    for item in get_task("arithmetic_ood", 20, world_spec=spec).items:
        assert make_world("arithmetic", min_digits=3, max_digits=4).log_prob(doc(item)) > float("-inf")
    assert [doc(i) for i in get_task("translation", 5).items] == [doc(i) for i in get_task("translation", 5).items]
    assert [doc(i) for i in get_task("translation", 5).items] != [doc(i) for i in get_task("translation", 5, seed=99).items]


def test_facts_ood_says_when_it_has_fewer_items_than_asked():
    with pytest.warns(UserWarning, match="facts_ood has only 144 items"):
        task = get_task("facts_ood", 200)
    assert len(task.items) == 144  # 40 held-out people x 4 attributes, minus the shot pool


# --- 7. JSONL tasks and bad input ----------------------------------------------------------------------------------------------


def write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_jsonl_tasks_load(tmp_path):
    rows = [{"prompt": f"p{i} ", "target": f"t{i}"} for i in range(40)]
    task = load_jsonl_task(write_lines(tmp_path / "qa.jsonl", rows[:5] + [""] + rows[5:]))
    assert task.name == "qa" and task.separator == "\n\n"
    assert [s.prompt for s in task.shots] == [f"p{i} " for i in range(SHOT_POOL)]
    assert [it.target for it in task.items] == [f"t{i}" for i in range(SHOT_POOL, 40)]
    assert all(not it.ends_document and it.choices is None for it in task.items)
    assert len(get_task(str(tmp_path / "qa.jsonl"), 5).items) == 5

    choice_rows = [
        {"prompt": "2 + 2 = ", "choices": ["3", "4", "5"], "answer": 1},
        {"prompt": "sky: ", "choices": ["blue", "red"], "answer": 0},
    ]
    task = load_jsonl_task(write_lines(tmp_path / "mc.jsonl", choice_rows))
    assert [(it.target, it.answer, it.choices) for it in task.items] == [("4", 1, ["3", "4", "5"]), ("blue", 0, ["blue", "red"])]
    assert task.shots == []
    model = random_gpt(block_size=32, seed=6)
    r = evaluate_task(model, TOK, task, shots=0)
    assert r["n"] == 2 and "mc_accuracy" in r and "brier" in r


@pytest.mark.parametrize(
    "lines, fragments",
    [
        ([{"prompt": "a", "target": "b"}, {"prompt": "c", "target": "d"}, "{not json"], [":3:", "not valid JSON"]),
        (["", "   "], ["no items"]),
        ([{"prompt": "a", "target": "b"}, {"prompt": "a"}], [":2:", "'target'"]),
        ([{"prompt": "a", "target": ""}], [":1:", "'target'"]),
        ([{"prompt": "a", "choices": ["x", "y"], "answer": 2}], [":1:", "'answer'"]),
        ([{"prompt": "a", "choices": ["x", "y"], "answer": True}], [":1:", "'answer'"]),
        ([{"prompt": "a", "choices": ["x"], "answer": 0}], [":1:", "'choices'"]),
        ([{"target": "b"}], [":1:", "'prompt'"]),
        (["[1, 2]"], [":1:", "'prompt'"]),
    ],
)
def test_jsonl_bad_input(tmp_path, lines, fragments):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(NextlabError) as e:
        load_jsonl_task(path)
    for fragment in fragments:
        assert fragment in str(e.value)
    assert str(path) in str(e.value)


def test_missing_file_and_unknown_task(tmp_path):
    with pytest.raises(NextlabError, match="not found"):
        get_task(str(tmp_path / "missing.jsonl"), 5)
    with pytest.raises(NextlabError) as e:
        get_task("nope", 5)
    assert "known tasks" in str(e.value) and "arithmetic" in str(e.value) and "icl_mapping" in str(e.value)
    for bad in ("arithmetic_id", "hmm_ood", "translation_ood"):
        with pytest.raises(NextlabError, match="unknown task"):
            get_task(bad, 5)


def test_small_jsonl_file_still_gets_shots(tmp_path):
    task = load_jsonl_task(write_lines(tmp_path / "small.jsonl", [{"prompt": f"p{i} ", "target": f"t{i}"} for i in range(10)]))
    item = task.items[0]
    p = build_context(task, item, 2, TOK, 1024, random.Random(0))
    assert p.shots == 2 and doc(item) not in TOK.decode(p.context)


# --- 8. the command line -------------------------------------------------------------------------------------------------------


def test_cli_eval(tiny_checkpoint, tmp_path):
    words = "cat dog bird tree house river".split() * 6
    path = write_lines(tmp_path / "words.jsonl", [{"prompt": f"{w}?", "target": f" {len(w)}"} for w in words])
    out = tmp_path / "results.json"
    args = ["--tasks", f"icl_mapping,{path}", "--shots", "2,0", "--n", "20", "--json", str(out)]
    r = run_cli("eval", str(tiny_checkpoint), *args, env=ONE_THREAD)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["results"]
    assert [(row["task"], row["shots"]) for row in rows] == [("icl_mapping", 0), ("icl_mapping", 2), ("words", 0), ("words", 2)]
    for row in rows:
        assert row["n"] == 20
        metrics = ["exact_match", "target_logprob", "logprob_per_char", "token_accuracy", "edit_distance"]
        metrics += ["mc_accuracy", "brier"] if row["task"] == "icl_mapping" else []
        for m in metrics:
            assert set(row[m]) == {"mean", "se"} and math.isfinite(row[m]["mean"]), (row["task"], m)
        assert "mc_accuracy" in row or row["task"] != "icl_mapping"
        assert row["shots_used"] == (2 if row["shots"] else 0)
        assert 0.0 <= row["exact_match"]["mean"] <= 1.0 and row["target_logprob"]["mean"] < 0


def test_cli_eval_bad_input(tiny_checkpoint, tmp_path):
    r = run_cli("eval", str(tiny_checkpoint), "--tasks", "nope", "--n", "5", env=ONE_THREAD)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: unknown task"), r.stderr
    assert "known tasks" in lines[0]
    bad = write_lines(tmp_path / "bad.jsonl", [{"prompt": "a", "target": "b"}, {"prompt": "c", "target": "d"}, "{oops"])
    r = run_cli("eval", str(tiny_checkpoint), "--tasks", str(bad), "--n", "5", env=ONE_THREAD)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and f"{bad}:3" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
