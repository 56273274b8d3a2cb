"""The translation world: exact probabilities, an unambiguous grammar, a deterministic aligned translation."""

import json
import math
import random
from collections import Counter

import pytest
from stats import chi2_critical, chi_square

from nextlab.worlds.base import NEG_INF
from nextlab.worlds.translation import DETERMINERS, SEPARATOR, Translation

# A grammar small enough to enumerate: 1 determiner, 2 nouns, 1 verb of each kind, no adjectives or clauses.
TINY_FLAT = dict(n_determiners=1, n_nouns=2, n_intransitive=1, n_transitive=1, n_adjectives=1, max_adjectives=0, max_depth=0)
# With adjectives and one level of relative clauses (6480 sentences).
TINY_ADJ = dict(n_determiners=1, n_nouns=2, n_intransitive=1, n_transitive=1, n_adjectives=1, max_adjectives=1, max_depth=1)
# Two levels of relative clauses, number-restricted determiners (the: sg/pl, a: sg), no adjectives.
# NPs at depth 2: 3 (the/a dog, the dogs); VP over them: 1 + 3; depth 1: 3 * (1 + 4) = 15; depth 0: 3 * (1 + 16) = 51;
# sentences: 51 * (1 + 51) = 2652.
TINY_DEEP = dict(n_determiners=2, n_nouns=1, n_intransitive=1, n_transitive=1, n_adjectives=1, max_adjectives=0, max_depth=2)


def support_probs(world: Translation) -> dict:
    probs = {}
    for text, lp in world.support():
        assert text not in probs, f"two derivations of {text!r}: the grammar is ambiguous"
        probs[text] = math.exp(lp)
    return probs


def words_of(doc):
    return doc.text.partition(SEPARATOR)[0].split(" "), doc.text.partition(SEPARATOR)[2].split(" ")


def tree_log_prob(world: Translation, source: list[str], tree: dict) -> float:
    """log P of the derivation recorded in the latents, computed from the knobs (not via the world's parser)."""
    dets_for = {n: [d for d, nums in DETERMINERS[: world.n_determiners] if n in nums] for n in ("sg", "pl")}

    def np(node, depth):
        number, k = node["number"], len(node["adjectives"])
        lp = math.log(world.p_plural if number == "pl" else 1 - world.p_plural)
        assert source[node["det"]] in dets_for[number]
        lp -= math.log(len(dets_for[number]))
        lp += k * math.log(world.p_adjective) + (math.log(1 - world.p_adjective) if k < world.max_adjectives else 0.0)
        lp -= k * math.log(world.n_adjectives) + math.log(world.n_nouns)
        if depth < world.max_depth:
            rel = node["relative"]
            lp += math.log(1 - world.p_relative) if rel is None else math.log(world.p_relative) + vp(rel, depth + 1)
        else:
            assert node["relative"] is None
        return lp

    def vp(node, object_depth):
        if node["object"] is None:
            return math.log(1 - world.p_transitive) - math.log(world.n_intransitive)
        return math.log(world.p_transitive) - math.log(world.n_transitive) + np(node["object"], object_depth)

    return np(tree["subject"], 0) + vp(tree, 0)


def np_words(np):
    """Source indices of every word in an NP, its relative clause included."""
    out = [np["det"], *np["adjectives"], np["noun"]]
    rel = np["relative"]
    if rel:
        out += [rel["that"], rel["verb"]] + (np_words(rel["object"]) if rel["object"] else [])
    return out


def noun_phrases(tree):
    """Every NP node of a parse, paired with the index of the verb that must agree with it (None for objects)."""
    out = [(tree["subject"], tree["verb"])]
    if tree["object"]:
        out.append((tree["object"], None))
    i = 0
    while i < len(out):
        rel = out[i][0]["relative"]
        if rel:
            if rel["object"]:
                out.append((rel["object"], None))
        i += 1
    return out


@pytest.mark.parametrize("knobs", [TINY_FLAT, TINY_ADJ, TINY_DEEP])
def test_tiny_grammar_support_sums_to_one(knobs):
    world = Translation(**knobs, p_adjective=0.3, p_relative=0.4, p_plural=0.35, p_transitive=0.6, seed=3)
    probs = support_probs(world)  # also asserts that no two derivations yield the same text
    assert abs(sum(probs.values()) - 1.0) < 1e-9
    for text, p in probs.items():
        assert world.log_prob(text) == pytest.approx(math.log(p), abs=1e-9)
    expected = {id(TINY_FLAT): 2 * 2 * (1 + 4), id(TINY_ADJ): 6480, id(TINY_DEEP): 2652}[id(knobs)]
    assert len(probs) == expected


