"""The hmm world: exact probabilities, beliefs and predictive distributions checked against brute force and samples."""

import itertools
import json
import math
import random
from collections import Counter

import pytest
from stats import chi2_critical, chi_square

from nextlab.worlds.base import NEG_INF
from nextlab.worlds.hmm import HMM, stationary_distribution

SMALL = {
    "mess3": dict(process="mess3"),
    "random": dict(process="random", n_states=4, n_symbols=3, seed=3),
    "even": dict(process="even"),
    "golden_mean": dict(process="golden_mean"),
    "rrxor": dict(process="rrxor"),
}


def words(world, n):
    return ["".join(t) for t in itertools.product(world.alphabet, repeat=n)]


def brute_posterior(world, text):
    """P(state after the last symbol | text) by enumerating every hidden path S_0 .. S_n."""
    n, sym = world.n_states, [world.alphabet.index(c) for c in text]
    post = [0.0] * n
    for path in itertools.product(range(n), repeat=len(text) + 1):
        p = world.initial[path[0]]
        for t, s in enumerate(sym):
            p *= world.matrices[s][path[t]][path[t + 1]]
        post[path[-1]] += p
    z = sum(post)
    return [v / z for v in post] if z > 0 else None


def block_entropy(world, n):
    total = 0.0
    for w in words(world, n):
        lp = world.prefix_log_prob(w)
        if lp > NEG_INF:
            total -= math.exp(lp) * lp
    return total


def log_space_forward(world, text):
    """An independent forward pass entirely in log space (no scaling tricks)."""
    n = world.n_states
    la = [math.log(p) if p > 0 else NEG_INF for p in world.initial]
    logT = [[[math.log(v) if v > 0 else NEG_INF for v in row] for row in m] for m in world.matrices]
    for c in text:
        m = logT[world.alphabet.index(c)]
        new = []
        for j in range(n):
            terms = [la[i] + m[i][j] for i in range(n) if la[i] > NEG_INF and m[i][j] > NEG_INF]
            mx = max(terms) if terms else NEG_INF
            new.append(mx + math.log(sum(math.exp(t - mx) for t in terms)) if terms else NEG_INF)
        la = new
    mx = max(la)
    return mx + math.log(sum(math.exp(v - mx) for v in la if v > NEG_INF))


# ----------------------------------------------------------------------------- the process definitions

def test_mess3_matrices_are_the_documented_ones():
    w = HMM()
    x, a = 0.05, 0.85
    b, y = (1 - a) / 2, 1 - 2 * x
    T = w.matrices

    def rows_approx(expected):
        return [pytest.approx(row, abs=1e-15) for row in expected]

    assert (w.n_states, w.n_symbols, w.alphabet) == (3, 3, "abc")
    assert T[0] == rows_approx([[a * y, b * x, b * x], [a * x, b * y, b * x], [a * x, b * x, b * y]])
    assert T[1] == rows_approx([[b * y, a * x, b * x], [b * x, a * y, b * x], [b * x, a * x, b * y]])
    assert T[2] == rows_approx([[b * y, b * x, a * x], [b * x, b * y, a * x], [b * x, b * x, a * y]])
    assert w.initial == pytest.approx([1 / 3] * 3, abs=1e-12)
    other = HMM(x=0.1, alpha=0.6)
    assert other.matrices[2][1][2] == pytest.approx(0.6 * 0.1)


@pytest.mark.parametrize("name", list(SMALL))
def test_rows_sum_to_one_and_stationary_is_stationary(name):
    w = HMM(**SMALL[name])
    n = w.n_states
    P = [[sum(m[i][j] for m in w.matrices) for j in range(n)] for i in range(n)]
    assert all(abs(sum(row) - 1) < 1e-12 for row in P)
    pi = w.initial
    assert abs(sum(pi) - 1) < 1e-12 and min(pi) >= 0
    assert [sum(pi[i] * P[i][j] for i in range(n)) for j in range(n)] == pytest.approx(pi, abs=1e-12)
    # the symbol process is then shift invariant: P(w) = sum_s P(s + w) for every word w
    for k in range(1, 4):
        for word in words(w, k):
            shifted = sum(math.exp(w.prefix_log_prob(s + word)) for s in w.alphabet)
            assert shifted == pytest.approx(math.exp(w.prefix_log_prob(word)), abs=1e-12)


