import warnings

import pytest
import torch

from nextlab.checkpoint import load_checkpoint
from nextlab.sample import (
    _StopScanner,
    filter_logits,
    generate,
    generate_stream,
    next_token_distribution,
    score,
    score_in_detail,
    score_in_detail_many,
    token_logprobs,
)


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


def test_generate_is_deterministic_by_seed_and_streams(ckpt):
    m, t = ckpt.model, ckpt.tokenizer
    a = generate(m, t, "the cat", max_new_tokens=40, seed=7)
    b = generate(m, t, "the cat", max_new_tokens=40, seed=7)
    c = generate(m, t, "the cat", max_new_tokens=40, seed=8)
    assert a == b and a != c
    pieces = list(generate_stream(m, t, "the cat", max_new_tokens=40, seed=7, top_n=3))
    assert "".join(p.text for p in pieces) == a
    assert all(len(p.top) == 3 and p.top[0].prob >= p.top[1].prob for p in pieces if p.id >= 0)


def test_greedy_follows_argmax(ckpt):
    m, t = ckpt.model, ckpt.tokenizer
    out = generate(m, t, "the dog", max_new_tokens=5, temperature=0, stop_at_eot=False)
    dist = next_token_distribution(m, t, "the dog", k=1)
    assert out.startswith(dist[0].text)


def test_generation_past_the_context_window(ckpt):
    m, t = ckpt.model, ckpt.tokenizer
    block = m.cfg.block_size
    toks = list(generate_stream(m, t, "the", max_new_tokens=3 * block, temperature=1.0, seed=0, stop_at_eot=False))
    assert len([g for g in toks if g.id >= 0]) == 3 * block and toks[-1].finish_reason == "length"


def test_stop_strings(ckpt):
    m, t = ckpt.model, ckpt.tokenizer
    full = generate(m, t, "", max_new_tokens=80, seed=3, stop_at_eot=False)
    stop = full[10:12]
    cut = generate(m, t, "", max_new_tokens=80, seed=3, stop=[stop], stop_at_eot=False)
    assert cut == full[: full.find(stop)]
    s = _StopScanner(["END"])
    assert s.feed("abcE") == "abc" and s.feed("N") == "" and s.feed("D more") == "" and s.stopped


def test_filter_logits():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert torch.isinf(filter_logits(logits, 1.0, 2, None)).tolist() == [False, False, True, True]
    # probs ~ .64 .24 .09 .03: top_p .7 keeps the first two
    assert torch.isinf(filter_logits(logits, 1.0, None, 0.7)).tolist() == [False, False, True, True]
    assert not torch.isinf(filter_logits(logits, 1.0, None, 1.0)).any()


def test_extreme_top_p_and_temperature_still_sample(ckpt):
    """top_p 1e-320 rounds to 0 in float32 and a temperature of 1e-40 overflows the logits: both still give a token."""
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert torch.isinf(filter_logits(logits, 1.0, None, 1e-320)).tolist() == [False, True, True, True]
    text = generate(ckpt.model, ckpt.tokenizer, "the", max_new_tokens=5, temperature=1e-40, top_p=1e-320, seed=0)
    assert text == generate(ckpt.model, ckpt.tokenizer, "the", max_new_tokens=5, temperature=0)


def test_raw_bytes_are_read_as_they_are(ckpt):
    """Bytes that are not UTF-8 (a prompt from argv, a binary file) go to the model exactly, through encode_bytes."""
    m, t = ckpt.model, ckpt.tokenizer
    raw = b"the \xff\xfe cat"
    assert [s.id for s in score(m, t, raw)] == list(raw)
    ids = [t.eot_id, *raw]
    assert generate(m, t, raw, max_new_tokens=8, seed=3) == generate(m, t, context=ids, max_new_tokens=8, seed=3)
    with torch.no_grad():
        logits, _ = m(torch.tensor([ids]))
    assert [c.id for c in next_token_distribution(m, t, raw, k=3)] == logits[0, -1].topk(3).indices.tolist()


def test_next_token_distribution(ckpt):
    m, t = ckpt.model, ckpt.tokenizer
    choices = next_token_distribution(m, t, "the cat sees the", k=t.vocab_size)
    probs = [c.prob for c in choices]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-4)


