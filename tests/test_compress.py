"""Compression: byte-exact round trips in both modes, the container's checks, the coder's overhead."""

import base64
import copy
import dataclasses
import hashlib
import os
import random
import stat
import struct

import pytest
import torch
from conftest import make_text, run_cli, tiny_args
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextlab.checkpoint import load_checkpoint
from nextlab.compress import CoderOptions, compress_bytes, decompress_bytes, fresh_model, read_header
from nextlab.compress.files import compress_file, decompress_file
from nextlab.compress.ring import RingStep
from nextlab.errors import NextlabError
from nextlab.files import current_umask
from nextlab.model import GPT, ModelConfig
from nextlab.tokenizer import BPETokenizer, ByteTokenizer, CharTokenizer

SMALL = ModelConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=32)
# Few tokens per stream and short blocks, so that short inputs still use several streams, fill the ring
# and go round it (with the model kernel: fill and rebuild the cache), and take adaptive updates.
OPTS = dict(streams=4, min_stream_tokens=16, block_steps=8, train_window=16, threads=1)


def roundtrip(data: bytes, model, tokenizer, mode: str, seed=None, **kw):
    opts = CoderOptions(mode=mode, **{**OPTS, **kw})
    blob, stats = compress_bytes(data, model, tokenizer, opts, fresh_seed=seed)
    out, _ = decompress_bytes(blob, None if seed is not None else model, None if seed is not None else tokenizer)
    assert out == data
    return blob, stats


@pytest.fixture(scope="module")
def small():
    return fresh_model(SMALL, seed=7)


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def chars_checkpoint(corpus_file, tmp_path_factory):
    from nextlab.cli import main

    out = tmp_path_factory.mktemp("run") / "chars"
    assert main(tiny_args(corpus_file, out, steps=5, extra=["data.tokenizer=\"chars\""])) == 0
    return out


