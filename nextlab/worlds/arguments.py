"""Arguments: chains of syllogisms over invented categories, each ending in a stated verdict.

A document states premises, a conclusion, and whether the conclusion follows:

    All wugs are fepas. Zorin is a wug. All fepas are daks. So Zorin is a dak. => yes

Format: premise sentences joined by single spaces, then " So {X} is a {K}.", then the
fixed answer marker " => " and the answer "yes" or "no". Premises are either a link
"All {A}s are {B}s." (every A is a B) or the one membership "{X} is a {M}." The
answer is the last thing in the document; to ask a model, give it the text up to
and including " => " (text[:answer_span[0]]) and read "yes" / "no".

Lexicon (fixed per world `seed`): `n_categories` category nouns and `n_individuals`
capitalised names, pronounceable nonsense made of consonant-vowel(-consonant)
syllables. Nouns never end in s, x or z, so every plural is the noun plus "s" and
no plural is another noun; nouns start with a consonant, so the article is "a".

A document is drawn as

    d       the depth, uniform in min_depth..max_depth: the number of link premises
    valid   with probability p_valid; otherwise an invalid kind uniform among `invalid_kinds`
    chain   C_0 .. C_d: d+1 distinct categories, a uniform ordered draw (for "broken" and
            "unrelated" one more, E, drawn in the same ordered draw: d+2 distinct)
    j       (for "reversed" and "broken") the corrupted link, uniform in 0..d-1
    X       the individual, uniform
    order   with `shuffle`, a uniform permutation of the d+1 premises; without it the
            links in chain order, then the membership

The canonical premises are the links C_i -> C_{i+1} (i < d), then "X is a C_0";
the conclusion is "X is a C_d". The kinds change them so that the conclusion's
category is NOT reachable from X's category through the stated links:

    "valid"      unchanged: the answer is yes.
    "reversed"   link j is stated backwards: All C_{j+1}s are C_js.
    "broken"     link j gets a fresh subject: All Es are C_{j+1}s (the chain has a gap).
    "unrelated"  the conclusion names the fresh category: So X is a E.
    "converse"   membership and conclusion swap categories: X is a C_d. So X is a C_0.
                 (Affirming the consequent.)

For the invalid kinds the answer is no. Premises are always distinct sentences, so
the text determines the permutation. Different choices can still give the same
text: at depth 1, "reversed" with chain (A, B) and "converse" with chain (B, A) both
write "All Bs are As. X is a A. So X is a B. => no". log_prob therefore sums over
every choice sequence that writes the text: it proposes the candidate choices for
each kind from the text, re-derives their premises and keeps those that match
exactly, then takes the logsumexp of their probabilities.

Knobs (keyword-only): min_depth=1, max_depth=4, p_valid=0.5, shuffle=True,
invalid_kinds=("reversed", "broken", "unrelated", "converse") (a non-empty subset
unless p_valid == 1), n_categories=200 (at least max_depth + 2), n_individuals=50,
seed=0 (draws the lexicon only).

Latents:

  "depth": d;  "valid": bool;  "kind": "valid" or the invalid kind.
  "chain":          the category nouns C_0 .. C_d as drawn (before any corruption).
  "extra":          E for "broken" / "unrelated", else None.
  "link":           j for "reversed" / "broken", else None.
  "individual":     X.
  "order":          order[p] = canonical index of the premise written p-th (links are
                    0 .. d-1 in chain order, the membership is d).
  "premise_spans":  [start, end) of each premise sentence, in text order (end after its ".").
  "conclusion_span": [start, end) of "So X is a K.".
  "answer_span":    [start, end) of "yes" / "no".

Held-out split (see `base`): the item is the text up to and including " => " (the
premises and the conclusion determine the answer). Chains over 200 categories are far
too many to enumerate, so P(held-out part) is estimated from 20,000 draws
(base.estimated_heldout_mass: standard error 0.002, negligible in the floor).
"""

from __future__ import annotations

import math
import random

from nextlab.worlds.base import NEG_INF, Document, estimated_heldout_mass, logsumexp, prompt_hash

KINDS = ("reversed", "broken", "unrelated", "converse")
MARKER = " => "
ONSETS = "bdfgklmnprtvwz"
VOWELS = "aeiou"
CODAS = ("", "b", "d", "g", "k", "l", "m", "n", "p", "r", "t")  # no s/x/z: the plural is always noun + "s"
MEMBER = -1  # a premise is a (subject, predicate) pair of category ids; the membership is (MEMBER, category)


def make_word(rng: random.Random, n_syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(n_syllables))


def make_lexicon(seed: int, n_categories: int, n_individuals: int) -> tuple[list[str], list[str]]:
    rng = random.Random(f"arguments-lexicon-{seed}")
    seen: set[str] = set()
    categories: list[str] = []
    individuals: list[str] = []
    while len(categories) < n_categories:
        word = make_word(rng, rng.choice((1, 2)))
        if word not in seen:
            seen.add(word)
            categories.append(word)
    while len(individuals) < n_individuals:
        word = make_word(rng, 2)
        if word not in seen:
            seen.add(word)
            individuals.append(word.capitalize())
    return categories, individuals


