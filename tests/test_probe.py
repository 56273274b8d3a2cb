"""Probes, hooks and induction scores: right on cases whose answer is known."""

import numpy as np
import pytest
import torch
from conftest import run_cli

from nextlab.checkpoint import load_checkpoint
from nextlab.model import GPT, ModelConfig
from nextlab.probe import induction_score_from_pattern, logistic_probe, probe, ridge_probe
from nextlab.probe.heads import induction_scores


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


def test_induction_score_of_hand_built_patterns():
    L, T = 10, 21
    copying = torch.zeros(1, 1, T, T)
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    for q in range(T):
        copying[0, 0, q, q - L + 1 if q > L else 0] = 1.0  # second copy: attend to the token after the first occurrence
    assert induction_score_from_pattern(copying, L)[0] == pytest.approx(1.0)
    assert induction_score_from_pattern(uniform[None, None], L)[0] < 0.1


def test_probe_token_identity_is_near_perfect_and_deterministic(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    a = probe(ckpt.model, ckpt.tokenizer, "hmm", "token", n_docs=30, seed=1)
    b = probe(ckpt.model, ckpt.tokenizer, "hmm", "token", n_docs=30, seed=1)
    assert a.rows == b.rows
    assert a.rows[0]["hook"] == "hook_embed" and a.rows[0]["score"] > 0.98  # the current token is in the input
    assert {"random_model", "shuffled", "selectivity", "chance"} <= set(a.rows[0])


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
    r = run_cli("heads", str(tiny_checkpoint), "--over-training")
    assert r.returncode == 0, r.stderr
    assert "best: layer" in r.stdout and "ICL score" in r.stdout