@pytest.mark.parametrize("mode", ["static", "adaptive"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_roundtrip_any_bytes_fresh_model(small, mode, data):
    roundtrip(data, *small, mode, seed=7)


@pytest.mark.parametrize("mode", ["static", "adaptive"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_roundtrip_utf8_text_checkpoint(tiny, mode, text):
    roundtrip(text.encode(), tiny.model, tiny.tokenizer, mode)


@pytest.mark.parametrize("mode", ["static", "adaptive"])
@pytest.mark.parametrize(
    "data",
    [b"", b"x", b"\x00", os.urandom(5000), make_text(60).encode(), "naïve 日本語 ✓ \U0001f600 <|endoftext|>".encode() * 20],
    ids=["empty", "one-byte", "nul", "random-binary", "text", "unicode"],
)
@pytest.mark.parametrize("kernel, dtype, attention", [("ring", "float32", "numba"), ("ring", "bfloat16", "numba"),
                                                     ("ring", "bfloat16", "torch"), ("model", "float32", "torch")],
                         ids=["ring-fp32", "ring-bf16", "ring-bf16-bmm", "model"])
def test_roundtrip_cases(tiny, mode, data, kernel, dtype, attention):
    blob, _ = roundtrip(data, tiny.model, tiny.tokenizer, mode, kernel=kernel, dtype=dtype, attention=attention)
    options = read_header(blob, "x")["options"]
    assert (options["kernel"], options["dtype"], options["attention"]) == (kernel, dtype, attention)


def test_unseen_characters_with_a_chars_model(chars_checkpoint):
    ckpt = load_checkpoint(chars_checkpoint)
    data = "the cat sees Ωmega and ✓ ".encode() + b"\xff\xfe broken utf-8 \xed\xb2\x80" + make_text(20).encode()
    for mode in ("static", "adaptive"):
        roundtrip(data, ckpt.model, ckpt.tokenizer, mode)


@pytest.mark.parametrize("kind", ["bytes", "chars", "bpe"])
@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_tokenizers_encode_any_bytes_losslessly(kind, data):
    tok = {"bytes": ByteTokenizer(), "chars": _CHARS, "bpe": _BPE}[kind]
    ids = tok.encode_bytes(data)
    assert tok.decode_bytes(ids) == data
    assert tok.eot_id not in ids


_CHARS = CharTokenizer.train([make_text(50)])
_BPE = BPETokenizer.train([make_text(200)], 300)


def test_multi_megabyte_static(small):
    rng = random.Random(0)
    data = make_text(70000).encode()[:2_000_000] + bytes(rng.randrange(256) for _ in range(100_000))
    assert len(data) > 2_000_000
    blob, stats = roundtrip(data, *small, "static", seed=7, streams=256, min_stream_tokens=2048, block_steps=512)
    assert stats.streams == 256


def test_same_input_same_file(tiny):
    data = make_text(40).encode()
    for mode in ("static", "adaptive"):
        opts = CoderOptions(mode=mode, **OPTS)
        a, _ = compress_bytes(data, tiny.model, tiny.tokenizer, opts)
        b, _ = compress_bytes(data, tiny.model, tiny.tokenizer, opts)
        assert a == b


def test_coder_overhead_is_small(tiny):
    data = make_text(800, seed=3).encode()  # ~30 KB of the text the model was trained on
    _, stats = compress_bytes(data, tiny.model, tiny.tokenizer, CoderOptions(threads=1))
    assert stats.ideal_bits_per_byte < 6  # the model has learned something of this text ...
    assert 0 <= stats.coder_overhead < 0.005  # ... and the coder spends < 0.5% over its ideal code length
    assert stats.payload_bits >= stats.ideal_bits


def test_adaptive_learns_while_coding(small):
    rng = random.Random(1)
    data = bytes(rng.randrange(256) for _ in range(64)) * 60  # a pattern only the input itself teaches
    _, static = roundtrip(data, *small, "static", seed=7)
    _, adaptive = roundtrip(data, *small, "adaptive", seed=7, lr=3e-3)
    assert static.ideal_bits_per_byte > 7.5
    assert adaptive.ideal_bits_per_byte < static.ideal_bits_per_byte - 1.5


def test_caller_model_is_untouched_by_adaptive(small):
    model, tok = small
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compress_bytes(make_text(30).encode(), model, tok, CoderOptions(mode="adaptive", **OPTS), fresh_seed=7)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_different_floats_fail_at_the_first_bad_block(tiny, monkeypatch):
    """A machine that computes slightly different floats: decoding stops at a block checksum, naming it."""
    data = make_text(80).encode()
    blob, _ = compress_bytes(data, tiny.model, tiny.tokenizer, CoderOptions(**OPTS))
    other = load_checkpoint(tiny.path)
    with torch.no_grad():
        other.model.lm_head.weight.mul_(1.02)  # stands in for another CPU's rounding
    import nextlab.compress.coder as coder

    monkeypatch.setattr(coder, "model_fingerprint", lambda m, t: read_header(blob, "x")["model"]["fingerprint"])
    with pytest.raises(NextlabError, match=r"block \d+ of \d+ decodes differently.*floating-point"):
        decompress_bytes(blob, other.model, other.tokenizer)


# --- the ring kernel ---------------------------------------------------------------------------


def _jittered(cfg: ModelConfig, seed: int = 0) -> GPT:
    """A model whose every weight matters (a fresh modern model's output projections are zero)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("attention", ["numba", "torch"])
@pytest.mark.parametrize("kv_heads, qk_norm", [(4, True), (2, True), (4, False)], ids=["mha", "gqa", "no-qk-norm"])
def test_ring_step_is_the_model_within_its_window(kv_heads, qk_norm, attention):
    cfg = ModelConfig(vocab_size=257, n_layer=2, n_head=4, n_kv_head=kv_heads, n_embd=64, block_size=32, qk_norm=qk_norm)
    model = _jittered(cfg)
    x = torch.randint(0, 257, (3, 32))
    ring = RingStep(model, streams=3, window=32, attention=attention)
    stepped = torch.stack([ring(x[:, t]) for t in range(32)], dim=1)
    torch.testing.assert_close(stepped, model(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["numba", "torch"])
@pytest.mark.parametrize("kv_heads, qk_norm", [(4, True), (2, True), (4, False)], ids=["mha", "gqa", "no-qk-norm"])
def test_ring_past_its_window_sees_the_last_window_tokens(kv_heads, qk_norm, attention):
    """One layer: the logits at any position are the model's on the last `window` tokens alone, long past
    block_size (keys keep their absolute rotation; only the distance between positions counts)."""
    cfg = ModelConfig(vocab_size=257, n_layer=1, n_head=4, n_kv_head=kv_heads, n_embd=32, block_size=16, qk_norm=qk_norm)
    model, window = _jittered(cfg, seed=1), 8
    x = torch.randint(0, 257, (2, 100))
    ring = RingStep(model, streams=2, window=window, attention=attention)
    for t in range(100):
        logits = ring(x[:, t])
        if t + 1 >= window:
            torch.testing.assert_close(logits, model(x[:, t + 1 - window : t + 1])[0][:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["numba", "torch"])
def test_ring_step_in_bfloat16_stays_close_to_the_model(attention):
    """bf16 weights and keys move each logit by a few percent of the logits' spread at most (a wrong key or
    position moves them by about the spread itself)."""
    cfg = ModelConfig(vocab_size=257, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, block_size=32)
    model = _jittered(cfg)
    x = torch.randint(0, 257, (3, 32))
    ring = RingStep(model, streams=3, window=32, dtype=torch.bfloat16, attention=attention)
    stepped = torch.stack([ring(x[:, t]) for t in range(32)], dim=1)
    with torch.no_grad():
        exact = model(x)[0]
    assert stepped.dtype == torch.float32 and ring.k.dtype == torch.bfloat16
    assert 0 < (stepped - exact).abs().max() < 0.05 * exact.std()
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.bfloat16"):
        RingStep(model, streams=1, window=4, dtype=torch.float16)
    with pytest.raises(ValueError, match="attention must be one of numba, torch"):
        RingStep(model, streams=1, window=4, attention="sdpa")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_attention_is_softmax_attention_and_writes_the_new_slot(dtype):
    """attention.py against the definition, for grouped queries and a ring only partly filled (n < window);
    both loops write the new key and value into their slot first, and leave every other slot alone."""
    from nextlab.compress import attention
    from nextlab.compress.ring import _bits

    g = torch.Generator().manual_seed(0)
    kv_rows, group, hd, window, slot, n = 6, 2, 16, 12, 4, 9
    q = torch.randn(kv_rows * group, hd, generator=g)
    keys = torch.randn(kv_rows, hd, window, generator=g).to(dtype)
    values = torch.randn(kv_rows, window, hd, generator=g).to(dtype)
    new_k, new_v = torch.randn(kv_rows, hd, generator=g).to(dtype), torch.randn(kv_rows, hd, generator=g).to(dtype)
    want_k, want_v = keys.clone(), values.clone()
    want_k[:, :, slot], want_v[:, slot] = new_k, new_v
    k_rows = want_k[:, :, :n].float().repeat_interleave(group, dim=0)  # (rows, hd, n)
    expected = torch.softmax(torch.einsum("rd,rdj->rj", q, k_rows), -1)
    expected = torch.einsum("rj,rjd->rd", expected, want_v[:, :n].float().repeat_interleave(group, dim=0))

    scores = torch.full((q.size(0), window), float("nan"))
    attention.scores(q.numpy(), _bits(keys), _bits(new_k), slot, n, scores.numpy())
    out = torch.empty_like(q)
    attention.mix(torch.softmax(scores[:, :n], -1).contiguous().numpy(), _bits(values), _bits(new_v), slot, n, out.numpy())
    assert torch.equal(keys, want_k) and torch.equal(values, want_v)
    assert scores[:, n:].isnan().all()  # nothing past the filled slots is read or written
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kernels_compute_different_floats_and_files_record_theirs(tiny, dtype):
    from nextlab.compress.container import pack, unpack

    data = make_text(40).encode()
    ring, _ = compress_bytes(data, tiny.model, tiny.tokenizer, CoderOptions(dtype=dtype, **OPTS))
    header, payload, _ = unpack(ring, "x")
    assert (header["options"]["kernel"], header["options"]["dtype"]) == ("ring", dtype)
    assert header["options"]["window"] == tiny.model.cfg.block_size // 2
    other = "bfloat16" if dtype == "float32" else "float32"
    changes = [dict(kernel="model", window=0, dtype="float32", attention="torch"), dict(dtype=other)]
    if dtype == "bfloat16":  # torch's bmm rounds the queries and probabilities to bf16 as well; in fp32 the two differ
        changes.append(dict(attention="torch"))  # in the last bits, which this short input's code may not feel
    for change in changes:
        forged = copy.deepcopy(header)
        forged["options"].update(change)  # the same payload, decoded with other floats
        with pytest.raises(NextlabError, match="decodes differently"):
            decompress_bytes(pack(forged, payload), tiny.model, tiny.tokenizer)


@pytest.mark.parametrize("change, match", [
    (lambda o: o.update(kernel="auto"), r"kernel 'auto' \(a file records the kernel that ran"),
    (lambda o: o.pop("kernel"), r"kernel 'auto'"),  # version 2 names its kernel
    (lambda o: o.update(window=0), r"window left at 0: a file records"),
    (lambda o: o.update(streams=0), r"streams left at 0"),
    (lambda o: o.update(window=999), r"window 999 exceeds the model's context"),
    (lambda o: o.update(window="16"), r"window must be int, got '16'"),
    (lambda o: o.update(window=None, lr="fast"), r"window must be int, got None; lr must be float, got 'fast'"),
    (lambda o: o.update(kernel="model"), r"window \d+ is for the ring kernel"),
    (lambda o: o.update(mode="adaptive"), r"mode 'static' but options' mode 'adaptive'"),
    (lambda o: o.update(dtype="auto"), r"dtype 'auto' \(a file records the dtype that ran"),
    (lambda o: o.pop("dtype"), r"dtype 'auto'"),  # version 3 names its dtype
    (lambda o: o.update(dtype="float16"), r"dtype must be one of auto, float32, bfloat16, got 'float16'"),
    (lambda o: o.update(kernel="model", window=0, dtype="bfloat16"), r"dtype bfloat16 is for the ring kernel"),
    (lambda o: o.update(attention="auto"), r"attention 'auto' \(a file records the attention that ran"),
    (lambda o: o.pop("attention"), r"attention 'auto'"),  # version 4 names its attention
    (lambda o: o.update(attention="sdpa"), r"attention must be one of auto, numba, torch, got 'sdpa'"),
    (lambda o: o.update(kernel="model", window=0, dtype="float32"), r"attention numba is for the ring kernel"),
], ids=["auto", "no-kernel", "window-0", "streams-0", "window-too-long", "window-str", "types", "model-with-window", "modes-disagree",
        "dtype-auto", "no-dtype", "dtype-fp16", "model-in-bf16", "attention-auto", "no-attention", "attention-sdpa",
        "model-with-numba"])
def test_forged_kernel_options_are_refused(packed, tiny, tmp_path, change, match):
    _, nxz = packed
    bad = _repacked(nxz, tmp_path / "bad.nxz", lambda h: change(h["options"]))
    with pytest.raises(NextlabError, match=r"bad.nxz: malformed header \(.*" + match):
        decompress_bytes(bad.read_bytes(), tiny.model, tiny.tokenizer, source=str(bad))


def test_ring_file_with_a_model_the_ring_cannot_run(packed, monkeypatch):
    """The fingerprint comes first (a wrong model is named as such); a ring file whose fingerprint matched a
    GPT-2-style model could only be forged, and is refused before any step."""
    import nextlab.compress.coder as coder

    _, nxz = packed
    blob = nxz.read_bytes()
    gpt2 = GPT(ModelConfig(arch="gpt2", vocab_size=257, n_layer=1, n_head=2, n_embd=32, block_size=16)).eval()
    with pytest.raises(NextlabError, match="wrong model"):
        decompress_bytes(blob, gpt2, ByteTokenizer())
    monkeypatch.setattr(coder, "model_fingerprint", lambda m, t: read_header(blob, "x")["model"]["fingerprint"])
    with pytest.raises(NextlabError, match=r"malformed header \(the ring kernel runs modern models only"):
        decompress_bytes(blob, gpt2, ByteTokenizer())


def test_version_1_file_decodes_with_the_model_kernel(tiny):
    """What nextlab wrote before the ring kernel: a version-1 container whose options name no kernel."""
    from nextlab.compress.container import pack, unpack

    data = make_text(40).encode()
    blob, _ = compress_bytes(data, tiny.model, tiny.tokenizer, CoderOptions(kernel="model", **OPTS))
    header, payload, _ = unpack(blob, "x")
    for key in ("kernel", "window"):
        header["options"].pop(key)
    old = pack(header, payload, version=1)
    assert struct.unpack_from("<H", old, 6) == (1,)
    assert decompress_bytes(old, tiny.model, tiny.tokenizer)[0] == data


def test_version_2_file_decodes_in_float32(tiny):
    """What nextlab wrote before the bfloat16 ring: a version-2 container whose options name no dtype."""
    from nextlab.compress.container import pack, unpack

    data = make_text(40).encode()
    blob, _ = compress_bytes(data, tiny.model, tiny.tokenizer, CoderOptions(dtype="float32", attention="torch", **OPTS))
    header, payload, _ = unpack(blob, "x")
    header["options"].pop("dtype")
    header["options"].pop("workers")
    header["options"].pop("attention")
    header.pop("payload_parts")
    old = pack(header, payload, version=2)
    assert decompress_bytes(old, tiny.model, tiny.tokenizer)[0] == data


def test_version_3_file_decodes_with_torch_attention(tiny):
    """What nextlab wrote before attention.py: a version-3 container whose options name no attention."""
    from nextlab.compress.container import pack, unpack

    data = make_text(40).encode()
    blob, _ = compress_bytes(data, tiny.model, tiny.tokenizer, CoderOptions(attention="torch", **OPTS))
    header, payload, _ = unpack(blob, "x")
    header["options"].pop("attention")
    assert decompress_bytes(pack(header, payload, version=3), tiny.model, tiny.tokenizer)[0] == data
    with pytest.raises(NextlabError, match="attention 'auto'"):  # version 4 must name it
        decompress_bytes(pack(header, payload), tiny.model, tiny.tokenizer)


def test_auto_dtype_is_bfloat16_only_where_the_cpu_has_bf16_dot_products(tiny, monkeypatch):
    import nextlab.compress.coder as coder

    for native, dtype in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(coder, "native_bf16", lambda native=native: native)
        assert coder.resolve_options(tiny.model, CoderOptions()).dtype == dtype
        assert coder.resolve_options(tiny.model, CoderOptions(kernel="model")).dtype == "float32"
        assert coder.resolve_options(tiny.model, CoderOptions(dtype="float32")).dtype == "float32"
    gpt2 = GPT(ModelConfig(arch="gpt2", vocab_size=257, n_layer=1, n_head=2, n_embd=32, block_size=16)).eval()
    with pytest.raises(NextlabError, match="dtype bfloat16 is for the ring kernel, which runs modern models only"):
        compress_bytes(b"abc", gpt2, ByteTokenizer(), CoderOptions(dtype="bfloat16", **OPTS))


def test_auto_attention_is_numba_where_each_worker_has_one_thread(tiny):
    data = make_text(40).encode()
    for threads, workers, attention in ((1, 0, "numba"), (2, 1, "torch"), (2, 2, "numba")):
        opts = CoderOptions(**{**OPTS, "threads": threads, "workers": workers})
        blob, _ = compress_bytes(data, tiny.model, tiny.tokenizer, opts)
        assert read_header(blob, "x")["options"]["attention"] == attention
    blob, _ = compress_bytes(data, tiny.model, tiny.tokenizer, CoderOptions(**{**OPTS, "attention": "torch"}))
    assert read_header(blob, "x")["options"]["attention"] == "torch"
    blob, _ = compress_bytes(data, tiny.model, tiny.tokenizer, CoderOptions(**{**OPTS, "kernel": "model"}))
    assert read_header(blob, "x")["options"]["attention"] == "torch"


# --- parts of the streams in worker processes ----------------------------------------------------


def test_workers_code_their_parts_in_processes_and_the_decoder_splits_alike(tiny):
    from nextlab.compress.container import pack, unpack

    data = make_text(60).encode()
    one, st1 = compress_bytes(data, tiny.model, tiny.tokenizer, CoderOptions(**{**OPTS, "threads": 1}))
    two, st2 = compress_bytes(data, tiny.model, tiny.tokenizer, CoderOptions(**{**OPTS, "threads": 2, "workers": 2}))
    header, payload, _ = unpack(two, "x")
    assert (header["options"]["workers"], header["threads"], st2.workers) == (2, 1, 2)
    assert len(header["payload_parts"]) == 2 and sum(header["payload_parts"]) == len(payload)
    assert st2.ideal_bits == pytest.approx(st1.ideal_bits, rel=1e-4)  # the same streams, coded in two batches
    out, dst = decompress_bytes(two, tiny.model, tiny.tokenizer)
    assert out == data and dst.workers == 2
    forged = copy.deepcopy(header)
    forged["options"]["workers"] = 1
    with pytest.raises(NextlabError, match=r"malformed header \(payload parts \[\d+, \d+\] for 1 workers"):
        decompress_bytes(pack(forged, payload), tiny.model, tiny.tokenizer)
    sums = bytearray(base64.b64decode(header["block_checksums"]))
    sums[-1] ^= 1  # the last block of the second part
    header["block_checksums"] = base64.b64encode(bytes(sums)).decode()
    with pytest.raises(NextlabError, match=r"x \(part 2 of 2\): block \d+ of \d+ decodes differently"):
        decompress_bytes(pack(header, payload), tiny.model, tiny.tokenizer, source="x")


def test_workers_with_more_than_one_thread_are_spawned(tiny):
    """Two threads per worker: spawned, not forked (a forked child running OpenMP threads hangs)."""
    data = make_text(30).encode()
    blob, st = compress_bytes(data, tiny.model, tiny.tokenizer, CoderOptions(**{**OPTS, "threads": 4, "workers": 2}))
    assert (st.workers, st.threads, read_header(blob, "x")["threads"]) == (2, 2, 2)
    assert decompress_bytes(blob, tiny.model, tiny.tokenizer)[0] == data


def test_default_workers_one_per_thread_given_enough_streams():
    from nextlab.compress.coder import MIN_WORKER_STREAMS, resolve_workers

    static = CoderOptions()
    assert resolve_workers(static, 2, 2 * MIN_WORKER_STREAMS) == 2
    assert resolve_workers(static, 2, 2 * MIN_WORKER_STREAMS - 1) == 1  # a small input: one process
    assert resolve_workers(static, 1, 512) == 1
    assert resolve_workers(CoderOptions(workers=3), 2, 2) == 2  # never more than the streams
    assert resolve_workers(CoderOptions(mode="adaptive"), 2, 512) == 1
    assert "adaptive mode codes in one process" in CoderOptions(mode="adaptive", workers=2).problems()[0]
    assert "workers must be between 0 (the default) and 256, got -1" in CoderOptions(workers=-1).problems()[0]
    assert "workers must be between" in CoderOptions(workers=10**6).problems()[0]


def test_ring_kernel_needs_a_modern_model_and_a_window_it_has():
    gpt2 = GPT(ModelConfig(arch="gpt2", vocab_size=257, n_layer=1, n_head=2, n_embd=32, block_size=16)).eval()
    tok, data = ByteTokenizer(), make_text(10).encode()
    with pytest.raises(NextlabError, match="ring kernel runs modern models only"):
        compress_bytes(data, gpt2, tok, CoderOptions(kernel="ring", **OPTS))
    blob, _ = compress_bytes(data, gpt2, tok, CoderOptions(**OPTS))  # auto: the model's forward
    assert read_header(blob, "x")["options"]["kernel"] == "model"
    modern, _ = fresh_model(SMALL)
    with pytest.raises(NextlabError, match="window 64 exceeds the model's context .block_size 32"):
        compress_bytes(data, modern, tok, CoderOptions(window=64, **OPTS))
    blob, _ = compress_bytes(data, modern, tok, CoderOptions(window=32, **OPTS))  # the whole context
    assert decompress_bytes(blob, modern, tok)[0] == data
    assert "window must be at least 0" in CoderOptions(window=-1).problems()[0]
    assert "kernel must be one of auto, ring, model" in CoderOptions(kernel="fast").problems()[0]
    with pytest.raises(NextlabError, match="window 8 is for the ring kernel"):
        compress_bytes(data, modern, tok, CoderOptions(kernel="model", window=8, **OPTS))
    with pytest.raises(NextlabError, match="window 8 is for the ring kernel, which runs modern models only"):
        compress_bytes(data, gpt2, tok, CoderOptions(window=8, **OPTS))  # auto: the model kernel, which has no window


def test_stream_and_window_defaults_depend_on_the_mode(tiny):
    from nextlab.compress.coder import MODE_DEFAULTS, resolve_options

    model = tiny.model
    for mode, window in (("static", model.cfg.block_size // 2), ("adaptive", model.cfg.block_size // 4)):
        opts = resolve_options(model, CoderOptions(mode=mode))
        assert (opts.streams, opts.min_stream_tokens) == MODE_DEFAULTS[mode][:2]
        assert (opts.kernel, opts.window) == ("ring", window)
    assert MODE_DEFAULTS["static"].streams > MODE_DEFAULTS["adaptive"].streams  # adaptive updates once per block of every stream
    given = resolve_options(model, CoderOptions(streams=3, min_stream_tokens=5, window=5))
    assert (given.streams, given.min_stream_tokens, given.window) == (3, 5, 5)


# --- files and the command line ----------------------------------------------------------------


@pytest.fixture()
def packed(tiny_checkpoint, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(make_text(50).encode())
    result = compress_file(src, tiny_checkpoint, opts=CoderOptions(**OPTS))
    return src, result.output


def test_cli_roundtrip_with_stats(tiny_checkpoint, tmp_path):
    src = tmp_path / "words.txt"
    src.write_bytes(make_text(100).encode())
    r = run_cli("compress", str(src), "-m", str(tiny_checkpoint), "--stats", "--no-progress", "--threads", "1")
    assert r.returncode == 0, r.stderr
    for line in ("bits per byte", "ideal code length", "coder overhead", "throughput", "gzip -9", "bzip2 -9", "xz -9e", "adjusted"):
        assert line in r.stdout
    out = tmp_path / "restored.txt"
    r = run_cli("decompress", str(src) + ".nxz", "-o", str(out), "--no-progress")  # model found from the file's record
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == src.read_bytes()


def test_cli_fresh_model_needs_no_checkpoint(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(300) + b"abc" * 100)
    assert run_cli("compress", str(src), "-m", "none", "--no-progress", "--streams", "2", "--threads", "1").returncode == 0
    assert read_header((tmp_path / "a.bin.nxz").read_bytes(), "x")["mode"] == "adaptive"
    src.rename(tmp_path / "orig.bin")
    r = run_cli("decompress", str(tmp_path / "a.bin.nxz"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert src.read_bytes() == (tmp_path / "orig.bin").read_bytes()


def _fails(args, match, out):
    r = run_cli(*args, "--no-progress", "--threads", "1") if args[0] == "compress" else run_cli(*args, "--no-progress")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and match in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # no half-written leftovers


def test_wrong_model_is_refused(packed, corpus_file, tmp_path):
    from nextlab.cli import main

    _, nxz = packed
    other = tmp_path / "other"
    assert main(tiny_args(corpus_file, other, steps=2, extra=["train.seed=99"])) == 0
    _fails(["decompress", str(nxz), "-m", str(other), "-o", str(tmp_path / "out")], "wrong model", tmp_path / "out")


def test_truncated_file_is_refused(packed, tmp_path):
    _, nxz = packed
    blob = nxz.read_bytes()
    for cut in (len(blob) - 1, len(blob) // 2, 20, 5):
        bad = tmp_path / f"cut{cut}.nxz"
        bad.write_bytes(blob[:cut])
        _fails(["decompress", str(bad), "-m", "none"], "truncated" if cut > 5 else "not a nextlab", bad.with_suffix(""))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_bit_flip_is_refused(packed, tiny, position, bit):
    _, nxz = packed
    blob = bytearray(nxz.read_bytes())
    i = int(position * len(blob))
    blob[i] ^= 1 << bit
    with pytest.raises(NextlabError, match="corrupted|not a nextlab|version"):
        decompress_bytes(bytes(blob), tiny.model, tiny.tokenizer)


def test_bit_flip_via_cli(packed, tmp_path):
    _, nxz = packed
    blob = bytearray(nxz.read_bytes())
    blob[len(blob) // 2] ^= 4
    bad = tmp_path / "flip.nxz"
    bad.write_bytes(bytes(blob))
    _fails(["decompress", str(bad)], "corrupted", tmp_path / "flip")


def test_unknown_version_is_refused(packed, tmp_path):
    _, nxz = packed
    body = bytearray(nxz.read_bytes()[:-32])
    struct.pack_into("<H", body, 6, 99)
    bad = tmp_path / "v99.nxz"
    bad.write_bytes(bytes(body) + hashlib.sha256(body).digest())
    _fails(["decompress", str(bad)], "format version 99 is not supported", tmp_path / "v99")


def test_bad_block_checksum_via_cli(packed, tmp_path):
    """A valid container whose block checksum disagrees (what another CPU's floats would cause)."""
    import json

    from nextlab.compress.container import pack, unpack

    _, nxz = packed
    header, payload, _ = unpack(nxz.read_bytes(), "x")
    sums = bytearray(base64.b64decode(header["block_checksums"]))
    sums[2:4] = bytes([sums[2] ^ 1, sums[3]])  # block 2's checksum
    header["block_checksums"] = base64.b64encode(bytes(sums)).decode()
    bad = tmp_path / "blk.nxz"
    bad.write_bytes(pack(json.loads(json.dumps(header)), payload))
    _fails(["decompress", str(bad)], "block 2 of", tmp_path / "blk")


def test_cli_input_errors(tiny_checkpoint, packed, tmp_path):
    src, nxz = packed
    _fails(["compress", str(tmp_path / "missing"), "-m", str(tiny_checkpoint)], "no such file", tmp_path / "missing.nxz")
    r = run_cli("compress", str(src), "-m", str(tiny_checkpoint), "--no-progress", "--threads", "1")  # in.txt.nxz exists
    assert r.returncode == 2 and "already exists" in r.stderr
    r = run_cli("compress", str(src), "-m", str(tiny_checkpoint), "--streams", "-1", "-o", str(tmp_path / "z"))
    assert r.returncode == 2 and "streams must be at least 0" in r.stderr
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"hello")
    _fails(["decompress", str(plain), "-o", str(tmp_path / "p.out")], "not a nextlab compressed file", tmp_path / "p.out")
    r = run_cli("decompress", str(nxz), "--no-progress")  # in.txt exists
    assert r.returncode == 2 and "already exists" in r.stderr


def test_options_are_recorded(packed, tiny):
    _, nxz = packed
    header = read_header(nxz.read_bytes(), "x")
    assert header["threads"] == 1 and header["options"]["block_steps"] == 8
    assert "Categorical(perfect=False)" in header["coder"]
    assert len(base64.b64decode(header["block_checksums"])) == 2 * -(-header["streams"][0] // 8)
    from nextlab.compress.coder import native_bf16

    dtype = "bfloat16" if native_bf16() else "float32"
    resolved = CoderOptions(**OPTS, kernel="ring", window=tiny.model.cfg.block_size // 2, dtype=dtype, workers=1,
                            attention="numba")  # "auto" and 0 filled in
    assert dataclasses.asdict(CoderOptions(**header["options"], threads=1)) == dataclasses.asdict(resolved)


# --- the original's mode and modification time ---------------------------------------------------

OLD_MTIME_NS = 1_234_567_890_123_456_789  # 2009, with nanoseconds a coarse filesystem would lose


def _repacked(nxz, out, change):
    """A copy of the container `nxz` at `out`, its header changed by `change(header)`, with a valid digest."""
    from nextlab.compress.container import pack, unpack

    header, payload, _ = unpack(nxz.read_bytes(), "x")
    change(header)
    out.write_bytes(pack(header, payload))
    return out


@pytest.mark.parametrize("mode, restored", [(0o640, 0o640), (0o4750, 0o750)], ids=["rw-r-----", "setuid-dropped"])
def test_decompress_restores_mode_and_mtime(tiny_checkpoint, tmp_path, mode, restored):
    src = tmp_path / "in.txt"
    src.write_bytes(make_text(20).encode())
    os.chmod(src, mode)
    os.utime(src, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    nxz = compress_file(src, tiny_checkpoint, opts=CoderOptions(**OPTS)).output
    assert read_header(nxz.read_bytes(), "x")["file"] == {"mode": mode, "mtime_ns": OLD_MTIME_NS}
    out = decompress_file(nxz, out=tmp_path / "restored.txt").output
    assert out.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == restored
    assert out.stat().st_mtime_ns == OLD_MTIME_NS


def test_input_that_is_not_a_file_records_no_mode(tiny_checkpoint, tmp_path):
    nxz = compress_file("/dev/null", tiny_checkpoint, tmp_path / "null.nxz", CoderOptions(**OPTS)).output
    assert "file" not in read_header(nxz.read_bytes(), "x")
    out = decompress_file(nxz, out=tmp_path / "null").output
    assert out.read_bytes() == b"" and stat.S_IMODE(out.stat().st_mode) == 0o666 & ~current_umask()


def test_file_without_mode_still_decompresses(packed, tmp_path):
    """What nextlab wrote before the mode and mtime were recorded: the same container, no `file` key."""
    src, nxz = packed
    old = _repacked(nxz, tmp_path / "old.nxz", lambda h: h.pop("file"))
    out = decompress_file(old, out=tmp_path / "old").output
    assert out.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~current_umask()


@pytest.mark.parametrize("value", [-1, 0o10000, True, None, 6.5], ids=str)
def test_bad_mode_in_header_is_refused(packed, tmp_path, value):
    _, nxz = packed
    bad = _repacked(nxz, tmp_path / "bad.nxz", lambda h: h["file"].update(mode=value))
    with pytest.raises(NextlabError, match=r"bad.nxz: malformed header \(file.mode"):
        decompress_file(bad, out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_bad_mode_in_header_via_cli(packed, tmp_path):
    _, nxz = packed
    bad = _repacked(nxz, tmp_path / "mode.nxz", lambda h: h["file"].update(mode="rw-r--r--"))
    _fails(["decompress", str(bad)], "mode.nxz: malformed header (file.mode 'rw-r--r--' is not a permission mode",
           tmp_path / "mode")