def premises(kind: str, chain: list[int], extra: int | None, link: int | None) -> tuple[list[tuple[int, int]], int, int]:
    """(canonical premises, the individual's category, the conclusion's category) for these choices."""
    links = list(zip(chain, chain[1:]))
    member, concl = chain[0], chain[-1]
    if kind == "reversed":
        links[link] = (chain[link + 1], chain[link])
    elif kind == "broken":
        links[link] = (extra, chain[link + 1])
    elif kind == "unrelated":
        concl = extra
    elif kind == "converse":
        member, concl = concl, member
    return links + [(MEMBER, member)], member, concl


def safe_log(p: float) -> float:
    return math.log(p) if p > 0 else NEG_INF


def walk(succ: dict[int, int], start: int, steps: int) -> list[int] | None:
    chain = [start]
    for _ in range(steps):
        nxt = succ.get(chain[-1])
        if nxt is None:
            return None
        chain.append(nxt)
    return chain


class Arguments:
    name = "arguments"

    def __init__(
        self,
        *,
        min_depth: int = 1,
        max_depth: int = 4,
        p_valid: float = 0.5,
        shuffle: bool = True,
        invalid_kinds: tuple[str, ...] | list[str] = KINDS,
        n_categories: int = 200,
        n_individuals: int = 50,
        seed: int = 0,
    ) -> None:
        kinds = tuple([invalid_kinds] if isinstance(invalid_kinds, str) else invalid_kinds)
        if not (isinstance(min_depth, int) and isinstance(max_depth, int) and 1 <= min_depth <= max_depth <= 1000):
            raise ValueError(f"need 1 <= min_depth <= max_depth <= 1000, got {min_depth}, {max_depth}")
        if not 0.0 <= p_valid <= 1.0:
            raise ValueError(f"p_valid must be in [0, 1], got {p_valid}")
        if any(k not in KINDS for k in kinds) or len(set(kinds)) != len(kinds) or (not kinds and p_valid < 1):
            raise ValueError(f"invalid_kinds must be distinct kinds from {KINDS} (non-empty unless p_valid == 1), got {invalid_kinds!r}")
        if not (isinstance(n_categories, int) and max_depth + 2 <= n_categories <= 100_000):
            raise ValueError(f"n_categories must be at least max_depth + 2 = {max_depth + 2} (and at most 100000), got {n_categories}")
        if not (isinstance(n_individuals, int) and 1 <= n_individuals <= 100_000):
            raise ValueError(f"n_individuals must be in 1..100000, got {n_individuals}")
        self.min_depth, self.max_depth, self.p_valid, self.shuffle = min_depth, max_depth, p_valid, bool(shuffle)
        self.invalid_kinds, self.n_categories, self.n_individuals, self.seed = kinds, n_categories, n_individuals, seed
        self.categories, self.individuals = make_lexicon(seed, n_categories, n_individuals)
        self._category = {w: i for i, w in enumerate(self.categories)}
        self._plural = {w + "s": i for i, w in enumerate(self.categories)}
        self._individual = {w: i for i, w in enumerate(self.individuals)}
        self._log_p_kind = {"valid": safe_log(p_valid), **{k: safe_log((1 - p_valid) / len(kinds)) for k in kinds}}

    def choice_log_prob(self, kind: str, depth: int, n_drawn: int, has_link: bool) -> float:
        """log-probability of one choice sequence (see the module docstring), given its shape."""
        lp = -math.log(self.max_depth - self.min_depth + 1) + self._log_p_kind[kind] - math.log(self.n_individuals)
        lp -= sum(math.log(self.n_categories - i) for i in range(n_drawn))
        if has_link:
            lp -= math.log(depth)
        if self.shuffle:
            lp -= math.lgamma(depth + 2)  # log (d+1)!
        return lp

    def sample(self, rng: random.Random) -> Document:
        d = rng.randint(self.min_depth, self.max_depth)
        valid = rng.random() < self.p_valid
        kind = "valid" if valid else self.invalid_kinds[rng.randrange(len(self.invalid_kinds))]
        drawn = rng.sample(range(self.n_categories), d + 2 if kind in ("broken", "unrelated") else d + 1)
        chain, extra = drawn[: d + 1], (drawn[d + 1] if len(drawn) > d + 1 else None)
        link = rng.randrange(d) if kind in ("reversed", "broken") else None
        x = rng.randrange(self.n_individuals)
        order = list(range(d + 1))
        if self.shuffle:
            rng.shuffle(order)
        text, spans = self.render(premises(kind, chain, extra, link), x, order, valid)
        cat = self.categories
        latents = {
            "depth": d,
            "valid": valid,
            "kind": kind,
            "chain": [cat[c] for c in chain],
            "extra": None if extra is None else cat[extra],
            "link": link,
            "individual": self.individuals[x],
            "order": order,
            **spans,
        }
        return Document(text, latents)

    def render(self, stated: tuple[list[tuple[int, int]], int, int], x: int, order: list[int], valid: bool) -> tuple[str, dict]:
        """The text for premises (canonical order), individual x, premise order and verdict; and the spans."""
        canonical, _, concl = stated
        cat, name = self.categories, self.individuals[x]
        parts, spans, pos = [], [], 0
        for i in order:
            u, v = canonical[i]
            s = f"{name} is a {cat[v]}." if u == MEMBER else f"All {cat[u]}s are {cat[v]}s."
            spans.append([pos, pos + len(s)])
            parts.append(s)
            pos += len(s) + 1
        conclusion = f"So {name} is a {cat[concl]}."
        parts.append(conclusion)
        body = " ".join(parts)
        answer = "yes" if valid else "no"
        text = body + MARKER + answer
        return text, {
            "premise_spans": spans,
            "conclusion_span": [len(body) - len(conclusion), len(body)],
            "answer_span": [len(text) - len(answer), len(text)],
        }

    def parse(self, text: str) -> tuple[list[tuple[int, int]], int, int, int, bool] | None:
        """(premises in text order, the individual's category, the conclusion's category, individual, valid) or None."""
        if not isinstance(text, str):
            return None
        if text.endswith(MARKER + "yes"):
            valid, body = True, text[: -len(MARKER + "yes")]
        elif text.endswith(MARKER + "no"):
            valid, body = False, text[: -len(MARKER + "no")]
        else:
            return None
        head, sep, conclusion = body.rpartition(" So ")
        if not sep or not head.endswith(".") or not conclusion.endswith("."):
            return None
        who, sep, what = conclusion[:-1].partition(" is a ")
        x, concl = self._individual.get(who), self._category.get(what)
        if not sep or x is None or concl is None:
            return None
        stated, member = [], None
        for sentence in head[:-1].split(". "):
            if sentence.startswith("All "):
                a, sep, b = sentence[4:].partition(" are ")
                u, v = self._plural.get(a), self._plural.get(b)
                if not sep or u is None or v is None:
                    return None
                stated.append((u, v))
            else:
                who, sep, what = sentence.partition(" is a ")
                m = self._category.get(what)
                if not sep or self._individual.get(who) != x or m is None or member is not None:
                    return None
                member = m
                stated.append((MEMBER, m))
        if member is None:
            return None
        return stated, member, concl, x, valid

    def explanations(self, text: str) -> list[tuple[float, dict]]:
        """Every choice sequence that writes `text`, as (log-probability, choices); empty if none."""
        parsed = self.parse(text)
        if parsed is None:
            return []
        stated, member, concl, _, valid = parsed
        d = len(stated) - 1
        if not self.min_depth <= d <= self.max_depth:
            return []
        links = [p for p in stated if p[0] != MEMBER]
        succ = dict(links)
        # Candidate choices per kind, read off the text; each is checked by re-deriving its premises below.
        candidates = []
        if valid:
            candidates.append(("valid", walk(succ, member, d), None, None))
        for kind in () if valid else self.invalid_kinds:
            if kind == "unrelated":
                candidates.append((kind, walk(succ, member, d), concl, None))
            elif kind == "converse":
                candidates.append((kind, walk(succ, concl, d), None, None))
            elif kind == "reversed":
                for t, (u, v) in enumerate(links):
                    chain = walk(dict(links[:t] + [(v, u)] + links[t + 1 :]), member, d)
                    if chain and v in chain:
                        candidates.append((kind, chain, None, chain.index(v)))
            elif kind == "broken":
                head = [member]  # C_0 .. C_j: where the chain stops for want of a link
                while head[-1] in succ and len(head) <= d:
                    head.append(succ[head[-1]])
                for t, (e, v) in enumerate(links):
                    if e not in head:
                        repaired = dict(links[:t] + [(head[-1], v)] + links[t + 1 :])
                        candidates.append((kind, walk(repaired, member, d), e, len(head) - 1))
        out, seen = [], set()
        for kind, chain, extra, link in candidates:
            if chain is None or len(set(chain)) != d + 1 or extra in chain or link is not None and not 0 <= link < d:
                continue
            key = (kind, tuple(chain), extra, link)
            if key in seen:
                continue
            seen.add(key)
            canonical, m, k = premises(kind, chain, extra, link)
            if m != member or k != concl:
                continue
            if self.shuffle:
                if sorted(canonical) != sorted(stated):
                    continue
                index = {p: i for i, p in enumerate(canonical)}
                order = [index[p] for p in stated]
            else:
                if canonical != stated:
                    continue
                order = list(range(d + 1))
            lp = self.choice_log_prob(kind, d, d + 1 + (extra is not None), link is not None)
            out.append((lp, {"kind": kind, "chain": chain, "extra": extra, "link": link, "order": order}))
        return out

    def log_prob(self, text: str) -> float:
        return logsumexp(lp for lp, _ in self.explanations(text))

    def item_hash(self, text: str) -> int | None:
        """The hash of the premises and conclusion, the text up to and including the last " => "."""
        return prompt_hash(text, MARKER)

    def heldout_mass(self) -> float:
        return estimated_heldout_mass(self)
