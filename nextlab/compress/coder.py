"""Prediction is compression: arithmetic coding driven by the model's next-token distribution.

A range coder (constriction) spends -log2 p(token) bits on each token, so the
compressed size is the model's cross-entropy on the input. The decoder can
only compute one step at a time, so the encoder computes every distribution
the way the decoder will: the same stepping loop (`_lockstep`), the same batch
shapes, kernels, dtype and thread count. The encoder never scores the
input with a teacher-forced pass.

- The input is tokenized losslessly (`encode_bytes`) and cut into B contiguous
  streams, stepped together as one batch: B tokens per step (static: up to 512,
  since a wider batch costs less per token; adaptive: up to 64, since its updates come
  once per block of every stream, and fewer updates per byte learn less). The step is one of two
  kernels, recorded in the file: `ring` (ring.py; modern models) keeps the last
  `window` keys of each stream in a ring and is never rebuilt; `model` is the model's
  own forward with a KVCache, rebuilt from the last quarter context when full. The ring
  runs in bfloat16 where the CPU has bf16 dot products (`dtype`, also recorded), else fp32, and its
  attention runs in attention.py's compiled loops (`attention`, recorded: torch.bmm before version 4).
- Every `block_steps` steps ends a block: its tokens get a checksum, so a decoder
  whose floats differ from the encoder's stops at the first bad block.
- `static`: the weights stay fixed (Deletang et al., 2024).
- `adaptive`: after each block both sides take the same optimizer step on the
  block they have just coded (dynamic evaluation, as nncp does). The start is a checkpoint or, with no checkpoint,
  a fresh model from a seed, which needs nothing shipped beside the file.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import constriction
import numpy as np
import torch

from nextlab.checkpoint import model_fingerprint
from nextlab.compress.container import block_checksum, pack, unpack
from nextlab.compress.ring import ATTENTIONS, RingStep, load_attention
from nextlab.compress.ring import supports as ring_supports
from nextlab.compress.workers import run_parts
from nextlab.errors import NextlabError
from nextlab.model import GPT, ModelConfig
from nextlab.tokenizer import ByteTokenizer, Tokenizer

MODES = ("static", "adaptive")


class ModeDefaults(NamedTuple):
    """What a mode's options become where they leave 0."""

    streams: int
    min_stream_tokens: int
    window_divisor: int  # the ring kernel's window: block_size // this (see default_window)


# Static: a wider step costs less per token (ring kernel, 2 cores: 12.5 tokens/ms at 512 streams, 7-8 at 64), and
# on benchmarks/compress.py's alice29 and stdlib files 512 streams coded 0.5% larger than 64. Adaptive: more
# streams update less often per byte (at 256 streams alice29 coded 12% larger).
MODE_DEFAULTS = {"static": ModeDefaults(512, 512, 2), "adaptive": ModeDefaults(64, 2048, 4)}
KERNELS = ("ring", "model")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# A narrow step costs more per token, and a spawned worker about 2 s to start (workers.py): inputs too small to
# give each worker this many streams are coded in one process.
MIN_WORKER_STREAMS = 64
MAX_WORKERS = 256  # processes; a forged header must not start them without bound
# The model `-m none` builds: small enough to learn fast while it codes.
FRESH_MODEL = ModelConfig(vocab_size=257, block_size=256, n_layer=4, n_head=4, n_embd=128)


