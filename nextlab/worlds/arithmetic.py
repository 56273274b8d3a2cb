"""Arithmetic: one true equation per document, `a op b = c`.

A document is drawn as

    op  uniform among the characters of `ops` ("+", "-", or "x" for multiplication)
    a   a digit count uniform in min_digits..max_digits, then a number uniform among
        the numbers with exactly that many digits (1 digit: 0..9, so 0 is included;
        d > 1 digits: 10^(d-1) .. 10^d - 1, never a leading zero)
    b   drawn the same way, independently

and written as `f"{a} {op} {b} = {c}"` with c the exact integer result. Subtraction
may go below zero: a negative result is written with a leading "-" (`3 - 25 = -22`).
With `reverse=True` the answer's digits are written least significant first (the
sign, if any, stays in front): `12 x 7 = 48`, `5 - 48 = -34`, `60 + 40 = 001`. Models
emit the answer left to right, and the low digits are the ones computable first.

Because operands never have leading zeros, the text determines every choice
(op, both digit counts, both operands), so

    log P(text) = -log len(ops) + sum over a, b of [-log(n_counts) - log(count(digits))]

with n_counts = max_digits - min_digits + 1 and count(1) = 10, count(d) = 9 * 10^(d-1).
Documents end right after the answer (no terminator).

Knobs (keyword-only): min_digits=1, max_digits=3 (operand digit counts, 1 <= min <=
max <= 1000), ops="+-x" (a non-empty subset, each character once), reverse=False,
seed=0 (unused: nothing is fixed per world; kept for a uniform interface).

Latents:

  "a", "b":        the operands (ints);  "op": "+", "-" or "x";  "result": c (int).
  "carries":       per digit position, least significant first (position i is the
                   10^i column):
                     "+": carries[i] = carry out of column i of a + b (0 or 1);
                          max(len(a), len(b)) entries.
                     "-": carries[i] = borrow out of column i of |a - b| computed as
                          max(a, b) - min(a, b) (0 or 1); len(max(a, b)) entries.
                     "x": long multiplication by columns: the column sum
                          s_i = carries[i-1] + sum_{j+k=i} a_j * b_k and
                          carries[i] = s_i // 10 (may exceed 1), for the
                          len(a) + len(b) - 1 columns; the last carry is the
                          result's digits above those columns.
                   (len(x) counts the decimal digits of x; 0 has one.)
  "answer_span":   [start, end): character offsets of the answer c in the text,
                   sign included.
  "digit_offsets": digit_offsets[i] = character offset of the answer digit worth
                   10^i (so the digit produced with carries[i-1] sits at
                   digit_offsets[i]); len(str(abs(c))) entries.

Example (defaults, reverse=False):  `12 x 7 = 84`, latents carries [1, 0],
answer_span [9, 11], digit_offsets [10, 9].

Held-out split (see `base`): the item is the prompt `a op b = `, the same whether
the answer is written plain or reversed, so an item held out of one is held out of
both. Its hash is (h(a) + h(b) + h(op)) mod 2^64, each term a hash64 of the operand
or operator alone. That sum makes P(held-out part) exact and cheap: for each op and
a, the held-out b are those whose h(b) falls in one window of width HELDOUT_CUT, so
with the b sorted by h(b) the mass is two bisections per (op, a), milliseconds for
3-digit operands. Past EXACT_MAX_DIGITS the mass is estimated (base.estimated_heldout_mass).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
import re

from nextlab.worlds.base import HELDOUT_CUT, NEG_INF, Document, estimated_heldout_mass, hash64

OPS = "+-x"
MAX_DIGITS = 1000  # keeps results below Python's 4300-digit int/str conversion limit

# ASCII digits only ([0-9], not \d, which accepts other scripts' digits); no leading zeros.
_EQUATION = re.compile(r"(0|[1-9][0-9]*) ([-+x]) (0|[1-9][0-9]*) = (-?[0-9]+)")
_PROMPT = re.compile(r"(0|[1-9][0-9]*) ([-+x]) (0|[1-9][0-9]*) = ")
EXACT_MAX_DIGITS = 5  # up to here P(held-out part) is summed over every operand (1e5 of them: under a second)


def count_with_digits(d: int) -> int:
    return 10 if d == 1 else 9 * 10 ** (d - 1)


def draw_operand(rng: random.Random, min_digits: int, max_digits: int) -> int:
    d = rng.randint(min_digits, max_digits)
    return rng.randrange(10) if d == 1 else rng.randrange(10 ** (d - 1), 10**d)


def apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def format_result(c: int, reverse: bool) -> str:
    digits = str(abs(c))
    return ("-" if c < 0 else "") + (digits[::-1] if reverse else digits)


def digits_low_first(n: int) -> list[int]:
    return [int(ch) for ch in reversed(str(n))]


def carries(op: str, a: int, b: int) -> list[int]:
    """Column carries (borrows for "-"), least significant column first; see the module docstring."""
    if op == "-":
        a, b = max(a, b), min(a, b)
    da, db = digits_low_first(a), digits_low_first(b)
    out, carry = [], 0
    if op == "+":
        for i in range(max(len(da), len(db))):
            s = (da[i] if i < len(da) else 0) + (db[i] if i < len(db) else 0) + carry
            carry = s // 10
            out.append(carry)
    elif op == "-":
        for i in range(len(da)):
            s = da[i] - (db[i] if i < len(db) else 0) - carry
            carry = 1 if s < 0 else 0
            out.append(carry)
    else:
        for i in range(len(da) + len(db) - 1):
            s = carry + sum(da[j] * db[i - j] for j in range(max(0, i - len(db) + 1), min(i, len(da) - 1) + 1))
            carry = s // 10
            out.append(carry)
    return out


def prompt_hash(a: str, op: str, b: str) -> int:
    """The hash of the item `a op b = ` (operands as digit strings): see the module docstring."""
    return (hash64("a" + a) + hash64("b" + b) + hash64("op" + op)) % 2**64


def _operands(min_digits: int, max_digits: int) -> list[tuple[str, float]]:
    """Every operand as a digit string, with its probability."""
    n_counts = max_digits - min_digits + 1
    out = []
    for d in range(min_digits, max_digits + 1):
        lo, p = (0, 1 / 10) if d == 1 else (10 ** (d - 1), 1 / (9 * 10 ** (d - 1)))
        out += [(str(n), p / n_counts) for n in range(lo, 10**d)]
    return out


@functools.lru_cache(maxsize=16)
def enumerated_heldout_mass(min_digits: int, max_digits: int, ops: str) -> float:
    """P(held-out part): sum over op and a of P(op) P(a) P(b's hash falls in a's window)."""
    operands = _operands(min_digits, max_digits)
    bs = sorted((hash64("b" + b), p) for b, p in operands)
    keys = [h for h, _ in bs]
    below = [0.0, *itertools.accumulate(p for _, p in bs)]  # below[i]: mass of the i smallest h(b)

    def mass_in(lo: int, hi: int) -> float:  # mass of the b with lo <= h(b) < hi
        return below[bisect.bisect_left(keys, hi)] - below[bisect.bisect_left(keys, lo)]

    total, h_ops = 0.0, [hash64("op" + op) for op in ops]
    for h_a, p_a in [(hash64("a" + a), p) for a, p in operands]:
        for h_op in h_ops:
            start = -(h_a + h_op) % 2**64  # held out: start <= h(b) < start + CUT (mod 2^64)
            end = start + HELDOUT_CUT
            window = mass_in(start, end) if end <= 2**64 else mass_in(start, 2**64) + mass_in(0, end - 2**64)
            total += p_a * window / len(ops)
    return total


class Arithmetic:
    name = "arithmetic"

    def __init__(self, *, min_digits: int = 1, max_digits: int = 3, ops: str = OPS, reverse: bool = False, seed: int = 0) -> None:
        if not (isinstance(min_digits, int) and isinstance(max_digits, int) and 1 <= min_digits <= max_digits <= MAX_DIGITS):
            raise ValueError(f"need 1 <= min_digits <= max_digits <= {MAX_DIGITS}, got {min_digits}, {max_digits}")
        if not isinstance(ops, str) or not ops or any(op not in OPS for op in ops) or len(set(ops)) != len(ops):
            raise ValueError(f"ops must be a non-empty string of distinct characters from {OPS!r}, got {ops!r}")
        self.min_digits, self.max_digits, self.ops, self.reverse, self.seed = min_digits, max_digits, ops, bool(reverse), seed
        n_counts = max_digits - min_digits + 1
        self._log_p_op = -math.log(len(ops))
        # log(9 * 10^(d-1)) written out so huge d stays exact in floating point
        self._log_p_operand = {
            d: -math.log(n_counts) - (math.log(10) if d == 1 else math.log(9) + (d - 1) * math.log(10))
            for d in range(min_digits, max_digits + 1)
        }

    def sample(self, rng: random.Random) -> Document:
        op = self.ops[rng.randrange(len(self.ops))]
        a = draw_operand(rng, self.min_digits, self.max_digits)
        b = draw_operand(rng, self.min_digits, self.max_digits)
        c = apply(op, a, b)
        prefix = f"{a} {op} {b} = "
        answer = format_result(c, self.reverse)
        start, end = len(prefix), len(prefix) + len(answer)
        first = start + (c < 0)  # the sign is not a digit
        n = end - first
        offsets = [first + i for i in range(n)] if self.reverse else [end - 1 - i for i in range(n)]
        latents = {"a": a, "b": b, "op": op, "result": c, "carries": carries(op, a, b)}
        return Document(prefix + answer, {**latents, "answer_span": [start, end], "digit_offsets": offsets})

    def log_prob(self, text: str) -> float:
        m = _EQUATION.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            return NEG_INF
        sa, op, sb, answer = m.groups()
        la, lb = self._log_p_operand.get(len(sa)), self._log_p_operand.get(len(sb))
        # digit counts are checked before int() so absurdly long inputs are never converted
        if op not in self.ops or la is None or lb is None:
            return NEG_INF
        if format_result(apply(op, int(sa), int(sb)), self.reverse) != answer:
            return NEG_INF
        return self._log_p_op + la + lb

    def item_hash(self, text: str) -> int | None:
        m = _PROMPT.match(text) if isinstance(text, str) else None
        return None if m is None else prompt_hash(m[1], m[2], m[3])

    def heldout_mass(self) -> float:
        if self.max_digits <= EXACT_MAX_DIGITS:
            return enumerated_heldout_mass(self.min_digits, self.max_digits, self.ops)
        return estimated_heldout_mass(self)
