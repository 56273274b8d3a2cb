"""Programs: short Python programs whose last line states what they print.

A document is a valid Python program followed by a comment with its output:

    x = 3
    def f(a):
        x = (a + 1) % 10
        return (x * 2) % 10
    y = f(x)
    print(y)
    # prints 8

Running the program (everything but the last line) prints exactly the stated
value. Predicting it means tracking every variable through assignments, branches,
loops and calls, including locals that shadow globals (inside `f`, `x` is the
local 4, while the global `x` stays 3).

The grammar (4 spaces per indentation level, lines joined by "\\n", no trailing
newline). A *block* is a sequence of statements at one depth:

    program    block(depth 0, min_statements..max_statements statements)
               "print(V)"  then  "# prints N"   (V a readable global, N what it prints)
    statement  V = EXPR                  with EXPR one of
                   C                       "const"  a constant 0..max_int
                   U                       "copy"   a readable variable
                   (U OP X) % modulus      "arith"  OP in + - *, X a readable variable or a constant
                   F(X)                    "call"   a defined function (never inside a function body)
               if U CMP X:               "if"    CMP in < <= > >= == !=; a body block of 1..max_body
                 [else:]                         statements, then with probability p_else an
                                                 "else:" line and another body block of 1..max_body
               for L in range(K):        "for"   K in 1..max_loop; body block of 1..max_body statements;
                                                 L is "ijklmno"[number of enclosing for loops]
               def F(P):                 "def"   only at depth 0; body block of 0..max_body statements
                   ...                           then "return EXPR" (EXPR: const, copy or arith)

Names: variables V, U, P are the first n_vars of "xyzabcdepqrstuvw", functions F
the first n_functions of "fgh", loop counters L come from "ijklmno"; the pools are
disjoint, so every line's form names the choice that produced it and the text
determines the whole choice sequence (there is never a sum over hidden choices).

Which names are *readable* is decided statically, as a compiler's definite-
assignment analysis would: a variable is readable once it is assigned on every
path to the current line (a branch of an `if` counts only when both branches
assign it; a `for` body always runs, K >= 1; a loop counter stays bound after its
loop). A function body reads only its parameter and its own locals, never a
global, so the programs never raise NameError or UnboundLocalError.

How `sample` draws, in program order (every distribution below is what
`log_prob` scores, through the same code: see `_Sampler` and `_Replayer`):

  - block length: statements are added one at a time; with t statements already
    in a block of lo..hi, the block stops with probability 1 / (hi - t + 1)
    (never before lo, always at hi), which makes the length uniform in lo..hi.
  - statement kind: proportional to kind_weights among the kinds available here:
    const always; copy, arith and if need a readable variable; call needs a
    defined function and a line outside any function body; if and for need
    depth < max_depth (and for a free loop counter name); def needs depth 0,
    max_depth >= 1, n_functions >= 1 and a readable global (so the final print
    always has something to print). A return expression uses the same weights
    over const, copy and arith.
  - each name, operator, comparison, constant and loop count: uniform over its
    options (assignment targets and parameters over all n_vars names; function
    names over the n_functions names, redefinition allowed);
    an operand X is a variable or a constant with probability 1/2 each (a
    constant when nothing is readable).
  - else: probability p_else after each if body.
  - the printed variable: uniform over the readable globals at the end.

Knobs (keyword-only): min_statements=2, max_statements=6 (top-level statements
before the print; min >= 1), max_depth=2 (deepest indentation level; 0 means no
if/for/def; any value >= 0, e.g. 4 for deeper out-of-distribution programs),
max_body=2 (statements per block), n_vars=4 (1..16), max_int=9 (constants
0..max_int), modulus=10 (>= 2; every arithmetic result is reduced, so values stay
in 0..max(max_int, modulus - 1)), max_loop=3 (max_int, modulus and max_loop below
10**6), n_functions=2 (0..3), p_else=0.3, kind_weights (a dict over "const", "copy", "arith", "call", "if", "for", "def",
merged into DEFAULT_WEIGHTS; weights >= 0 and "const" > 0), seed=0 (unused:
nothing is fixed per world; kept for a uniform interface).

Latents:

  "lines":       one entry per line of the text, in order, each
                   "span":  [start, end) character offsets of the line (no newline)
                   "depth": indentation level (0 for top level)
                   "scope": the function whose body holds the line, or None
                   "kind":  "assign", "if", "else", "for", "def", "return", "print" or "answer"
                   "env":   the variables visible in the line's scope, {name: value}, at the
                            moment control last leaves the line, or None if the line never
                            runs (a branch not taken, a function never called; always None
                            for the "# prints" line). Top level: every bound global variable
                            (loop counters included, functions not). In a function body: the
                            call's bound locals (parameter included) of its last call.
                            "Leaving the line" is after the assignment for V = ..., after
                            the condition for if, on entering the branch for else, after
                            the whole loop for for (its last run), after the binding for
                            def, and at the return for return: exactly the state a
                            sys.settrace tracer sees at the next event of the same frame.
  "answer":      the printed value (int)
  "answer_span": [start, end) of the digits of N in the last line
  "log_prob":    the natural-log probability of the document (what log_prob returns)

Besides sample and log_prob: `parse(text)` gives the Document with these latents
for any producible text (None otherwise), and `support()` lists every producible
text with its log-probability for configurations small enough to enumerate.

Held-out split (see `base`): the item is the program, the text up to the answer
(`...# prints `), which determines the answer. There are far too many programs to
enumerate, so P(held-out part) is estimated from 20,000 draws
(base.estimated_heldout_mass: standard error 0.002, negligible in the floor).
"""

