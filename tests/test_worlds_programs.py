"""The programs world: exact probabilities, real Python semantics, latents checked against a tracer."""

import contextlib
import io
import math
import random
import re
import sys
from collections import Counter

import pytest
from stats import chi2_critical

from nextlab.worlds.base import NEG_INF, Document
from nextlab.worlds.programs import Programs, _Replayer, _Sampler

TINY = dict(min_statements=1, max_statements=1, n_vars=2, max_int=2, modulus=3, max_depth=0)

# Small enough to enumerate, each exercising a different part of the grammar.
ENUMERABLE = {
    "straight_line": dict(min_statements=1, max_statements=2, n_vars=2, max_int=1, modulus=2, max_depth=0),
    "mixed": dict(min_statements=1, max_statements=2, n_vars=1, max_int=0, modulus=2, max_depth=1, max_body=1, max_loop=1,
                  n_functions=1, p_else=0.5, kind_weights={"arith": 0}),
    "nested_if_else": dict(min_statements=2, max_statements=2, n_vars=1, max_int=0, modulus=2, max_depth=2, max_body=1,
                           n_functions=0, p_else=0.5, kind_weights={"arith": 0, "copy": 0, "for": 0}),
    "loops_and_defs": dict(min_statements=1, max_statements=3, n_vars=1, max_int=0, modulus=2, max_depth=2, max_body=1, max_loop=2,
                           n_functions=1, p_else=0.5, kind_weights={"arith": 0, "copy": 0, "if": 0}),
    "calls": dict(min_statements=2, max_statements=3, n_vars=2, max_int=1, modulus=2, max_depth=1, max_body=1, n_functions=2,
                  kind_weights={"arith": 0, "copy": 0, "if": 0, "for": 0}),
}

EXAMPLE = "x = 3\ndef f(a):\n    x = (a + 1) % 10\n    return (x * 2) % 10\ny = f(x)\nprint(y)\n# prints 8"


