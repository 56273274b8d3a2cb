"""The arithmetic world: exact support, sampling against log_prob, true equations, carries, bad input."""

import json
import math
import random
import re
from collections import Counter

import pytest
from stats import chi2_critical as chi_square_critical
from stats import chi_square_coarse as chi_square

from nextlab.worlds.arithmetic import Arithmetic


def reference(a: int, op: str, b: int, reverse: bool) -> str:
    c = {"+": a + b, "-": a - b, "x": a * b}[op]
    digits = str(abs(c))[::-1] if reverse else str(abs(c))
    return f"{a} {op} {b} = {'-' * (c < 0)}{digits}"


def is_true_equation(text: str, reverse: bool) -> bool:
    """An independent reading: split on spaces, evaluate with Python ints."""
    parts = text.split(" ")
    if len(parts) != 5 or parts[1] not in ("+", "-", "x") or parts[3] != "=":
        return False
    sa, op, sb, _, sc = parts
    if not all(re.fullmatch(r"0|[1-9][0-9]*", s) for s in (sa, sb)):
        return False
    neg = sc.startswith("-")
    mag = sc[1:] if neg else sc
    if not re.fullmatch(r"[0-9]+", mag):
        return False
    mag = mag[::-1] if reverse else mag
    if mag != str(int(mag)) or (neg and int(mag) == 0):  # canonical: no leading zeros, no -0
        return False
    value = -int(mag) if neg else int(mag)
    return value == {"+": int(sa) + int(sb), "-": int(sa) - int(sb), "x": int(sa) * int(sb)}[op]


def in_world(world: Arithmetic, text: str) -> bool:
    if not is_true_equation(text, world.reverse):
        return False
    sa, op, sb = text.split(" ")[:3]
    return op in world.ops and all(world.min_digits <= len(s) <= world.max_digits for s in (sa, sb))


def expected_carries(op: str, a: int, b: int) -> list[int]:
    """Carries recomputed from whole numbers, not digit by digit (see the module docstring's definition)."""
    if op == "+":
        return [int(a % 10 ** (i + 1) + b % 10 ** (i + 1) >= 10 ** (i + 1)) for i in range(max(len(str(a)), len(str(b))))]
    if op == "-":
        big, small = max(a, b), min(a, b)
        return [int(big % 10 ** (i + 1) < small % 10 ** (i + 1)) for i in range(len(str(big)))]
    da, db = [int(c) for c in str(a)[::-1]], [int(c) for c in str(b)[::-1]]
    # carry out of column i = (partial products of columns 0..i) // 10^(i+1)
    return [
        sum(da[j] * db[k] * 10 ** (j + k) for j in range(len(da)) for k in range(len(db)) if j + k <= i) // 10 ** (i + 1)
        for i in range(len(da) + len(db) - 1)
    ]


def one_digit_support(ops: str, reverse: bool) -> list[str]:
    return [reference(a, op, b, reverse) for op in ops for a in range(10) for b in range(10)]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("ops", ["+-x", "x", "-+"])
def test_one_digit_support_sums_to_one(ops, reverse):
    world = Arithmetic(min_digits=1, max_digits=1, ops=ops, reverse=reverse)
    texts = one_digit_support(ops, reverse)
    assert len(set(texts)) == len(texts) == 100 * len(ops)
    assert abs(sum(math.exp(world.log_prob(t)) for t in texts) - 1) < 1e-9


def test_two_digit_support_sums_to_one():
    world = Arithmetic(min_digits=1, max_digits=2, ops="-")
    texts = [reference(a, "-", b, False) for a in range(100) for b in range(100)]
    assert abs(math.fsum(math.exp(world.log_prob(t)) for t in texts) - 1) < 1e-9
    # 1-digit operands are 9x likelier each than 2-digit ones: half the mass over 10 vs 90 numbers
    assert math.isclose(world.log_prob("3 - 4 = -1"), 2 * math.log(1 / 20))
    assert math.isclose(world.log_prob("30 - 4 = 26"), math.log(1 / 180) + math.log(1 / 20))


def test_sampling_frequencies_match_log_prob():
    world = Arithmetic(min_digits=1, max_digits=2, ops="+x", reverse=True)
    texts = [reference(a, op, b, True) for op in "+x" for a in range(100) for b in range(100)]
    probs = {t: math.exp(world.log_prob(t)) for t in texts}
    assert len(probs) == len(texts)
    n = 20_000
    rng = random.Random(1234)
    observed = Counter(world.sample(rng).text for _ in range(n))
    stat, df = chi_square(observed, probs, n, coarse=lambda t: (t.split()[1], len(t.split()[0]), len(t.split()[2])))
    assert df > 100
    assert stat < chi_square_critical(df), (stat, df)


def test_digit_counts_are_uniform():
    world = Arithmetic(min_digits=2, max_digits=7)
    rng = random.Random(5)
    n = 6000
    counts = Counter(len(str(world.sample(rng).latents["a"])) for _ in range(n))
    stat = sum((counts[d] - n / 6) ** 2 / (n / 6) for d in range(2, 8))
    assert set(counts) == set(range(2, 8)) and stat < chi_square_critical(5)