from __future__ import annotations

import math
import operator
import random
import re

from nextlab.worlds.base import NEG_INF, Document, estimated_heldout_mass, logsumexp, prompt_hash

VAR_NAMES = "xyzabcdepqrstuvw"
FUNC_NAMES = "fgh"
LOOP_NAMES = "ijklmno"
OPS = ("+", "-", "*")
CMPS = ("<", "<=", ">", ">=", "==", "!=")
EXPR_KINDS = ("const", "copy", "arith")
ASSIGN_KINDS = EXPR_KINDS + ("call",)
KINDS = ASSIGN_KINDS + ("if", "for", "def")
DEFAULT_WEIGHTS = {"const": 1.0, "copy": 0.5, "arith": 3.0, "call": 1.0, "if": 1.0, "for": 1.0, "def": 0.7}
OPERAND_KINDS = ("var", "const")
INDENT = "    "
ANSWER_MARK = "# prints "

_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}


class _Reject(Exception):
    """The text cannot come from this world."""


# ---------------------------------------------------------------------------
# Choosers. The generator asks one for every choice, naming the line it is
# writing and a slot ("kind", "target", "op", ...). Sampling draws and records;
# replaying reads the answer off the parsed text. Both add log p of the option
# taken, so sample and log_prob share one code path.


def _log_p(i: int, options, weights) -> float:
    return -math.log(len(options)) if weights is None else math.log(weights[i] / sum(weights))


class _Sampler:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.logp = 0.0
        self.choices: list[tuple[int, str, object]] = []

    def pick(self, line: int, slot: str, options, weights=None):
        if len(options) == 1:
            i = 0
        elif weights is None:
            i = self.rng.randrange(len(options))
            self.logp -= math.log(len(options))
        else:
            total = sum(weights)
            r = self.rng.random() * total
            i = 0
            while i < len(weights) - 1 and r >= weights[i]:
                r -= weights[i]
                i += 1
            self.logp += math.log(weights[i] / total)
        self.choices.append((line, slot, options[i]))
        return options[i]

    def stop(self, line: int, depth: int, p: float) -> bool:
        return self.pick(line, "stop", (True, False), (p, 1.0 - p))

    def has_else(self, line: int, depth: int, p: float) -> bool:
        return self.pick(line, "else", (True, False), (p, 1.0 - p))


class _Scripted(_Sampler):
    """Takes option path[k] at the k-th choice (0 past the end) and remembers the branching: drives `support`."""

    def __init__(self, path: list[int]) -> None:
        super().__init__(None)
        self.path = path
        self.taken: list[int] = []
        self.sizes: list[int] = []

    def pick(self, line: int, slot: str, options, weights=None):
        k = len(self.taken)
        i = self.path[k] if k < len(self.path) else 0
        self.taken.append(i)
        self.sizes.append(len(options))
        self.logp += _log_p(i, options, weights)
        self.choices.append((line, slot, options[i]))
        return options[i]