def run(text: str) -> str:
    """What Python prints running the program (the final comment line is just a comment)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(text, "<program>", "exec"), {})
    return out.getvalue()


def stated(text: str) -> int:
    return int(re.fullmatch(r"# prints (-?[0-9]+)", text.split("\n")[-1])[1])


def samples(world, n, seed=0):
    rng = random.Random(seed)
    return [world.sample(rng) for _ in range(n)]


# --- exact probabilities ------------------------------------------------------


def test_tiny_support_is_six_programs_summing_to_one():
    world = Programs(**TINY)
    support = world.support()
    assert sorted(support) == sorted(f"{v} = {c}\nprint({v})\n# prints {c}" for v in "xy" for c in range(3))
    assert abs(sum(math.exp(lp) for lp in support.values()) - 1.0) < 1e-9
    for text, lp in support.items():
        assert world.log_prob(text) == pytest.approx(math.log(1 / 6), abs=1e-12)
        assert lp == pytest.approx(math.log(1 / 6), abs=1e-12)


@pytest.mark.parametrize("name", sorted(ENUMERABLE))
def test_enumerated_support_sums_to_one_and_matches_log_prob(name):
    world = Programs(**ENUMERABLE[name])
    sequences = list(world._walk(100_000))
    texts = Counter(text for text, _ in sequences)
    # The grammar is unambiguous: no text comes from two choice sequences.
    assert max(texts.values()) == 1
    assert abs(math.fsum(math.exp(lp) for _, lp in sequences) - 1.0) < 1e-9
    for text, lp in sequences:
        assert world.log_prob(text) == pytest.approx(lp, abs=1e-9)
        assert run(text) == f"{stated(text)}\n"


def test_log_prob_by_hand_for_a_shadowing_program():
    world = Programs(min_statements=3, max_statements=3, n_vars=4, max_int=9, modulus=10, max_depth=1, max_body=2, n_functions=1)
    # Kind weights: const 1, copy .5, arith 3, call 1, if 1, for 1, def .7; only the available kinds compete.
    p = (1 / 2) * (1 / 4) * (1 / 10)  # x = 3: const among {const, for}; target x of 4; constant 3 of 10
    p *= (0.7 / 7.2) * (1 / 4)  # def f(a): def among all but call; one function name; parameter a of 4
    p *= 2 / 3  # the body (0..2 statements) does not stop before its first statement
    p *= (3 / 4.5) * (1 / 4) * (1 / 3) * (1 / 2) * (1 / 10)  # x = (a + 1) % 10: arith; target x; a is all there is; +; a constant; 1
    p *= 1 / 2  # the body stops after one statement
    p *= (3 / 4.5) * (1 / 2) * (1 / 3) * (1 / 2) * (1 / 10)  # return (x * 2) % 10: x of {x, a}; *; a constant; 2
    p *= (1 / 8.2) * (1 / 4) * (1 / 2)  # y = f(x): call among all seven; target y; a variable argument, x the only one
    p *= 1 / 2  # print(y): y of {x, y}; three statements is the only length, so no stop draw
    assert world.log_prob(EXAMPLE) == pytest.approx(math.log(p), abs=1e-12)


def test_sampling_frequencies_match_log_prob_chi_square():
    world = Programs(**ENUMERABLE["mixed"])
    support = world.support()
    n = 20_000
    counts = Counter(d.text for d in samples(world, n, seed=123))
    assert set(counts) <= set(support)
    # Categories by expected count, rarest first; rare ones pooled until each bucket expects >= 5. Ties
    # are broken by the text, never by the observed count (that would bias the pooling upwards).
    by_expected = sorted(support, key=lambda text: (support[text], text))
    buckets, e_acc, o_acc = [], 0.0, 0
    for e, o in ((n * math.exp(support[text]), counts[text]) for text in by_expected):
        e_acc, o_acc = e_acc + e, o_acc + o
        if e_acc >= 5:
            buckets.append((e_acc, o_acc))
            e_acc, o_acc = 0.0, 0
    if e_acc:
        e_last, o_last = buckets.pop()
        buckets.append((e_last + e_acc, o_last + o_acc))
    chi2 = sum((o - e) ** 2 / e for e, o in buckets)
    df = len(buckets) - 1
    critical = chi2_critical(df)  # upper 0.001 point (Wilson-Hilferty)
    assert df > 30
    assert chi2 < critical, (chi2, critical, df)


# --- sampled documents ----------------------------------------------------------


@pytest.mark.parametrize("knobs", [{}, {"max_depth": 4}, {"max_depth": 0}, {"p_else": 1.0, "max_depth": 3, "n_vars": 2}])
def test_samples_score_as_recorded_and_replay_the_same_choices(knobs):
    world = Programs(**knobs)
    rng = random.Random(7)
    for _ in range(300):
        sampler = _Sampler(rng)
        text, latents = world._generate(sampler)
        replay = world._replay(text)
        assert replay is not None, text
        replayer = replay[0]
        assert isinstance(replayer, _Replayer)
        assert replayer.choices == sampler.choices
        assert replayer.logp == pytest.approx(sampler.logp, abs=1e-9)
        assert world.log_prob(text) == pytest.approx(sampler.logp, abs=1e-9)
        assert math.isfinite(sampler.logp)


@pytest.mark.parametrize("knobs", [{}, {"max_depth": 4}, {"max_depth": 3, "p_else": 0.8, "n_vars": 2, "max_loop": 4}])
def test_every_sample_prints_its_stated_value(knobs):
    for doc in samples(Programs(**knobs), 300, seed=3):
        assert isinstance(doc, Document)
        answer = doc.latents["answer"]
        assert run(doc.text) == f"{answer}\n" and stated(doc.text) == answer
        start, end = doc.latents["answer_span"]
        assert doc.text[start:end] == str(answer) and end == len(doc.text)
        assert doc.latents["log_prob"] == pytest.approx(Programs(**knobs).log_prob(doc.text), abs=1e-9)
        assert "<|endoftext|>" not in doc.text and doc.text == doc.text.strip()


def trace(text: str) -> dict[int, dict]:
    """Line index -> the visible variables at the next event of the same frame after the line's last run.

    Module frame: its globals; function frame: its locals; only one-letter int-valued names.
    """
    code = compile(text, "<program>", "exec")
    envs: dict[int, dict] = {}
    pending: dict[int, int] = {}

    def visible(frame):
        names = frame.f_globals if frame.f_code.co_name == "<module>" else frame.f_locals
        return {k: v for k, v in names.items() if len(k) == 1 and type(v) is int}

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != "<program>":
            return None
        if event in ("line", "return"):
            line = pending.pop(id(frame), None)
            if line is not None:
                envs[line] = visible(frame)
            if event == "line":
                pending[id(frame)] = frame.f_lineno - 1
        return tracer

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(code, {})
    finally:
        sys.settrace(old)
    return envs


def check_lines_against_trace(doc):
    traced = trace(doc.text)
    lines = doc.latents["lines"]
    assert len(lines) == doc.text.count("\n") + 1
    start, func = 0, None
    for i, (line, raw) in enumerate(zip(lines, doc.text.split("\n"))):
        assert line["span"] == [start, start + len(raw)]
        start += len(raw) + 1
        assert raw == "    " * line["depth"] + raw.lstrip(" ")
        func = func if line["depth"] > 0 else None
        assert line["scope"] == func
        if line["kind"] == "def":
            func = raw[4]
        if line["kind"] == "answer":
            assert line["env"] is None
        elif line["kind"] == "else":  # no bytecode, no trace event: it ran iff its first body line did
            assert (line["env"] is not None) == (i + 1 in traced)
        else:
            assert line["env"] == traced.get(i), (i, doc.text)


@pytest.mark.parametrize("knobs", [{}, {"max_depth": 4, "p_else": 0.5}])
def test_line_latents_match_a_python_tracer(knobs):
    for doc in samples(Programs(**knobs), 150, seed=11):
        check_lines_against_trace(doc)


def test_shadowing_example_latents():
    doc = Programs().parse(EXAMPLE)
    assert doc is not None and run(EXAMPLE) == "8\n"
    envs = [line["env"] for line in doc.latents["lines"]]
    assert envs == [{"x": 3}, {"x": 3}, {"a": 3, "x": 4}, {"a": 3, "x": 4}, {"x": 3, "y": 8}, {"x": 3, "y": 8}, None]
    assert [line["scope"] for line in doc.latents["lines"]] == [None, None, "f", "f", None, None, None]
    assert [line["depth"] for line in doc.latents["lines"]] == [0, 0, 1, 1, 0, 0, 0]
    assert doc.latents["answer"] == 8 and EXAMPLE[slice(*doc.latents["answer_span"])] == "8"
    check_lines_against_trace(doc)


def test_branches_not_taken_and_functions_not_called_have_no_env():
    text = "x = 1\nif x > 5:\n    x = 2\nelse:\n    y = 3\ndef g(z):\n    return z\nprint(x)\n# prints 1"
    doc = Programs().parse(text)
    assert doc is not None
    envs = [line["env"] for line in doc.latents["lines"]]
    assert envs == [{"x": 1}, {"x": 1}, None, {"x": 1}, {"x": 1, "y": 3}, {"x": 1, "y": 3}, None, {"x": 1, "y": 3}, None]
    check_lines_against_trace(doc)


def test_depth_is_a_knob_for_out_of_distribution_splits():
    deep, shallow = Programs(max_depth=4), Programs(max_depth=2)
    depths = []
    for doc in samples(deep, 1500, seed=5):
        d = max(line["depth"] for line in doc.latents["lines"])
        depths.append(d)
        # Shallower programs stay in the shallow world's support; deeper ones leave it.
        assert (shallow.log_prob(doc.text) > NEG_INF) == (d <= 2)
    assert max(depths) == 4 and min(depths) == 0
    for doc in samples(shallow, 500, seed=5):
        assert max(line["depth"] for line in doc.latents["lines"]) <= 2
    flat = Programs(max_depth=0)
    assert all(line["depth"] == 0 for doc in samples(flat, 200) for line in doc.latents["lines"])


def test_knobs_shape_the_programs():
    world = Programs(min_statements=3, max_statements=3, n_vars=2, max_int=4, modulus=5, kind_weights={"if": 0, "def": 0})
    for doc in samples(world, 300):
        top = [line for line in doc.latents["lines"] if line["depth"] == 0 and line["kind"] not in ("print", "answer")]
        assert len(top) == 3
        assert not re.search(r"\bif\b|\bdef\b", doc.text)
        assert set(re.findall(r"\b[a-z]\b", doc.text)) <= set("xyijk")
        assert all(int(c) <= 4 for c in re.findall(r"[0-9]+", doc.text.replace("% 5", "")))
        assert 0 <= doc.latents["answer"] <= 4


def test_same_seed_same_documents():
    world = Programs(max_depth=3)
    a, b = samples(world, 50, seed=9), samples(world, 50, seed=9)
    assert [d.text for d in a] == [d.text for d in b] and [d.latents for d in a] == [d.latents for d in b]
    assert [d.text for d in a] != [d.text for d in samples(world, 50, seed=10)]


# --- text outside the world -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "garbage ∑ é 🙂",
        "12 + 7 = 19",
        "print(x)\n# prints 3",  # no statement before the print, and x unbound
        "x = 1\nprint(x)",  # no stated value
        "x = 1\nprint(x)\n# prints 1\n",  # trailing newline
        " x = 1\nprint(x)\n# prints 1",  # leading space
        "x = 1\r\nprint(x)\r\n# prints 1",
        "x = 1\nprint(x)\n# prints 01",
        "x = 1\nprint(x)\n# prints +1",
        "x = 1\nprint(x)\n#prints 1",
        "x = ١\nprint(x)\n# prints 1",  # a non-ASCII digit
        "x = 10\nprint(x)\n# prints 10",  # constant above max_int
        "x = 1\ny = 2\nprint(z)\n# prints 1",  # printing an unbound name
        "x = y\ny = 1\nprint(x)\n# prints 1",  # reading before assignment
        "x = 1\nif x > 0:\n    y = 2\nprint(y)\n# prints 2",  # y is not definitely assigned
        "x = 1\ndef f(a):\n    return x\ny = f(1)\nprint(y)\n# prints 1",  # a function body reading a global
        "x = 1\nfor j in range(2):\n    x = j\nprint(x)\n# prints 1",  # the outer loop counter is i
        "x = 1\nfor i in range(0):\n    x = 2\nprint(x)\n# prints 1",  # loop counts start at 1
        "x = 1\nx = x + 1\nprint(x)\n# prints 2",  # arithmetic is always reduced mod the modulus
        "x = 1\nx = (x + 1) % 9\nprint(x)\n# prints 2",
        "x = 1\nx = (x / 1) % 10\nprint(x)\n# prints 1",
        "x = 1\ny = x\nprint(x)\nprint(y)\n# prints 1",
        "x = 1\nx = 1\nx = 1\nx = 1\nx = 1\nx = 1\nx = 1\nprint(x)\n# prints 1",  # more than max_statements
        "x = 1\nif x > 0:\n\ty = 2\nelse:\n\ty = 2\nprint(y)\n# prints 2",  # tab indentation
        "x = 99999999999999999999999999\nprint(x)\n# prints 99999999999999999999999999",
        "x = 1\n" * 5000 + "print(x)\n# prints 1",
        "if " * 10_000,
    ],
)
def test_text_outside_the_world_is_minus_infinity(text):
    assert Programs().log_prob(text) == NEG_INF
    assert Programs().parse(text) is None


def test_control_valid_variants_of_the_rejected_texts_are_accepted():
    world = Programs()
    for text in [
        "x = 1\ny = x\nprint(y)\n# prints 1",
        "x = 1\nif x > 0:\n    y = 2\nelse:\n    y = 2\nprint(y)\n# prints 2",
        "x = 1\nfor i in range(2):\n    x = i\nprint(x)\n# prints 1",
        "x = 1\nx = (x + 1) % 10\nprint(x)\n# prints 2",
        EXAMPLE,
    ]:
        assert world.log_prob(text) > NEG_INF, text


def test_non_string_input_is_minus_infinity():
    assert Programs().log_prob(None) == NEG_INF  # type: ignore[arg-type]
    assert Programs().log_prob(b"x = 1") == NEG_INF  # type: ignore[arg-type]


def test_corrupted_documents_are_minus_infinity():
    world = Programs(max_depth=3)
    for doc in samples(world, 200, seed=21):
        text, answer = doc.text, doc.latents["answer"]
        head = text[: text.rindex("\n") + 1]
        for wrong in (answer + 1, answer - 1, answer + 10):
            assert world.log_prob(head + f"# prints {wrong}") == NEG_INF
        assert world.log_prob(head + f"# prints {answer}.0") == NEG_INF
        assert world.log_prob(text + "0") == NEG_INF
        assert world.log_prob(text + "\n") == NEG_INF
        assert world.log_prob(text[:-1]) == NEG_INF
        assert world.log_prob(text[1:]) == NEG_INF
        lines = text.split("\n")
        for i, line in enumerate(lines[:-1]):
            # Indentation off by two spaces, or the print line indented, is never valid.
            moved = lines[:i] + ["  " + line] + lines[i + 1 :]
            assert world.log_prob("\n".join(moved)) == NEG_INF
            # A block header followed by a line at its own depth (an empty body) is never valid.
            if line.endswith(":"):
                nxt = lines[i + 1]
                dedented = lines[: i + 1] + [nxt[4:]] + lines[i + 2 :]
                assert world.log_prob("\n".join(dedented)) == NEG_INF


def test_changed_operators_and_characters_are_judged_by_real_python():
    """A one-character edit is in the world only if the grammar allows it and Python still prints the stated value.

    Changing an operator or a digit can leave a valid program printing the same
    value (x * 0 vs x - 0 ...), so the check is against real execution.
    """
    world = Programs(max_depth=3)
    rng = random.Random(99)
    accepted = rejected = 0
    for doc in samples(world, 200, seed=31):
        text = doc.text
        for m in re.finditer(r" ([-+*]) ", text):
            for op in "+-*/":
                if op == m[1]:
                    continue
                edited = text[: m.start(1)] + op + text[m.end(1) :]
                lp = world.log_prob(edited)
                if op == "/" or run(edited) != f"{doc.latents['answer']}\n":
                    assert lp == NEG_INF, edited
                else:
                    assert lp > NEG_INF, edited
        for _ in range(20):
            i = rng.randrange(len(text))
            edited = text[:i] + rng.choice("xyzaf0123456789 +-*<>=():\n#i") + text[i + 1 :]
            if edited == text:
                continue
            lp = world.log_prob(edited)
            if lp > NEG_INF:
                accepted += 1
                assert run(edited) == f"{stated(edited)}\n", edited
            else:
                rejected += 1
    assert rejected > 10 * accepted


def test_bad_knobs_are_refused():
    for knobs in [
        {"min_statements": 0},
        {"min_statements": 4, "max_statements": 3},
        {"max_depth": -1},
        {"max_body": 0},
        {"n_vars": 0},
        {"n_vars": 17},
        {"n_functions": 4},
        {"modulus": 1},
        {"max_loop": 0},
        {"max_int": -1},
        {"p_else": 1.5},
        {"max_int": 10**6},
        {"kind_weights": {"while": 1.0}},
        {"kind_weights": {"const": 0}},
        {"kind_weights": {"if": -1}},
        {"kind_weights": {"if": float("nan")}},
    ]:
        with pytest.raises(ValueError):
            Programs(**knobs)
