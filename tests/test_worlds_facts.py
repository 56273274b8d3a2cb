"""The facts world: exact probabilities, statements true to the fact base, a Q/A hold-out that never leaks."""

import json
import math
import random
import re
from collections import Counter

import pytest
from stats import chi2_critical, chi_square

from nextlab.worlds.base import NEG_INF
from nextlab.worlds.facts import ATTRIBUTES, BIO_TEMPLATES, Facts

# The question wordings, restated here so that Q/A lines are checked against the fact base independently of the module.
QUESTION_RE = re.compile(r"Q: (Where was|When was|Who does|What field does) (.+) (born|work for|work in)\? A: (.+)")
ASKS = {("Where was", "born"): "birth_city", ("When was", "born"): "birth_year", ("Who does", "work for"): "employer",
        ("What field does", "work in"): "field"}


def enumerate_support(world: Facts) -> dict:
    """P(text) from the generator's choices, enumerated here: bios over people x templates, Q/A over eligible people x attributes."""
    held = set(world.heldout)
    eligible = [i for i in range(world.n_people) if i not in held]
    probs: Counter = Counter()
    for person in range(world.n_people):
        for template in range(world.n_bio_templates):
            probs[world.bio(person, template).text] += world.p_bio / world.n_people / world.n_bio_templates
    for person in eligible:
        for attribute in ATTRIBUTES:
            probs[world.qa(person, attribute).text] += (1 - world.p_bio) / len(eligible) / len(ATTRIBUTES)
    return {t: p for t, p in probs.items() if p > 0}


def choice_log_prob(world: Facts, doc) -> float:
    lat = doc.latents
    if lat["kind"] == "bio":
        return math.log(world.p_bio) - math.log(world.n_people) - math.log(world.n_bio_templates)
    return math.log(1 - world.p_bio) - math.log(world.n_people - len(world.heldout)) - math.log(4)


def check_against_fact_base(world: Facts, doc) -> None:
    """Every statement in the document is true of its person, and no other city/company/field/year is mentioned."""
    text, lat = doc.text, doc.latents
    person = world.people[lat["person"]]
    assert text[slice(*lat["name_span"])] == person["name"] == lat["name"]
    if lat["kind"] == "qa":
        m = QUESTION_RE.fullmatch(text)
        assert m, text
        attribute = ASKS[(m.group(1), m.group(3))]
        assert attribute == lat["attribute"] and m.group(2) == person["name"]
        assert m.group(4) == str(person[attribute]) == lat["answer"] == text[slice(*lat["answer_span"])]
        assert lat["answer_span"][1] == len(text)
        return
    for attribute in ATTRIBUTES:
        assert text[slice(*lat["attributes"][attribute])] == str(person[attribute])
    words = set(re.findall(r"[A-Za-z]+", text))
    assert words & set(world.cities) == {person["birth_city"]}
    assert words & set(world.companies) == {person["employer"]}
    assert words & set(world.fields) == {person["field"]}
    assert re.findall(r"\d+", text) == [str(person["birth_year"])]
    lower = {w.lower() for w in words}
    assert not lower & ({"he", "his"} if person["gender"] == "f" else {"she", "her"})
    assert person["name"] in text


@pytest.mark.parametrize("knobs", [dict(n_people=2, n_bio_templates=3, qa_holdout=0.5, p_bio=0.3),
                                   dict(n_people=2, qa_holdout=0.0, p_bio=0.6, seed=4),
                                   dict(n_people=3, n_bio_templates=1, qa_holdout=0.0, p_bio=1.0),
                                   dict(n_people=3, qa_holdout=0.34, p_bio=0.0, n_cities=1, n_companies=1, n_fields=1)])
def test_tiny_support_sums_to_one(knobs):
    world = Facts(**knobs)
    probs = enumerate_support(world)
    assert abs(sum(probs.values()) - 1.0) < 1e-9
    for text, p in probs.items():
        assert world.log_prob(text) == pytest.approx(math.log(p), abs=1e-12)
    assert world.support().keys() == probs.keys()
    n_bios = world.n_people * world.n_bio_templates if world.p_bio > 0 else 0
    n_qa = (world.n_people - len(world.heldout)) * 4 if world.p_bio < 1 else 0
    assert len(probs) == n_bios + n_qa  # every choice renders to its own text