@dataclass
class CoderOptions:
    mode: str = "static"  # "static" or "adaptive"
    streams: int = 0  # at most this many streams coded in parallel (0 = the mode's default, MODE_DEFAULTS)
    min_stream_tokens: int = 0  # shorter inputs use fewer streams, each starting cold (0 = the mode's default)
    block_steps: int = 64  # steps per block: one checksum, and one update in adaptive mode
    threads: int = 0  # 0 = PyTorch's current setting; shared among the workers; recorded, and the decoder uses the same
    workers: int = 0  # static: processes, each coding a part of the streams (0 = one per thread, see resolve_workers)
    kernel: str = "auto"  # "ring" (modern models), "model" (any model) or "auto" (ring where it runs); see ring.py
    window: int = 0  # ring kernel: the tokens of context each stream keeps (0 = half the model's block_size, a quarter adaptive)
    dtype: str = "auto"  # ring kernel: "float32", "bfloat16" or "auto" (bfloat16 where the CPU has bf16 dot products)
    attention: str = "auto"  # ring kernel: "numba" (attention.py), "torch" (torch.bmm) or "auto" (see resolve_attention)
    lr: float = 2e-3  # adaptive: Adam learning rate
    train_window: int = 64  # adaptive: tokens per stream in each update (the newest ones)
    grad_clip: float = 1.0

    def problems(self) -> list[str]:
        wrong = [f"{f.name} must be {type(f.default).__name__}, got {getattr(self, f.name)!r}"
                 for f in dataclasses.fields(self) if not _same_kind(getattr(self, f.name), f.default)]
        if wrong:  # e.g. from a forged header: the checks below would compare strings with numbers
            return wrong
        out = []
        if self.mode not in MODES:
            out.append(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.kernel not in KERNELS + ("auto",):
            out.append(f"kernel must be one of auto, {', '.join(KERNELS)}, got {self.kernel!r}")
        for name in ("block_steps", "train_window"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("streams", "min_stream_tokens"):
            if getattr(self, name) < 0:
                out.append(f"{name} must be at least 0 (0 = the mode's default), got {getattr(self, name)}")
        if self.window < 0:
            out.append(f"window must be at least 0 (0 = the default), got {self.window}")
        if self.dtype not in tuple(DTYPES) + ("auto",):
            out.append(f"dtype must be one of auto, {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.kernel == "model" and self.window:
            out.append(f"window {self.window} is for the ring kernel; the model kernel keeps the model's own context")
        if self.kernel == "model" and self.dtype == "bfloat16":
            out.append("dtype bfloat16 is for the ring kernel; the model kernel runs in float32")
        if self.attention not in ATTENTIONS + ("auto",):
            out.append(f"attention must be one of auto, {', '.join(ATTENTIONS)}, got {self.attention!r}")
        if self.kernel == "model" and self.attention == "numba":
            out.append("attention numba is for the ring kernel; the model kernel runs its own (torch)")
        if self.threads < 0:
            out.append(f"threads must be at least 0 (0 = current setting), got {self.threads}")
        if not 0 <= self.workers <= MAX_WORKERS:
            out.append(f"workers must be between 0 (the default) and {MAX_WORKERS}, got {self.workers}")
        if self.mode == "adaptive" and self.workers > 1:
            out.append(f"adaptive mode codes in one process (each update learns from every stream), got workers {self.workers}")
        if not self.lr > 0:
            out.append(f"lr must be positive, got {self.lr}")
        return out


def _same_kind(value, default) -> bool:
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return type(value) is type(default)


def fresh_options(**overrides) -> CoderOptions:
    """Adaptive defaults for a fresh model, which must learn everything from the input itself:
    fewer streams and shorter blocks (many more updates per byte) and a higher learning rate.
    On 80 KB of English text: 3.6 bits/byte against 4.2 with the checkpoint defaults."""
    return dataclasses.replace(CoderOptions(mode="adaptive", streams=16, block_steps=16, train_window=32, lr=8e-3), **overrides)


@dataclass
class CodingStats:
    original_bytes: int
    compressed_bytes: int  # the whole container
    payload_bits: int  # the range coder's output alone
    ideal_bits: float  # sum of -log2 p over the coded tokens (the model's cross-entropy)
    tokens: int
    streams: int
    seconds: float
    threads: int  # per worker
    kernel: str = ""  # the decoding step that ran: "ring, window N, dtype" or "model"
    workers: int = 1

    @property
    def bits_per_byte(self) -> float:
        return 8 * self.compressed_bytes / max(1, self.original_bytes)

    @property
    def ideal_bits_per_byte(self) -> float:
        return self.ideal_bits / max(1, self.original_bytes)

    @property
    def coder_overhead(self) -> float:
        """Payload bits over the ideal code length, as a fraction (0.001 = 0.1%)."""
        return self.payload_bits / self.ideal_bits - 1 if self.ideal_bits > 0 else 0.0

    @property
    def kb_per_s(self) -> float:
        return self.original_bytes / 1000 / max(self.seconds, 1e-9)


def fresh_model(config: ModelConfig = FRESH_MODEL, seed: int = 0) -> tuple[GPT, Tokenizer]:
    """The untrained byte-level model `-m none` starts from (the same weights for the same seed)."""
    tokenizer = ByteTokenizer()
    cfg = dataclasses.replace(config, vocab_size=tokenizer.vocab_size, dropout=0.0)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = GPT(cfg)
    return model.eval(), tokenizer


def resolve_workers(opts: CoderOptions, threads: int, streams: int) -> int:
    """The processes that code `streams` streams: adaptive one; static `opts.workers` or by default one per thread,
    as long as each gets MIN_WORKER_STREAMS streams; never more than the streams."""
    if opts.mode == "adaptive":
        return 1
    wanted = opts.workers or min(threads, streams // MIN_WORKER_STREAMS)
    return max(1, min(wanted, streams))


def _split(lengths: list[int], parts: int) -> list[list[int]]:
    """Contiguous runs of streams, as equal in number as can be (the first ones longer by one)."""
    sizes = [len(lengths) // parts + (i < len(lengths) % parts) for i in range(parts)]
    starts = np.cumsum([0] + sizes)
    return [lengths[a:b] for a, b in zip(starts[:-1], starts[1:])]


def _stream_lengths(n_tokens: int, opts: CoderOptions) -> list[int]:
    """Contiguous stream lengths, equal but for a shorter last one; non-increasing."""
    if n_tokens == 0:
        return []
    wanted = max(1, min(opts.streams, n_tokens // opts.min_stream_tokens))
    per = math.ceil(n_tokens / wanted)
    count = math.ceil(n_tokens / per)
    return [per] * (count - 1) + [n_tokens - per * (count - 1)]


def _prefill(model: GPT, hist: torch.Tensor, end: int):
    """A new cache holding the last quarter context of every stream; the logits after it.

    A quarter, not a half: rebuilding is then a third as frequent and costly, and on
    text a byte-level model lost 0.02% of size for it (more context gains little).
    """
    cache = model.make_cache(hist.size(0))
    start = max(0, end - model.cfg.block_size // 4)
    logits, _ = model(hist[:, start:end], cache=cache)
    return cache, logits[:, -1]


class _ModelKernel:
    """The model's own forward with a KVCache, rebuilt from the last quarter context when full."""

    def __init__(self, model: GPT, hist: torch.Tensor) -> None:
        self.model, self.hist, self.cache = model, hist, None

    def __call__(self, end: int) -> torch.Tensor:
        """The logits after the first `end` columns of hist (called with end = 1, 2, 3, ...)."""
        if self.cache is None or self.cache.length == self.cache.capacity:
            self.cache, logits = _prefill(self.model, self.hist, end)
            return logits
        return self.model(self.hist[:, end - 1 : end], cache=self.cache)[0][:, -1]

    def refresh(self) -> None:
        pass  # the cache keeps the keys and values the old weights computed; the forward reads the new weights


class _RingKernel:
    """RingStep (ring.py): the last `window` tokens of every stream, never rebuilt."""

    def __init__(self, model: GPT, hist: torch.Tensor, window: int, dtype: str, attention: str) -> None:
        self.hist, self.step = hist, RingStep(model, hist.size(0), window, DTYPES[dtype], attention)

    def __call__(self, end: int) -> torch.Tensor:
        return self.step(self.hist[:, end - 1])

    def refresh(self) -> None:
        self.step.refresh()  # the fused weights, from the model's updated ones


def default_window(model: GPT, mode: str) -> int:
    """Static: half the model's context. The model kernel sees between a quarter and all of it (a rebuild keeps the
    last quarter), 160 of 256 tokens on average; with benchmarks/compress.py's models and 512 streams, the stdlib
    test file codes 3.2% larger than with the model kernel at a 64-token window, 1.4% at 96 and 0.7% at 128, while
    each key read costs time (18.7, 16.7 and 15.0 KB/s). Adaptive: a quarter, since a model that keeps learning
    needs less context (alice29 coded 0.5% smaller at 64 than at 128, the stdlib file 0.1% smaller) and its time
    goes to the updates, so each step's key reads weigh more."""
    return max(1, model.cfg.block_size // MODE_DEFAULTS[mode].window_divisor)


def native_bf16() -> bool:
    """Whether this CPU has bf16 dot products (AVX512-BF16), where a bf16 matmul runs at about twice fp32's
    rate. Without them PyTorch emulates bf16, several times slower than fp32 (measured on an AVX2 machine)."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check and check())


def resolve_options(model: GPT, opts: CoderOptions) -> CoderOptions:
    """The options as the coder runs them and the header records them: the mode's stream defaults, the kernel
    ("auto" is the ring wherever it can run), the ring's window (0 = the default, at most the model's
    block_size) and dtype ("auto" is bfloat16 on a CPU with bf16 dot products) filled in; the ring's attention is
    left to resolve_attention, once the threads per worker are known."""
    defaults = MODE_DEFAULTS[opts.mode]
    opts = dataclasses.replace(opts, streams=opts.streams or defaults.streams,
                               min_stream_tokens=opts.min_stream_tokens or defaults.min_stream_tokens)
    kernel = ("ring" if ring_supports(model) else "model") if opts.kernel == "auto" else opts.kernel
    if kernel == "model":
        if opts.window:  # "auto" on a model the ring cannot run (problems() refuses kernel "model" with a window)
            raise NextlabError(f"window {opts.window} is for the ring kernel, which runs modern models only (rotary positions)")
        if opts.dtype == "bfloat16":
            raise NextlabError("dtype bfloat16 is for the ring kernel, which runs modern models only (rotary positions)")
        if opts.attention == "numba":
            raise NextlabError("attention numba is for the ring kernel, which runs modern models only (rotary positions)")
        return dataclasses.replace(opts, kernel=kernel, dtype="float32", attention="torch")
    if not ring_supports(model):
        raise NextlabError("the ring kernel runs modern models only (rotary positions); use kernel 'model'")
    window = opts.window or default_window(model, opts.mode)
    if window > model.cfg.block_size:
        raise NextlabError(f"window {window} exceeds the model's context (block_size {model.cfg.block_size})")
    dtype = opts.dtype if opts.dtype != "auto" else "bfloat16" if native_bf16() else "float32"
    return dataclasses.replace(opts, kernel=kernel, window=window, dtype=dtype)


def resolve_attention(opts: CoderOptions, threads: int) -> str:
    """"auto" with `threads` threads per worker: attention.py's loops where a worker has one thread, torch.bmm where
    it has more. The loops are single-threaded: in a 2-thread process a step with them took 14-27% longer than with
    the bmms, which use both threads, and splitting them across Python threads was slower still (PyTorch's idle
    threads spin)."""
    if opts.attention != "auto":
        return opts.attention
    return "numba" if threads == 1 else "torch"


def _unresolved(opts: CoderOptions, resolved: CoderOptions) -> str:
    return ", ".join(k for k, v in vars(opts).items() if v != getattr(resolved, k))


def _kernel_name(opts: CoderOptions) -> str:
    return f"ring, window {opts.window}, {opts.dtype}, {opts.attention} attention" if opts.kernel == "ring" else opts.kernel


def _update(model: GPT, optimizer, hist: torch.Tensor, end: int, rows: int, opts: CoderOptions) -> None:
    """One optimizer step on the newest tokens of the first `rows` streams (identical on both sides)."""
    start = max(0, end - 1 - min(opts.train_window, model.cfg.block_size))
    x, y = hist[:rows, start : end - 1], hist[:rows, start + 1 : end]
    with torch.enable_grad():
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
        optimizer.step()


def _lockstep(
    model: GPT,
    eot_id: int,
    lengths: list[int],
    opts: CoderOptions,
    code_step: Callable[[np.ndarray], np.ndarray],
    end_block: Callable[[int, np.ndarray], None],
    progress: Callable[[int], None] | None,
) -> torch.Tensor:
    """The loop both sides run: distributions -> coded tokens -> next distributions.

    `code_step(probs)` gets the float64 distributions of the active streams (a
    prefix of the rows, as lengths never increase) and returns their tokens: the
    encoder encodes the known ones, the decoder decodes them. `end_block(i, tokens)`
    sees each finished block (steps x streams). Returns every stream's tokens
    after a leading end-of-text, padded with end-of-text.
    """
    B, n_steps = len(lengths), lengths[0]
    hist = torch.full((B, n_steps + 1), eot_id, dtype=torch.long)
    optimizer = None
    if opts.mode == "adaptive":
        optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr, betas=(0.9, 0.99), foreach=False)
    if opts.kernel == "ring":
        kernel = _RingKernel(model, hist, opts.window, opts.dtype, opts.attention)
    else:
        kernel = _ModelKernel(model, hist)
    logits = kernel(1)
    active = B
    block_start = 0
    for t in range(n_steps):
        while lengths[active - 1] <= t:
            active -= 1
        probs = torch.softmax(logits.double(), dim=-1).numpy()
        if not np.isfinite(probs[:active]).all():  # an adaptive update diverged: no code can be built from NaN
            raise NextlabError(f"the model's predictions became non-finite at token {t} of each stream (adaptive mode "
                               f"with lr {opts.lr}); use a lower --lr")
        hist[:active, t + 1] = torch.from_numpy(code_step(probs[:active]).astype(np.int64))
        if progress:
            progress(active)
        end = t + 2  # columns of hist filled
        last = t + 1 == n_steps
        if (t + 1) % opts.block_steps == 0 or last:
            end_block(t // opts.block_steps, hist[:, block_start + 1 : end].numpy())
            block_start = t + 1
            if optimizer is not None and not last:
                # The cache keeps the keys and values the old weights computed: both sides do
                # the same, and recomputing them cost a third of the speed for ~0.1% of size.
                _update(model, optimizer, hist, end, sum(n >= t + 1 for n in lengths), opts)
                kernel.refresh()
        if last:
            break
        logits = kernel(end)
    return hist


def _model_section(model: GPT, tokenizer: Tokenizer, fresh_seed: int | None, source: str) -> dict:
    section = {"fingerprint": model_fingerprint(model, tokenizer), "tokenizer": tokenizer.kind}
    if fresh_seed is None:
        section["source"] = source
    else:
        section["fresh"] = {"seed": fresh_seed, "config": vars(model.cfg)}
    return section


def compress_bytes(
    data: bytes,
    model: GPT,
    tokenizer: Tokenizer,
    opts: CoderOptions | None = None,
    *,
    fresh_seed: int | None = None,
    source: str = "",
    progress: Callable[[int], None] | None = None,
    extra_header: dict | None = None,
) -> tuple[bytes, CodingStats]:
    """Compress `data` with the model; returns the container and its statistics.

    `fresh_seed` says the model is `fresh_model(model.cfg, fresh_seed)` (nothing to
    ship); `source` records where the checkpoint came from (a hint for decompress);
    `extra_header` holds what the coder cannot know, such as the input file's mode.
    The coder runs a copy of the model; the caller's model is left unchanged.
    """
    opts = opts or CoderOptions()
    if opts.problems():
        raise NextlabError("; ".join(opts.problems()))
    threads = opts.threads or torch.get_num_threads()
    opts = resolve_options(model, opts)
    t0 = time.perf_counter()
    tokens = tokenizer.encode_bytes(data)
    if tokenizer.decode_bytes(tokens) != data:
        raise NextlabError(f"the model's {tokenizer.kind} tokenizer does not round-trip this input; use a bytes-level model")
    lengths = _stream_lengths(len(tokens), opts)
    workers = resolve_workers(opts, threads, len(lengths))
    per_worker = max(1, threads // workers)
    opts = dataclasses.replace(opts, workers=workers, threads=per_worker, attention=resolve_attention(opts, per_worker))
    ids = np.array(tokens, dtype=np.int32)
    parts, first = [], 0
    for part in _split(lengths, workers) if lengths else []:
        size = sum(part)
        parts.append((tokenizer.eot_id, ids[first : first + size], part, opts))
        first += size
    _load_attention(opts)
    coded = run_parts(_encode_part, model, parts, opts.threads, progress) if parts else []
    payload = np.concatenate([words for words, _, _ in coded]) if coded else np.zeros(0, dtype=np.uint32)
    header = {
        "mode": opts.mode,
        "model": _model_section(model, tokenizer, fresh_seed, source),
        "original_length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "coder": "constriction.stream.queue.RangeEncoder, Categorical(perfect=False), float64 softmax",
        "options": {k: v for k, v in vars(opts).items() if k != "threads"},
        "threads": opts.threads,
        "streams": lengths,
        "payload_parts": [len(words) for words, _, _ in coded],
        "block_checksums": base64.b64encode(b"".join(b"".join(sums) for _, sums, _ in coded)).decode(),
        **(extra_header or {}),
    }
    blob = pack(header, payload)
    stats = CodingStats(len(data), len(blob), 32 * len(payload), sum(ideal for _, _, ideal in coded), len(tokens), len(lengths),
                        time.perf_counter() - t0, opts.threads, _kernel_name(opts), workers)
    return blob, stats


def _encode_part(model: GPT, eot_id: int, ids: np.ndarray, lengths: list[int], opts: CoderOptions,
                 progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[bytes], float]:
    """Code one part's streams (`ids`: their tokens, one stream after another): its range coder's words, its block
    checksums and its ideal code length in bits."""
    encoder = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    starts = np.cumsum([0] + lengths[:-1])
    checksums: list[bytes] = []
    ideal, step = 0.0, 0

    def code_step(probs: np.ndarray) -> np.ndarray:
        nonlocal ideal, step
        symbols = ids[starts[: len(probs)] + step]
        encoder.encode(symbols, family, probs)
        ideal -= float(np.log2(probs[np.arange(len(probs)), symbols]).sum())
        step += 1
        return symbols

    def end_block(i: int, block: np.ndarray) -> None:
        checksums.append(block_checksum(block))

    with torch.no_grad():
        _lockstep(_working_copy(model), eot_id, lengths, opts, code_step, end_block, progress)
    return encoder.get_compressed(), checksums, ideal


def _decode_part(model: GPT, eot_id: int, payload: np.ndarray, checksums: list[bytes], lengths: list[int],
                 opts: CoderOptions, where: str, progress: Callable[[int], None] | None = None) -> list[int]:
    """One part's tokens, stream after stream, from its words; `where` names the file (and part) in errors."""
    decoder = constriction.stream.queue.RangeDecoder(payload)
    family = constriction.stream.model.Categorical(perfect=False)

    def code_step(probs: np.ndarray) -> np.ndarray:
        try:
            return decoder.decode(family, probs)
        except Exception as e:  # the coder's own complaint about impossible data
            raise NextlabError(f"{where}: the coded data is inconsistent ({e})") from None

    def end_block(i: int, block: np.ndarray) -> None:
        if i >= len(checksums) or block_checksum(block) != checksums[i]:
            raise NextlabError(
                f"{where}: block {i + 1} of {len(checksums)} decodes differently from what was compressed: this machine's "
                f"floating-point results differ from the encoder's (another CPU, PyTorch version or thread count "
                f"than its {opts.threads}); nothing was written"
            )

    with torch.no_grad():
        hist = _lockstep(_working_copy(model), eot_id, lengths, opts, code_step, end_block, progress)
    return [t for row, k in zip(hist[:, 1:].tolist(), lengths) for t in row[:k]]


def _load_attention(opts: CoderOptions) -> None:
    """attention.py's loops for these options, compiled here before any worker is forked (see attention.load)."""
    if opts.kernel == "ring" and opts.attention == "numba":
        load_attention(DTYPES[opts.dtype])


def _working_copy(model: GPT) -> GPT:
    """The model the coder runs: a copy (adaptive mode trains it; no mode changes the caller's model) in fp32,
    eval mode, with the explicit attention."""
    work = copy.deepcopy(model).float().eval()
    work.set_attention(True)
    return work


def read_header(blob: bytes, source: str) -> dict:
    return unpack(blob, source).header


def decompress_bytes(
    blob: bytes,
    model: GPT | None,
    tokenizer: Tokenizer | None,
    *,
    source: str = "input",
    progress: Callable[[int], None] | None = None,
) -> tuple[bytes, CodingStats]:
    """The original bytes of a container; `model` may be None when the file was made with a fresh model.

    Raises NextlabError, and returns nothing, for any mismatch: wrong model,
    damaged file, or a block that decodes differently on this machine.
    """
    t0 = time.perf_counter()
    header, payload, version = unpack(blob, source)
    try:
        mode, msec, lengths = header["mode"], header["model"], header["streams"]
        options = dict(header["options"])
        if version == 1:  # from before the ring kernel: every such file was made with the model's forward
            options.setdefault("kernel", "model")
        if version <= 2:  # from before the bfloat16 ring and workers: every file was coded in float32, in one process
            options.setdefault("dtype", "float32")
            options.setdefault("workers", 1)
        if version <= 3:  # from before attention.py: torch.bmm computed every attention
            options.setdefault("attention", "torch")
        opts = CoderOptions(**options, threads=header["threads"])
        sums = base64.b64decode(header["block_checksums"], validate=True)
        checksums = [sums[i : i + 2] for i in range(0, len(sums), 2)]
        n, digest = int(header["original_length"]), header["sha256"]
        parts = [int(w) for w in header["payload_parts"]] if version >= 3 else [len(payload)] if lengths else []
    except (KeyError, TypeError, ValueError, binascii.Error) as e:
        raise NextlabError(f"{source}: malformed header ({e.__class__.__name__}: {e})") from None
    problems = opts.problems() + ([] if mode == opts.mode else [f"mode {mode!r} but options' mode {opts.mode!r}"])
    if lengths and not 1 <= opts.workers <= len(lengths):
        problems.append(f"workers {opts.workers} for {len(lengths)} streams")
    if len(parts) != (opts.workers if lengths else 0) or sum(parts) != len(payload) or min(parts, default=0) < 0:
        problems.append(f"payload parts {parts} for {opts.workers} workers and {len(payload)} words")
    if opts.kernel == "auto":
        problems.append("kernel 'auto' (a file records the kernel that ran)")
    if opts.dtype == "auto":
        problems.append("dtype 'auto' (a file records the dtype that ran)")
    if opts.attention == "auto":
        problems.append("attention 'auto' (a file records the attention that ran)")
    if problems:
        raise NextlabError(f"{source}: malformed header ({'; '.join(problems)})")
    if "fresh" in msec:
        try:
            cfg = ModelConfig(**msec["fresh"]["config"])
        except TypeError as e:
            raise NextlabError(f"{source}: the fresh model's config does not match this nextlab version ({e})") from None
        model, tokenizer = fresh_model(cfg, int(msec["fresh"]["seed"]))
    elif model is None:
        raise NextlabError(f"{source} was compressed with the model at {msec.get('source') or '(unknown)'}; pass it with -m")
    found = model_fingerprint(model, tokenizer)
    if found != msec["fingerprint"]:
        what = "fresh model (this PyTorch initializes differently)" if "fresh" in msec else "model"
        raise NextlabError(
            f"{source}: wrong {what}: the file needs fingerprint {msec['fingerprint'][:16]}, got {found[:16]}"
            + (f" (compressed with {msec['source']})" if msec.get("source") else "")
        )
    try:
        resolved = resolve_options(model, opts)
    except NextlabError as e:  # e.g. a window past the model's context
        raise NextlabError(f"{source}: malformed header ({e})") from None
    if resolved != opts:  # a 0 the encoder would have filled in
        raise NextlabError(f"{source}: malformed header ({_unresolved(opts, resolved)} left at 0: a file records the "
                           "values its coder ran with)")
    out = b""
    if lengths:
        jobs, word, block = [], 0, 0
        for i, (part, words) in enumerate(zip(_split(lengths, opts.workers), parts)):
            blocks = -(-part[0] // opts.block_steps)  # one checksum per block of the part's longest stream
            where = source if opts.workers == 1 else f"{source} (part {i + 1} of {opts.workers})"
            jobs.append((tokenizer.eot_id, payload[word : word + words], checksums[block : block + blocks], part, opts, where))
            word, block = word + words, block + blocks
        _load_attention(opts)
        out = tokenizer.decode_bytes([t for part in run_parts(_decode_part, model, jobs, opts.threads, progress) for t in part])
    if len(out) != n or hashlib.sha256(out).hexdigest() != digest:
        raise NextlabError(f"{source}: the decoded data fails its SHA-256 check; nothing was written")
    stats = CodingStats(n, len(blob), 32 * len(payload), float("nan"), sum(lengths), len(lengths), time.perf_counter() - t0,
                        opts.threads, _kernel_name(opts), opts.workers)
    return out, stats
