"""facts: biographies of invented people and question/answer lines about them, from a fixed fact base.

Each world draws, from its `seed`, a fact base of `n_people` invented people with unique
pronounceable full names, a gender (for pronouns) and four attributes: birth city, birth
year, employer and field, drawn uniformly from pools of invented cities, companies, fields
and the years year_min..year_max. Every invented word (first name, last name, city, company,
field) is distinct from every other.

A document is either a biography (probability p_bio) or a question/answer line:

  - biography: a person uniform among all people, a template uniform among the first
    n_bio_templates of BIO_TEMPLATES; each template states all four attributes, in its own
    order and phrasing:
        Mira Tolsen was born in Vardel in 1961. She works for Quorin in thalistics.
  - Q/A: a person uniform among the people NOT held out, an attribute uniform among the four:
        Q: Where was Mira Tolsen born? A: Vardel
        Q: When was Mira Tolsen born? A: 1961
        Q: Who does Mira Tolsen work for? A: Quorin
        Q: What field does Mira Tolsen work in? A: thalistics

Knowledge extraction split: a fraction `qa_holdout` of the people (round(qa_holdout * n_people),
drawn from `seed`) never appear in Q/A documents from `sample` (their biographies do).
`heldout_qa()` lists every Q/A document about them (one per person and attribute) for
evaluation: a model that learned the Q/A format from other people and read the held-out
people's biographies can answer them only by extracting knowledge from the biographies.
Their log_prob under this world is -inf.

Held-out split (see `base`): the items are the Q/A lines of the people not held out,
keyed by their question (the prompt `Q: ... A: `); a tenth of them (HELDOUT_SHARE)
are never trained on and make the `facts` task, asking what a biography stated and
other Q/A lines about the same person did not. Biographies are never items: they are
what the model must learn from, so they all stay in training. The support is finite,
so P(held-out part) is summed exactly over it.

log_prob is exact: at construction every document the world can produce is rendered once
and its probability summed over all (kind, person, template or attribute) choices that
render to that text, so coincidences of text (were any to occur) are summed over, not
double-counted or missed.

Knobs (constructor, keyword-only):
    n_people         (200)  people in the fact base
    n_cities         (40)   pool of invented birth cities
    n_companies      (30)   pool of invented employers
    n_fields         (20)   pool of invented fields
    year_min         (1940) birth years are uniform in year_min..year_max
    year_max         (2005)
    n_bio_templates  (8)    biographies use the first this many of BIO_TEMPLATES
    p_bio            (0.5)  probability that a document is a biography rather than a Q/A line
    qa_holdout       (0.2)  fraction of people whose Q/A documents never appear
    seed             (0)    draws the pools, the fact base and the held-out people

Latents (character offsets index `text`):
    biography: {"kind": "bio", "person": id, "name": full name, "template": t, "name_span": [start, end],
                "attributes": {"birth_city": [start, end], "birth_year": [...], "employer": [...], "field": [...]}}
    Q/A:       {"kind": "qa", "person": id, "name": full name, "attribute": one of ATTRIBUTES,
                "name_span": [start, end], "answer": the answer text, "answer_span": [start, end]}
`person` indexes `self.people` (dicts with name, first, last, gender and the four attributes).
"""

from __future__ import annotations

import math
import random
import string

from nextlab.worlds.base import NEG_INF, Document, exact_heldout_mass, hash64, logsumexp

ATTRIBUTES = ("birth_city", "birth_year", "employer", "field")

