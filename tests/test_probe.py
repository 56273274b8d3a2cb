"""Probes, hooks and induction scores: right on cases whose answer is known."""

import numpy as np
import pytest
import torch
from conftest import run_cli

from nextlab.checkpoint import load_checkpoint
from nextlab.errors import NextlabError
from nextlab.model import GPT, ModelConfig
from nextlab.probe import (
    head_scores,
    heads_over_training,
    induction_score_from_pattern,
    logistic_probe,
    plot_heads_over_training,
    previous_token_from_pattern,
    probe,
    ridge_probe,
    statistical_induction_from_pattern,
)
from nextlab.probe.heads import (
    HeadScores,
    induction_baseline,
    induction_pool,
    induction_scores,
    previous_token_baseline,
    statistical_mask,
)


def test_capture_records_named_points_and_changes_nothing():
    model = GPT(ModelConfig(vocab_size=50, n_layer=2, n_head=2, n_embd=16, block_size=16)).eval()
    x = torch.randint(0, 50, (3, 10))
    before = model(x)[0]
    with model.capture(["hook_embed", "blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern"]) as acts:
        during = model(x)[0]
    assert torch.allclose(before, during, atol=1e-5)
    assert acts["hook_embed"][0].shape == (3, 10, 16) and acts["blocks.1.hook_resid_post"][0].shape == (3, 10, 16)
    pattern = acts["blocks.0.attn.hook_pattern"][0]
    assert pattern.shape == (3, 2, 10, 10) and torch.allclose(pattern.sum(-1), torch.ones(3, 2, 10))
    assert torch.all(pattern.triu(1) == 0)  # causal
    assert not model.hooks and all(layer.attn.hook_pattern is None for layer in model.layers)
    with pytest.raises(ValueError, match="unknown hook point"):
        with model.capture(["blocks.9.hook_resid_post"]):
            pass


def test_probes_read_a_linear_latent_and_not_shuffled_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 20))
    w = rng.normal(size=(20, 3))
    y_cont = x @ w + 0.01 * rng.normal(size=(1200, 3))
    y_class = (x @ w).argmax(1)
    assert ridge_probe(x[:800], y_cont[:800], x[800:], y_cont[800:]) > 0.99
    assert logistic_probe(x[:800], y_class[:800], x[800:], y_class[800:]) > 0.95
    shuffled = rng.permutation(1200)
    assert ridge_probe(x[:800], y_cont[shuffled][:800], x[800:], y_cont[shuffled][800:]) < 0.05
    acc = logistic_probe(x[:800], y_class[shuffled][:800], x[800:], y_class[shuffled][800:])
    majority = np.bincount(y_class[800:]).max() / 400
    assert acc < majority + 0.08  # at chance


def even_attention(T: int) -> torch.Tensor:
    """(T, T) even causal attention: query t spreads 1/(t+1) over positions 0..t."""
    return torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]


def test_induction_score_of_hand_built_patterns():
    L, T = 10, 21
    copying = torch.zeros(1, 1, T, T)
    for q in range(T):
        copying[0, 0, q, q - L + 1 if q > L else 0] = 1.0  # second copy: attend to the token after the first occurrence
    assert induction_score_from_pattern(copying, L)[0] == pytest.approx(1.0)
    uniform = even_attention(T)[None, None]
    assert induction_score_from_pattern(uniform, L)[0] == pytest.approx(induction_baseline(L)) and induction_baseline(L) < 0.1
    assert induction_baseline(L) == pytest.approx(np.mean([1 / (1 + L + j + 1) for j in range(L - 1)]))


# A small alphabet, where a bigram-counting head spreads its attention over many positions.
TOKENS = torch.tensor([[0, 1, 0, 2, 1, 0, 0, 1, 2, 2, 0, 1, 1, 0, 2, 0]])


