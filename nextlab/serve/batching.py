"""Continuous batching: one model thread steps every generating sequence together, one token per step.

Scheduling is per iteration, as in Orca (Yu et al., OSDI 2022) and vLLM. A new sequence joins at the next
step: its prompt is prefilled alone and copied into a row of the batch's KV cache. A finished or cancelled
sequence leaves at once, and its row is reused. Each sequence keeps its own position, sampling settings and
seeded generator (`sample.Decoding`). So it yields what `generate_stream` gives alone, up to the float
differences of the batched kernels: the same greedy tokens, log-probabilities within about 1e-6, and the same
seeded draws unless such a difference moves a draw across a boundary of the distribution.

Other model work (scoring) runs on the same thread between steps (`call`). `Unbatched` has the same two
methods and runs everything where it is asked: the server's one-request-at-a-time path.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from nextlab.model import GPT, BatchKVCache
from nextlab.sample import Decoding, GeneratedToken, generate_stream, rebuild_context
from nextlab.tokenizer import Tokenizer

log = logging.getLogger("nextlab.serve")
_END = object()  # after a generation's last item
_STOP = object()  # ends the model thread
BUNDLE_SECONDS = 0.1  # the longest a generation that is not live holds its items (see Generation.deliver)


class Unbatched:
    """Model work done on the calling thread: the caller is the server's one model thread."""

    def __init__(self, model: GPT) -> None:
        self.model = model

    def call(self, fn: Callable[[], object]):
        return fn()

    def generate(self, tokenizer: Tokenizer, context: Sequence[int], live: bool = True, **settings) -> Iterator[GeneratedToken]:
        """As `sample.generate_stream(model, tokenizer, context=context, **settings)`; tokens come as made."""
        return generate_stream(self.model, tokenizer, context=context, **settings)

    def close(self) -> None:
        pass


@dataclass(eq=False)  # compared by identity
class Generation:
    """One sequence being generated: its tokens, its choices, and where its items go."""

    ids: list[int]  # the context the model has seen (rebuilt from its last 3/4 when full)
    decoding: Decoding
    live: bool = True  # hand over every step's items at once (streaming); else in bundles (see deliver)
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # lists of items for the requesting thread
    cancelled: bool = False  # set by the requesting thread when it stops reading
    held: list = field(default_factory=list)
    held_since: float = 0.0

    def deliver(self, items: list) -> None:
        """Items for the requesting thread. Not live, they are held and handed over when the generation ends or
        BUNDLE_SECONDS after the first: each hand-over wakes that thread, which then competes with the model
        thread for the interpreter, so one request's latency grows by a few percent per token handed over."""
        if not self.held:
            self.held_since = time.monotonic()
        self.held += items
        if self.live or self.decoding.done or time.monotonic() - self.held_since > BUNDLE_SECONDS:
            self.out.put(self.held)
            self.held = []
        if self.decoding.done:
            self.out.put(_END)