def test_known_stationary_distributions():
    assert HMM(process="even").initial == pytest.approx([2 / 3, 1 / 3])
    assert HMM(process="golden_mean").initial == pytest.approx([2 / 3, 1 / 3])
    assert HMM(process="rrxor").initial == pytest.approx([1 / 3, 1 / 6, 1 / 6, 1 / 6, 1 / 6])  # periodic: power iteration would fail
    with pytest.raises(ValueError):
        stationary_distribution([[[1.0, 0.0], [0.0, 1.0]]])  # two closed classes: not unique


def test_nonstationary_initial_is_respected():
    w = HMM(initial=[1, 0, 0], length=3)
    assert w.initial == [1.0, 0.0, 0.0]
    assert math.fsum(math.exp(w.log_prob(t)) for t in words(w, 3)) == pytest.approx(1, abs=1e-12)
    # from state A, the first symbol is 'a' with probability alpha*y + 2*beta*x, not 1/3
    assert math.exp(w.prefix_log_prob("a")) == pytest.approx(0.85 * 0.9 + 2 * 0.075 * 0.05)
    docs = [w.sample(random.Random(i)) for i in range(50)]
    assert all(d.latents["initial_state"] == 0 for d in docs)


def test_random_hmm_is_fixed_by_seed():
    a, b, c = HMM(process="random", seed=5), HMM(process="random", seed=5), HMM(process="random", seed=6)
    assert a.matrices == b.matrices and a.matrices != c.matrices
    w = HMM(process="random", n_states=7, n_symbols=26, concentration=0.3)
    assert (w.n_states, w.n_symbols, w.alphabet) == (7, 26, "abcdefghijklmnopqrstuvwxyz")
    assert all(v > 0 for m in w.matrices for row in m for v in row)


@pytest.mark.parametrize("kw", [dict(process="nope"), dict(length=0), dict(x=0.5), dict(alpha=1.0),
                                dict(process="random", n_symbols=27), dict(process="random", concentration=0),
                                dict(initial=[0.5, 0.5]), dict(initial=[-1, 1, 1])])
def test_bad_knobs_raise(kw):
    with pytest.raises(ValueError):
        HMM(**kw)


# ----------------------------------------------------------------------------- probabilities

@pytest.mark.parametrize("name", list(SMALL))
def test_all_documents_sum_to_one(name):
    w = HMM(**SMALL[name], length=4)
    assert abs(math.fsum(math.exp(w.log_prob(t)) for t in words(w, 4)) - 1) < 1e-9
    for k in range(0, 6):  # prefixes of every length form a distribution too
        assert abs(math.fsum(math.exp(w.prefix_log_prob(t)) for t in words(w, k)) - 1) < 1e-9


def test_zero_probability_words_exist_where_they_should():
    assert HMM(process="even", length=3).log_prob("aba") == NEG_INF  # odd run of b between a's
    assert HMM(process="golden_mean", length=3).log_prob("baa") == NEG_INF  # two a's in a row
    assert HMM(process="rrxor", length=6).log_prob("aabaab") == NEG_INF  # 0 xor 0 is not 1, whatever the phase
    assert HMM(process="rrxor", length=6).log_prob("aaaaaa") > NEG_INF
    w = HMM(length=4)
    assert all(w.log_prob(t) > NEG_INF for t in words(w, 4))  # mess3 forbids nothing


@pytest.mark.parametrize("name,length,n", [("mess3", 4, 20000), ("random", 3, 10000), ("even", 5, 10000), ("rrxor", 4, 8000)])
def test_sampling_matches_log_prob(name, length, n):
    w = HMM(**SMALL[name], length=length)
    rng = random.Random(1234)
    counts = Counter(w.sample(rng).text for _ in range(n))
    probs = {t: math.exp(w.log_prob(t)) for t in words(w, length)}
    stat, dof = chi_square(counts, probs, n)
    assert stat < chi2_critical(dof), (stat, dof)