class _Replayer:
    def __init__(self, lines: list[dict]) -> None:
        self.lines = lines
        self.logp = 0.0
        self.choices: list[tuple[int, str, object]] = []

    def _take(self, line: int, slot: str, value, options, weights):
        # `type(...) is` keeps True from matching the int 1 and vice versa.
        for i, option in enumerate(options):
            if option == value and type(option) is type(value):
                self.logp += _log_p(i, options, weights)
                self.choices.append((line, slot, option))
                return option
        raise _Reject

    def pick(self, line: int, slot: str, options, weights=None):
        if line >= len(self.lines):
            raise _Reject
        return self._take(line, slot, self.lines[line].get(slot), options, weights)

    def stop(self, line: int, depth: int, p: float) -> bool:
        # The block goes on exactly when the next line is a statement at its depth.
        more = line < len(self.lines) and self.lines[line]["stmt"] and self.lines[line]["indent"] == depth
        return self._take(line, "stop", not more, (True, False), (p, 1.0 - p))

    def has_else(self, line: int, depth: int, p: float) -> bool:
        # An "else:" belongs to the if at its own depth (an inner if's body may end on an outer else).
        found = line < len(self.lines) and self.lines[line]["else"] and self.lines[line]["indent"] == depth
        return self._take(line, "else", found, (True, False), (p, 1.0 - p))


# ---------------------------------------------------------------------------
# Parsing: each line on its own, into the slots the generator will ask about.
# A loose parse is safe: log_prob regenerates the text from these answers and
# compares it with the input, so anything the parse lets through that the
# generator would not write is rejected there.

_NUM = "[0-9]{1,6}"  # ASCII digits only, and short enough for int()
_EXPR = (
    rf"(?:(?P<value>{_NUM})|(?P<src>[a-z])|\((?P<a>[a-z]) (?P<op>[-+*]) (?P<b>[a-z]|{_NUM})\) % {_NUM}"
    rf"|(?P<func>[a-z])\((?P<arg>[a-z]|{_NUM})\))"
)
_ASSIGN = re.compile(rf"(?P<target>[a-z]) = {_EXPR}")
_RETURN = re.compile(rf"return {_EXPR}")
_IF = re.compile(rf"if (?P<a>[a-z]) (?P<cmp><=|>=|==|!=|<|>) (?P<b>[a-z]|{_NUM}):")
_FOR = re.compile(rf"for [a-z] in range\((?P<k>{_NUM})\):")
_DEF = re.compile(r"def (?P<func>[a-z])\((?P<param>[a-z])\):")
_PRINT = re.compile(r"print\((?P<var>[a-z])\)")


def _operand_slots(slots: dict, slot: str, token: str) -> None:
    if token[0].isdigit():
        slots[slot + "_kind"], slots[slot] = "const", int(token)
    else:
        slots[slot + "_kind"], slots[slot] = "var", token


def _expr_slots(m: re.Match, slots: dict) -> None:
    if m["value"] is not None:
        slots["kind"], slots["value"] = "const", int(m["value"])
    elif m["src"] is not None:
        slots["kind"], slots["src"] = "copy", m["src"]
    elif m["a"] is not None:
        slots["kind"], slots["a"], slots["op"] = "arith", m["a"], m["op"]
        _operand_slots(slots, "b", m["b"])
    else:
        slots["kind"], slots["func"] = "call", m["func"]
        _operand_slots(slots, "arg", m["arg"])