class BatchingEngine:
    """The model thread of continuous batching: `generate` and `call` are used from request threads."""

    def __init__(self, model: GPT, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model, self.max_batch = model, max_batch
        self.device = model.embed_tokens.weight.device
        self.cache: BatchKVCache = model.make_batch_cache(min(8, max_batch))  # grows as the batch does
        self.rows: list[Generation] = []  # row i of the cache is rows[i]
        self.joining: list[Generation] = []  # waiting for a row, or for their cache to be rebuilt
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False  # once set (under _lock), the model thread has stopped and nothing more is queued
        self._lock = threading.Lock()
        self.steps = 0  # batched steps taken, and the sequences they stepped (for the mean batch size)
        self.stepped = 0
        self.thread = threading.Thread(target=self._run, name="nextlab-model", daemon=True)
        self.thread.start()

    # -- from request threads --

    def call(self, fn: Callable[[], object]):
        """fn() on the model thread, between steps; its result (or its exception)."""
        future: Future = Future()
        self._queue((fn, future))
        return future.result()

    def _queue(self, item) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the model thread has stopped (the server is shutting down)")
            self.inbox.put(item)

    def generate(self, tokenizer: Tokenizer, context: Sequence[int], live: bool = True, **settings) -> Iterator[GeneratedToken]:
        """As `sample.generate_stream(model, tokenizer, context=context, **settings)`, stepped with the batch.
        Not `live`, tokens come in bundles (Generation.deliver). Closing the iterator early (or dropping it)
        takes the sequence out at the next step."""
        block = self.model.cfg.block_size
        g = Generation(list(context)[-(block - 1) :], Decoding(tokenizer, device=self.device, **settings), live)
        self._queue(g)
        try:
            while (items := g.out.get()) is not _END:
                if isinstance(items, BaseException):
                    raise items
                yield from items
        finally:
            g.cancelled = True

    def close(self) -> None:
        """End the model thread; generations still running, and any asked for later, end with an error."""
        self.inbox.put(_STOP)
        self.thread.join(timeout=10)

    # -- the model thread --

    def _run(self) -> None:
        with torch.inference_mode():
            while self._take_inbox(wait=not self.rows and not self.joining):
                try:
                    self._admit()
                    self._drop(lambda g: g.cancelled)
                    if self.rows:
                        self._step()
                except Exception as e:  # the batch fails, the engine goes on
                    log.exception("error while stepping a batch of %d", len(self.rows))
                    self._fail(self.rows, e)
                    self.rows = []
        with self._lock:  # nothing is queued after this
            self._closed = True
        stopped = RuntimeError("the model thread has stopped (the server is shutting down)")
        with contextlib.suppress(queue.Empty):
            while True:
                item = self.inbox.get_nowait()
                if isinstance(item, Generation):
                    self.joining.append(item)
                elif item is not _STOP:
                    item[1].set_exception(stopped)
        self._fail(self.rows + self.joining, stopped)
        self.rows, self.joining = [], []

    def _fail(self, generations: list[Generation], error: Exception) -> None:
        for g in generations:
            g.out.put(error)

    def _take_inbox(self, wait: bool) -> bool:
        """New sequences join; calls run now. False once the engine is closed."""
        with contextlib.suppress(queue.Empty):
            item = self.inbox.get(block=wait)
            while True:
                if item is _STOP:
                    return False
                if isinstance(item, Generation):
                    self.joining.append(item)
                else:
                    fn, future = item
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(fn())
                        except BaseException as e:  # handed to the caller
                            future.set_exception(e)
                item = self.inbox.get_nowait()
        return True

    def _admit(self) -> None:
        """Prefill joining sequences alone, each into a free row, while there is room."""
        while self.joining and len(self.rows) < self.max_batch:
            g = self.joining.pop(0)
            if g.cancelled:
                continue
            try:
                cache = self.model.make_cache(1)
                logits, _ = self.model(torch.tensor([g.ids], device=self.device), cache=cache)
                g.deliver(g.decoding.step(logits[0, -1]))
                if g.decoding.done:
                    continue
                g.ids.append(g.decoding.token)
                self._make_room(len(self.rows) + 1)
                self.cache.put(len(self.rows), cache)
            except Exception as e:  # this sequence fails, the others go on
                log.exception("error while prefilling a sequence")
                g.out.put(e)
                continue
            self.rows.append(g)

    def _make_room(self, rows: int) -> None:
        if rows > self.cache.rows:
            self.cache = self.cache.resized(min(self.max_batch, max(rows, 2 * self.cache.rows)))

    def _step(self) -> None:
        """One token for every row, in one forward; then finished rows leave and full ones are rebuilt."""
        rows = self.rows
        tokens = torch.tensor([[g.decoding.token] for g in rows], device=self.device)
        logits, _ = self.model(tokens, cache=self.cache)
        self.steps, self.stepped = self.steps + 1, self.stepped + len(rows)
        for i, g in enumerate(rows):
            g.deliver(g.decoding.step(logits[i, 0]))
            if not g.decoding.done:
                g.ids.append(g.decoding.token)
        full = [g for i, g in enumerate(rows) if not g.decoding.done and self.cache.lengths[i] >= self.cache.capacity]
        for g in full:  # context full: as alone, the cache is rebuilt from the last 3/4 (at the next admission)
            g.ids = rebuild_context(g.ids, self.model.cfg.block_size)
        self._drop(lambda g: g.decoding.done or g in full)
        self.joining[:0] = full

    def _drop(self, leaves: Callable[[Generation], bool]) -> None:
        """Rows whose sequence leaves are filled by moving the last row in."""
        i = 0
        while i < len(self.rows):
            if leaves(self.rows[i]):
                last = len(self.rows) - 1
                if i != last:
                    self.cache.move(last, i)
                    self.rows[i] = self.rows[last]
                self.rows.pop()
            else:
                i += 1
