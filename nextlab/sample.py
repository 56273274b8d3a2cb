"""Use a model as a next-token distribution: generate, look at the next token, score text.

The one sampler and the one scorer; every capability (evals, compression,
serving, probes, tuning) calls these.

Conventions:
- Every text is treated as the start of a document: it is preceded by the
  end-of-text token, as documents are in training. So the first token of a
  text is scored too, and an empty prompt samples a fresh document.
- A prompt longer than the context keeps only its last `block_size - 1`
  tokens, with a warning (generation slides its window the same way).
- `score` covers texts of any length with a sliding window: every token is
  predicted from at least half a context of preceding tokens.
"""

from __future__ import annotations

import codecs
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nextlab.model import GPT
from nextlab.tokenizer import Tokenizer


@dataclass
class TokenChoice:
    id: int
    text: str
    prob: float


@dataclass
class GeneratedToken:
    id: int
    text: str  # the newly printable text (may be "" while a UTF-8 character is incomplete)
    logprob: float  # natural log-probability under the model's distribution (before temperature and filtering)
    top: list[TokenChoice]  # the top candidates of the model's distribution (if asked for)
    sampled_from: list[TokenChoice] = field(default_factory=list)  # top of the distribution actually sampled from
    rank: int = 0  # of the token in the model's distribution (1 = most likely); 0 on the closing marker
    finish_reason: str | None = None  # set on the last item only: "stop" (end-of-text or a stop string) or "length"
    piece: str = ""  # the text this token completes, before stop strings hold any back (see tokenizer.token_pieces)


@dataclass
class TokenScore:
    id: int
    text: str
    logprob: float  # natural log

    @property
    def surprisal_bits(self) -> float:
        return -self.logprob / math.log(2)


def encode_text(tokenizer: Tokenizer, text: str | bytes) -> list[int]:
    """The tokens of a text, or of raw bytes (any bytes, UTF-8 or not: tokenizer.encode_bytes)."""
    return tokenizer.encode_bytes(text) if isinstance(text, bytes) else tokenizer.encode(text)


def prompt_ids(tokenizer: Tokenizer, prompt: str | bytes, block_size: int) -> list[int]:
    """EOT + the prompt's tokens, cut from the left to leave room for one new token."""
    ids = [tokenizer.eot_id] + encode_text(tokenizer, prompt)
    if len(ids) > block_size - 1:
        warnings.warn(
            f"prompt is {len(ids) - 1} tokens, longer than the context ({block_size - 1}); keeping the last {block_size - 1}",
            stacklevel=3,
        )
        ids = ids[-(block_size - 1) :]
    return ids


