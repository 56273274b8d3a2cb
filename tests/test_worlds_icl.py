"""The in-context worlds (markov_icl, recall): exact probabilities checked against closed forms and samples."""

import itertools
import math
import random
from collections import Counter

import pytest
from stats import chi2_critical, chi_square

from nextlab.worlds import make_world
from nextlab.worlds.base import NEG_INF
from nextlab.worlds.markov import MarkovICL
from nextlab.worlds.recall import Recall

TINY_MARKOV = [dict(n_symbols=2, length=5), dict(n_symbols=3, length=4, alpha=0.5),
               dict(n_symbols=2, length=5, order=2, alpha=2.0), dict(n_symbols=3, length=3, alphabet="xyz"),
               dict(n_symbols=2, length=4, pool="abcd"), dict(n_symbols=2, length=4, order=2, pool="xyz", alpha=0.7)]
TINY_RECALL = [dict(n_keys=2, n_pairs=3), dict(n_keys=3, n_pairs=4)]


def markov_support(w):
    return ["".join(t) for t in itertools.product(w.characters, repeat=w.length)]


def recall_support(w):
    pairs = [k + v for k in w.keys for v in w.values]
    return ["".join(t) for t in itertools.product(pairs, repeat=w.n_pairs)]


def log_multivariate_beta(a):
    return sum(math.lgamma(x) for x in a) - math.lgamma(sum(a))


def closed_form_markov(w, text):
    """P integrated out by hand: log P(text) = -order log k + sum over contexts of log B(n_c + alpha) - log B(alpha),
    plus, with a pool of P characters, the labelling: the m characters used are the images of m of the k symbols
    (k!/(k-m)! ways) among the P!/(P-k)! equally likely labellings, the other symbols' labels summed out."""
    k, n_pool, m = w.n_symbols, len(w.characters), len(set(text))
    if m > k:
        return NEG_INF
    letters = sorted(set(text)) + [c for c in w.characters if c not in text][: k - m]  # any labelling that fits
    counts = {"".join(c): [0] * k for c in itertools.product(letters, repeat=w.order)}
    for t in range(w.order, len(text)):
        counts[text[t - w.order : t]][letters.index(text[t])] += 1
    prior = [w.alpha] * k
    chain = -w.order * math.log(k) + sum(
        log_multivariate_beta([n + w.alpha for n in row]) - log_multivariate_beta(prior) for row in counts.values())
    labelling = math.lgamma(k + 1) - math.lgamma(k - m + 1) + math.lgamma(n_pool - m + 1) - math.lgamma(n_pool + 1)
    return chain + labelling


