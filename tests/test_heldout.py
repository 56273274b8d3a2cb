"""Held out means never trained on: each task world's split, its probabilities, and the real training stream."""

import math
import random

import numpy as np
import pytest
from test_worlds_arguments import brute_force

from nextlab.config import DataConfig
from nextlab.data import prepare_corpus
from nextlab.errors import NextlabError
from nextlab.evals import get_task
from nextlab.worlds import make_mixture, make_world
from nextlab.worlds.arithmetic import apply, enumerated_heldout_mass, format_result
from nextlab.worlds.base import HELDOUT_SHARE, MASS_SAMPLES, NEG_INF, Part, is_heldout, training_part

SPLIT_WORLDS = ("arithmetic", "programs", "translation", "facts", "arguments")
ANSWER_SPAN = {"translation": "target_span"}  # the latent where each world's answer starts (default: answer_span)

# Small enough to enumerate (or, for arguments, to cover by sampling), with both parts non-empty.
ENUMERABLE = {
    "arithmetic": dict(max_digits=2),
    "facts": dict(n_people=30),
    "programs": dict(min_statements=1, max_statements=2, n_vars=2, max_int=1, modulus=2, max_depth=0),
    "translation": dict(n_determiners=1, n_nouns=2, n_intransitive=1, n_transitive=1, n_adjectives=1, max_adjectives=1, max_depth=1),
    "arguments": dict(n_categories=4, n_individuals=2, min_depth=1, max_depth=2, p_valid=0.3),
}


def doc(item) -> str:
    return item.prompt + item.target


def prompt_of(name: str, d) -> str:
    return d.text[: d.latents[ANSWER_SPAN.get(name, "answer_span")][0]]


def support(name: str, world) -> dict[str, float]:
    """Every document of a small world with its log-probability."""
    if name == "arithmetic":
        n = range(10 ** world.max_digits)
        texts = (f"{a} {op} {b} = {format_result(apply(op, a, b), world.reverse)}" for op in world.ops for a in n for b in n)
        return {t: world.log_prob(t) for t in texts}
    if name == "translation":
        return dict(world.support())
    if name in ("programs", "facts"):
        return world.support()
    return {t: math.log(math.fsum(ps)) for t, ps in brute_force(world).items()}  # arguments: every choice sequence


# --- the split: sampling ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPLIT_WORLDS)
def test_each_part_samples_only_its_own_documents(name):
    world = make_world(name, seed=0)
    train, held = Part(world, heldout=False), Part(world, heldout=True)
    rng = random.Random(1)
    for d in (train.sample(rng) for _ in range(300)):
        assert not is_heldout(world.item_hash(d.text)) and not held.holds(d.text)
    for d in (held.sample(rng) for _ in range(100)):
        assert is_heldout(world.item_hash(d.text)) and not train.holds(d.text)
        if name == "facts":
            assert d.latents["kind"] == "qa"  # biographies are never held out


@pytest.mark.parametrize("name", SPLIT_WORLDS)
def test_the_side_depends_only_on_the_prompt(name):
    world = make_world(name, seed=0)
    rng = random.Random(2)
    docs = [world.sample(rng) for _ in range(200)]
    items = [d for d in docs if name != "facts" or d.latents["kind"] == "qa"]
    assert items
    for d in items:
        assert world.item_hash(d.text) == world.item_hash(prompt_of(name, d) + "anything else")
    if name == "facts":
        assert all(world.item_hash(d.text) is None for d in docs if d.latents["kind"] == "bio")


def test_arithmetic_plain_and_reversed_answers_are_one_item():
    plain, reverse = make_world("arithmetic"), make_world("arithmetic", reverse=True)
    rng = random.Random(3)
    for _ in range(200):
        d = plain.sample(rng)
        a, op, b, _, answer = d.text.split()
        flipped = f"{a} {op} {b} = " + ("-" + answer[1:][::-1] if answer.startswith("-") else answer[::-1])
        assert reverse.log_prob(flipped) > NEG_INF
        assert plain.item_hash(d.text) == reverse.item_hash(flipped)


# --- the split: probabilities -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("knobs", [dict(max_digits=1), dict(max_digits=2), dict(min_digits=2, max_digits=2, ops="+x"), dict(ops="-")])
def test_arithmetic_heldout_mass_is_exact(knobs):
    world = make_world("arithmetic", **knobs)
    if world.max_digits <= 2:
        probs = support("arithmetic", world)
        want = math.fsum(math.exp(lp) for t, lp in probs.items() if is_heldout(world.item_hash(t)))
        assert world.heldout_mass() == pytest.approx(want, rel=1e-12, abs=1e-15)
    else:  # 3 digits: a million pairs per op; compare with a large sample instead
        rng = random.Random(4)
        n = 50_000
        share = sum(is_heldout(world.item_hash(world.sample(rng).text)) for _ in range(n)) / n
        assert abs(share - world.heldout_mass()) < 5 * math.sqrt(HELDOUT_SHARE * (1 - HELDOUT_SHARE) / n)
    assert enumerated_heldout_mass.cache_info().currsize >= 1  # cached per knobs