# {He}/{he}/{His}/{his} are the person's pronouns; {first} is the first name alone.
BIO_TEMPLATES = [
    "{name} was born in {birth_city} in {birth_year}. {He} works for {employer} in {field}.",
    "{name} works in {field} at {employer}. {He} was born in {birth_year} in {birth_city}.",
    "Born in {birth_city} in {birth_year}, {name} now works for {employer}. {His} field is {field}.",
    "{name} ({birth_year}, {birth_city}) is employed by {employer} and specializes in {field}.",
    "{employer} employs {name}, who works in {field}. {first} was born in {birth_city} in {birth_year}.",
    "In {birth_year}, {name} was born in {birth_city}. Today {he} works in {field} for {employer}.",
    "{name} is an expert in {field}. {He} joined {employer} after growing up in {birth_city}, where {he} was born in {birth_year}.",
    "A native of {birth_city}, {name} was born in {birth_year} and works at {employer} on {field}.",
]
QUESTIONS = {
    "birth_city": "Q: Where was {name} born? A: {answer}",
    "birth_year": "Q: When was {name} born? A: {answer}",
    "employer": "Q: Who does {name} work for? A: {answer}",
    "field": "Q: What field does {name} work in? A: {answer}",
}
PRONOUNS = {"f": {"He": "She", "he": "she", "His": "Her", "his": "her"}, "m": {"He": "He", "he": "he", "His": "His", "his": "his"}}

ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th", "sh", "tr"]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o"]
FIRST_ENDINGS = ["", "", "n", "ra", "l", "s", "na"]
LAST_ENDINGS = ["sen", "ov", "ard", "ing", "ton", "rik", "man", "ell"]
CITY_ENDINGS = ["del", "mar", "holm", "grad", "ford", "ven", "is", "burg"]
COMPANY_ENDINGS = ["in", "ex", "on", "ia", "ix", "ora", "um"]
FIELD_ENDINGS = ["ology", "istics", "onomy", "ography", "metry", "ics"]


def _compile(template: str) -> list[tuple[str, str | None]]:
    """A template as (literal text, field name or None) pieces."""
    return [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]


def _render(pieces: list[tuple[str, str | None]], values: dict[str, str]) -> tuple[str, dict[str, list[int]]]:
    """Fill a compiled template; also return the [start, end] of each field's (first) occurrence."""
    out, spans, at = [], {}, 0
    for literal, field in pieces:
        out.append(literal)
        at += len(literal)
        if field is not None:
            value = values[field]
            spans.setdefault(field, [at, at + len(value)])
            out.append(value)
            at += len(value)
    return "".join(out), spans


def _invent(rng: random.Random, used: set[str], syllables: tuple[int, ...], endings: list[str], capital: bool) -> str:
    while True:
        word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.choice(syllables))) + rng.choice(endings)
        word = word.capitalize() if capital else word
        if word not in used:
            used.add(word)
            return word


