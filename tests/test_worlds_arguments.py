"""The arguments world: exact support by brute force, sampling against log_prob, verdicts checked by an
independent reasoner, latents, the lexicon, bad input."""

import itertools
import json
import math
import random
import re
from collections import Counter, deque

import pytest
from stats import chi2_critical as chi_square_critical
from stats import chi_square_coarse as chi_square

from nextlab.worlds.arguments import KINDS, Arguments

# ---- an independent reasoner: regexes, a graph, breadth-first search ----

LINK = re.compile(r"All ([a-z]+)s are ([a-z]+)s")
MEMBER = re.compile(r"([A-Z][a-z]+) is a ([a-z]+)")
DOC = re.compile(r"(.*)\. So ([A-Z][a-z]+) is a ([a-z]+)\. => (yes|no)")


def read(text: str):
    """(links, individual, its category, conclusion's individual, conclusion's category, answer) or None."""
    m = DOC.fullmatch(text)
    if m is None:
        return None
    links, members = [], []
    for sentence in m.group(1).split(". "):
        if (lk := LINK.fullmatch(sentence)) is not None:
            links.append(lk.groups())
        elif (mb := MEMBER.fullmatch(sentence)) is not None:
            members.append(mb.groups())
        else:
            return None
    if len(members) != 1:
        return None
    (who, cat), (who2, concl), answer = members[0], m.group(2, 3), m.group(4)
    return links, who, cat, who2, concl, answer