def test_sampling_matches_log_prob_chi_square():
    # A recursive grammar (two clause levels) small enough to enumerate: 420 sentences.
    knobs = dict(n_determiners=1, n_nouns=1, n_intransitive=1, n_transitive=1, n_adjectives=1, max_adjectives=0, max_depth=2)
    world = Translation(**knobs, p_relative=0.5, p_plural=0.3, p_transitive=0.55, seed=1)
    probs = support_probs(world)
    assert len(probs) == 420 and abs(sum(probs.values()) - 1) < 1e-9
    rng = random.Random(12345)
    n = 20000
    counts = Counter(world.sample(rng).text for _ in range(n))
    stat, df = chi_square(counts, probs, n)
    assert df >= 50
    assert stat < chi2_critical(df), (stat, df)


def test_chi_square_with_adjectives_and_determiners():
    knobs = {**TINY_ADJ, "n_determiners": 3}  # the (sg/pl), a (sg), some (pl)
    world = Translation(**knobs, p_adjective=0.4, p_relative=0.2, p_plural=0.5, p_transitive=0.3, seed=2)
    probs = support_probs(world)
    rng = random.Random(7)
    n = 20000
    counts = Counter(world.sample(rng).text for _ in range(n))
    stat, df = chi_square(counts, probs, n)
    assert df >= 100
    assert stat < chi2_critical(df), (stat, df)


def test_sampled_documents_score_as_their_derivation():
    world = Translation()
    rng = random.Random(0)
    for _ in range(2000):
        doc = world.sample(rng)
        lp = world.log_prob(doc.text)
        assert lp > NEG_INF
        source, _ = words_of(doc)
        assert lp == pytest.approx(tree_log_prob(world, source, doc.latents["tree"]), abs=1e-9)
        # the parser recovers exactly the sampled tree: one parse per string
        assert world.parse(" ".join(source))[2] == doc.latents["tree"]
        json.dumps(doc.latents)
        assert "<|endoftext|>" not in doc.text and doc.text == doc.text.strip()


def test_alignment_is_consistent_with_the_lexicon():
    world = Translation(seed=5)
    rng = random.Random(1)
    for _ in range(1000):
        doc = world.sample(rng)
        lat = doc.latents
        source, target = words_of(doc)
        assert [doc.text[s:e] for s, e in lat["source_words"]] == source
        assert [doc.text[s:e] for s, e in lat["target_words"]] == target
        assert doc.text[slice(*lat["source_span"])] == " ".join(source)
        assert doc.text[slice(*lat["target_span"])] == " ".join(target)
        assert len(lat["alignment"]) == len(source) == len(target) == len(lat["pos"])
        assert sorted(j for _, j in lat["alignment"]) == list(range(len(target)))
        for i, j in lat["alignment"]:
            pos, lemma, number = world.forms[source[i]]
            assert pos == lat["pos"][i]
            suffix = {"noun": world.suffixes["noun_pl"] if number == "pl" else ""}.get(pos, "")
            if pos in ("iverb", "tverb"):
                suffix = world.suffixes["verb_" + number]
            assert target[j] == world.stems[(pos, lemma)] + suffix


def test_agreement_and_target_word_order():
    world = Translation(max_depth=3, p_relative=0.5, p_adjective=0.5)
    rng = random.Random(2)
    depths = Counter()
    for _ in range(1000):
        doc = world.sample(rng)
        source, target = words_of(doc)
        tree = doc.latents["tree"]
        where = dict(doc.latents["alignment"])  # source index -> target index
        depths[doc.latents["depth"]] += 1
        assert world.forms[source[tree["verb"]]][2] == tree["subject"]["number"]
        assert where[tree["verb"]] == len(target) - 1  # verb-final
        for np, _ in noun_phrases(tree):
            number = np["number"]
            assert world.forms[source[np["noun"]]][2] == number
            assert number in dict(DETERMINERS)[source[np["det"]]]
            # noun, then adjectives mirrored, then the determiner
            order = [where[np["noun"]]] + [where[a] for a in reversed(np["adjectives"])] + [where[np["det"]]]
            assert order == list(range(order[0], order[0] + len(order)))
            rel = np["relative"]
            if rel:
                assert world.forms[source[rel["verb"]]][2] == number  # the clause's verb agrees with its head
                assert where[rel["that"]] == where[np["noun"]] - 1 and where[rel["verb"]] == where[np["noun"]] - 2
        # subject, then object, then verb, each NP contiguous in the target
        subject = sorted(where[i] for i in np_words(tree["subject"]))
        assert subject == list(range(len(subject)))
        if tree["object"]:
            obj = sorted(where[i] for i in np_words(tree["object"]))
            assert obj == list(range(len(subject), len(target) - 1))
    assert max(depths) == 3 and depths[0] > 0