def test_statistical_mask_is_the_positions_after_earlier_occurrences():
    mask = statistical_mask(TOKENS)[0]
    x = TOKENS[0].tolist()
    for t in range(len(x)):
        assert set(mask[t].nonzero().flatten().tolist()) == {s for s in range(1, t + 1) if x[s - 1] == x[t]}
    assert mask[6].tolist()[:7] == [False, True, False, True, False, False, True]  # x_5 = x_6 = 0: s = t counts


def test_statistical_induction_of_hand_built_patterns():
    mask = statistical_mask(TOKENS)[0].float()
    T = TOKENS.shape[1]
    counting = torch.where(mask.sum(-1, keepdim=True) > 0, mask / mask.sum(-1, keepdim=True).clamp(min=1), even_attention(T))
    even = even_attention(T)
    previous = torch.eye(T).roll(-1, dims=1).tril()  # attends to t-1 (t = 0 to itself)
    previous[0, 0] = 1.0
    pattern = torch.stack([counting, even, previous])[None]  # heads: counting, even, previous token
    score, baseline = statistical_induction_from_pattern(pattern, TOKENS)
    assert score[0] == pytest.approx(1.0)
    assert score[1] == pytest.approx(baseline)
    sizes = mask.sum(-1)
    counted = sizes > 0
    assert baseline == pytest.approx(float((sizes / torch.arange(1, T + 1))[counted].mean()))
    assert 0 < baseline < 0.5 and score[2] < 1  # a previous-token head is not a bigram counter
    # min_pos drops early queries from the mean
    late, late_baseline = statistical_induction_from_pattern(pattern, TOKENS, min_pos=8)
    assert late[0] == pytest.approx(1.0) and late[1] == pytest.approx(late_baseline) and late_baseline != baseline
    # no query with an earlier occurrence: NaN, not a crash
    s, b = statistical_induction_from_pattern(even[None, None, :4, :4], torch.tensor([[0, 1, 2, 3]]))
    assert np.isnan(s).all() and np.isnan(b)


def test_previous_token_of_hand_built_patterns():
    T = 12
    previous = torch.zeros(T, T)
    previous[0, 0] = 1.0
    previous[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    pattern = torch.stack([previous, even_attention(T)])[None].repeat(3, 1, 1, 1)
    score = previous_token_from_pattern(pattern)
    assert score[0] == pytest.approx(1.0)
    assert score[1] == pytest.approx(previous_token_baseline(T))
    assert previous_token_baseline(T) == pytest.approx(np.mean([1 / (t + 1) for t in range(1, T)]))


def test_classic_pool_falls_back_to_the_vocabulary_on_a_small_alphabet():
    model = GPT(ModelConfig(vocab_size=40, n_layer=1, n_head=2, n_embd=16, block_size=16))
    eot = 39
    small = torch.tensor([[0, 1, 2, 1, 0, eot, 2]])
    assert sorted(induction_pool(small, eot, model).tolist()) == list(range(39))
    large = torch.arange(20)[None]
    assert sorted(induction_pool(large, eot, model).tolist()) == list(range(20))


def test_head_scores_of_a_tiny_random_gpt():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, n_layer=2, n_head=3, n_embd=24, block_size=32)).eval()
    windows = torch.randint(0, 8, (5, 32))  # a small alphabet: many earlier occurrences
    s = head_scores(model, windows, eot_id=49, batch=4)
    assert isinstance(s, HeadScores)
    for name in HeadScores.NAMES:
        assert s.score(name).shape == (2, 3) and ((s.score(name) >= 0) & (s.score(name) <= 1)).all()
        assert 0 < s.baseline(name) < 1
        layer, head, value = s.best(name)
        assert value == pytest.approx(s.score(name).max()) and s.score(name)[layer, head] == value
    assert s.classic_baseline == pytest.approx(induction_baseline(15))
    assert s.previous_token_baseline == pytest.approx(previous_token_baseline(32))
    d = s.to_dict()
    assert len(d["statistical"]) == 2 and d["best"]["classic"]["layer"] == s.best("classic")[0]
    # chunked capture gives the same scores as one pass
    from nextlab.probe import heads

    one, chunks = [p for _, p in heads.attention_patterns(model, windows)], list(heads.attention_patterns(model, windows, 2 * 3 * 32 * 32))
    assert len(one) == 1 and len(chunks) == 5
    assert torch.allclose(torch.cat([c[1][0] for c in chunks]), one[0][0], atol=1e-6)


