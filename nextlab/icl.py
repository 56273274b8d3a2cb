"""In-context learning caught forming: a small model trained only to predict the next token on
documents whose generator changes with every document, measured at every checkpoint.

The run is an ordinary training run (`icl_config`) on two worlds whose floor needs in-context
learning: `markov_icl` (a fresh Markov chain per document: the floor is the Bayes-optimal
in-context bigram learner) and `recall` (a fresh key -> value mapping per document, in the format
of the `icl_mapping` task). `icl_over_training` then measures the initial model and every
checkpoint on held-out documents and items:

- the markov_icl loss per symbol beside its three references: uniform over the pool, the in-context
  unigram predictor and the Bayes floor (from the third symbol: see FIRST_MEASURED);
- every head's classic, statistical and previous-token scores (`nextlab.probe.heads`) on those
  documents;
- `icl_mapping` multiple-choice accuracy with 0 and with 8 solved examples before the query.

`find_transition` reads the phase change off those rows (Olsson et al., 2022; Edelman et al.,
2024): the steps over which the loss falls from the in-context unigram level to halfway to the
floor, and the checkpoint interval in which the best statistical induction head rises fastest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from nextlab.checkpoint import list_checkpoints, load_checkpoint, model_config_from, read_config
from nextlab.config import RunConfig, config_from_dict, load_config
from nextlab.data import prepare_corpus
from nextlab.errors import NextlabError
from nextlab.evals import evaluate_task, get_task
from nextlab.probe import world_knobs
from nextlab.probe.heads import head_scores
from nextlab.sample import score_continuations
from nextlab.train import initial_model, refuse_other_run, train
from nextlab.worlds import make_world

# Each markov document writes its 3 symbols with 3 of recall's 8 key letters, drawn anew per document, so the
# induction head the chains teach works for any of those letters, and recall's keys need no head of their own.
# Recall documents are drawn three times as often (half the tokens): its mapping forms later than the chains' head.
ICL_WORLDS = {"markov_icl": {"pool": "abcdefgh"}, "recall": {"n_pairs": 24, "weight": 3.0}}
# The first two symbols of a document also pay for which world it is from (a letter starts both; the second
# character tells them apart), which no in-context learning can know: the loss is measured from the third.
FIRST_MEASURED = 2
SHOTS = (0, 8)
INDUCTION_FORMED = 0.8  # the statistical induction score a formed head reaches
NEAR_BASELINE = 0.1  # a head that has not formed scores within this of even attention
EXCESS_TARGET = 0.02  # nats per symbol above the floor at the end of training
MAPPING_TARGET = 0.9  # icl_mapping accuracy with 8 shots
STUDY_FILE = "study.json"  # what run_icl_study measured, in the run's folder


def icl_config(out: str = "runs/icl", quick: bool = False, overrides: list[str] = ()) -> RunConfig:
    """The run: a 2-layer `modern` model, block 128, on markov_icl + recall only, a checkpoint every 50 steps.

    The learning rate stays at its peak until the last 20% of the steps (warmup-stable-decay), so that no
    transition is slowed by a decaying rate, and the decay at the end brings the loss down to the floor.
    """
    steps = 60 if quick else 1500
    train = {"steps": steps, "batch_size": 32, "warmup_steps": 10, "schedule": "wsd", "decay_fraction": 0.2,
             "eval_every": 50 if quick else 100, "eval_windows": 32, "eval_world_docs": 16, "save_every": 20 if quick else 50,
             "keep_last": 1_000_000}
    model = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 128}
    data = {"path": "", "worlds": ICL_WORLDS, "world_bytes": 300_000 if quick else 2_000_000}
    return load_config(overrides=[f"out={out!r}", *overrides], train=train, model=model, data=data)


def held_out_markov(config: dict, tokenizer, n_docs: int) -> tuple[list[str], dict, torch.Tensor]:
    """From a checkpoint's config: the first n_docs held-out markov_icl documents of the run's validation split
    (never in training), the three references in nats per symbol over the measured symbols (beside the
    world's n_symbols, characters and whether they come from a pool), and the token ids the validation text
    uses (what the classic induction score draws its repeated sequences from)."""
    if "markov_icl" not in (config["run"]["data"].get("worlds") or {}):
        raise NextlabError("the run has no markov_icl world: nothing to measure in-context learning on")
    data = config_from_dict({"data": config["run"]["data"]}).data
    corpus = prepare_corpus(data, tokenizer, log=lambda *a: None)
    docs = [d["text"] for d in corpus.val_world_docs if d["world"] == "markov_icl"][:n_docs]
    seen = torch.from_numpy(np.unique(corpus.val).astype(np.int64))
    world = make_world("markov_icl", **world_knobs(config, "markov_icl"))
    refs = {"n_symbols": world.n_symbols, "characters": world.characters, "pool": world.pool is not None}
    per_doc = [world.reference_log_probs(text) for text in docs]
    for name in ("uniform", "unigram", "bayes"):
        refs[name] = float(np.mean([-np.mean(lps[name][FIRST_MEASURED:]) for lps in per_doc]))
    return docs, refs, seen[seen != tokenizer.eot_id]


def markov_loss(model, tokenizer, docs: list[str]) -> float:
    """The model's mean loss in nats per symbol on the measured symbols of each document (read from end-of-text)."""
    eot = tokenizer.eot_id
    scores = score_continuations(model, [[eot]] * len(docs), [tokenizer.encode(d) for d in docs])
    return float(np.mean([-float(s.logprobs[FIRST_MEASURED:].mean()) for s in scores]))


def measure(model, tokenizer, docs: list[str], windows: torch.Tensor, pool: torch.Tensor, mapping_task) -> dict:
    """One point of the curve: markov loss, head scores, icl_mapping accuracy at each k."""
    model.eval()
    heads = head_scores(model, windows, tokenizer.eot_id, pool=pool)
    mapping = {}
    for k in SHOTS:
        r = evaluate_task(model, tokenizer, mapping_task, k)
        mapping[str(k)] = {"accuracy": r["mc_accuracy"]["mean"], "se": r["mc_accuracy"]["se"], "n": r["n"]}
    return {"markov_loss": markov_loss(model, tokenizer, docs), "heads": heads.to_dict(), "icl_mapping": mapping}


def icl_over_training(run_dir: str | Path, n_docs: int = 64, n_items: int = 64, log=print) -> dict:
    """The initial model (step 0, rebuilt from the run's seed) and every checkpoint, measured by `measure`."""
    paths = list_checkpoints(run_dir)
    if not paths:
        raise NextlabError(f"{run_dir}: no checkpoints to measure")
    first = load_checkpoint(paths[0])
    tokenizer = first.tokenizer
    docs, references, pool = held_out_markov(first.config, tokenizer, n_docs)
    eot = tokenizer.eot_id
    windows = torch.tensor([[eot] + tokenizer.encode(d) for d in docs])[:, : first.model.cfg.block_size]
    task = get_task("icl_mapping", n_items, 1234)
    initial = initial_model(model_config_from(first.config, str(paths[0])), first.config["run"]["train"]["seed"])
    rows = [{"step": 0, "tokens": 0, **measure(initial, tokenizer, docs, windows, pool, task)}]
    for path in paths:
        ckpt = load_checkpoint(path)
        rows.append({"step": ckpt.config["step"], "tokens": ckpt.config["tokens_seen"],
                     **measure(ckpt.model, tokenizer, docs, windows, pool, task)})
        log(f"step {rows[-1]['step']:>5}  markov loss {rows[-1]['markov_loss']:.4f}  "
            f"icl_mapping k=8 {rows[-1]['icl_mapping']['8']['accuracy']:.2f}")
    return {"references": references, "n_docs": len(docs), "n_items": n_items, "chance": 1 / len(task.items[0].choices),
            "first_measured": FIRST_MEASURED, "worlds": first.config["run"]["data"]["worlds"], "rows": rows}


def _first_at_or_below(values: list[float], level: float) -> int | None:
    return next((i for i, v in enumerate(values) if v <= level), None)


def _best_final(rows: list[dict], score: str) -> tuple[int, int]:
    """(layer, head) with the highest `score` at the last checkpoint."""
    final = np.array(rows[-1]["heads"][score], dtype=float)
    return divmod(int(np.nanargmax(final)), final.shape[1])


def find_transition(curve: dict) -> dict:
    """The phase change, read off `icl_over_training`'s rows.

    loss_window: from the checkpoint before the first at or below the in-context unigram level to the first
    at or below halfway from it to the floor (None if the loss never gets there). The best head is the one
    with the highest final statistical induction score; its sharpest rise is the checkpoint interval with
    the largest gain, and rise_share that gain's share of the head's whole rise (the previous-token head is
    the one with the highest final previous-token score). `checks` holds each target with its measured
    value and whether it was met.
    """
    rows, refs = curve["rows"], curve["references"]
    steps = [r["step"] for r in rows]
    loss = [r["markov_loss"] for r in rows]
    half = refs["bayes"] + (refs["unigram"] - refs["bayes"]) / 2
    i_unigram, i_half = _first_at_or_below(loss, refs["unigram"]), _first_at_or_below(loss, half)
    loss_window = None
    if i_unigram is not None and i_half is not None:
        loss_window = [steps[max(0, i_unigram - 1)], steps[i_half]]
    layer, head = _best_final(rows, "statistical")
    prev_layer, prev_head = _best_final(rows, "previous_token")
    series = {"statistical": [r["heads"]["statistical"][layer][head] for r in rows],
              "previous_token": [r["heads"]["previous_token"][prev_layer][prev_head] for r in rows]}
    gains = np.diff(series["statistical"])
    j = int(np.argmax(gains))
    sharpest = [steps[j], steps[j + 1]]
    start, end = series["statistical"][0], series["statistical"][-1]
    t = {"head": [layer, head], "previous_token_head": [prev_layer, prev_head], "series": series,
         "baseline": rows[-1]["heads"]["statistical_baseline"], "sharpest_rise": sharpest,
         "rise_share": float(gains[j] / (end - start)) if end > start else None, "loss_window": loss_window,
         "inside": loss_window is not None and loss_window[0] <= sharpest[0] and sharpest[1] <= loss_window[1],
         "start": start, "end": end, "excess": loss[-1] - refs["bayes"]}
    t["checks"] = _checks(t, rows[-1]["icl_mapping"], curve["chance"])
    t["formed"] = t["checks"][1]["met"]
    return t


def _checks(t: dict, mapping: dict, chance: float) -> list[dict]:
    """Each target of the in-context run: {claim, measure, value, threshold, met}."""
    k0, k8 = (mapping[str(k)] for k in SHOTS)
    chance_bound = chance + 2 * math.sqrt(chance * (1 - chance) / k0["n"])
    formed = t["start"] <= t["baseline"] + NEAR_BASELINE and t["end"] >= INDUCTION_FORMED
    return [
        {"claim": "markov_icl loss reaches the Bayes floor", "measure": "excess over the floor at the end (nats/symbol)",
         "value": t["excess"], "threshold": f"<= {EXCESS_TARGET}", "met": t["excess"] <= EXCESS_TARGET},
        {"claim": "a statistical induction head forms", "measure": "best head's score at step 0 -> at the end",
         "value": [t["start"], t["end"]],
         "threshold": f"start <= baseline {t['baseline']:.2f} + {NEAR_BASELINE}, end >= {INDUCTION_FORMED}", "met": formed},
        {"claim": "the head forms at the loss drop", "measure": "its sharpest rise (steps) inside the loss window (steps)",
         "value": [t["sharpest_rise"], t["loss_window"]], "threshold": "inside", "met": t["inside"]},
        {"claim": "the model learns a mapping from its prompt", "measure": f"icl_mapping accuracy with {SHOTS[1]} shots",
         "value": k8["accuracy"], "threshold": f">= {MAPPING_TARGET}", "met": k8["accuracy"] >= MAPPING_TARGET},
        {"claim": "and not from training (a sanity check: at chance by construction)",
         "measure": f"icl_mapping accuracy with {SHOTS[0]} shots", "value": k0["accuracy"],
         "threshold": f"<= chance {chance:.3f} + 2 s.e. = {chance_bound:.3f}", "met": k0["accuracy"] <= chance_bound},
    ]


def describe_transition(t: dict) -> str:
    """What the run shows, in words, from the numbers `find_transition` computed."""
    layer, head = t["head"]
    window = t["loss_window"]
    if window is None:
        loss = "The loss never fell from the in-context unigram level to halfway to the floor."
    else:
        loss = f"The loss fell from the in-context unigram level to halfway to the floor between steps {window[0]} and {window[1]}."
    rise = f"{t['sharpest_rise'][0]} and {t['sharpest_rise'][1]}"
    if t["rise_share"] is not None:
        rise += f" ({100 * t['rise_share']:.0f}% of its whole rise)"
    head_text = (f"The statistical induction score of layer {layer}, head {head} went from {t['start']:.2f} (even attention: "
                 f"{t['baseline']:.2f}) to {t['end']:.2f}, rising fastest between steps {rise}")
    if not t["formed"]:
        verdict = ": by the targets (from near even attention to at least 0.8), no statistical induction head formed."
    elif window is None:
        verdict = ": the head formed, but the loss never dropped that far."
    elif t["inside"]:
        verdict = ", inside that window: the head formed at the loss drop, a phase change."
    else:
        verdict = ", outside that window: the head formed, but not at the loss drop."
    return f"{loss} {head_text}{verdict}"


def icl_summary(curve: dict, transition: dict) -> dict:
    """The headline figures for summary.json."""
    final = curve["rows"][-1]["icl_mapping"]
    return {"markov_excess_nats": transition["excess"], "induction_start": transition["start"],
            "induction_end": transition["end"], "induction_baseline": transition["baseline"],
            "induction_head": transition["head"], "sharpest_rise_steps": transition["sharpest_rise"],
            "loss_window_steps": transition["loss_window"], "sharpest_rise_share": transition["rise_share"],
            "icl_mapping_k0": final["0"]["accuracy"], "icl_mapping_k8": final["8"]["accuracy"], "checks": transition["checks"]}


def run_icl_study(out: str | Path = "runs/icl", quick: bool = False, log=print) -> dict:
    """Train the run (resuming one left unfinished), measure it, and write it all to OUT/study.json.

    {"params", "steps", "train_s", "curve" (icl_over_training), "transition" (find_transition), "summary" (icl_summary)}.
    """
    cfg = icl_config(str(out), quick)
    cfg.train.progress = False
    refuse_other_run(out, cfg, f"{'quick ' if quick else ''}in-context run")
    result = train(cfg, resume=True, log=log)
    log("measuring in-context learning over the checkpoints")
    curve = icl_over_training(out, n_docs=16 if quick else 64, n_items=16 if quick else 64, log=log)
    transition = find_transition(curve)
    final = read_config(result.checkpoint)
    study = {"params": final["params"], "steps": final["step"], "train_s": result.metrics[-1]["train_s"],
             "curve": curve, "transition": transition, "summary": icl_summary(curve, transition)}
    (Path(out) / STUDY_FILE).write_text(json.dumps(study, indent=1))
    return study