class Facts:
    """Biographies and Q/A lines about a fixed base of invented people. See the module docstring."""

    name = "facts"

    def __init__(
        self,
        *,
        n_people: int = 200,
        n_cities: int = 40,
        n_companies: int = 30,
        n_fields: int = 20,
        year_min: int = 1940,
        year_max: int = 2005,
        n_bio_templates: int = len(BIO_TEMPLATES),
        p_bio: float = 0.5,
        qa_holdout: float = 0.2,
        seed: int = 0,
    ) -> None:
        if n_people < 1 or n_cities < 1 or n_companies < 1 or n_fields < 1:
            raise ValueError("n_people, n_cities, n_companies and n_fields must be >= 1")
        if not 1 <= n_bio_templates <= len(BIO_TEMPLATES):
            raise ValueError(f"n_bio_templates must be in 1..{len(BIO_TEMPLATES)}")
        if not 0 <= year_min <= year_max:
            raise ValueError("need 0 <= year_min <= year_max")
        if not 0.0 <= p_bio <= 1.0 or not 0.0 <= qa_holdout <= 1.0:
            raise ValueError("p_bio and qa_holdout must be probabilities")
        self.n_people, self.n_bio_templates, self.p_bio, self.qa_holdout, self.seed = n_people, n_bio_templates, p_bio, qa_holdout, seed

        rng = random.Random(seed)
        used: set[str] = set()
        self.cities = [_invent(rng, used, (1, 2), CITY_ENDINGS, True) for _ in range(n_cities)]
        self.companies = [_invent(rng, used, (1, 2), COMPANY_ENDINGS, True) for _ in range(n_companies)]
        self.fields = [_invent(rng, used, (1, 2), FIELD_ENDINGS, False) for _ in range(n_fields)]
        # first names come from a shared pool, so people share them; last names are unique, so full names are
        firsts = [_invent(rng, used, (1, 2), FIRST_ENDINGS, True) for _ in range(max(2, n_people // 3))]
        self.people: list[dict] = []
        for _ in range(n_people):
            first, last = rng.choice(firsts), _invent(rng, used, (1, 2), LAST_ENDINGS, True)
            self.people.append({
                "name": f"{first} {last}", "first": first, "last": last, "gender": rng.choice("fm"),
                "birth_city": rng.choice(self.cities), "birth_year": rng.randint(year_min, year_max),
                "employer": rng.choice(self.companies), "field": rng.choice(self.fields),
            })
        self.heldout = sorted(rng.sample(range(n_people), round(qa_holdout * n_people)))
        held = set(self.heldout)
        self.eligible = [i for i in range(n_people) if i not in held]  # people whose Q/A lines `sample` produces
        if p_bio < 1 and not self.eligible:
            raise ValueError("every person is held out, so no Q/A document can be sampled: lower qa_holdout or set p_bio=1")

        self._bios = [_compile(t) for t in BIO_TEMPLATES]  # all of them, so bio() can render any template for evaluation
        self._questions = {a: _compile(q) for a, q in QUESTIONS.items()}
        self._log_probs = self._table()

    def _table(self) -> dict[str, float]:
        """log P(text) for every producible text, summed over the choices that render to it."""
        parts: dict[str, list[float]] = {}
        if self.p_bio > 0:
            lp = math.log(self.p_bio) - math.log(self.n_people) - math.log(self.n_bio_templates)
            for person in range(self.n_people):
                for template in range(self.n_bio_templates):
                    parts.setdefault(self.bio(person, template).text, []).append(lp)
        if self.p_bio < 1:
            lp = math.log(1 - self.p_bio) - math.log(len(self.eligible)) - math.log(len(ATTRIBUTES))
            for person in self.eligible:
                for attribute in ATTRIBUTES:
                    parts.setdefault(self.qa(person, attribute).text, []).append(lp)
        return {text: logsumexp(lps) for text, lps in parts.items()}

    def _values(self, person: int) -> dict[str, str]:
        p = self.people[person]
        return {"name": p["name"], "first": p["first"], "birth_city": p["birth_city"], "birth_year": str(p["birth_year"]),
                "employer": p["employer"], "field": p["field"], **PRONOUNS[p["gender"]]}

    def bio(self, person: int, template: int) -> Document:
        """The biography of person `person` from template `template` (any of BIO_TEMPLATES, used by `sample` or not)."""
        text, spans = _render(self._bios[template], self._values(person))
        latents = {"kind": "bio", "person": person, "name": self.people[person]["name"], "template": template,
                   "name_span": spans["name"], "attributes": {a: spans[a] for a in ATTRIBUTES}}
        return Document(text, latents)

    def qa(self, person: int, attribute: str) -> Document:
        """The Q/A line asking for `attribute` of person `person` (whether or not `sample` can produce it)."""
        values = self._values(person)
        answer = values[attribute]
        text, spans = _render(self._questions[attribute], {"name": values["name"], "answer": answer})
        latents = {"kind": "qa", "person": person, "name": values["name"], "attribute": attribute,
                   "name_span": spans["name"], "answer": answer, "answer_span": spans["answer"]}
        return Document(text, latents)

    def heldout_qa(self) -> list[Document]:
        """Every Q/A document about the held-out people, one per person and attribute: never produced by `sample`."""
        return [self.qa(person, attribute) for person in self.heldout for attribute in ATTRIBUTES]

    def heldout_people(self) -> list[str]:
        return [self.people[i]["name"] for i in self.heldout]

    def sample(self, rng: random.Random) -> Document:
        if rng.random() < self.p_bio:
            return self.bio(rng.randrange(self.n_people), rng.randrange(self.n_bio_templates))
        return self.qa(rng.choice(self.eligible), rng.choice(ATTRIBUTES))

    def log_prob(self, text: str) -> float:
        if not isinstance(text, str):
            return NEG_INF
        return self._log_probs.get(text, NEG_INF)

    def item_hash(self, text: str) -> int | None:
        """Q/A lines hash by their question; biographies are not items (None)."""
        if not isinstance(text, str) or not text.startswith("Q: ") or " A: " not in text:
            return None
        return hash64(text[: text.index(" A: ") + len(" A: ")])

    def heldout_mass(self) -> float:
        return exact_heldout_mass(self, self._log_probs)

    def support(self) -> dict[str, float]:
        """Every producible text with its log-probability."""
        return dict(self._log_probs)