def top_choices(tokenizer: Tokenizer, probs: torch.Tensor, k: int) -> list[TokenChoice]:
    p, i = probs.topk(min(k, probs.numel()))
    return [TokenChoice(int(j), tokenizer.token_str(int(j)), float(q)) for q, j in zip(p, i)]


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering; filtered-out entries become -inf."""
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix whose mass reaches top_p
        drop[0] = False  # the most likely token stays, even when top_p rounds to 0 in the logits' dtype
        logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    return logits


class _StopScanner:
    """Releases generated text, holding back whatever could still become a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""
        self.released = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        self.text += piece
        hits = [i for i in (self.text.find(s, max(0, self.released - len(s))) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            end = min(hits)
        else:
            end = len(self.text)
            for s in self.stops:  # longest suffix that is a proper prefix of a stop string
                for n in range(min(len(s) - 1, len(self.text)), 0, -1):
                    if self.text.endswith(s[:n]):
                        end = min(end, len(self.text) - n)
                        break
        end = max(end, self.released)
        out = self.text[self.released : end]
        self.released = end
        return out

    def flush(self) -> str:
        out = "" if self.stopped else self.text[self.released :]
        self.released = len(self.text)
        return out


# 0 is greedy, and so is any temperature too small to divide float32 logits by (they overflow, and softmax gives
# NaN); sampling there is greedy anyway, but for exact ties.
GREEDY_BELOW = 1e-30


class Decoding:
    """One generation's choices apart from the model: given each next-token distribution, the token it takes and
    what to yield. `generate_stream` runs one with its own KV cache; the server's continuous batching steps many
    together (serve/batching.py), so a request gives the same tokens alone or in a batch.

    Settings as in `generate_stream`. After `step`, `done` says the generation has ended (its last item is the
    closing marker), otherwise `token` is the token to feed the model next.
    """

    def __init__(self, tokenizer: Tokenizer, max_new_tokens: int = 200, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, stop: Sequence[str] = (), stop_at_eot: bool = True,
                 top_n: int = 0, device: torch.device | str = "cpu") -> None:
        self.tokenizer, self.max_new_tokens, self.temperature = tokenizer, max_new_tokens, temperature
        self.top_k, self.top_p, self.stop_at_eot, self.top_n = top_k, top_p, stop_at_eot, top_n
        self.generator = torch.Generator(device=device)
        if seed is not None:
            self.generator.manual_seed(seed)
        else:
            self.generator.seed()
        self.scanner = _StopScanner(stop)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # holds an incomplete UTF-8 character
        self.generated = 0
        self.token = -1
        self.done = False

    def step(self, logits: torch.Tensor) -> list[GeneratedToken]:
        """The items that the next-token logits (vocab,) lead to: the token chosen, then the closing marker if the
        generation ends here."""
        if self.generated >= self.max_new_tokens:
            return [self._end("length")]
        tokenizer = self.tokenizer
        logits = logits.float()
        logprobs = F.log_softmax(logits, -1)
        probs = None  # greedy: the distribution sampled from is the argmax alone
        if self.temperature < GREEDY_BELOW:
            token = int(logits.argmax())
        else:
            probs = F.softmax(filter_logits(logits, self.temperature, self.top_k, self.top_p), -1)
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        top, sampled_from = [], []
        if self.top_n:
            top = top_choices(tokenizer, logprobs.exp(), self.top_n)
            sampled_from = ([TokenChoice(token, tokenizer.token_str(token), 1.0)] if probs is None
                            else [c for c in top_choices(tokenizer, probs, self.top_n) if c.prob > 0])
        if token == tokenizer.eot_id and self.stop_at_eot:
            return [self._end("stop")]
        self.generated += 1
        self.token = token
        piece = self.decoder.decode(tokenizer.decode_bytes([token]))
        rank = int((logprobs > logprobs[token]).sum()) + 1
        items = [GeneratedToken(token, self.scanner.feed(piece), float(logprobs[token]), top, sampled_from, rank, piece=piece)]
        if self.scanner.stopped:
            self.done = True
            items.append(GeneratedToken(-1, "", 0.0, [], finish_reason="stop"))
        elif self.generated >= self.max_new_tokens:
            items.append(self._end("length"))
        return items

    def _end(self, reason: str) -> GeneratedToken:
        """The closing marker: any held-back text (an incomplete UTF-8 character too) and the finish reason."""
        self.done = True
        self.scanner.feed(self.decoder.decode(b"", final=True))
        return GeneratedToken(-1, self.scanner.flush(), 0.0, [], finish_reason=reason)


def rebuild_context(ids: list[int], block_size: int) -> list[int]:
    """When the context is full: the last 3/4 of it, which the cache is rebuilt from (generation slides this way)."""
    return ids[-(3 * block_size // 4) :]


@torch.inference_mode()
def generate_stream(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str | bytes = "",
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    stop_at_eot: bool = True,
    top_n: int = 0,
    context: Sequence[int] | None = None,
) -> Iterator[GeneratedToken]:
    """Sample a continuation token by token, with the KV cache.

    temperature 0 is greedy. Yields each token with the text it adds, its
    log-probability, its rank and (top_n > 0) the top candidates of the model's
    distribution and of the distribution it was actually drawn from (after
    temperature, top-k, top-p). Generation ends at max_new_tokens, at end-of-text,
    or at a stop string (which is not included in the text); the last item is
    always a marker with id -1, any held-back text and the finish_reason.
    `context`, if given, is the token ids to continue (used as they are, instead
    of EOT + the encoded prompt).
    """
    block = model.cfg.block_size
    device = model.embed_tokens.weight.device
    decoding = Decoding(tokenizer, max_new_tokens, temperature, top_k, top_p, seed, stop, stop_at_eot, top_n, device)
    ids = prompt_ids(tokenizer, prompt, block) if context is None else list(context)[-(block - 1) :]
    cache = model.make_cache(1)
    logits, _ = model(torch.tensor([ids], device=device), cache=cache)
    while True:
        yield from decoding.step(logits[0, -1])
        if decoding.done:
            return
        ids.append(decoding.token)
        if cache.length >= block:  # context full: rebuild the cache from the last 3/4
            ids = rebuild_context(ids, block)
            cache = model.make_cache(1)
            logits, _ = model(torch.tensor([ids], device=device), cache=cache)
        else:
            logits, _ = model(torch.tensor([[decoding.token]], device=device), cache=cache)


@torch.inference_mode()
def greedy_continuations(
    model: GPT, tokenizer: Tokenizer, contexts: Sequence[Sequence[int]], max_new: Sequence[int], batch_size: int = 64
) -> list[list[int]]:
    """Greedy token ids after each context: at most max_new[i] tokens, ending before end-of-text.

    Contexts of equal length decode together in one batch with the KV cache (no padding, so
    every row computes exactly what it would alone, up to float rounding); a context whose
    generation would pass the context window decodes alone with `generate_stream`'s sliding window.
    """
    block = model.cfg.block_size
    device = model.embed_tokens.weight.device
    eot_id = tokenizer.eot_id
    out: list[list[int]] = [[] for _ in contexts]
    by_length: dict[int, list[int]] = {}
    for i, c in enumerate(contexts):
        if len(c) + max_new[i] <= block:
            by_length.setdefault(len(c), []).append(i)
        else:
            stream = generate_stream(model, tokenizer, max_new_tokens=max_new[i], temperature=0, context=c)
            out[i] = [t.id for t in stream if t.id >= 0 and t.id != eot_id]
    for rows in by_length.values():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            cache = model.make_cache(len(chunk))
            logits, _ = model(torch.tensor([list(contexts[i]) for i in chunk], device=device), cache=cache)
            done = [max_new[i] == 0 for i in chunk]
            for _ in range(max(max_new[i] for i in chunk)):
                nxt = logits[:, -1].argmax(-1)
                for r, i in enumerate(chunk):
                    if not done[r]:
                        token = int(nxt[r])
                        if token == eot_id:
                            done[r] = True
                        else:
                            out[i].append(token)
                            done[r] = len(out[i]) >= max_new[i]
                if all(done):
                    break
                logits, _ = model(nxt[:, None], cache=cache)
    return out


def generate(model: GPT, tokenizer: Tokenizer, prompt: str | bytes = "", **kwargs) -> str:
    """The sampled continuation as one string (see generate_stream for the options)."""
    return "".join(t.text for t in generate_stream(model, tokenizer, prompt, **kwargs))


@torch.inference_mode()
def next_token_distribution(model: GPT, tokenizer: Tokenizer, prefix: str | bytes, k: int = 10) -> list[TokenChoice]:
    """The k most likely next tokens after `prefix`, with their probabilities."""
    device = model.embed_tokens.weight.device
    ids = prompt_ids(tokenizer, prefix, model.cfg.block_size)
    logits, _ = model(torch.tensor([ids], device=device))
    return top_choices(tokenizer, F.softmax(logits[0, -1].float(), -1), k)


def _sliding_logprobs(model: GPT, seq: Sequence[int], first: int) -> Iterator[tuple[int, torch.Tensor]]:
    """For positions first..len(seq)-1, the log-distributions predicting them, in runs (start, rows).

    Each window starts as early as lets it reach the end of the sequence, so a token never sees
    less context than it could, and at least half a context (stride block/2) once the text is longer.
    """
    device = model.embed_tokens.weight.device
    block = model.cfg.block_size
    n = len(seq)
    if first == 0:
        raise ValueError("scoring needs at least one token of context (e.g. end-of-text)")
    keep = block - max(1, block // 2)  # context carried into each later window
    pos = first  # next position of seq to score
    while pos < n:
        a = max(0, min(pos - 1 - keep, n - 1 - block))
        b = min(n, a + block)  # the window seq[a:b]; its j-th logits predict seq[a + j + 1]
        logits, _ = model(torch.tensor([seq[a:b]], device=device))
        end = min(n, b + 1)
        yield pos, F.log_softmax(logits[0, pos - a - 1 : end - a - 1].float(), -1).cpu()
        pos = end


@torch.inference_mode()
def token_logprobs(model: GPT, ids: Sequence[int], context: Sequence[int] = (), greedy: bool = False):
    """log p(ids[i] | context + ids[:i]) for every i, over any length (sliding window, stride block/2).

    With greedy=True also returns, per token, whether it was the argmax.
    """
    seq = list(context) + list(ids)
    first = len(context)
    out = torch.empty(len(ids))
    hits = torch.zeros(len(ids), dtype=torch.bool)
    for pos, lp in _sliding_logprobs(model, seq, first):
        targets = torch.tensor(seq[pos : pos + len(lp)])
        out[pos - first : pos - first + len(lp)] = lp[torch.arange(len(lp)), targets]
        hits[pos - first : pos - first + len(lp)] = lp.argmax(-1) == targets
    return (out, hits) if greedy else out


@dataclass
class TokenDetail:
    id: int
    text: str
    logprob: float  # natural log
    rank: int  # 1 = the model's most likely token (GLTR's view of a text)
    top: list[TokenChoice]  # the model's top candidates at this position

    @property
    def surprisal_bits(self) -> float:
        return -self.logprob / math.log(2)


@torch.inference_mode()
def score_in_detail(model: GPT, tokenizer: Tokenizer, ids: Sequence[int], top_n: int = 10) -> list[TokenDetail]:
    """Each token of `ids` (read after end-of-text): its log-probability, its rank and the top candidates."""
    seq = [tokenizer.eot_id] + list(ids)
    out: list[TokenDetail] = []
    for pos, lp in _sliding_logprobs(model, seq, 1):
        out += _details(tokenizer, seq[pos : pos + len(lp)], lp, top_n)
    return out


@torch.inference_mode()
def score_in_detail_many(model: GPT, tokenizer: Tokenizer, texts: Sequence[Sequence[int]], top_n: int = 10,
                         batch_size: int = 32) -> list[list[TokenDetail]]:
    """`score_in_detail` of many token lists: those that fit the context in right-padded batches, one forward each
    (padding only follows the real tokens, so causal attention never sees it); longer ones alone, sliding."""
    out: list[list[TokenDetail]] = [[] for _ in texts]
    fits = sorted((i for i, ids in enumerate(texts) if 0 < len(ids) < model.cfg.block_size), key=lambda i: len(texts[i]))
    for i, ids in enumerate(texts):
        if len(ids) >= model.cfg.block_size:
            out[i] = score_in_detail(model, tokenizer, ids, top_n)
    for start in range(0, len(fits), batch_size):
        idx = fits[start : start + batch_size]
        seqs = [[tokenizer.eot_id] + list(texts[i]) for i in idx]
        lp = F.log_softmax(padded_logits(model, [s[:-1] for s in seqs]).float(), -1).cpu()
        for row, i in enumerate(idx):
            out[i] = _details(tokenizer, seqs[row][1:], lp[row, : len(seqs[row]) - 1], top_n)
    return out


def padded_logits(model: GPT, inputs: Sequence[Sequence[int]]) -> torch.Tensor:
    """The logits of token lists right-padded into one batch: padding only follows the real tokens, so causal
    attention never sees it, and each row's logits up to its length are its own."""
    x = torch.zeros((len(inputs), max(len(s) for s in inputs)), dtype=torch.long)
    for row, s in enumerate(inputs):
        x[row, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    logits, _ = model(x.to(model.embed_tokens.weight.device))
    return logits


def _details(tokenizer: Tokenizer, tokens: Sequence[int], rows: torch.Tensor, top_n: int) -> list[TokenDetail]:
    """TokenDetails of `tokens`, each read off the log-distribution (a row of `rows`) that predicted it."""
    out = []
    for token, row in zip(tokens, rows):
        top = top_choices(tokenizer, row.exp(), top_n) if top_n else []
        if token >= row.numel():  # an input-only token (a chat role marker): never predicted
            out.append(TokenDetail(token, tokenizer.token_str(token), -math.inf, row.numel() + 1, top))
            continue
        rank = int((row > row[token]).sum()) + 1
        out.append(TokenDetail(token, tokenizer.token_str(token), float(row[token]), rank, top))
    return out


@dataclass
class ContinuationScore:
    logprobs: torch.Tensor  # log p of each continuation token given the context and the tokens before it
    greedy: torch.Tensor  # bool per token: was it the model's most likely next token (teacher forcing)?


@torch.inference_mode()
def score_continuations(
    model: GPT, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], batch_size: int = 32
) -> list[ContinuationScore]:
    """Score each continuation after its context: per-token log-probabilities and greedy hits.

    Pairs that fit the context window are scored in right-padded batches (padding only ever
    follows the real tokens, so causal attention never sees it); longer ones, one at a time
    with `token_logprobs`.
    Wrap the call in torch.autocast to score under bf16.
    """
    block = model.cfg.block_size
    out: list[ContinuationScore | None] = [None] * len(contexts)
    fits = [i for i in range(len(contexts)) if len(contexts[i]) + len(continuations[i]) - 1 <= block]
    if any(not c for c in contexts):
        raise ValueError("score_continuations needs at least one token of context per pair (e.g. end-of-text)")
    for i in sorted(set(range(len(contexts))) - set(fits)):
        out[i] = ContinuationScore(*token_logprobs(model, continuations[i], context=contexts[i], greedy=True))
    fits.sort(key=lambda i: len(contexts[i]) + len(continuations[i]))
    for start in range(0, len(fits), batch_size):
        idx = fits[start : start + batch_size]
        seqs = [list(contexts[i]) + list(continuations[i]) for i in idx]
        lp = F.log_softmax(padded_logits(model, [s[:-1] for s in seqs]).float(), -1).cpu()
        best = lp.argmax(-1)
        for row, i in enumerate(idx):
            c, n = len(contexts[i]), len(continuations[i])
            positions = torch.arange(c - 1, c - 1 + n)  # logits at position p predict token p + 1
            targets = torch.tensor(list(continuations[i]), dtype=torch.long)
            out[i] = ContinuationScore(lp[row, positions, targets], best[row, positions] == targets)
    return out


def document_logprobs(model: GPT, docs: Sequence[Sequence[int]], eot_id: int, batch_size: int = 32) -> list[float]:
    """Total natural-log probability of each document read from a document boundary: log p(doc, EOT | EOT).

    The closing end-of-text token counts: ending the document is part of predicting it.
    """
    scores = score_continuations(model, [[eot_id]] * len(docs), [list(d) + [eot_id] for d in docs], batch_size)
    return [float(s.logprobs.sum()) for s in scores]


def score(model: GPT, tokenizer: Tokenizer, text: str | bytes) -> list[TokenScore]:
    """Each token of `text` (or of raw bytes) with its log-probability given everything before it."""
    ids = encode_text(tokenizer, text)
    lps = token_logprobs(model, ids, context=[tokenizer.eot_id])
    return [TokenScore(i, tokenizer.token_str(i), float(lp)) for i, lp in zip(ids, lps)]


@torch.inference_mode()
def sample_batch(model: GPT, context: Sequence[int], n: int, max_new_tokens: int, eot_id: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> list[list[int]]:
    """n sampled continuations of one context, decoded together (one batch, one KV cache).

    Each ends with end-of-text when the model ended it, or stops at max_new_tokens (or the
    context window). Used where many samples of one prompt are needed (reward-based tuning).
    """
    device = model.embed_tokens.weight.device
    block = model.cfg.block_size
    cache = model.make_cache(n)
    logits, _ = model(torch.tensor([list(context)] * n, device=device), cache=cache)
    out: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    for _ in range(max_new_tokens):
        probs = F.softmax(logits[:, -1].float() / max(temperature, 1e-6), -1)
        nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
        for r in range(n):
            if not done[r]:
                out[r].append(int(nxt[r]))
                done[r] = int(nxt[r]) == eot_id
        if all(done) or cache.length >= block:
            break
        logits, _ = model(nxt[:, None], cache=cache)
    return out


@torch.inference_mode()
def last_logprobs(model: GPT, contexts: Sequence[Sequence[int]], batch_size: int = 32) -> torch.Tensor:
    """The next-token log-distribution after each context, (len(contexts), vocab); right-padded batches."""
    out = []
    for start in range(0, len(contexts), batch_size):
        chunk = [list(c)[-model.cfg.block_size :] for c in contexts[start : start + batch_size]]
        logits = padded_logits(model, chunk)
        last = torch.tensor([len(c) - 1 for c in chunk])
        out.append(F.log_softmax(logits[torch.arange(len(chunk)), last].float(), -1).cpu())
    return torch.cat(out)