def test_translation_is_deterministic_and_depends_on_seed():
    a, b, c = Translation(seed=4), Translation(seed=4), Translation(seed=5)
    source = "the small dog that sees the cats runs"
    assert a.translate(source) == a.translate(source) == b.translate(source)
    assert a.translate(source) != c.translate(source)
    assert a.log_prob(source + SEPARATOR + a.translate(source)) > NEG_INF
    assert c.log_prob(source + SEPARATOR + a.translate(source)) == NEG_INF
    assert a.translate("the dog run") is None


def test_same_seed_same_documents():
    w1, w2 = Translation(seed=9), Translation(seed=9)
    assert w1.stems == w2.stems and w1.suffixes == w2.suffixes
    r1, r2 = random.Random(11), random.Random(11)
    docs1 = [w1.sample(r1) for _ in range(200)]
    docs2 = [w2.sample(r2) for _ in range(200)]
    assert [(d.text, d.latents) for d in docs1] == [(d.text, d.latents) for d in docs2]


def test_outside_the_world_is_minus_infinity():
    world = Translation()
    rng = random.Random(6)
    docs = [world.sample(rng) for _ in range(25)]
    good = docs[0].text
    bad = ["", " ", "=>", SEPARATOR, "the dog runs", "the dog runs =>", "garbage ✓ \x00", "Q: Where was Mira born? A: Vardel",
           "12+34=46", good + "\n", " " + good, good + " ", good + SEPARATOR + good, good.replace(" ", "  ", 1),
           good.upper(), good + " " + good, docs[1].text.partition(SEPARATOR)[0] + SEPARATOR + docs[2].text.partition(SEPARATOR)[2],
           "the dog runs => " + world.translate("the dog runs") + " ", "the dog run => " + (world.translate("the dogs run") or "")]
    for text in bad:
        assert world.log_prob(text) == NEG_INF, text
    assert world.log_prob(None) == NEG_INF  # not even a string
    for doc in docs:
        text = doc.text
        for k in range(len(text)):
            assert world.log_prob(text[:k] + text[k + 1:]) == NEG_INF
            for c in "sxe ":
                if c != text[k]:
                    assert world.log_prob(text[:k] + c + text[k + 1:]) == NEG_INF
        for c in "sa x.\n":
            assert world.log_prob(text + c) == NEG_INF


def test_recursion_and_adjective_bounds():
    deep = Translation(max_depth=3)
    source = "the dog that sees the cat that sees the bird that sees the fox runs"
    assert deep.parse(source) is not None
    text = source + SEPARATOR + deep.translate(source)
    assert deep.log_prob(text) > NEG_INF
    shallow = Translation(max_depth=2)  # same seed, same lexicon, but depth 3 is out of bounds
    assert shallow.translate(source) is None and shallow.log_prob(text) == NEG_INF
    two = "the small big dog runs"
    assert Translation(max_adjectives=2).log_prob(two + SEPARATOR + Translation().translate(two)) > NEG_INF
    assert Translation(max_adjectives=1).log_prob(two + SEPARATOR + Translation().translate(two)) == NEG_INF
    # agreement errors are outside the grammar
    for wrong in ["the dogs runs", "a dogs run", "two dog runs", "the dog that see the cat runs", "the dog that sees the cats run"]:
        assert deep.parse(wrong) is None


def test_bad_knobs_are_rejected():
    for knobs in [dict(n_nouns=0), dict(n_nouns=999), dict(p_plural=1.5), dict(max_depth=-1), dict(n_determiners=11)]:
        with pytest.raises(ValueError):
            Translation(**knobs)