def follows(links, category, conclusion) -> bool:
    graph: dict = {}
    for a, b in links:
        graph.setdefault(a, []).append(b)
    seen, todo = {category}, deque([category])
    while todo:
        for nxt in graph.get(todo.popleft(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return conclusion in seen


def stated_answer_is_correct(text: str) -> bool:
    links, who, cat, who2, concl, answer = read(text)
    return who == who2 and follows(links, cat, concl) == (answer == "yes")


# ---- brute force: every choice sequence of a tiny world, written out from the module docstring's spec ----


def spec_text(world, kind, chain, extra, j, x, order) -> str:
    c = world.categories
    links = [(c[a], c[b]) for a, b in zip(chain, chain[1:])]
    member, concl = c[chain[0]], c[chain[-1]]
    if kind == "reversed":
        links[j] = links[j][::-1]
    elif kind == "broken":
        links[j] = (c[extra], links[j][1])
    elif kind == "unrelated":
        concl = c[extra]
    elif kind == "converse":
        member, concl = concl, member
    name = world.individuals[x]
    sentences = [f"All {a}s are {b}s." for a, b in links] + [f"{name} is a {member}."]
    answer = "yes" if kind == "valid" else "no"
    return " ".join([sentences[i] for i in order] + [f"So {name} is a {concl}. => {answer}"])


def brute_force(world) -> dict:
    """text -> list of the probabilities of every choice sequence that writes it."""
    out: dict = {}
    n, depths = world.n_categories, range(world.min_depth, world.max_depth + 1)
    for d in depths:
        for kind in ("valid", *world.invalid_kinds):
            p_kind = world.p_valid if kind == "valid" else (1 - world.p_valid) / len(world.invalid_kinds)
            k = d + 2 if kind in ("broken", "unrelated") else d + 1
            js = range(d) if kind in ("reversed", "broken") else [None]
            orders = list(itertools.permutations(range(d + 1))) if world.shuffle else [tuple(range(d + 1))]
            p = p_kind / len(depths) / math.perm(n, k) / len(js) / world.n_individuals / len(orders)
            for drawn in itertools.permutations(range(n), k):
                for j in js:
                    for x in range(world.n_individuals):
                        for order in orders:
                            text = spec_text(world, kind, drawn[: d + 1], drawn[d + 1] if k > d + 1 else None, j, x, order)
                            out.setdefault(text, []).append(p)
    return out


TINY = [
    dict(n_categories=4, n_individuals=2, min_depth=1, max_depth=2, p_valid=0.3),
    dict(n_categories=4, n_individuals=1, min_depth=1, max_depth=2, shuffle=False),
    dict(n_categories=3, n_individuals=2, min_depth=1, max_depth=1, invalid_kinds=("reversed", "converse")),
    dict(n_categories=5, n_individuals=1, min_depth=2, max_depth=3, invalid_kinds=("broken",), p_valid=0.9),
]


@pytest.mark.parametrize("knobs", TINY)
def test_tiny_support_matches_brute_force_and_sums_to_one(knobs):
    world = Arguments(**knobs)
    support = brute_force(world)
    assert abs(math.fsum(math.fsum(ps) for ps in support.values()) - 1) < 1e-9  # the enumeration is complete
    assert abs(math.fsum(math.exp(world.log_prob(t)) for t in support) - 1) < 1e-9
    for text, ps in support.items():
        assert math.isclose(world.log_prob(text), math.log(math.fsum(ps)), rel_tol=1e-12), text
        assert len(world.explanations(text)) == len(ps), text
        assert stated_answer_is_correct(text), text


def test_depth_one_collision_is_summed():
    """At depth 1, "reversed" (A, B) and "converse" (B, A) write the same text: log_prob sums both."""
    world = Arguments(n_categories=3, n_individuals=1, min_depth=1, max_depth=1, invalid_kinds=("reversed", "converse"))
    support = brute_force(world)
    doubles = [t for t, ps in support.items() if len(ps) == 2]
    assert doubles and all(len(ps) <= 2 for ps in support.values())
    for text in doubles:
        kinds = sorted(e[1]["kind"] for e in world.explanations(text))
        assert kinds == ["converse", "reversed"]
        assert math.isclose(world.log_prob(text), math.log(2 * support[text][0]), rel_tol=1e-12)
    # with the default kinds, longer chains never collide
    for text, ps in brute_force(Arguments(n_categories=5, n_individuals=1, min_depth=2, max_depth=3)).items():
        assert len(ps) == 1, text


def test_sampling_frequencies_match_log_prob():
    world = Arguments(n_categories=4, n_individuals=2, min_depth=1, max_depth=2, p_valid=0.4)
    probs = {t: math.fsum(ps) for t, ps in brute_force(world).items()}
    n = 20_000
    rng = random.Random(2024)
    observed = Counter(world.sample(rng).text for _ in range(n))

    def coarse(text):
        links, *_, answer = read(text)
        return len(links), answer

    stat, df = chi_square(observed, probs, n, coarse)
    assert df > 100
    assert stat < chi_square_critical(df), (stat, df)


def choice_log_prob(world, lat) -> float:
    """The log-probability of the choices recorded in the latents, from the module docstring's process."""
    d, kind = lat["depth"], lat["kind"]
    lp = -math.log(world.max_depth - world.min_depth + 1)
    lp += math.log(world.p_valid if kind == "valid" else (1 - world.p_valid) / len(world.invalid_kinds))
    k = len(lat["chain"]) + (lat["extra"] is not None)
    lp -= math.log(math.perm(world.n_categories, k)) + math.log(world.n_individuals)
    if lat["link"] is not None:
        lp -= math.log(d)
    if world.shuffle:
        lp -= math.log(math.factorial(d + 1))
    return lp


@pytest.mark.parametrize(
    "knobs",
    [{}, {"shuffle": False}, {"min_depth": 6, "max_depth": 10}, {"p_valid": 0.0}, {"p_valid": 1.0}, {"invalid_kinds": ("broken",)}],
)
def test_samples_are_correct_and_latents_consistent(knobs):
    world = Arguments(**knobs)
    rng = random.Random(11)
    kinds = Counter()
    for _ in range(300):
        doc = world.sample(rng)
        text, lat = doc.text, doc.latents
        assert json.loads(json.dumps(lat)) == lat
        d, kind = lat["depth"], lat["kind"]
        kinds[kind] += 1
        assert stated_answer_is_correct(text), text
        assert lat["valid"] == (kind == "valid") == text.endswith(" => yes")
        assert world.min_depth <= d <= world.max_depth and len(lat["chain"]) == d + 1 == len(set(lat["chain"]))
        assert (lat["extra"] is not None) == (kind in ("broken", "unrelated")) and lat["extra"] not in lat["chain"]
        assert (lat["link"] is not None) == (kind in ("reversed", "broken"))
        assert sorted(lat["order"]) == list(range(d + 1))
        if not world.shuffle:
            assert lat["order"] == list(range(d + 1))
        # the text is exactly what the recorded choices write
        cid = {w: i for i, w in enumerate(world.categories)}
        chain = [cid[w] for w in lat["chain"]]
        extra = None if lat["extra"] is None else cid[lat["extra"]]
        x = world.individuals.index(lat["individual"])
        assert text == spec_text(world, kind, chain, extra, lat["link"], x, lat["order"])
        # spans
        s, e = lat["answer_span"]
        assert e == len(text) and text[s:e] == ("yes" if lat["valid"] else "no") and text[:s].endswith(" => ")
        cs, ce = lat["conclusion_span"]
        assert text[cs:ce].startswith("So ") and text[ce:s] == " => "
        spans = lat["premise_spans"]
        assert len(spans) == d + 1 and spans[0][0] == 0 and spans[-1][1] + 1 == cs
        sentences = [text[a:b] for a, b in spans]
        assert " ".join(sentences) == text[: cs - 1] and all(t.endswith(".") for t in sentences)
        assert sum(bool(MEMBER.fullmatch(t[:-1])) for t in sentences) == 1
        # log_prob sums the choices; only the depth-1 reversed/converse pair writes one text two ways
        lp = world.log_prob(text)
        collides = d == 1 and kind in ("reversed", "converse") and {"reversed", "converse"} <= set(world.invalid_kinds)
        assert math.isclose(lp, choice_log_prob(world, lat) + collides * math.log(2), rel_tol=1e-12), text
        found = [c for _, c in world.explanations(text)]
        assert any(c["kind"] == kind and c["chain"] == chain and c["link"] == lat["link"] and c["order"] == lat["order"] for c in found)
    allowed = {"valid"} if world.p_valid == 1 else set(world.invalid_kinds) | ({"valid"} if world.p_valid > 0 else set())
    assert set(kinds) == allowed


def test_deep_chains_for_out_of_distribution():
    world = Arguments(min_depth=8, max_depth=12, n_categories=40)
    rng = random.Random(1)
    for _ in range(100):
        doc = world.sample(rng)
        assert doc.latents["depth"] >= 8 and stated_answer_is_correct(doc.text)
        assert world.log_prob(doc.text) > -math.inf
    # a training world with shallower chains cannot produce them
    assert Arguments(max_depth=4, n_categories=40).log_prob(doc.text) == -math.inf


def test_changed_verdicts_are_impossible():
    world = Arguments()
    rng = random.Random(4)
    for _ in range(200):
        text = world.sample(rng).text
        flipped = text[: -len("yes")] + "no" if text.endswith("yes") else text[: -len("no")] + "yes"
        assert world.log_prob(flipped) == -math.inf


def mutations(text: str, alphabet: str) -> set[str]:
    out = set()
    for i in range(len(text) + 1):
        for ch in alphabet:
            out.add(text[:i] + ch + text[i:])
            if i < len(text):
                out.add(text[:i] + ch + text[i + 1 :])
        if i < len(text):
            out.add(text[:i] + text[i + 1 :])
    out.discard(text)
    return out


def test_mutations_leave_the_world_exactly_when_they_should():
    world = Arguments(n_categories=4, n_individuals=2, min_depth=1, max_depth=2)
    support = brute_force(world)
    alphabet = "".join(sorted(set("".join(world.categories + world.individuals)))) + " .=>sSAyno\n"
    rng = random.Random(8)
    for text in rng.sample(sorted(support), 12):
        for m in mutations(text, alphabet):
            assert (world.log_prob(m) > -math.inf) == (m in support), repr(m)


def test_garbage_and_other_formats_are_impossible():
    world = Arguments()
    doc = world.sample(random.Random(0)).text
    c, name = world.categories, world.individuals[0]
    bad = [
        "",
        " ",
        " => yes",
        "So => no",
        doc + " ",
        " " + doc,
        doc + "\n",
        doc.replace(" ", "  ", 1),
        doc.replace(". ", ".\n", 1),
        doc[:-1],
        doc + "s",
        doc.replace(" => ", " =>"),
        doc[: doc.index(" => ")],
        f"{name} is a {c[0]}. So {name} is a {c[0]}. => yes",  # depth 0
        f"All {c[0]}s are {c[1]}s. So {name} is a {c[1]}. => yes",  # no membership
        f"All {c[0]}s are {c[1]}s. {name} is a {c[0]}. {name} is a {c[0]}. So {name} is a {c[1]}. => yes",
        f"All {c[0]}s are {c[1]}s. {world.individuals[1]} is a {c[0]}. So {name} is a {c[1]}. => yes",
        f"All {c[0]}s are {c[0]}s. {name} is a {c[0]}. So {name} is a {c[0]}. => yes",
        f"All {c[0]} are {c[1]}. {name} is a {c[0]}. So {name} is a {c[1]}. => yes",
        f"All {c[0]}s are {c[1]}s. {name} is an {c[0]}. So {name} is a {c[1]}. => yes",
        f"All {c[0]}s are {c[1]}s. All {c[0]}s are {c[1]}s. {name} is a {c[0]}. So {name} is a {c[1]}. => yes",
        "All wugs are feps. Zorin is a wug. So Zorin is a fep. => yes",
        "12 x 7 = 84",
        "<|endoftext|>",
        "\x00\udcff ünïcödé => no",
        "All " * 10_000 + "=> no",
    ]
    for text in bad:
        assert world.log_prob(text) == -math.inf, repr(text[:80])
    assert world.log_prob(f"All {c[0]}s are {c[1]}s. {name} is a {c[0]}. So {name} is a {c[1]}. => yes") > -math.inf
    assert Arguments(seed=1).log_prob(doc) == -math.inf  # another lexicon
    rng = random.Random(0)
    for _ in range(300):
        junk = doc[: rng.randrange(len(doc))] + "".join(rng.choice(doc) for _ in range(rng.randint(0, 20)))
        lp = world.log_prob(junk)
        assert lp == -math.inf or stated_answer_is_correct(junk)


def test_lexicon():
    world = Arguments()
    cats, names = world.categories, world.individuals
    assert len(cats) == len(set(cats)) == 200 and len(names) == len(set(names)) == 50
    syllable = "[bdfgklmnprtvwz][aeiou][bdgklmnprt]?"
    assert all(re.fullmatch(f"({syllable}){{1,2}}", w) for w in cats)
    assert all(re.fullmatch(f"({syllable}){{2}}", w.lower()) and w[0].isupper() for w in names)
    assert not {w + "s" for w in cats} & set(cats) and not {w.lower() for w in names} & set(cats)
    assert Arguments().categories == cats and Arguments(seed=3).categories != cats
    assert Arguments(n_categories=10, n_individuals=3).categories == cats[:10]


def test_same_seed_same_documents():
    world = Arguments(max_depth=6)
    a = [world.sample(r).text for r in [random.Random(9)] for _ in range(100)]
    b = [world.sample(r).text for r in [random.Random(9)] for _ in range(100)]
    c = [world.sample(r).text for r in [random.Random(10)] for _ in range(100)]
    assert a == b and a != c


@pytest.mark.parametrize(
    "knobs",
    [
        {"min_depth": 0},
        {"min_depth": 3, "max_depth": 2},
        {"p_valid": 1.5},
        {"p_valid": -0.1},
        {"invalid_kinds": ()},
        {"invalid_kinds": ("reversed", "reversed")},
        {"invalid_kinds": ("backwards",)},
        {"n_categories": 5, "max_depth": 4},
        {"n_individuals": 0},
    ],
)
def test_bad_knobs(knobs):
    with pytest.raises(ValueError):
        Arguments(**knobs)
    assert Arguments(p_valid=1.0, invalid_kinds=()).sample(random.Random(0)).text.endswith(" => yes")
    assert set(KINDS) == {"reversed", "broken", "unrelated", "converse"}