def test_coinciding_texts_are_summed():
    world = Facts(n_people=3, n_bio_templates=2, qa_holdout=0.0, p_bio=0.5)
    world.people[1] = dict(world.people[0])  # two people with the same name and facts: their documents coincide
    world._log_probs = world._table()
    bio = world.bio(0, 1).text
    assert world.log_prob(bio) == pytest.approx(math.log(2 * 0.5 / 3 / 2))
    assert world.log_prob(world.qa(1, "field").text) == pytest.approx(math.log(2 * 0.5 / 3 / 4))
    assert abs(sum(math.exp(lp) for lp in world.support().values()) - 1) < 1e-12


def test_sampling_matches_log_prob_chi_square_tiny():
    world = Facts(n_people=3, n_bio_templates=2, qa_holdout=0.34, p_bio=0.4, seed=2)
    probs = enumerate_support(world)
    assert len(probs) == 3 * 2 + 2 * 4
    rng = random.Random(2024)
    n = 5000
    counts = Counter(world.sample(rng).text for _ in range(n))
    stat, df = chi_square(counts, probs, n)
    assert df == 13 and stat < chi2_critical(df), stat


def test_sampling_matches_log_prob_chi_square_default():
    world = Facts()
    probs = {t: math.exp(lp) for t, lp in world.support().items()}
    assert abs(sum(probs.values()) - 1) < 1e-9
    rng = random.Random(99)
    n = 20000
    counts = Counter(world.sample(rng).text for _ in range(n))
    stat, df = chi_square(counts, probs, n)
    assert df > 2000 and stat < chi2_critical(df), (stat, df)


def test_sampled_documents_are_true_and_score_as_their_choices():
    world = Facts(seed=3)
    rng = random.Random(0)
    kinds = Counter()
    for _ in range(3000):
        doc = world.sample(rng)
        kinds[doc.latents["kind"]] += 1
        lp = world.log_prob(doc.text)
        assert lp > NEG_INF
        assert lp == pytest.approx(choice_log_prob(world, doc), abs=1e-12)
        check_against_fact_base(world, doc)
        if doc.latents["kind"] == "bio":
            assert world.bio(doc.latents["person"], doc.latents["template"]).text == doc.text
        json.dumps(doc.latents)
        assert "<|endoftext|>" not in doc.text and doc.text == doc.text.strip() and "\n" not in doc.text
    assert 1300 < kinds["bio"] < 1700


def test_every_template_states_all_four_facts():
    world = Facts(n_people=20, seed=1)
    for person in range(world.n_people):
        for template in range(len(BIO_TEMPLATES)):
            check_against_fact_base(world, world.bio(person, template))
        for attribute in ATTRIBUTES:
            check_against_fact_base(world, world.qa(person, attribute))


def test_heldout_qa_never_sampled_but_bios_are():
    world = Facts()
    assert len(world.heldout) == 40 and len(world.heldout_people()) == 40
    held = set(world.heldout)
    heldout_docs = world.heldout_qa()
    assert len(heldout_docs) == 4 * 40
    assert {d.latents["person"] for d in heldout_docs} == held
    assert {(d.latents["person"], d.latents["attribute"]) for d in heldout_docs} == {(p, a) for p in held for a in ATTRIBUTES}
    for doc in heldout_docs:
        check_against_fact_base(world, doc)
        assert world.log_prob(doc.text) == NEG_INF
    heldout_texts = {d.text for d in heldout_docs}
    heldout_names = set(world.heldout_people())
    rng = random.Random(5)
    bios_of_heldout = Counter()
    for _ in range(5000):
        doc = world.sample(rng)
        assert doc.text not in heldout_texts
        if doc.latents["kind"] == "qa":
            assert doc.latents["person"] not in held
            assert QUESTION_RE.fullmatch(doc.text).group(2) not in heldout_names
        elif doc.latents["person"] in held:
            bios_of_heldout[doc.latents["person"]] += 1
    assert set(bios_of_heldout) == held  # every held-out person's biography appears
    for person in world.heldout:
        assert world.log_prob(world.bio(person, 0).text) > NEG_INF


