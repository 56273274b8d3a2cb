"""Reasoning caught appearing: small models trained only to predict the next token on one world each,
then asked for answers they never trained on.

Each run (`reasoning_config`) is an ordinary training run on one task world, with the task scored on
held-out items (the world's held-out part: never in the training stream) at log-spaced steps, so the
curves can be read against log tokens. `run_reasoning_study` then measures the final model:

- exact match, per-token accuracy and log-probability per character on held-out items (for arithmetic,
  on sums of two 3-digit operands as well), and out of distribution (more digits than training);
- the sharpness of each metric's rise over training: the 10-90% width of the project's sigmoid fit
  (`nextlab.scaling.emergence.fit_sigmoid`) in decades of training tokens. Exact match of an L-token
  answer behaves like p^L, so it rises far more abruptly than the per-token log-probability it is
  built from (Schaeffer et al., 2023);
- for arithmetic, a linear probe for the carries at every layer beside a random-init model's
  (`nextlab.probe.probe`): the intermediate result the sums need, read off the residual stream;
- a few held-out prompts with the greedy answer, marked right or wrong.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from nextlab.checkpoint import list_checkpoints, load_checkpoint
from nextlab.config import RunConfig
from nextlab.data import WORLD_FLOOR_DOCS
from nextlab.errors import NextlabError
from nextlab.evals import evaluate_task, get_task, notes_to
from nextlab.probe import probe, world_knobs
from nextlab.sample import greedy_continuations
from nextlab.scaling.analysis import BOUNDS as EMERGENCE_BOUNDS
from nextlab.scaling.emergence import sharpness_table
from nextlab.train import refuse_other_run, train

# One world per run, with knobs a 2-core laptop can learn in a minute or two. Each run is one point of a sweep grid
# (depth layers, 32 channels per layer, heads of 32).
# - arithmetic: addition with answers written least significant digit first: the low digits are the ones
#   computable first, left to right. The demo's sweep (`reasoning_sweep`) ends at exactly this run, and its rise
#   over training is the one the sharpness target is tested on (EMERGENCE_TASK).
# - facts: biographies and Q/A lines about 80 invented people; a held-out question asks what only biographies
#   (and never a Q/A line) stated. Its OOD items ask about people who never appeared in any Q/A line. Measured
#   here: exact match 0.03-0.11 up to 0.87M tokens, then 1.0 at 2M (100 people without Q/A-free people: 0.94).
RUNS = {
    "arithmetic": {
        "worlds": {"arithmetic": {"ops": "+", "max_digits": 3, "reverse": True}},
        "block_size": 32,
        "depth": 4,
        "tokens": 1_500_000,
        "ood": "arithmetic_ood",
    },
    "facts": {
        "worlds": {"facts": {"n_people": 80}},
        "block_size": 128,
        "depth": 4,
        "tokens": 2_000_000,
        "ood": "facts_ood",
    },
}
EMERGENCE_TASK = "arithmetic"
ASPECT, HEAD_DIM, BATCH_SIZE = 32, 32, 32
SMALLER_DEPTHS = (1, 2)  # the sweep's other model sizes, beside the run's depth
SWEEP_TOKEN_SHARES = (0.125, 0.25, 1.0)  # of the run's tokens: the transition lies between the last two
QUICK_TOKENS = 40_000
METRICS = ("exact_match", "token_accuracy", "logprob_per_char")
# a score's bounds fix the fitted sigmoid's asymptotes; log-probability's is 0 above (certainty), free below
BOUNDS = {**EMERGENCE_BOUNDS, "logprob_per_char": (None, 0.0)}
FINAL_ITEMS = 500  # held-out items scored at the end
CURVE_ITEMS = 200  # held-out items scored at each step of the curve
N_EXAMPLES = 8  # held-out prompts shown with the model's answer
TARGET = 0.95  # held-out exact match a task must reach
SHARPNESS_RATIO = 3.0  # exact match's rise must be this many times narrower than log-probability's
CARRY_TARGET, CARRY_MARGIN = 0.95, 0.15  # the carry probe: accuracy at its best layer, and above the random model
STUDY_FILE = "study.json"


def log_spaced_steps(steps: int, per_decade: int = 8, first: int = 10) -> list[int]:
    """Distinct steps from `first` to `steps`, evenly spaced in log: where the curve is read in log tokens."""
    n = max(2, round(per_decade * math.log10(steps / first)) + 1)
    return sorted({int(round(s)) for s in np.geomspace(first, steps, n)})


def _spec(task: str) -> dict:
    if task not in RUNS:
        raise NextlabError(f"no reasoning run for task {task!r}; known: {', '.join(RUNS)}")
    return RUNS[task]


def _tokens(task: str, quick: bool) -> int:
    return QUICK_TOKENS if quick else _spec(task)["tokens"]


def reasoning_sweep(task: str, out: str, quick: bool = False):
    """The sweep over model size and tokens whose largest point is the run itself: depths 1, 2 and the
    run's, each at an eighth, a quarter and all of its tokens (--quick: 2 x 2, seconds).

    Every point starts from the same config: the task's world alone, the Muon recipe, a learning rate that
    stays at its peak until the last 15% of the steps (a rate that decays before the jump delays it), and the
    task scored on held-out items at log-spaced steps (the curve read against log tokens).
    """
    from nextlab.scaling import sweep_from_dict

    spec = _spec(task)
    tokens = _tokens(task, quick)
    steps = math.ceil(tokens / (BATCH_SIZE * spec["block_size"]))
    train_cfg = {"batch_size": BATCH_SIZE, "warmup_steps": 10 if quick else 30, "schedule": "wsd", "decay_fraction": 0.15,
                 "lr": 6e-3, "muon_lr": 0.04, "eval_every": steps, "save_every": steps, "eval_windows": 32,
                 "eval_world_docs": 16 if quick else WORLD_FLOOR_DOCS, "eval_tasks": [task], "eval_tasks_at": log_spaced_steps(steps),
                 "eval_task_items": 32 if quick else CURVE_ITEMS}
    data = {"path": "", "worlds": spec["worlds"], "world_bytes": 300_000 if quick else 3_000_000}
    depths = SMALLER_DEPTHS if quick else (*SMALLER_DEPTHS, spec["depth"])
    shares = (0.5, 1.0) if quick else SWEEP_TOKEN_SHARES
    grid = {"depth": list(depths), "aspect": ASPECT, "head_dim": HEAD_DIM, "tokens": [int(tokens * s) for s in shares], "seed": [0]}
    return sweep_from_dict({"out": out, "grid": grid, "data": data, "model": {"block_size": spec["block_size"]}, "train": train_cfg})


def largest_point(sweep):
    """The sweep's point with the most compute: the reasoning run itself."""
    from nextlab.scaling.sweep import points

    return points(sweep)[-1]