def _parse_line(raw: str) -> dict:
    body = raw.lstrip(" ")
    spaces = len(raw) - len(body)
    if spaces % 4:
        raise _Reject
    slots = {"indent": spaces // 4, "stmt": True, "else": body == "else:"}
    if m := _ASSIGN.fullmatch(body):
        slots["target"] = m["target"]
        _expr_slots(m, slots)
    elif m := _IF.fullmatch(body):
        slots["kind"], slots["a"], slots["cmp"] = "if", m["a"], m["cmp"]
        _operand_slots(slots, "b", m["b"])
    elif m := _FOR.fullmatch(body):
        slots["kind"], slots["k"] = "for", int(m["k"])
    elif m := _DEF.fullmatch(body):
        slots["kind"], slots["func"], slots["param"] = "def", m["func"], m["param"]
    else:
        slots["stmt"] = False
        if m := _RETURN.fullmatch(body):
            _expr_slots(m, slots)
        elif m := _PRINT.fullmatch(body):
            slots["var"] = m["var"]
    return slots


# ---------------------------------------------------------------------------
# Running a generated program. Nodes are tuples:
#   ("assign", line, target, expr)   ("if", line, a, cmp, b, then, else_line, other)
#   ("for", line, counter, k, body)  ("def", line, name, param, body, return_line, expr)
# expressions: ("const", c), ("var", name), ("arith", a, op, b, modulus), ("call", name, arg).


def _eval(e: tuple, env: dict, funcs: dict, envs: list):
    tag = e[0]
    if tag == "const":
        return e[1]
    if tag == "var":
        return env[e[1]]
    if tag == "arith":
        return _ARITH[e[2]](_eval(e[1], env, funcs, envs), _eval(e[3], env, funcs, envs)) % e[4]
    _, _, _, param, body, return_line, expr = funcs[e[1]]
    local = {param: _eval(e[2], env, funcs, envs)}
    _execute(body, local, funcs, envs)
    value = _eval(expr, local, funcs, envs)
    envs[return_line] = dict(local)
    return value


def _execute(block: list, env: dict, funcs: dict, envs: list) -> None:
    for node in block:
        tag, line = node[0], node[1]
        if tag == "assign":
            env[node[2]] = _eval(node[3], env, funcs, envs)
        elif tag == "if":
            _, _, a, cmp, b, then, else_line, other = node
            taken = _COMPARE[cmp](env[a], _eval(b, env, funcs, envs))
            envs[line] = dict(env)
            if taken:
                _execute(then, env, funcs, envs)
            elif else_line is not None:
                envs[else_line] = dict(env)
                _execute(other, env, funcs, envs)
            continue
        elif tag == "for":
            counter, k, body = node[2], node[3], node[4]
            for i in range(k):
                env[counter] = i
                _execute(body, env, funcs, envs)
        else:
            funcs[node[2]] = node
        envs[line] = dict(env)


# ---------------------------------------------------------------------------


class Programs:
    """Short Python programs ending in "# prints N"; see the module docstring."""

    name = "programs"

    def __init__(
        self,
        *,
        min_statements: int = 2,
        max_statements: int = 6,
        max_depth: int = 2,
        max_body: int = 2,
        n_vars: int = 4,
        max_int: int = 9,
        modulus: int = 10,
        max_loop: int = 3,
        n_functions: int = 2,
        p_else: float = 0.3,
        kind_weights: dict | None = None,
        seed: int = 0,
    ) -> None:
        weights = dict(DEFAULT_WEIGHTS)
        for kind, w in (kind_weights or {}).items():
            if kind not in weights:
                raise ValueError(f"unknown statement kind {kind!r}; choose from {', '.join(KINDS)}")
            if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0 or math.isinf(w):
                raise ValueError(f"kind weight {kind}={w!r} must be a finite number >= 0")
            weights[kind] = float(w)
        if weights["const"] <= 0:
            raise ValueError("the weight of 'const' must be positive: it is the one kind always available")
        if not 1 <= min_statements <= max_statements:
            raise ValueError("need 1 <= min_statements <= max_statements")
        if max_depth < 0 or max_body < 1 or max_loop < 1 or max_int < 0 or modulus < 2:
            raise ValueError("need max_depth >= 0, max_body >= 1, max_loop >= 1, max_int >= 0, modulus >= 2")
        if not 1 <= n_vars <= len(VAR_NAMES) or not 0 <= n_functions <= len(FUNC_NAMES):
            raise ValueError(f"need 1 <= n_vars <= {len(VAR_NAMES)} and 0 <= n_functions <= {len(FUNC_NAMES)}")
        if not 0.0 <= p_else <= 1.0:
            raise ValueError("p_else must be in [0, 1]")
        if max(max_int, modulus, max_loop) >= 10**6:
            raise ValueError("max_int, modulus and max_loop must be below 10**6 (the parser reads at most 6 digits)")
        self.min_statements, self.max_statements = min_statements, max_statements
        self.max_depth, self.max_body, self.max_loop = max_depth, max_body, max_loop
        self.n_vars, self.max_int, self.modulus = n_vars, max_int, modulus
        self.n_functions, self.p_else, self.kind_weights, self.seed = n_functions, p_else, weights, seed
        self._vars = tuple(VAR_NAMES[:n_vars])
        self._funcs = tuple(FUNC_NAMES[:n_functions])
        self._names = self._vars + tuple(LOOP_NAMES)  # the order readable names are offered in
        self._ints = range(max_int + 1)
        self._counts = range(1, max_loop + 1)
        self._kind_cache: dict[tuple, tuple] = {}

    # -- the generator: one code path for sample, log_prob and support -------

    def _kinds(self, readable: bool, can_nest: bool, can_loop: bool, can_call: bool, can_def: bool) -> tuple[tuple, tuple]:
        key = (readable, can_nest, can_loop, can_call, can_def)
        if key not in self._kind_cache:
            allowed = (True, readable, readable, can_call, can_nest and readable, can_nest and can_loop, can_def)  # KINDS order
            kinds = tuple(k for k, ok in zip(KINDS, allowed) if ok and self.kind_weights[k] > 0)
            self._kind_cache[key] = (kinds, tuple(self.kind_weights[k] for k in kinds))
        return self._kind_cache[key]

    def _ordered(self, readable: frozenset) -> tuple:
        return tuple(n for n in self._names if n in readable)

    def _operand(self, c, line: int, slot: str, names: tuple) -> tuple[str, tuple]:
        kind = c.pick(line, slot + "_kind", OPERAND_KINDS) if names else "const"
        if kind == "var":
            name = c.pick(line, slot, names)
            return name, ("var", name)
        value = c.pick(line, slot, self._ints)
        return str(value), ("const", value)

    def _expr(self, c, line: int, kind: str, names: tuple, funcs: set) -> tuple[str, tuple]:
        if kind == "const":
            value = c.pick(line, "value", self._ints)
            return str(value), ("const", value)
        if kind == "copy":
            name = c.pick(line, "src", names)
            return name, ("var", name)
        if kind == "arith":
            a = c.pick(line, "a", names)
            op = c.pick(line, "op", OPS)
            text, b = self._operand(c, line, "b", names)
            return f"({a} {op} {text}) % {self.modulus}", ("arith", ("var", a), op, b, self.modulus)
        name = c.pick(line, "func", tuple(f for f in self._funcs if f in funcs))
        text, arg = self._operand(c, line, "arg", names)
        return f"{name}({text})", ("call", name, arg)

    def _block(self, c, out: list, readable: frozenset, depth: int, loops: int, func, funcs: set, lo: int, hi: int):
        """Statements at `depth` until the length draw says stop; returns (nodes, readable after)."""
        nodes: list = []
        while True:
            t = len(nodes)
            if t >= lo and (t == hi or c.stop(len(out), depth, 1.0 / (hi - t + 1))):
                return nodes, readable
            node, readable = self._statement(c, out, readable, depth, loops, func, funcs)
            nodes.append(node)

    def _statement(self, c, out: list, readable: frozenset, depth: int, loops: int, func, funcs: set):
        line = len(out)
        names = self._ordered(readable)
        can_nest = depth < self.max_depth
        can_def = can_nest and depth == 0 and bool(names) and bool(self._funcs)
        kinds, weights = self._kinds(bool(names), can_nest, loops < len(LOOP_NAMES), func is None and bool(funcs), can_def)
        kind = c.pick(line, "kind", kinds, weights)
        if kind in ASSIGN_KINDS:
            target = c.pick(line, "target", self._vars)
            text, expr = self._expr(c, line, kind, names, funcs)
            out.append((depth, f"{target} = {text}", func, "assign"))
            return ("assign", line, target, expr), readable | {target}
        if kind == "if":
            a = c.pick(line, "a", names)
            cmp = c.pick(line, "cmp", CMPS)
            text, b = self._operand(c, line, "b", names)
            out.append((depth, f"if {a} {cmp} {text}:", func, "if"))
            then, after_then = self._block(c, out, readable, depth + 1, loops, func, funcs, 1, self.max_body)
            else_line = len(out)
            has_else = self.p_else >= 1.0 or (self.p_else > 0.0 and c.has_else(else_line, depth, self.p_else))
            if not has_else:
                return ("if", line, a, cmp, b, then, None, []), readable
            out.append((depth, "else:", func, "else"))
            other, after_other = self._block(c, out, readable, depth + 1, loops, func, funcs, 1, self.max_body)
            return ("if", line, a, cmp, b, then, else_line, other), after_then & after_other
        if kind == "for":
            k = c.pick(line, "k", self._counts)
            counter = LOOP_NAMES[loops]
            out.append((depth, f"for {counter} in range({k}):", func, "for"))
            body, after = self._block(c, out, readable | {counter}, depth + 1, loops + 1, func, funcs, 1, self.max_body)
            return ("for", line, counter, k, body), after
        name = c.pick(line, "func", self._funcs)
        param = c.pick(line, "param", self._vars)
        out.append((depth, f"def {name}({param}):", None, "def"))
        body, local = self._block(c, out, frozenset((param,)), 1, 0, name, funcs, 0, self.max_body)
        return_line = len(out)
        kinds, weights = self._kinds(True, False, False, False, False)  # const, copy, arith (whichever have weight)
        text, expr = self._expr(c, return_line, c.pick(return_line, "kind", kinds, weights), self._ordered(local), funcs)
        out.append((1, f"return {text}", name, "return"))
        funcs.add(name)
        return ("def", line, name, param, body, return_line, expr), readable

    def _generate(self, c) -> tuple[str, dict]:
        out: list = []
        program, readable = self._block(c, out, frozenset(), 0, 0, None, set(), self.min_statements, self.max_statements)
        printed = c.pick(len(out), "var", self._ordered(readable))
        out.append((0, f"print({printed})", None, "print"))
        envs: list = [None] * (len(out) + 1)
        env: dict = {}
        _execute(program, env, {}, envs)
        envs[len(out) - 1] = dict(env)
        answer = env[printed]
        out.append((0, f"# prints {answer}", None, "answer"))
        lines, start = [], 0
        for (depth, content, func, kind), state in zip(out, envs):
            end = start + 4 * depth + len(content)
            lines.append({"span": [start, end], "depth": depth, "scope": func, "kind": kind, "env": state})
            start = end + 1
        text = "\n".join(INDENT * depth + content for depth, content, _, _ in out)
        return text, {"lines": lines, "answer": answer, "answer_span": [lines[-1]["span"][1] - len(str(answer)), lines[-1]["span"][1]]}

    # -- the interface -------------------------------------------------------

    def sample(self, rng: random.Random) -> Document:
        c = _Sampler(rng)
        text, latents = self._generate(c)
        latents["log_prob"] = c.logp
        return Document(text, latents)

    def _replay(self, text: str) -> tuple[_Replayer, str, dict] | None:
        if not isinstance(text, str):
            return None
        try:
            c = _Replayer([_parse_line(raw) for raw in text.split("\n")])
            generated, latents = self._generate(c)
        except _Reject:
            return None
        return (c, generated, latents) if generated == text else None

    def log_prob(self, text: str) -> float:
        replay = self._replay(text)
        return NEG_INF if replay is None else replay[0].logp

    def item_hash(self, text: str) -> int | None:
        """The hash of the program, the text up to and including "# prints "."""
        return prompt_hash(text, ANSWER_MARK)

    def heldout_mass(self) -> float:
        return estimated_heldout_mass(self)

    def parse(self, text: str) -> Document | None:
        """The document (with its latents) for a text this world can produce, else None."""
        replay = self._replay(text)
        if replay is None:
            return None
        c, text, latents = replay
        latents["log_prob"] = c.logp
        return Document(text, latents)

    def support(self, limit: int = 200_000) -> dict[str, float]:
        """Every producible text and its log-probability (tiny configurations only).

        Texts reached by several choice sequences get their probabilities summed;
        the grammar is meant to make that impossible, and the tests check it.
        """
        found: dict[str, list[float]] = {}
        for text, logp in self._walk(limit):
            found.setdefault(text, []).append(logp)
        return {text: logsumexp(lps) for text, lps in found.items()}

    def _walk(self, limit: int):
        """(text, log p) for every choice sequence, depth first; ValueError past `limit` sequences."""
        stack: list[list[int]] = [[]]
        for _ in range(limit):
            if not stack:
                return
            c = _Scripted(stack.pop())
            text, _ = self._generate(c)
            yield text, c.logp
            for k in range(len(c.path), len(c.taken)):
                stack.extend(c.taken[:k] + [alt] for alt in range(1, c.sizes[k]))
        if stack:
            raise ValueError(f"more than {limit} choice sequences: too big a configuration to enumerate")
