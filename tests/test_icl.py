"""The in-context learning study: a short real run learns in context, and the transition is read off honestly."""

import copy

import numpy as np
import pytest

from nextlab.checkpoint import load_checkpoint
from nextlab.config import load_config
from nextlab.data import prepare_corpus
from nextlab.icl import describe_transition, find_transition, held_out_markov, icl_over_training, icl_summary
from nextlab.train import train

REFS = {"uniform": 1.0986, "unigram": 1.01, "bayes": 0.90, "n_symbols": 3, "characters": "abc", "pool": False}


def synthetic_curve(losses, head, k8=0.95, k0=0.11, n=64):
    """A curve of icl_over_training's shape: 2 layers x 2 heads, head (1, 0) carrying the given statistical scores."""
    rows = []
    for step, (loss, h) in enumerate(zip(losses, head)):
        stat = [[0.4, 0.4], [h, 0.3]]
        prev = [[0.1 + 0.3 * h, 0.04], [0.04, 0.04]]
        heads = {"statistical": stat, "previous_token": prev, "classic": [[0.0, 0.0], [0.0, 0.0]],
                 "statistical_baseline": 0.39, "previous_token_baseline": 0.04, "classic_baseline": 0.01}
        rows.append({"step": 20 * step, "tokens": 20 * step * 4096, "markov_loss": loss, "heads": heads,
                     "icl_mapping": {"0": {"accuracy": k0, "se": 0.04, "n": n}, "8": {"accuracy": k8, "se": 0.03, "n": n}}})
    return {"references": dict(REFS), "n_docs": 64, "n_items": n, "chance": 1 / 8, "first_measured": 2, "worlds": {},
            "rows": rows}


def test_transition_found_where_loss_and_head_move_together():
    curve = synthetic_curve([5.5, 1.10, 1.05, 0.99, 0.94, 0.91, 0.905], [0.38, 0.39, 0.40, 0.70, 0.85, 0.90, 0.91])
    t = find_transition(curve)
    assert t["head"] == [1, 0] and t["previous_token_head"] == [0, 0]
    # the loss is above the unigram level (1.01) at step 40 and at or below halfway (0.955) from step 80
    assert t["loss_window"] == [40, 80]
    assert t["sharpest_rise"] == [40, 60] and t["inside"] and t["formed"]
    assert t["start"] == 0.38 and t["end"] == 0.91 and t["excess"] == pytest.approx(0.005)
    assert all(c["met"] for c in t["checks"])
    assert t["rise_share"] == pytest.approx(0.30 / 0.53)
    assert describe_transition(t).endswith("inside that window: the head formed at the loss drop, a phase change.")
    summary = icl_summary(curve, t)
    assert {"markov_excess_nats", "induction_start", "induction_end", "icl_mapping_k0", "icl_mapping_k8"} <= set(summary)


def test_transition_checks_fail_when_they_should():
    # the head rises late, after the loss has already dropped; the loss stays 0.05 above the floor; no mapping learned
    curve = synthetic_curve([5.5, 1.10, 0.99, 0.95, 0.95, 0.95, 0.95], [0.38, 0.39, 0.40, 0.41, 0.42, 0.90, 0.91], k8=0.3)
    t = find_transition(curve)
    assert t["formed"] and not t["inside"] and t["sharpest_rise"] == [80, 100]
    assert [c["met"] for c in t["checks"]] == [False, True, False, False, True]
    assert "outside that window: the head formed, but not at the loss drop" in describe_transition(t)


def test_no_transition_when_the_loss_never_drops():
    curve = synthetic_curve([5.5, 1.10, 1.09, 1.08], [0.38, 0.39, 0.40, 0.40], k8=0.12, k0=0.5)
    t = find_transition(curve)
    assert t["loss_window"] is None and not t["inside"] and not t["formed"]
    assert describe_transition(t).startswith("The loss never fell") and "no statistical induction head formed" in describe_transition(t)
    assert not any(c["met"] for c in t["checks"][:4]) and not t["checks"][4]["met"]  # 0.5 with no shots is not chance


@pytest.fixture(scope="module")
def markov_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("icl") / "run"
    cfg = load_config(overrides=[f"out={str(out)!r}"], data={"path": "", "worlds": {"markov_icl": 1.0}, "world_bytes": 300_000},
                      model={"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 128},
                      train={"steps": 240, "batch_size": 32, "warmup_steps": 10, "schedule": "constant", "eval_every": 240,
                             "eval_windows": 8, "eval_world_docs": 8, "save_every": 120, "threads": 2, "progress": False})
    train(cfg, log=lambda *a: None)
    return out, cfg


def test_held_out_documents_never_appear_in_training(markov_run):
    out, cfg = markov_run
    ckpt = load_checkpoint(out)
    docs, refs, pool = held_out_markov(ckpt.config, ckpt.tokenizer, 64)
    corpus = prepare_corpus(copy.deepcopy(cfg.data), ckpt.tokenizer, log=lambda *a: None)
    eot = ckpt.tokenizer.eot_id
    ids = np.asarray(corpus.train)
    cuts = np.flatnonzero(ids == eot)
    training = {ckpt.tokenizer.decode(ids[a + 1 : b].tolist()) for a, b in zip(np.r_[-1, cuts[:-1]], cuts)}
    assert len(docs) == 64 and len(training) > 1000
    assert not set(docs) & training
    assert refs["bayes"] < refs["unigram"] < refs["uniform"]
    assert sorted(ckpt.tokenizer.decode(pool.tolist())) == ["a", "b", "c"]  # the classic score's tokens: those the run uses


def test_a_short_run_learns_in_context(markov_run):
    """About 1M tokens: the held-out loss falls below what any predictor without in-context bigram statistics can reach,
    and a head's attention on the tokens that followed earlier occurrences rises well above even attention."""
    out, _ = markov_run
    curve = icl_over_training(out, n_docs=32, n_items=16, log=lambda *a: None)
    rows, refs = curve["rows"], curve["references"]
    assert [r["step"] for r in rows] == [0, 120, 240]
    assert rows[0]["markov_loss"] > refs["uniform"]
    assert rows[-1]["markov_loss"] < refs["unigram"] - 0.03
    t = find_transition(curve)
    assert t["start"] < t["baseline"] + 0.1 and t["end"] > t["baseline"] + 0.25