def reasoning_config(task: str, out: str, quick: bool = False) -> RunConfig:
    """The reasoning run for `task` alone (what `nextlab reasoning` trains): the largest point of its sweep."""
    cfg = largest_point(reasoning_sweep(task, str(Path(out).parent / "sweep"), quick)).config
    cfg.out, cfg.train.progress = str(out), not quick
    return cfg


def sharpness_over_training(metrics: list[dict], task: str, from_tokens: int = 1) -> dict:
    """Per metric, the sigmoid fitted to its curve against log10 tokens from `from_tokens` on (the project's
    `sharpness_table`): width in decades, the tokens at 10% and 90% of the rise (the width in tokens is their
    difference), R^2, the fit's note and its parameters."""
    points = [{"tokens": r["tokens"], **r["tasks"][task]} for r in metrics
              if r.get("tasks", {}).get(task) and r["tokens"] >= max(1, from_tokens)]
    out = {}
    for row in sharpness_table(points, list(METRICS), x_key="tokens", bounds=BOUNDS):
        width, mid = row["width_decades"], row["midpoint"]
        out[row["metric"]] = {"width_decades": width, "tokens_10": None if width is None else 10 ** (mid - width / 2),
                              "tokens_90": None if width is None else 10 ** (mid + width / 2),
                              "r2": row["r2"], "note": row["note"], "fit": row["fit"]}
    return out


def _scores(result: dict) -> dict:
    return {"exact_match": result["exact_match"]["mean"], "exact_match_se": result["exact_match"]["se"], "n": result["n"],
            "token_accuracy": result["token_accuracy"]["mean"], "logprob_per_char": result["logprob_per_char"]["mean"]}


def examples(model, tokenizer, task, n: int = N_EXAMPLES) -> list[dict]:
    """The first n held-out items: prompt, target, the greedy answer and whether it is right."""
    items = task.items[:n]
    eot = tokenizer.eot_id
    # as evaluate_task decodes: one token past a document-ending answer, which must stop there
    outputs = greedy_continuations(model, tokenizer, [[eot] + tokenizer.encode(it.prompt) for it in items],
                                   [len(tokenizer.encode(it.target)) + it.ends_document for it in items])
    return [{"prompt": it.prompt, "target": it.target, "answer": tokenizer.decode(ids), "right": tokenizer.decode(ids) == it.target}
            for it, ids in zip(items, outputs)]


