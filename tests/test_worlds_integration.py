"""Worlds inside the engine: mixtures, the floor, materialized data, per-world evaluation in training."""

import json
import math
import random

import pytest
from conftest import run_cli, tiny_args

from nextlab.checkpoint import load_checkpoint
from nextlab.cli import main
from nextlab.config import DataConfig
from nextlab.data import prepare_corpus, split_world_documents, world_floors
from nextlab.sample import document_logprobs, token_logprobs
from nextlab.worlds import Document, Mixture, make_mixture, make_world, optimal_bits_per_byte
from nextlab.worlds.base import logsumexp
from nextlab.worlds.registry import WorldSpecError


class Coin:
    """A toy world: 'H' or 'T' repeated 1-3 times, each document with its exact probability."""

    name = "coin"

    def __init__(self, p_heads=0.7):
        self.p = p_heads

    def sample(self, rng):
        n = rng.choice([1, 2, 3])
        return Document("".join("H" if rng.random() < self.p else "T" for _ in range(n)), {"n": n})

    def log_prob(self, text):
        if not 1 <= len(text) <= 3 or set(text) - {"H", "T"}:
            return float("-inf")
        return math.log(1 / 3) + sum(math.log(self.p if c == "H" else 1 - self.p) for c in text)

    def support(self):
        return [format(i, f"0{n}b").replace("0", "H").replace("1", "T") for n in (1, 2, 3) for i in range(2**n)]


class Dice(Coin):
    name = "dice"

    def sample(self, rng):
        return Document(str(rng.randint(1, 6)))

    def log_prob(self, text):
        return math.log(1 / 6) if text in list("123456") else float("-inf")

    def support(self):
        return list("123456")


def test_mixture_is_a_distribution():
    mix = Mixture([Coin(), Dice()], [3.0, 1.0])
    support = Coin().support() + Dice().support()
    assert math.exp(logsumexp(mix.log_prob(t) for t in support)) == pytest.approx(1.0, abs=1e-12)
    rng = random.Random(0)
    docs = [mix.sample(rng) for _ in range(4000)]
    share = sum(d.latents["world"] == "coin" for d in docs) / len(docs)
    assert share == pytest.approx(0.75, abs=0.03)
    assert mix.log_prob("HX") == float("-inf")
    with pytest.raises(ValueError):
        Mixture([Coin()], [0.0])


def test_optimal_bits_per_byte_is_the_entropy_rate():
    world = Dice()
    assert optimal_bits_per_byte(world, list("123456")) == pytest.approx(math.log2(6))
    with pytest.raises(ValueError, match="cannot produce"):
        optimal_bits_per_byte(world, ["7"])


def test_split_is_disjoint_by_content():
    docs = [("dice", str(i % 6 + 1)) for i in range(5)] + [("dice", "6")] * 20 + [("dice", "1")] * 30
    train, val, seen_worlds = split_world_documents(docs, 0.2)
    assert val and not {t for _, t in val} & {t for _, t in train} and seen_worlds == []


def test_a_world_whose_every_document_is_trained_on_validates_on_seen_text_and_says_so():
    """A finite world (here 6 texts) keeps its validation documents even though training has them all,
    while another world's repeats are still dropped from validation."""
    docs = [("dice", str(i % 6 + 1)) for i in range(12)] + [("dice", str(i % 6 + 1)) for i in range(60)]
    docs = [(w if i % 2 else "coin", t) for i, (w, t) in enumerate(docs)]
    train, val, seen_worlds = split_world_documents(docs, 0.2)
    assert seen_worlds == ["coin", "dice"] and len(val) == int(len(docs) * 0.2)
    unique = [("coin", "0")] + [("dice", str(i % 6 + 1)) for i in range(40)]
    train, val, seen_worlds = split_world_documents(unique, 0.2)
    assert seen_worlds == ["dice"] and ("coin", "0") in val


def test_world_floors_include_the_choice_of_source():
    mix = Mixture([Dice()])
    floors = world_floors([("dice", "3"), ("dice", "4"), ("dice", "5")], mix, world_share=0.5, per_world=2)
    assert len(floors) == 2
    assert floors[0]["floor_bits"] == pytest.approx(math.log2(6) + 1)


def test_registry_errors():
    with pytest.raises(WorldSpecError, match="did you mean hmm"):
        make_world("hmn")
    with pytest.raises(WorldSpecError, match="unexpected keyword"):
        make_world("hmm", flavour=3)
    with pytest.raises(WorldSpecError, match="positive"):
        make_mixture({"hmm": -1})


def test_document_logprobs_matches_token_logprobs(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    m, t = ckpt.model, ckpt.tokenizer
    texts = ["the cat.", "a", "the big red dog sees the small bird and the old tree." * 3]  # the last is longer than the context
    docs = [t.encode(x) for x in texts]
    assert len(docs[2]) > m.cfg.block_size
    got = document_logprobs(m, docs, t.eot_id, batch_size=2)
    for ids, lp in zip(docs, got):
        want = float(token_logprobs(m, ids + [t.eot_id], context=[t.eot_id]).sum())
        assert lp == pytest.approx(want, abs=1e-3)


def test_training_on_worlds_logs_the_floor(tmp_path):
    out = tmp_path / "w"
    extra = ['data.worlds={hmm=1}', "data.world_bytes=100000", "model.n_embd=64", "train.eval_every=20"]
    args = tiny_args("", out, steps=60, extra=extra)
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0]["worlds"]["hmm"], rows[-1]["worlds"]["hmm"]
    assert last["floor_bpb"] == pytest.approx(first["floor_bpb"])
    assert 1.0 < last["floor_bpb"] < math.log2(3)  # mess3 is more predictable than uniform over 3 symbols
    assert last["excess_bpb"] < first["excess_bpb"] - 2.0
    assert last["excess_bpb"] == pytest.approx(last["bpb"] - last["floor_bpb"])


def test_worlds_cli(tmp_path):
    r = run_cli("worlds", "sample", "hmm", "--n", "2", "--seed", "1")
    assert r.returncode == 0 and r.stdout.count("log p =") == 2
    r = run_cli("worlds", "floor", "hmm", "--n", "50")
    assert r.returncode == 0 and "bits/byte" in r.stdout
    r = run_cli("worlds", "sample", "hmmm")
    assert r.returncode == 2 and r.stderr.strip() == "error: unknown world 'hmmm'; did you mean hmm?"
    r = run_cli("train", "--data", "", "--out", str(tmp_path / "o"), "--set", "data.worlds={nope=1}")
    assert r.returncode == 2 and r.stderr.startswith("error: data.worlds: unknown world 'nope'")
    r = run_cli("train", "--data", "", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "nothing to train on" in r.stderr


def test_a_world_too_small_to_validate_on_unseen_text_says_so():
    """1-digit sums: 90 distinct training documents, so every validation document is also a training one:
    they validate anyway, recorded in the corpus's metadata and said once per load."""
    cfg = DataConfig(path="", worlds={"arithmetic": {"ops": "+", "max_digits": 1}}, world_bytes=20_000)
    said = []
    corpus = prepare_corpus(cfg, log=said.append)
    assert corpus.meta["val_seen_worlds"] == ["arithmetic"] and len(corpus.val) > 0
    assert any("validation text of the worlds arithmetic also occurs in training" in s for s in said)
