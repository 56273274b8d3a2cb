"""OpenAI-compatible text completions on a nextlab model: a request in, response JSON out (no HTTP here).

The wire format is OpenAI's `/v1/completions`, so the official `openai` client,
lm-eval-style scoring clients and anything else that speaks it work unchanged.
Where nextlab differs, it says so:

- Every prompt is read as the start of a document (after end-of-text), so the
  first prompt token is predicted too: with `echo` its log-probability is a
  number, not OpenAI's null.
- `top_k` and `ignore_eos` (keep going past end-of-text, for benchmarks) are
  accepted as extensions, with vLLM's names; `logprobs` are the
  model's own log-probabilities, before temperature, top-k and top-p.
- Token strings are the tokenizer's: a byte that is not a whole UTF-8
  character shows as an escape such as "\\xe2".
- A generation prompt must fit in the context (nothing is cut off silently);
  a prompt that is only scored (`echo` with `max_tokens` 0) may be longer, up
  to `Limits.max_score_tokens`, and is scored with a sliding window.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from nextlab.sample import GeneratedToken, TokenChoice, TokenDetail, score_in_detail, score_in_detail_many
from nextlab.serve.batching import BatchingEngine, Unbatched
from nextlab.tokenizer import Tokenizer, token_pieces


class APIError(Exception):
    """An error a client caused (or the server's refusal), in OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Limits:
    """What one request may ask for; anything beyond is answered with 400 (or 413, 429) and says which limit."""

    max_tokens: int = 1024  # completion tokens per choice
    max_n: int = 16  # choices per prompt
    max_prompts: int = 64  # prompts per request
    max_logprobs: int = 20  # alternatives per token, as OpenAI
    max_stop: int = 4  # stop strings, as OpenAI
    max_score_tokens: int = 16384  # prompt tokens when only scoring (echo, max_tokens 0)
    max_body_bytes: int = 1_000_000  # request body
    max_queue: int = 256  # requests waiting for the model; more are refused with 429
    max_request_seconds: float = 300.0  # model time per request; past it, generation stops with finish_reason "length"
    max_batch: int = 32  # requests run at once, their generations stepped together (continuous batching); 1: one at a time


class CompletionRequest(BaseModel):
    """The body of POST /v1/completions. Unknown fields are refused, as OpenAI does."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as declared: false is not 0

    model: str
    prompt: str | list[str] | list[int] | list[list[int]] = ""
    max_tokens: int | None = 16
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    top_k: int | None = None
    ignore_eos: bool | None = False
    n: int | None = 1
    stream: bool | None = False
    stream_options: dict | None = None
    logprobs: int | None = None
    echo: bool | None = False
    stop: str | list[str] | None = None
    seed: int | None = None
    best_of: int | None = None
    logit_bias: dict[str, float] | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    suffix: str | None = None
    user: str | None = None


@dataclass
class Plan:
    """A validated request: what to run, with every default filled in."""

    prompts: list[list[int]]  # token ids of each prompt (without the leading end-of-text)
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int | None
    n: int
    logprobs: int | None
    echo: bool
    stop: list[str]
    seed: int | None
    include_usage: bool = False
    ignore_eos: bool = False
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))


def _bad(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param)


def plan_completion(req: CompletionRequest, tokenizer: Tokenizer, block_size: int, limits: Limits) -> Plan:
    """Check a request against the model and the limits; every refusal names the parameter at fault."""
    for name, value, default in (("best_of", req.best_of, 1), ("presence_penalty", req.presence_penalty, 0.0),
                                 ("frequency_penalty", req.frequency_penalty, 0.0)):
        if value is not None and value != default:
            raise _bad(f"{name} is not supported by this server (got {value})", name)
    if req.logit_bias:
        raise _bad("logit_bias is not supported by this server", "logit_bias")
    if req.suffix:
        raise _bad("suffix (insertion) is not supported: these models only continue text", "suffix")
    max_tokens = 16 if req.max_tokens is None else req.max_tokens
    temperature = 1.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    n = 1 if req.n is None else req.n
    echo = bool(req.echo)
    if not 0 <= max_tokens <= limits.max_tokens:
        raise _bad(f"max_tokens must be between 0 and {limits.max_tokens}, got {max_tokens}", "max_tokens")
    if not 0 <= temperature <= 2:
        raise _bad(f"temperature must be between 0 and 2, got {temperature}", "temperature")
    if not 0 < top_p <= 1:
        raise _bad(f"top_p must be in (0, 1], got {top_p}", "top_p")
    if req.top_k is not None and req.top_k < 0:
        raise _bad(f"top_k must be 0 (off) or more, got {req.top_k}", "top_k")
    if not 1 <= n <= limits.max_n:
        raise _bad(f"n must be between 1 and {limits.max_n}, got {n}", "n")
    if req.logprobs is not None and not 0 <= req.logprobs <= limits.max_logprobs:
        raise _bad(f"logprobs must be between 0 and {limits.max_logprobs}, got {req.logprobs}", "logprobs")
    if max_tokens == 0 and not echo:
        raise _bad("max_tokens 0 only makes sense with echo (scoring the prompt)", "max_tokens")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > limits.max_stop:
        raise _bad(f"at most {limits.max_stop} stop sequences, got {len(stop)}", "stop")
    prompts = prompt_token_lists(req.prompt, tokenizer)
    if len(prompts) > limits.max_prompts:
        raise _bad(f"at most {limits.max_prompts} prompts per request, got {len(prompts)}", "prompt")
    for i, ids in enumerate(prompts):
        which = "prompt" if len(prompts) == 1 else f"prompt {i}"
        if max_tokens == 0:
            if len(ids) > limits.max_score_tokens:
                raise _bad(f"{which} is {len(ids)} tokens; this server scores at most {limits.max_score_tokens}", "prompt")
        elif len(ids) + 1 > block_size:
            raise _bad(f"{which} is {len(ids)} tokens; this model's context is {block_size} tokens, and one of them "
                       f"is the end-of-text that starts every document, so a prompt to continue can be at most "
                       f"{block_size - 1} tokens", "prompt")
    include_usage = bool(req.stream and (req.stream_options or {}).get("include_usage"))
    return Plan(prompts, max_tokens, temperature, top_p, req.top_k or None, n, req.logprobs, echo, stop, req.seed, include_usage,
                bool(req.ignore_eos))


def prompt_token_lists(prompt, tokenizer: Tokenizer) -> list[list[int]]:
    """The prompt field as token-id lists: a string, strings, token ids, or lists of token ids."""
    if isinstance(prompt, str):
        return [tokenizer.encode(prompt)]
    if not prompt:
        raise _bad("prompt is an empty list", "prompt")
    if isinstance(prompt[0], str):
        return [tokenizer.encode(p) for p in prompt]
    lists = [prompt] if isinstance(prompt[0], int) else prompt
    for ids in lists:
        check_token_ids(ids, tokenizer, "prompt")
    return [list(ids) for ids in lists]


def check_token_ids(ids: list[int], tokenizer: Tokenizer, param: str) -> None:
    """400 naming `param` if an id is outside the vocabulary."""
    bad = next((i for i in ids if not 0 <= i < tokenizer.vocab_size), None)
    if bad is not None:
        raise _bad(f"token id {bad} is outside this model's vocabulary (0..{tokenizer.vocab_size - 1})", param)


@dataclass
class Piece:
    """Part of one choice: text and, when asked for, the log-probabilities of the tokens that make it."""

    index: int
    text: str
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    n_tokens: int = 0  # completion tokens this piece accounts for
    token_bytes: list[bytes] = field(default_factory=list)  # each token's own bytes (chat logprobs report them)
    top_bytes: list[dict[str, bytes]] = field(default_factory=list)


def _top(tokenizer: Tokenizer, choices: list[TokenChoice]) -> tuple[dict[str, float], dict[str, bytes]]:
    logprobs: dict[str, float] = {}
    raw: dict[str, bytes] = {}
    for c in choices:  # two ids can print the same (partial bytes): keep the likelier
        if c.text not in logprobs:
            logprobs[c.text] = math.log(c.prob) if c.prob > 0 else -math.inf
            raw[c.text] = tokenizer.decode_bytes([c.id])
    return logprobs, raw


def run_choice(engine: Unbatched | BatchingEngine, tokenizer: Tokenizer, plan: Plan, ids: list[int], index: int,
               seed: int | None, cancelled: Callable[[], bool] = lambda: False, details: list[TokenDetail] | None = None,
               deadline: float = math.inf, live: bool = True) -> Iterator[Piece]:
    """One choice as pieces: the echoed prompt (if asked), then one piece per generated token, then the finish.
    `details`: the prompt's scores when already computed (run_plan scores every prompt in batches). Past `deadline`
    (time.monotonic()), generation stops and the choice finishes with "length": a limit was reached.
    Not `live` (nobody reads the pieces as they come), a batching engine may hand tokens over in bundles."""
    want = plan.logprobs is not None
    offset = 0
    if plan.echo:
        text = tokenizer.decode(ids)
        piece = Piece(index, text)
        if want:
            if details is None:
                details = engine.call(lambda: score_in_detail(engine.model, tokenizer, ids, top_n=plan.logprobs or 0))
            piece.tokens = [d.text for d in details]
            piece.token_logprobs = [d.logprob for d in details]
            piece.token_bytes = [tokenizer.decode_bytes([d.id]) for d in details]
            tops = [_top(tokenizer, d.top) for d in details]
            piece.top_logprobs, piece.top_bytes = [t for t, _ in tops], [b for _, b in tops]
            starts = list(itertools.accumulate((len(t) for t in token_pieces(tokenizer, ids)), initial=0))
            piece.text_offset = starts[:-1]
        offset = len(text)
        yield piece
    if plan.max_tokens == 0:
        yield Piece(index, "", finish_reason="length")
        return
    stream = engine.generate(tokenizer, [tokenizer.eot_id] + ids, max_new_tokens=plan.max_tokens, temperature=plan.temperature,
                             top_k=plan.top_k, top_p=plan.top_p, seed=seed, stop=plan.stop, top_n=plan.logprobs or 0,
                             stop_at_eot=not plan.ignore_eos, live=live)
    with contextlib.closing(stream):  # stopping early takes the sequence out of the batch at once
        for g in stream:
            if cancelled():
                return
            if time.monotonic() > deadline:
                yield Piece(index, "", finish_reason="length")
                return
            yield _piece(g, tokenizer, index, offset, want)
            offset += len(g.piece)  # where the next token's own text starts (stop strings may hold text back)


def _piece(g: GeneratedToken, tokenizer: Tokenizer, index: int, offset: int, want_logprobs: bool) -> Piece:
    if g.id < 0:  # the closing marker: held-back text and the reason
        return Piece(index, g.text, finish_reason=g.finish_reason)
    piece = Piece(index, g.text, n_tokens=1)
    if want_logprobs:
        piece.tokens, piece.token_logprobs = [tokenizer.token_str(g.id)], [g.logprob]
        piece.token_bytes = [tokenizer.decode_bytes([g.id])]
        top, raw = _top(tokenizer, g.top)
        piece.top_logprobs, piece.top_bytes = [top], [raw]
        piece.text_offset = [offset]
    return piece


def run_plan(engine: Unbatched | BatchingEngine, tokenizer: Tokenizer, plan: Plan,
             cancelled: Callable[[], bool] = lambda: False, seconds: float = math.inf, live: bool = True) -> Iterator[Piece]:
    """Every choice of every prompt in order (choice index = prompt index x n + i; seed + index seeds it), within
    `seconds` of model time from the start (Limits.max_request_seconds; see run_choice). The model is reached
    through `engine`: `Unbatched(model)` runs it here, a `BatchingEngine` steps it with other requests
    (`live` False: the pieces are read only at the end, so tokens may come in bundles).
    Echoed prompts with log-probabilities are scored together first, in batched forwards (lm-eval sends lists)."""
    deadline = time.monotonic() + seconds
    scored = [None] * len(plan.prompts)
    if plan.echo and plan.logprobs is not None:
        scored = engine.call(lambda: score_in_detail_many(engine.model, tokenizer, plan.prompts, top_n=plan.logprobs))
    for p, ids in enumerate(plan.prompts):
        for i in range(plan.n):
            index = p * plan.n + i
            seed = None if plan.seed is None else plan.seed + index
            yield from run_choice(engine, tokenizer, plan, ids, index, seed, cancelled, scored[p], deadline, live)


def _logprobs_json(piece: Piece) -> dict:
    return {"tokens": piece.tokens, "token_logprobs": piece.token_logprobs, "top_logprobs": piece.top_logprobs,
            "text_offset": piece.text_offset}


def json_float(x: float) -> float:
    return x if math.isfinite(x) else -9999.0  # JSON has no infinity; OpenAI uses -9999 for impossible tokens


def completion_json(plan: Plan, pieces: list[Piece], model_name: str) -> dict:
    """The whole (non-streamed) response: pieces merged into one choice each."""
    choices: dict[int, dict] = {}
    completion_tokens = 0
    for piece in pieces:
        c = choices.setdefault(piece.index, {"text": "", "index": piece.index, "finish_reason": None,
                                             "logprobs": None if plan.logprobs is None else
                                             {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}})
        c["text"] += piece.text
        if c["logprobs"] is not None:
            for key, value in _logprobs_json(piece).items():
                c["logprobs"][key] += value
        if piece.finish_reason:
            c["finish_reason"] = piece.finish_reason
        completion_tokens += piece.n_tokens
    for c in choices.values():
        if c["logprobs"] is not None:
            _trim_logprobs(c)
    return {"id": plan.id, "object": "text_completion", "created": plan.created, "model": model_name,
            "choices": [choices[i] for i in sorted(choices)], "usage": usage_json(plan, completion_tokens)}


def usage_json(plan: Plan, completion_tokens: int) -> dict:
    prompt_tokens = sum(len(p) for p in plan.prompts)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def _trim_logprobs(choice: dict) -> None:
    """Keep the tokens that start inside the returned text (a stop string's own tokens are cut with it)."""
    lp = choice["logprobs"]
    keep = sum(1 for o in lp["text_offset"] if o < len(choice["text"])) if choice["finish_reason"] == "stop" else len(lp["tokens"])
    for key in lp:
        lp[key] = lp[key][:keep]
    lp["token_logprobs"] = [json_float(x) for x in lp["token_logprobs"]]
    lp["top_logprobs"] = [{k: json_float(v) for k, v in d.items()} for d in lp["top_logprobs"]]


def chunk_json(plan: Plan, piece: Piece, model_name: str, first: bool = False) -> dict:
    """One server-sent event of a streamed completion."""
    logprobs = None
    if plan.logprobs is not None:
        logprobs = _logprobs_json(piece)
        logprobs["token_logprobs"] = [json_float(x) for x in logprobs["token_logprobs"]]
        logprobs["top_logprobs"] = [{k: json_float(v) for k, v in d.items()} for d in logprobs["top_logprobs"]]
    return {"id": plan.id, "object": "text_completion", "created": plan.created, "model": model_name,
            "choices": [{"text": piece.text, "index": piece.index, "logprobs": logprobs, "finish_reason": piece.finish_reason}]}