@pytest.mark.parametrize("kw", TINY_MARKOV)
def test_markov_support_sums_to_one_and_matches_the_closed_form(kw):
    w = MarkovICL(**kw)
    texts = markov_support(w)
    assert math.fsum(math.exp(w.log_prob(t)) for t in texts) == pytest.approx(1, abs=1e-12)
    for t in texts[:: max(1, len(texts) // 20)]:
        assert w.log_prob(t) == pytest.approx(closed_form_markov(w, t), abs=1e-10)


@pytest.mark.parametrize("kw", TINY_RECALL)
def test_recall_support_sums_to_one(kw):
    w = Recall(**kw)
    assert math.fsum(math.exp(w.log_prob(t)) for t in recall_support(w)) == pytest.approx(1, abs=1e-12)


@pytest.mark.parametrize("world,support", [(MarkovICL(n_symbols=2, length=5), markov_support),
                                           (MarkovICL(n_symbols=2, length=4, order=2, alpha=0.5), markov_support),
                                           (MarkovICL(n_symbols=2, length=4, pool="abc"), markov_support),
                                           (Recall(n_keys=3, n_pairs=3), recall_support)])
def test_samples_match_log_prob(world, support):
    n = 20_000
    rng = random.Random(7)
    counts = Counter(world.sample(rng).text for _ in range(n))
    probs = {t: math.exp(world.log_prob(t)) for t in support(world)}
    stat, df = chi_square(counts, probs, n)
    assert stat < chi2_critical(df)


def test_chi_square_sees_a_wrong_alpha():
    """The sampling test has power: samples with alpha = 1 do not fit the probabilities of alpha = 0.3."""
    n = 20_000
    rng = random.Random(7)
    counts = Counter(MarkovICL(n_symbols=2, length=5).sample(rng).text for _ in range(n))
    wrong = MarkovICL(n_symbols=2, length=5, alpha=0.3)
    stat, df = chi_square(counts, {t: math.exp(wrong.log_prob(t)) for t in markov_support(wrong)}, n)
    assert stat > chi2_critical(df)


def test_markov_latents_are_the_generator_and_the_counts():
    for w in (MarkovICL(n_symbols=3, length=64), MarkovICL(n_symbols=3, length=64, pool="abcdefgh")):
        doc = w.sample(random.Random(3))
        symbols = doc.latents["symbols"]
        assert len(set(symbols)) == 3 and set(doc.text) <= set(symbols) <= set(w.characters)
        assert set(doc.latents["transition"]) == set(symbols)
        assert all(sum(row) == pytest.approx(1) for row in doc.latents["transition"].values())
        counts = doc.latents["counts"]
        assert len(counts) == 63
        for t in range(1, 64):  # the counts at t are what followed text[t-1] before t
            following = [doc.text[s] for s in range(1, t) if doc.text[s - 1] == doc.text[t - 1]]
            assert counts[t - 1] == [following.count(c) for c in symbols]


def test_a_pool_draws_new_symbols_for_every_document():
    w = MarkovICL(pool="abcdefgh")
    rng = random.Random(0)
    alphabets = Counter("".join(sorted(w.sample(rng).latents["symbols"])) for _ in range(600))
    assert len(alphabets) == 56  # every 3 of 8 letters appears
    # the first symbol is uniform over the pool, and a character never used in the document stays possible
    assert math.exp(w.reference_log_probs(w.sample(rng).text)["bayes"][0]) == pytest.approx(1 / 8)
    assert MarkovICL(pool="abcd", n_symbols=2, length=3).log_prob("abc") == NEG_INF  # a third character: impossible


def test_markov_reference_predictors_are_ordered_on_samples():
    w = MarkovICL()
    rng = random.Random(0)
    totals = Counter()
    for _ in range(200):
        text = w.sample(rng).text
        for name, lps in w.reference_log_probs(text).items():
            assert len(lps) == len(text)
            totals[name] -= sum(lps)
        assert sum(w.reference_log_probs(text)["bayes"]) == pytest.approx(w.log_prob(text))
    assert totals["uniform"] == pytest.approx(200 * 128 * math.log(3))
    assert totals["bayes"] < totals["unigram"] < totals["uniform"]


def test_markov_order_two_uses_two_symbols_of_context():
    w = MarkovICL(n_symbols=2, length=40, order=2, alpha=0.05)
    doc = w.sample(random.Random(1))
    assert set(doc.latents["transition"]) == {"aa", "ab", "ba", "bb"}
    assert w.log_prob(doc.text) > NEG_INF


def test_recall_latents_and_certain_repeats():
    w = Recall()
    doc = w.sample(random.Random(5))
    pairs = [doc.text[i : i + 2] for i in range(0, len(doc.text), 2)]
    assert len(pairs) == 16 and sorted(doc.latents["mapping"].values()) == list("01234567")
    for i, (key, value) in enumerate(pairs):
        assert doc.latents["mapping"][key] == value == doc.text[doc.latents["value_offsets"][i]]
        assert doc.latents["repeats"][i] == (key in [seen[0] for seen in pairs[:i]])
    # a repeated key's value costs nothing: the document's log-probability has one value term per distinct key
    distinct = len(set(pair[0] for pair in pairs))
    expected = -16 * math.log(8) - sum(math.log(8 - i) for i in range(distinct))
    assert w.log_prob(doc.text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "abc", "a" * 127, "abcd" * 32, "ab\nc" * 32, "abx" * 42 + "ab", None, 3])
def test_markov_out_of_world_is_impossible(text):
    assert MarkovICL().log_prob(text) == NEG_INF


@pytest.mark.parametrize("text", ["", "a1", "a1a2", "a1b1", "a9b1", "i1b2", "a1b2 ", " a1b2", "a1 b2", "a1\nb", "1a2b",
                                  "aab2", "a1B2", "a1b", None])
def test_recall_out_of_world_is_impossible(text):
    assert Recall(n_pairs=2).log_prob(text) == NEG_INF


@pytest.mark.parametrize("name,kw", [("markov_icl", dict(n_symbols=1)), ("markov_icl", dict(n_symbols=27)),
                                     ("markov_icl", dict(order=3)), ("markov_icl", dict(alpha=0)),
                                     ("markov_icl", dict(length=1)), ("markov_icl", dict(alphabet="aab")),
                                     ("markov_icl", dict(alphabet="ab")), ("markov_icl", dict(pool="abc")),
                                     ("markov_icl", dict(pool="abcc")), ("recall", dict(n_keys=11)),
                                     ("recall", dict(n_keys=1)), ("recall", dict(n_pairs=0))])
def test_bad_knobs_name_the_knob(name, kw):
    from nextlab.worlds.registry import WorldSpecError

    with pytest.raises(WorldSpecError, match=next(iter(kw))):
        make_world(name, **kw)


def test_same_seed_same_documents():
    for name in ("markov_icl", "recall"):
        w = make_world(name)
        a = [w.sample(random.Random(9)).text for _ in range(3)]
        assert a == [w.sample(random.Random(9)).text for _ in range(3)]