def three_digit_task(spec: dict, n: int, world_seed: int = 0):
    """Held-out sums whose operands both have 3 digits (the held-out part does not depend on the digit counts)."""
    knobs = {**spec["arithmetic"], "min_digits": 3, "max_digits": 3}
    task = get_task("arithmetic", n, 1234, {"arithmetic": knobs}, world_seed)
    task.name = "arithmetic_3digit"
    return task


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise NextlabError(f"{path}: missing; train the run first (nextlab reasoning)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def measure_run(run_dir: str | Path, task: str, quick: bool = False, log=print) -> dict:
    """A finished reasoning run: its curve over training and the sharpness of each metric's rise; the final
    checkpoint on held-out items (and, for arithmetic, on 3-digit operands) and out of distribution, with
    examples; for arithmetic, the carry probe."""
    paths = list_checkpoints(run_dir)
    if not paths:
        raise NextlabError(f"{run_dir}: no checkpoints to measure")
    metrics = read_metrics(run_dir)
    ckpt = load_checkpoint(paths[-1])
    model, tokenizer = ckpt.model.eval(), ckpt.tokenizer
    run_cfg = ckpt.config["run"]
    spec, world_seed = run_cfg["data"]["worlds"], run_cfg["data"]["world_seed"]
    n = 64 if quick else FINAL_ITEMS
    with notes_to(log):  # a finite world's "only N items": n is in the results
        held_out = get_task(task, n, 1234, spec, world_seed)
        tasks = {task: _scores(evaluate_task(model, tokenizer, held_out))}
        if task == "arithmetic":
            tasks["arithmetic_3digit"] = _scores(evaluate_task(model, tokenizer, three_digit_task(spec, n, world_seed)))
        ood = _spec(task).get("ood")
        if ood:
            tasks[ood] = _scores(evaluate_task(model, tokenizer, get_task(ood, n, 1234, spec, world_seed)))
    # the rise is read from the end of the warmup on: before it, at a rising learning rate, the model learns
    # the alphabet and the format, which moves the per-token scores and not the answers
    warmup_tokens = run_cfg["train"]["warmup_steps"] * run_cfg["train"]["batch_size"] * run_cfg["model"]["block_size"]
    last = metrics[-1]
    world = next(iter(spec))
    run = {"checkpoint": str(paths[-1]), "worlds": spec, "params": ckpt.config.get("params"), "tokens": last["tokens"],
           "train_seconds": last["train_s"], "excess_bpb": last.get("worlds", {}).get(world, {}).get("excess_bpb"),
           "excess_documents": min(run_cfg["train"]["eval_world_docs"], WORLD_FLOOR_DOCS),
           "tasks": tasks, "examples": examples(model, tokenizer, held_out),
           "curve": [{"step": r["step"], "tokens": r["tokens"], **r["tasks"][task]} for r in metrics if r.get("tasks", {}).get(task)],
           "sharpness": sharpness_over_training(metrics, task, warmup_tokens), "sharpness_from_tokens": warmup_tokens}
    if task == "arithmetic":
        log("probing the carries")
        result = probe(model, tokenizer, "arithmetic", n_docs=120 if quick else 400, knobs=world_knobs(ckpt.config, "arithmetic"))
        best = max(result.rows, key=lambda r: r["score"])
        # best against best: the control gets the same choice of layer the trained model gets
        control = max(result.rows, key=lambda r: r["random_model"])
        run["carry_probe"] = {"accuracy": best["score"], "layer": best["hook"], "random_model": control["random_model"],
                              "random_model_layer": control["hook"], "chance": best["chance"], "rows": result.rows}
    return run


def width_ratio(sharpness: dict) -> float | None:
    """Log-probability's 10-90% width over exact match's (how many times more sharply exact match rose)."""
    em, lp = sharpness.get("exact_match"), sharpness.get("logprob_per_char")
    return lp / em if em and lp else None


def carry_met(accuracy: float, random_model: float) -> bool:
    return accuracy >= CARRY_TARGET and accuracy - random_model >= CARRY_MARGIN


def checks(runs: dict) -> dict:
    """Whether each run met its targets, computed from its figures (the demo's claims use the same tests)."""
    out = {}
    for task, run in runs.items():
        headline = run["tasks"].get(f"{task}_3digit", run["tasks"][task])
        out[f"{task}: held-out exact match >= {TARGET}"] = headline["exact_match"] >= TARGET
        if task == EMERGENCE_TASK:
            ratio = width_ratio({m: w["width_decades"] for m, w in run["sharpness"].items()})
            out[f"{task}: exact match rises >= {SHARPNESS_RATIO:g}x more sharply than log-probability"] = (
                ratio is not None and ratio >= SHARPNESS_RATIO)
        if "carry_probe" in run:
            carry = run["carry_probe"]
            out[f"{task}: carry probe >= {CARRY_TARGET} and >= {CARRY_MARGIN} above the random model"] = carry_met(
                carry["accuracy"], carry["random_model"])
    return out


def run_reasoning_study(out: str | Path, quick: bool = False, tasks: tuple[str, ...] | None = None, log=print) -> dict:
    """Train each reasoning run under OUT/TASK (resuming one left unfinished) and measure it; writes OUT/study.json and returns
    {"runs": {task: measure_run(...)}, "checks": checks(...)}."""
    out = Path(out)
    tasks = tasks or tuple(RUNS)
    for task in tasks:
        _spec(task)  # an unknown task fails before anything trains
    runs = {}
    for task in tasks:
        log(f"reasoning: a model trained on {task} documents only")
        cfg = reasoning_config(task, str(out / task), quick)
        refuse_other_run(out / task, cfg, f"{'quick ' if quick else ''}{task} run")
        train(cfg, resume=True, log=log)
        runs[task] = measure_run(out / task, task, quick, log=log)
    study = {"runs": runs, "checks": checks(runs)}
    out.mkdir(parents=True, exist_ok=True)
    (out / STUDY_FILE).write_text(json.dumps(study, indent=1))
    return study