def test_probe_token_identity_is_near_perfect_and_deterministic(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    a = probe(ckpt.model, ckpt.tokenizer, "hmm", "token", n_docs=30, seed=1)
    b = probe(ckpt.model, ckpt.tokenizer, "hmm", "token", n_docs=30, seed=1)
    assert a.rows == b.rows
    assert a.rows[0]["hook"] == "hook_embed" and a.rows[0]["score"] > 0.98  # the current token is in the input
    assert {"random_model", "shuffled", "selectivity", "chance"} <= set(a.rows[0])


def test_probe_names_an_unknown_world(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    with pytest.raises(NextlabError, match=r"unknown world 'nonexistent'; choose from arithmetic, .*hmm"):
        probe(ckpt.model, ckpt.tokenizer, "nonexistent")
    with pytest.raises(NextlabError, match="world 'translation' has no default latent"):  # known, but no latent
        probe(ckpt.model, ckpt.tokenizer, "translation")


def test_probe_belief_rows_have_controls(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    r = probe(ckpt.model, ckpt.tokenizer, "hmm", "belief", n_docs=40)
    assert r.continuous and r.metric == "R^2" and len(r.rows) == ckpt.model.cfg.n_layer + 1
    assert r.simplex and len(r.simplex["true"][0]) == 3


def test_induction_scores_shape(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    s = induction_scores(ckpt.model, ckpt.tokenizer.eot_id, batch=4)
    assert s.shape == (ckpt.model.cfg.n_layer, ckpt.model.cfg.n_head) and ((s >= 0) & (s <= 1)).all()


def test_cli_probe_and_heads(tiny_checkpoint, tmp_path):
    r = run_cli("probe", str(tiny_checkpoint), "--world", "arithmetic", "--docs", "80", "--plot", str(tmp_path / "p.png"))
    assert r.returncode == 0, r.stderr
    assert "selectivity" in r.stdout and "random model" in r.stdout and (tmp_path / "p.png").exists()
    r = run_cli("probe", str(tiny_checkpoint), "--world", "hmm", "--latent", "carry")
    assert r.returncode == 2 and "no latent 'carry' for world 'hmm'" in r.stderr
    r = run_cli("heads", str(tiny_checkpoint), "--over-training", "--plot", str(tmp_path / "h.png"))
    assert r.returncode == 0, r.stderr
    for text in ("classic", "statistical", "prev token", "even causal attention (baseline)", "best statistical: layer",
                 "ICL score"):
        assert text in r.stdout
    assert (tmp_path / "h.png").exists()


def test_heads_over_training_rows(tiny_checkpoint, tmp_path):
    ckpt = load_checkpoint(tiny_checkpoint)
    windows = torch.randint(0, 5, (4, ckpt.model.cfg.block_size))  # a caller's own text
    rows = heads_over_training(tiny_checkpoint, windows=windows)
    assert rows and [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    n_layer, n_head = ckpt.model.cfg.n_layer, ckpt.model.cfg.n_head
    for r in rows:
        assert {"checkpoint", "step", "tokens", "best_induction", "icl_score", "early_loss", "late_loss"} <= set(r)
        for name in HeadScores.NAMES:
            assert np.array(r[name]).shape == (n_layer, n_head) and 0 < r[f"{name}_baseline"] < 1
            assert r["best"][name]["score"] == pytest.approx(np.max(r[name]))
        assert r["best_induction"] == r["best"]["classic"]["score"]
    assert plot_heads_over_training(rows, tmp_path / "over.png").exists()