@pytest.mark.parametrize(
    "knobs",
    [{}, {"reverse": True}, {"min_digits": 1, "max_digits": 6}, {"min_digits": 6, "max_digits": 8, "reverse": True}, {"ops": "-"}],
)
def test_samples_are_true_with_correct_latents(knobs):
    world = Arithmetic(**knobs)
    rng = random.Random(7)
    n_counts = world.max_digits - world.min_digits + 1
    seen_negative = False
    for _ in range(400):
        doc = world.sample(rng)
        text, lat = doc.text, doc.latents
        assert json.loads(json.dumps(lat)) == lat
        assert is_true_equation(text, world.reverse), text
        a, b, op, c = lat["a"], lat["b"], lat["op"], lat["result"]
        assert text == reference(a, op, b, world.reverse) and c == {"+": a + b, "-": a - b, "x": a * b}[op]
        assert op in world.ops and all(world.min_digits <= len(str(v)) <= world.max_digits for v in (a, b))
        assert lat["carries"] == expected_carries(op, a, b), text
        s, e = lat["answer_span"]
        assert text[:s].endswith(" = ") and e == len(text) and text[s:e] == text.split(" ")[-1]
        assert len(lat["digit_offsets"]) == len(str(abs(c)))
        for i, pos in enumerate(lat["digit_offsets"]):
            assert s <= pos < e and text[pos] == str(abs(c) // 10**i % 10)
        seen_negative |= c < 0
        # the text fixes every choice, so log_prob is the log-probability of the recorded draws
        by_choices = -math.log(len(world.ops))
        for v in (a, b):
            d = len(str(v))
            by_choices += -math.log(n_counts) - math.log(10 if d == 1 else 9 * 10 ** (d - 1))
        assert math.isclose(world.log_prob(text), by_choices, rel_tol=1e-12)
        assert world.log_prob(text) > -math.inf
    if "-" in world.ops:
        assert seen_negative


def test_format_examples():
    forward = Arithmetic(ops="x")
    assert forward.log_prob("12 x 7 = 84") > -math.inf and forward.log_prob("12 x 7 = 48") == -math.inf
    assert Arithmetic(ops="x", reverse=True).log_prob("12 x 7 = 48") > -math.inf
    assert Arithmetic(ops="-", reverse=True).log_prob("5 - 48 = -34") > -math.inf
    assert Arithmetic(reverse=True).log_prob("60 + 40 = 001") > -math.inf
    assert expected_carries("+", 999, 1) == [1, 1, 1] and expected_carries("-", 100, 1) == [1, 1, 0]


def mutations(text: str, alphabet: str = "0123456789+-x= a\n") -> set[str]:
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


@pytest.mark.parametrize("reverse", [False, True])
def test_mutations_leave_the_world_exactly_when_they_should(reverse):
    tiny = Arithmetic(min_digits=1, max_digits=1, reverse=reverse)
    support = set(one_digit_support("+-x", reverse))
    for text in ["7 x 8 = 56", "3 - 9 = -6", "9 + 9 = 18", "0 x 0 = 0"]:
        text = reference(int(text[0]), text[2], int(text[4]), reverse)
        for m in mutations(text):
            assert (tiny.log_prob(m) > -math.inf) == (m in support), repr(m)
    world = Arithmetic(min_digits=1, max_digits=3, reverse=reverse)
    rng = random.Random(3)
    for _ in range(20):
        text = world.sample(rng).text
        for m in mutations(text):
            assert (world.log_prob(m) > -math.inf) == in_world(world, m), repr(m)


def test_garbage_and_other_formats_are_impossible():
    world = Arithmetic(max_digits=3)
    backward = Arithmetic(reverse=True, ops="x").log_prob
    bad = [
        "",
        " ",
        "12 x 7 = 84 ",
        " 12 x 7 = 84",
        "12 x 7 = 84\n",
        "12  x 7 = 84",
        "12 * 7 = 84",
        "12 x 7 = 084",
        "012 x 7 = 84",
        "12 x 07 = 84",
        "0 - 0 = -0",
        "١٢ x ٧ = ٨٤",  # Arabic-Indic digits
        "12 x 7 = ８４",
        "1234 + 1 = 1235",  # too many digits for max_digits=3
        "12 x 7 = 48",  # a reversed answer in a forward world
        "12 x 7 =",
        "12 x 7",
        "x",
        "=",
        "All wugs are feps. Zorin is a wug. So Zorin is a fep. => yes",
        "<|endoftext|>",
        "\x00\udcff",
        "9" * 100_000 + " + 1 = 1" + "0" * 100_000,
    ]
    for text in bad:
        assert world.log_prob(text) == -math.inf, repr(text[:40])
    assert backward("12 x 7 = 84") == -math.inf and backward("12 x 7 = 48") > -math.inf
    rng = random.Random(0)
    for _ in range(300):
        junk = "".join(rng.choice("0123456789 +-x=") for _ in range(rng.randint(0, 14)))
        assert world.log_prob(junk) == -math.inf or in_world(world, junk)


def test_same_seed_same_documents():
    world = Arithmetic(max_digits=4, reverse=True)
    first = [world.sample(random.Random(42)).text for _ in range(3)]
    assert len(set(first)) == 1
    a = [world.sample(r).text for r in [random.Random(9)] for _ in range(200)]
    b = [world.sample(r).text for r in [random.Random(9)] for _ in range(200)]
    c = [world.sample(r).text for r in [random.Random(10)] for _ in range(200)]
    assert a == b and a != c


@pytest.mark.parametrize(
    "knobs",
    [
        {"min_digits": 0},
        {"min_digits": 3, "max_digits": 2},
        {"max_digits": 1001},
        {"ops": ""},
        {"ops": "+/"},
        {"ops": "++"},
        {"ops": ["+"]},
    ],
)
def test_bad_knobs(knobs):
    with pytest.raises(ValueError):
        Arithmetic(**knobs)
