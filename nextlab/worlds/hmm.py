"""Hidden Markov processes: Mess3, a few classic named processes, or a random HMM drawn from the world seed.

Formulation (edge-emitting, as in computational mechanics): for every symbol s,

    T[s][i][j] = P(next state j, emitted symbol s | current state i)

so sum_{s,j} T[s][i][j] = 1 for every i. A document of `length` symbols is made
by drawing a hidden state S_0 from `initial`, then for t = 0 .. length-1 drawing
the edge (symbol x_t, state S_{t+1}) with probability T[x_t][S_t][S_{t+1}]. Emissions only,
no separators: each symbol is ONE character of the alphabet "abc..." (symbol k is
chr(ord("a") + k)), so byte-level tokens line up one-to-one with emissions.
Every document has exactly `length` characters, so the length is not random and
carries no probability.

    log P(x_0 .. x_{n-1}) = log( initial . T[x_0] . T[x_1] ... T[x_{n-1}] . 1 )

is computed by the forward algorithm with the forward vector renormalised after
every symbol (the normalisers are the next-symbol probabilities), so documents
of length 10_000 and more neither underflow nor lose precision.

Processes (knob `process`):

  "mess3"  Marzen & Crutchfield's Mess3, used by Shai et al. (2024) "Transformers
           represent belief state geometry in their residual stream" with x=0.05,
           alpha=0.85. Three states A,B,C = 0,1,2 and three symbols a,b,c. With
           beta = (1 - alpha) / 2 and y = 1 - 2x:

               T[a] = [[alpha*y, beta*x,  beta*x ],      T[b] = [[beta*y, alpha*x, beta*x],
                       [alpha*x, beta*y,  beta*x ],              [beta*x, alpha*y, beta*x],
                       [alpha*x, beta*x,  beta*y ]]              [beta*x, alpha*x, beta*y]]

               T[c] = [[beta*y,  beta*x,  alpha*x],
                       [beta*x,  beta*y,  alpha*x],
                       [beta*x,  beta*x,  alpha*y]]

           i.e. stay with probability y or jump to each other state with probability x,
           then emit the symbol named after the NEW state with probability alpha (each
           other symbol with beta). Every word has positive probability; the
           stationary distribution is uniform.
  "even"   The even process: state A emits a and stays (1/2) or emits b and goes
           to B (1/2); B emits b and returns to A (1). Runs of b between a's have
           even length, so e.g. "aba" is impossible. Stationary (2/3, 1/3).
  "golden_mean"  No two a's in a row: A emits b and stays (1/2) or emits a and goes
           to B (1/2); B emits b and returns to A (1). Stationary (2/3, 1/3).
  "rrxor"  Random-random-XOR (also in Shai et al.): two fair bits then their XOR,
           repeated (0 = a, 1 = b). States S, 0, 1, T, F = 0..4: S -x-> x (1/2 each),
           0 -a-> T, 0 -b-> F, 1 -a-> F, 1 -b-> T (1/2 each), T -a-> S, F -b-> S.
           Stationary (1/3, 1/6, 1/6, 1/6, 1/6); the process is periodic in phase.
  "random" `n_states` states and `n_symbols` symbols; each state's row of edges
           (symbol, next state) is a Dirichlet(`concentration`) draw over all
           n_symbols * n_states edges, from the world `seed`. All edges positive.

Knobs (keyword-only): process="mess3", length=64 (symbols per document), x=0.05 and
alpha=0.85 (mess3 only), n_states=3, n_symbols=3 and concentration=1.0 (random only),
initial=None (the stationary distribution, so the process is stationary; or an
explicit list of n_states probabilities), seed=0 (draws the random HMM only).

Latents (L = length; position t is character text[t]):

  "process":       the process name.
  "initial_state": S_0, the hidden state before the first symbol.
  "states":        L ints; states[t] = S_{t+1}, the hidden state right AFTER emitting text[t].
  "beliefs":       L lists of n_states floats; beliefs[t][j] = P(S_{t+1} = j | text[:t+1]),
                   the Bayesian belief over the state after emitting text[t] given the
                   symbols so far (under the world's initial distribution). The next-symbol
                   prediction at t+1 depends on the text only through beliefs[t]:
                   P(x_{t+1} = s | text[:t+1]) = sum_i beliefs[t][i] * sum_j T[s][i][j].
                   The belief before any symbol is the world's `initial`.

Example (mess3, length 64, first document of random.Random(0)):

    ccccccccccccccccccccccccacccccccccaaabaaabbbbbbbcccacccacccccccc

Besides `sample` and `log_prob`: `beliefs(text)` (as in the latents, for any text
over the alphabet), `next_symbol_probs(prefix)` (the exact predictive distribution,
a list aligned with `alphabet`), and `prefix_log_prob(text)` (log P that a document
starts with `text`, any length).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from operator import mul

from nextlab.worlds.base import NEG_INF, Document

PROCESSES = ("mess3", "even", "golden_mean", "rrxor", "random")
ALPHABET = "abcdefghijklmnopqrstuvwxyz"


# ----------------------------------------------------------------------------- processes
# Each returns T as a list over symbols of n_states x n_states row-stochastic-in-total matrices.

def mess3_matrices(x: float, alpha: float) -> list[list[list[float]]]:
    beta, y = (1 - alpha) / 2, 1 - 2 * x
    # the symbol is named after the new state (alpha) and the state mostly stays put (y)
    return [[[(alpha if j == s else beta) * (y if j == i else x) for j in range(3)] for i in range(3)] for s in range(3)]


def even_matrices() -> list[list[list[float]]]:
    return [[[0.5, 0.0], [0.0, 0.0]],   # a: A -> A
            [[0.0, 0.5], [1.0, 0.0]]]   # b: A -> B, B -> A


def golden_mean_matrices() -> list[list[list[float]]]:
    return [[[0.0, 0.5], [0.0, 0.0]],   # a: A -> B
            [[0.5, 0.0], [1.0, 0.0]]]   # b: A -> A, B -> A


def rrxor_matrices() -> list[list[list[float]]]:
    start, zero, one, same, differ = range(5)  # S, 0, 1, T, F: the second bit decides whether the XOR is 0 or 1
    edges = {0: [(start, zero, 0.5), (zero, same, 0.5), (one, differ, 0.5), (same, start, 1.0)],
             1: [(start, one, 0.5), (zero, differ, 0.5), (one, same, 0.5), (differ, start, 1.0)]}
    mats = [[[0.0] * 5 for _ in range(5)] for _ in range(2)]
    for s, es in edges.items():
        for i, j, p in es:
            mats[s][i][j] = p
    return mats


def random_matrices(rng: random.Random, n_states: int, n_symbols: int, concentration: float) -> list[list[list[float]]]:
    mats = [[[0.0] * n_states for _ in range(n_states)] for _ in range(n_symbols)]
    for i in range(n_states):
        g = [0.0]
        while sum(g) == 0.0:  # a tiny concentration can underflow every gamma draw; redraw
            g = [rng.gammavariate(concentration, 1.0) for _ in range(n_symbols * n_states)]
        total = sum(g)
        for s in range(n_symbols):
            for j in range(n_states):
                mats[s][i][j] = g[s * n_states + j] / total
    return mats


def stationary_distribution(mats: list[list[list[float]]]) -> list[float]:
    """Solve pi P = pi, sum(pi) = 1 for the state chain P = sum_s T[s] (Gaussian elimination).

    A linear solve rather than power iteration, because periodic chains (rrxor) never converge under iteration.
    """
    n = len(mats[0])
    P = [[sum(m[i][j] for m in mats) for j in range(n)] for i in range(n)]
    # rows: (P^T - I) pi = 0, with the last equation replaced by sum(pi) = 1
    A = [[P[j][i] - (i == j) for j in range(n)] + [0.0] for i in range(n)]
    A[-1] = [1.0] * n + [1.0]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(A[r][c]))
        if abs(A[p][c]) < 1e-12:
            raise ValueError("the state chain has no unique stationary distribution; pass `initial`")
        A[c], A[p] = A[p], A[c]
        for r in range(n):
            if r != c and A[r][c] != 0.0:
                f = A[r][c] / A[c][c]
                A[r] = [a - f * b for a, b in zip(A[r], A[c])]
    pi = [max(A[i][n] / A[i][i], 0.0) for i in range(n)]
    total = sum(pi)
    return [v / total for v in pi]


# ----------------------------------------------------------------------------- the world

class HMM:
    """A stationary hidden Markov process, one fixed-length document of single-character symbols at a time. See the module docstring."""

    name = "hmm"

    def __init__(self, *, process: str = "mess3", length: int = 64, x: float = 0.05, alpha: float = 0.85,
                 n_states: int = 3, n_symbols: int = 3, concentration: float = 1.0,
                 initial: Sequence[float] | None = None, seed: int = 0) -> None:
        if process not in PROCESSES:
            raise ValueError(f"unknown process {process!r}; choose from {PROCESSES}")
        if length < 1:
            raise ValueError("length must be at least 1")
        if process == "mess3":
            if not (0 < x < 0.5 and 0 < alpha < 1):
                raise ValueError("mess3 needs 0 < x < 0.5 and 0 < alpha < 1")
            mats = mess3_matrices(x, alpha)
        elif process == "even":
            mats = even_matrices()
        elif process == "golden_mean":
            mats = golden_mean_matrices()
        elif process == "rrxor":
            mats = rrxor_matrices()
        else:
            if not (1 <= n_states and 1 <= n_symbols <= len(ALPHABET) and concentration > 0):
                raise ValueError(f"random needs n_states >= 1, 1 <= n_symbols <= {len(ALPHABET)}, concentration > 0")
            mats = random_matrices(random.Random(seed), n_states, n_symbols, concentration)
        self.process = process
        self.length = length
        self.matrices = mats
        self.n_symbols, self.n_states = len(mats), len(mats[0])
        self.alphabet = ALPHABET[: self.n_symbols]
        self._index = {ch: s for s, ch in enumerate(self.alphabet)}
        if initial is None:
            self.initial = stationary_distribution(mats)
        else:
            initial = [float(p) for p in initial]
            if len(initial) != self.n_states or any(not p >= 0 for p in initial) or sum(initial) <= 0:
                raise ValueError(f"initial must be {self.n_states} non-negative probabilities")
            self.initial = [p / sum(initial) for p in initial]
        n = self.n_states
        # columns of each T[s], so a forward step is one dot product per next state
        self._cols = [[tuple(m[i][j] for i in range(n)) for j in range(n)] for m in mats]
        # P(symbol s | state i), for the predictive distribution
        self._emit = [[sum(m[i]) for i in range(n)] for m in mats]
        # per state, the positive-probability edges (symbol, next state) and their cumulative weights
        self._edges, self._cum = [], []
        for i in range(n):
            edges = [(s, j) for s in range(self.n_symbols) for j in range(n) if mats[s][i][j] > 0]
            self._edges.append(edges)
            self._cum.append(_cumsum(mats[s][i][j] for s, j in edges))
        self._init_states = [i for i in range(n) if self.initial[i] > 0]
        self._init_cum = _cumsum(self.initial[i] for i in self._init_states)

    # --------------------------------------------------------------------- generation

    def sample(self, rng: random.Random) -> Document:
        cols, edges, cum = self._cols, self._edges, self._cum
        state = self._init_states[_draw(rng, self._init_cum)]
        initial_state = state
        belief = self.initial
        chars, states, beliefs = [], [], []
        for _ in range(self.length):
            s, state = edges[state][_draw(rng, cum[state])]
            belief = [sum(map(mul, belief, col)) for col in cols[s]]
            z = sum(belief)
            belief = [b / z for b in belief]
            chars.append(s)
            states.append(state)
            beliefs.append(belief)
        text = "".join(self.alphabet[s] for s in chars)
        return Document(text, {"process": self.process, "initial_state": initial_state, "states": states, "beliefs": beliefs})

    # --------------------------------------------------------------------- exact probabilities

    def log_prob(self, text: str) -> float:
        if not isinstance(text, str) or len(text) != self.length:
            return NEG_INF
        return self.prefix_log_prob(text)

    def prefix_log_prob(self, text: str) -> float:
        """log P(a document starts with `text`), for any length (0 for the empty prefix); -inf if impossible."""
        symbols = self._symbols(text)
        if symbols is None:
            return NEG_INF
        logp, _ = self._forward(symbols, keep=False)
        return logp

    def beliefs(self, text: str) -> list[list[float]]:
        """beliefs[t][j] = P(state after emitting text[t] = j | text[:t+1]); one row per character.

        Raises ValueError for characters outside the alphabet or a prefix of probability zero.
        """
        symbols = self._symbols(text)
        if symbols is None:
            raise ValueError(f"text has characters outside the alphabet {self.alphabet!r}")
        logp, beliefs = self._forward(symbols, keep=True)
        if logp == NEG_INF:
            raise ValueError("text has probability zero under this process")
        return beliefs

    def next_symbol_probs(self, prefix: str) -> list[float]:
        """P(next symbol = alphabet[s] | prefix), a list aligned with `alphabet`. Raises ValueError like `beliefs`."""
        belief = self.beliefs(prefix)[-1] if prefix else self.initial
        return [sum(map(mul, belief, emit)) for emit in self._emit]

    # --------------------------------------------------------------------- internals

    def _symbols(self, text: str) -> list[int] | None:
        if not isinstance(text, str):
            return None
        index = self._index
        try:
            return [index[ch] for ch in text]
        except KeyError:
            return None

    def _forward(self, symbols: list[int], keep: bool) -> tuple[float, list[list[float]]]:
        """Scaled forward pass: the normalisers z_t are P(x_t | x_<t), multiplied up and logged in batches."""
        cols = self._cols
        belief = self.initial
        beliefs = []
        logp, scale = 0.0, 1.0
        for s in symbols:
            belief = [sum(map(mul, belief, col)) for col in cols[s]]
            z = sum(belief)
            if z <= 0.0:
                return NEG_INF, beliefs
            belief = [b / z for b in belief]
            scale *= z
            if scale < 1e-250:  # fold into the log long before the product could underflow
                logp += math.log(scale)
                scale = 1.0
            if keep:
                beliefs.append(belief)
        return logp + math.log(scale), beliefs


def _cumsum(values) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def _draw(rng: random.Random, cum: list[float]) -> int:
    # min() guards the rare float case u == cum[-1]
    return min(bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)