@pytest.mark.parametrize("name", SPLIT_WORLDS)
def test_each_part_is_a_distribution_and_the_masses_add_to_one(name):
    world = make_world(name, seed=0, **ENUMERABLE[name])
    probs = support(name, world)
    assert math.fsum(math.exp(lp) for lp in probs.values()) == pytest.approx(1.0, abs=1e-9)  # the support is complete
    true_held = math.fsum(math.exp(lp) for t, lp in probs.items() if is_heldout(world.item_hash(t)))
    assert 0 < true_held < 1
    parts = {side: Part(world, heldout=side) for side in (False, True)}
    assert math.exp(parts[False].log_mass()) + math.exp(parts[True].log_mass()) == pytest.approx(1.0, abs=1e-12)
    exact = name in ("arithmetic", "facts")
    se = math.sqrt(true_held * (1 - true_held) / MASS_SAMPLES)  # the estimate's standard error (base.estimated_heldout_mass)
    assert abs(world.heldout_mass() - true_held) < (1e-12 if exact else 5 * se)
    for side, part in parts.items():
        total = math.fsum(math.exp(part.log_prob(t)) for t in probs)
        mass = true_held if side else 1 - true_held
        # exact worlds sum to 1; estimated ones to true mass / estimated mass, within 5 standard errors
        assert total == pytest.approx(1.0, abs=1e-9 if exact else 5 * se / mass)
        for t, lp in list(probs.items())[:500]:
            inside = is_heldout(world.item_hash(t)) == side
            assert part.log_prob(t) == (pytest.approx(lp - part.log_mass()) if inside else NEG_INF)


def test_training_part_leaves_worlds_without_items_alone():
    hmm = make_world("hmm", seed=0)
    assert training_part(hmm) is hmm
    mix = make_mixture({"arithmetic": 1.0, "hmm": 1.0}, train_only=True)
    assert isinstance(mix.worlds[0], Part) and mix.worlds[1].name == "hmm" and not isinstance(mix.worlds[1], Part)


# --- the training stream of a real corpus -------------------------------------------------------------------------------------

# Knobs small enough that, without the split, task items would surely be among the training documents.
SPEC = {
    "arithmetic": {"max_digits": 2},
    "programs": {"min_statements": 1, "max_statements": 2, "n_vars": 2, "max_int": 3, "max_depth": 1},
    "translation": {"n_nouns": 3, "n_adjectives": 2, "max_depth": 1},
    "facts": {},
    "arguments": {"n_categories": 8, "n_individuals": 3, "max_depth": 2},
}


def documents(corpus, ids) -> set[str]:
    ids = np.asarray(ids)
    cuts = np.flatnonzero(ids == corpus.tokenizer.eot_id)
    pieces = np.split(ids, cuts + 1)
    return {corpus.tokenizer.decode_bytes(p[p != corpus.tokenizer.eot_id].tolist()).decode() for p in pieces if len(p) > 1}


@pytest.fixture(scope="module")
def corpus():
    cfg = DataConfig(path="", tokenizer="bytes", worlds=SPEC, world_bytes=400_000)
    return prepare_corpus(cfg, log=lambda *a: None)


def test_no_task_item_is_in_the_training_stream(corpus):
    train, val = documents(corpus, corpus.train), documents(corpus, corpus.val)
    assert len(train) > 2000
    for name in SPLIT_WORLDS:
        task = get_task(name, 60, world_spec=SPEC, world_seed=0)
        assert len(task.items) >= 30
        assert not {doc(it) for it in task.items} & (train | val), name
        # the test has teeth: documents of the whole world, drawn like a task's, are among the training ones
        world, rng = make_world(name, seed=0, **SPEC[name]), random.Random(1234)
        drawn = {t for t in (world.sample(rng).text for _ in range(300)) if world.item_hash(t) is not None}
        assert drawn & train, name


def test_ood_tasks_lie_outside_the_training_support():
    training = make_mixture(SPEC, seed=0, train_only=True)
    for name in ("arithmetic_ood", "programs_ood", "arguments_ood", "facts_ood"):
        for item in get_task(name, 20, world_spec=SPEC, world_seed=0).items:
            assert training.log_prob(doc(item)) == NEG_INF, (name, doc(item))


def test_the_floor_is_that_of_the_training_part(corpus):
    assert {row["world"] for row in corpus.val_world_docs} == set(SPEC)
    worlds = {name: make_world(name, seed=0, **knobs) for name, knobs in SPEC.items()}
    train_mass = {name: 1 - w.heldout_mass() for name, w in worlds.items()}
    for row in corpus.val_world_docs:
        world = worlds[row["world"]]
        nats = math.log(1 / len(SPEC)) + world.log_prob(row["text"]) - math.log(train_mass[row["world"]])
        assert row["floor_bits"] == pytest.approx(-nats / math.log(2), rel=1e-9)
        assert not is_heldout(world.item_hash(row["text"]))


def test_tasks_for_tuning_come_from_the_training_part():
    for name in SPLIT_WORLDS:
        world = make_world(name, seed=0, **SPEC[name])
        trained = get_task(name, 20, world_spec=SPEC, part="train")
        held = get_task(name, 20, world_spec=SPEC)
        assert all(not is_heldout(world.item_hash(doc(it))) for it in trained.items + trained.shots)
        assert all(is_heldout(world.item_hash(doc(it))) for it in held.items)
        assert all(not is_heldout(world.item_hash(doc(it))) for it in held.shots)
        assert not {doc(it) for it in trained.shots} & {doc(it) for it in trained.items}
    with pytest.raises(NextlabError, match="part must be"):
        get_task("arithmetic", 5, part="val")