def test_chi_square_can_fail():
    w, wrong = HMM(length=4), HMM(length=4, alpha=0.8)
    rng = random.Random(1234)
    counts = Counter(w.sample(rng).text for _ in range(20000))
    stat, dof = chi_square(counts, {t: math.exp(wrong.log_prob(t)) for t in words(w, 4)}, 20000)
    assert stat > chi2_critical(dof)


@pytest.mark.parametrize("name", list(SMALL))
def test_samples_are_consistent_with_their_latents(name):
    w = HMM(**SMALL[name], length=40)
    rng = random.Random(7)
    for _ in range(30):
        d = w.sample(rng)
        lat = d.latents
        json.dumps(lat)
        assert len(d.text) == 40 and set(d.text) <= set(w.alphabet)
        lp = w.log_prob(d.text)
        assert lp > NEG_INF
        # the recorded hidden path is possible, and one path can't carry more than the whole text
        path = [lat["initial_state"]] + lat["states"]
        path_lp = math.log(w.initial[path[0]])
        for t, c in enumerate(d.text):
            p = w.matrices[w.alphabet.index(c)][path[t]][path[t + 1]]
            assert p > 0
            path_lp += math.log(p)
        assert path_lp <= lp + 1e-12
        # chain rule through the exact predictive distribution: an independent route to the same number
        chain = sum(math.log(w.next_symbol_probs(d.text[:t])[w.alphabet.index(d.text[t])]) for t in range(len(d.text)))
        assert chain == pytest.approx(lp, abs=1e-9)
        assert lat["beliefs"] == w.beliefs(d.text)
        assert lat["process"] == name


def test_long_documents_do_not_underflow():
    w = HMM(process="random", n_states=6, n_symbols=26, length=10_000, seed=1)
    d = w.sample(random.Random(0))
    lp = w.log_prob(d.text)
    assert -10_000 * math.log(26) < lp < -1000
    assert lp == pytest.approx(log_space_forward(w, d.text), rel=1e-10)
    m = HMM(length=10_000)
    text = m.sample(random.Random(0)).text
    assert m.log_prob(text) == pytest.approx(log_space_forward(m, text), rel=1e-10)


def test_out_of_world_texts_are_impossible():
    w = HMM(length=8)
    doc = w.sample(random.Random(0)).text
    assert w.log_prob(doc) > NEG_INF
    bad = ["", "garbage!", doc + "a", doc[:-1], "d" + doc[1:], doc[:3] + "A" + doc[4:], " " + doc[1:], doc[:-1] + "\n",
           "ab\u00e9cabca", "2+2=4 ok", "<|endoftext|>", doc + "<|endoftext|>", "a" * 9, "\x00" * 8]
    for text in bad:
        assert w.log_prob(text) == NEG_INF, text
        if len(text) != 8:
            assert w.log_prob(text) == NEG_INF
    assert w.log_prob(None) == NEG_INF  # not even a string
    assert w.prefix_log_prob("abz") == NEG_INF and w.prefix_log_prob("") == 0.0
    even = HMM(process="even", length=8)
    assert even.log_prob("aabaaaaa") == NEG_INF and even.log_prob("aabbaaaa") > NEG_INF
    assert even.log_prob("aacaaaaa") == NEG_INF  # 'c' is not in the even process's alphabet


# ----------------------------------------------------------------------------- beliefs and prediction

@pytest.mark.parametrize("name", ["mess3", "random", "even", "rrxor"])
def test_beliefs_match_brute_force_posterior(name):
    w = HMM(**SMALL[name])
    checked = 0
    for k in range(1, 5 if w.n_states <= 4 else 4):
        for text in words(w, k):
            truth = brute_posterior(w, text)
            if truth is None:
                with pytest.raises(ValueError):
                    w.beliefs(text)
                continue
            got = w.beliefs(text)
            assert len(got) == k
            assert got[-1] == pytest.approx(truth, abs=1e-12)
            assert got[:-1] == w.beliefs(text[:-1])  # belief[t] depends only on text[:t+1]
            checked += 1
    assert checked > 10