def test_names_are_unique_and_pools_disjoint():
    world = Facts(n_people=500, seed=7)
    names = [p["name"] for p in world.people]
    assert len(set(names)) == len(names)
    firsts = Counter(p["first"] for p in world.people)
    assert max(firsts.values()) > 1  # shared first names occur, so the full name is what identifies a person
    pools = [set(world.cities), set(world.companies), set(world.fields), set(firsts), {p["last"] for p in world.people}]
    assert sum(len(p) for p in pools) == len(set().union(*pools))


def test_outside_the_world_is_minus_infinity():
    world = Facts(seed=1)
    rng = random.Random(8)
    docs = [world.sample(rng) for _ in range(20)]
    good = docs[0].text
    other = world.people[(docs[0].latents["person"] + 1) % world.n_people]
    p0 = world.people[0]
    wrong_city = [c for c in world.cities if c != p0["birth_city"]][0]
    bad = ["", " ", "garbage ✓ \x00", "Q:", "Q: Where was Nobody Here born? A: Vardel", "the dog runs => bupu zennama",
           "12+34=46", good + "\n", " " + good, good + " ", good + good, good.upper(), good.replace(" ", "  ", 1),
           f"Q: Where was {p0['name']} born? A: {wrong_city}", f"Q: Where was {p0['name']} born? A: {p0['birth_city']} ",
           f"Q: Who does {p0['name']} work for? A: {other['employer'] if other['employer'] != p0['employer'] else 'Nobody'}",
           world.bio(0, 0).text.replace(p0["birth_city"], wrong_city)]
    for text in bad:
        assert world.log_prob(text) == NEG_INF, text
    assert world.log_prob(None) == NEG_INF
    for doc in docs:
        text = doc.text
        for k in range(len(text)):
            assert world.log_prob(text[:k] + text[k + 1:]) == NEG_INF
            for c in "ax 1.":
                if c != text[k]:
                    assert world.log_prob(text[:k] + c + text[k + 1:]) == NEG_INF
        for c in "sa x.\n":
            assert world.log_prob(text + c) == NEG_INF


def test_templates_are_limited_by_knob():
    world = Facts(n_bio_templates=2)
    rng = random.Random(3)
    templates = {d.latents["template"] for d in (world.sample(rng) for _ in range(500)) if d.latents["kind"] == "bio"}
    assert templates == {0, 1}
    assert world.log_prob(world.bio(0, 5).text) == NEG_INF
    assert Facts().log_prob(world.bio(0, 5).text) > NEG_INF  # same seed, same fact base


def test_same_seed_same_documents():
    w1, w2, w3 = Facts(seed=9), Facts(seed=9), Facts(seed=10)
    assert w1.people == w2.people and w1.heldout == w2.heldout
    assert w1.people != w3.people
    r1, r2 = random.Random(4), random.Random(4)
    assert [(d.text, d.latents) for d in (w1.sample(r1) for _ in range(300))] == \
        [(d.text, d.latents) for d in (w2.sample(r2) for _ in range(300))]


def test_bad_knobs_are_rejected():
    for knobs in [dict(n_people=0), dict(n_bio_templates=0), dict(n_bio_templates=99), dict(p_bio=1.2), dict(qa_holdout=-0.1),
                  dict(year_min=2000, year_max=1990), dict(n_people=2, qa_holdout=1.0, p_bio=0.5)]:
        with pytest.raises(ValueError):
            Facts(**knobs)
    assert Facts(n_people=2, qa_holdout=1.0, p_bio=1.0).heldout == [0, 1]  # all held out is fine when there are no Q/A lines