def test_score_matches_direct_forward(ckpt):
    m, t = ckpt.model, ckpt.tokenizer
    text = "the big cat sleeps."
    scores = score(m, t, text)
    ids = [t.eot_id] + t.encode(text)
    with torch.no_grad():
        logits, _ = m(torch.tensor([ids]))
    lp = torch.log_softmax(logits[0], -1)
    direct = [float(lp[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    assert [s.logprob for s in scores] == pytest.approx(direct, abs=1e-5)
    assert scores[0].surprisal_bits == pytest.approx(-direct[0] / 0.6931471805599453)


def test_score_long_text_uses_sliding_windows(ckpt):
    m, t = ckpt.model, ckpt.tokenizer
    block = m.cfg.block_size
    ids = t.encode("the old dog runs and the red bird eats. " * 10)
    assert len(ids) > 3 * block
    lps = token_logprobs(m, ids, context=[t.eot_id])
    assert len(lps) == len(ids) and torch.isfinite(lps).all()
    seq = [t.eot_id] + ids
    # the first window's scores are a plain forward over it
    logits, _ = m(torch.tensor([seq[:block]]))
    first = torch.log_softmax(logits[0], -1)[torch.arange(block - 1), torch.tensor(seq[1:block])]
    assert torch.allclose(lps[: block - 1], first, atol=1e-5)
    # a later token is predicted from between block//2 and block tokens before it
    for p in (3 * block, 3 * block + 7):
        candidates = []
        with torch.no_grad():
            for c in range(block // 2, block + 1):
                logits, _ = m(torch.tensor([seq[p - c : p]]))
                candidates.append(float(torch.log_softmax(logits[0, -1], -1)[seq[p]]))
        assert min(abs(x - float(lps[p - 1])) for x in candidates) < 1e-5


def test_long_prompt_is_truncated_with_a_warning(ckpt):
    m, t = ckpt.model, ckpt.tokenizer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        next_token_distribution(m, t, "the cat " * 40, k=3)
    assert any("longer than the context" in str(w.message) for w in caught)


def test_batched_greedy_matches_one_at_a_time(ckpt):
    from nextlab.sample import greedy_continuations

    m, t = ckpt.model, ckpt.tokenizer
    block = m.cfg.block_size
    texts = ["the cat", "the dog", "a bird", "the red tree", "the old river", "a"]
    contexts = [[t.eot_id] + t.encode(x) for x in texts] + [[t.eot_id] + t.encode("the big dog " * 3)[: block - 3]]
    max_new = [5, 5, 8, 3, 0, 12, 10]  # the last one passes the window and decodes alone
    got = greedy_continuations(m, t, contexts, max_new, batch_size=4)
    for ctx, n, ids in zip(contexts, max_new, got):
        alone = [g.id for g in generate_stream(m, t, max_new_tokens=n, temperature=0, context=ctx) if 0 <= g.id != t.eot_id]
        assert ids == alone
        assert len(ids) <= n and t.eot_id not in ids


def test_streamed_text_is_the_decoded_tokens(ckpt):
    """Whatever bytes the model samples (broken UTF-8 included), the pieces join to decode(ids), and so do the raw pieces."""
    m, t = ckpt.model, ckpt.tokenizer
    for seed in range(4):
        toks = list(generate_stream(m, t, "", max_new_tokens=200, temperature=2.0, seed=seed, stop_at_eot=False))
        ids = [g.id for g in toks if g.id >= 0]
        assert "".join(g.text for g in toks) == t.decode(ids)
        assert "".join(g.piece for g in toks if g.id >= 0) + toks[-1].text == t.decode(ids)


def test_scoring_many_texts_in_batches_matches_one_at_a_time(ckpt):
    """Right-padded batches of different lengths, an empty text, and one longer than the context (scored alone, sliding)."""
    tok = ckpt.tokenizer
    texts = [tok.encode(t) for t in ("the dog", "a big red bird sees the old house", "", "the cat. " * 12, "a")]
    assert len(texts[3]) > ckpt.model.cfg.block_size
    many = score_in_detail_many(ckpt.model, tok, texts, top_n=3, batch_size=2)
    for ids, details in zip(texts, many):
        alone = score_in_detail(ckpt.model, tok, ids, top_n=3)
        assert [d.id for d in details] == [d.id for d in alone] == ids
        assert [d.logprob for d in details] == pytest.approx([d.logprob for d in alone], abs=1e-5)
        assert [d.rank for d in details] == [d.rank for d in alone]
        assert [[c.id for c in d.top] for d in details] == [[c.id for c in d.top] for d in alone]