def test_mess3_beliefs_track_the_symbols():
    w = HMM()
    b = w.beliefs("ccccccccc")[-1]  # a run of c's: almost surely in state C
    assert b[2] > 0.9 and b[2] == max(b)
    assert w.beliefs("") == []
    with pytest.raises(ValueError):
        w.beliefs("abd")


@pytest.mark.parametrize("name", ["mess3", "random", "even", "golden_mean"])
def test_next_symbol_probs_match_prefix_probabilities(name):
    w = HMM(**SMALL[name])
    for k in range(0, 4):
        for prefix in words(w, k):
            base = w.prefix_log_prob(prefix)
            if base == NEG_INF:
                with pytest.raises(ValueError):
                    w.next_symbol_probs(prefix)
                continue
            probs = w.next_symbol_probs(prefix)
            assert len(probs) == w.n_symbols and abs(sum(probs) - 1) < 1e-12
            for s, p in zip(w.alphabet, probs):
                assert p == pytest.approx(math.exp(w.prefix_log_prob(prefix + s) - base), abs=1e-12)
    assert w.next_symbol_probs("") == pytest.approx([math.exp(w.prefix_log_prob(s)) for s in w.alphabet])


# ----------------------------------------------------------------------------- entropy

def test_mean_log_prob_is_the_block_entropy():
    """E[-log P(doc)] over length-6 documents is exactly H(6); the sample mean must sit within a few standard errors."""
    w = HMM(length=6)
    rng = random.Random(99)
    v = [-w.log_prob(w.sample(rng).text) for _ in range(4000)]
    mean = sum(v) / len(v)
    se = math.sqrt(sum((a - mean) ** 2 for a in v) / (len(v) - 1) / len(v))
    assert abs(mean - block_entropy(w, 6)) < 4 * se


@pytest.mark.parametrize("name", ["mess3", "random", "even"])
def test_entropy_rate_is_sandwiched(name):
    """h lies between H(X_n | X_<n, S_0) and H(X_n | X_<n) (Cover & Thomas 4.5); long documents approach h per symbol."""
    kw, n = SMALL[name], 5
    w = HMM(**kw)
    upper = block_entropy(w, n) - block_entropy(w, n - 1)
    lower = 0.0
    for i in range(w.n_states):
        if w.initial[i] > 0:
            wi = HMM(**kw, initial=[float(j == i) for j in range(w.n_states)])
            lower += w.initial[i] * (block_entropy(wi, n) - block_entropy(wi, n - 1))
    assert lower <= upper + 1e-12
    if name == "even":
        assert lower == pytest.approx(2 / 3 * math.log(2), abs=1e-12)  # the known entropy rate: 2/3 bit per symbol
    long = HMM(**kw, length=2000)
    rng = random.Random(5)
    v = [-long.log_prob(long.sample(rng).text) / 2000 for _ in range(15)]
    mean = sum(v) / len(v)
    se = math.sqrt(sum((a - mean) ** 2 for a in v) / (len(v) - 1) / len(v))
    # H(L)/L >= h >= lower, and H(L)/L <= H(n)/n; the excess entropy / 2000 is negligible against 4 se
    assert lower - 4 * se < mean < block_entropy(w, n) / n + 4 * se
    assert abs(mean - (lower + upper) / 2) < (upper - lower) / 2 + 4 * se


# ----------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("name", list(SMALL))
def test_same_seed_same_documents(name):
    w = HMM(**SMALL[name])
    a = [w.sample(random.Random(42)) for _ in range(3)]
    b = [HMM(**SMALL[name]).sample(random.Random(42)) for _ in range(3)]
    assert [d.text for d in a] == [d.text for d in b] and [d.latents for d in a] == [d.latents for d in b]
    rng = random.Random(1)
    assert len({w.sample(rng).text for _ in range(20)}) > 1
