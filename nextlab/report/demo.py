"""The demo: train the default model on the built-in corpus and write `report.html` and `summary.json`.

Runs the studies and lays out what they return, one section module each
(training, tasks, in-context learning, samples, compression, probes, scaling,
tuning), on the page from `page.py`.
"""

from __future__ import annotations

import html
import shutil
import time
from pathlib import Path

from nextlab.checkpoint import CHECKPOINTS_DIR, load_checkpoint
from nextlab.compress.files import measure_compression
from nextlab.config import RunConfig, load_config
from nextlab.data import prepare_corpus
from nextlab.errors import NextlabError
from nextlab.evals import evaluate, get_task, means
from nextlab.evals.run import default_tasks
from nextlab.icl import run_icl_study
from nextlab.probe import plot_probe, probe, world_knobs
from nextlab.probe.heads import checkpoint_head_scores, heads_over_training, plot_heads_over_training
from nextlab.reasoning import RUNS as REASONING_RUNS
from nextlab.reasoning import largest_point, measure_run, reasoning_sweep, run_reasoning_study
from nextlab.report.claims import claim_rows, claims_section
from nextlab.report.compression import compression_section
from nextlab.report.icl import icl_section
from nextlab.report.page import Section, render
from nextlab.report.probes import probe_section
from nextlab.report.reasoning import reasoning_section
from nextlab.report.samples import samples_section, surprisal_section
from nextlab.report.scaling import scaling_section
from nextlab.report.summary import write_summary
from nextlab.report.tasks import tasks_section
from nextlab.report.training import floor_section, loss_curve_section, model_card_section
from nextlab.report.tuning import demo_tuning, tuning_section
from nextlab.sample import generate, score
from nextlab.scaling import emergence, fit_sweep, plot_sweep, run_sweep
from nextlab.train import train

REPORT_FILE = "report.html"
SUMMARY_METRICS = ("exact_match", "n", "token_accuracy", "logprob_per_char")
TRAINING_TASKS = ("arithmetic", "programs", "translation", "facts", "arguments", "hmm")
ICL_SHOTS = (0, 1, 2, 4, 8)
DEMO_PROMPTS = ("def ", "import ", "23 + 58 =", "Q: Where was", "the small dog that sees the cats runs =>", "All ")


def demo_config(quick: bool = False, out: str = "runs/demo") -> RunConfig:
    """The main job: the default `modern` model, byte-level, on the Python standard library and the six
    document worlds (the in-context worlds, markov_icl and recall, have a run of their own: `nextlab.icl`).

    The main model's training is sized for about 3.5 minutes on 2 CPU cores; --quick for seconds.
    """
    data = {"path": "stdlib", "worlds": dict.fromkeys(TRAINING_TASKS, 1.0), "world_bytes": 4_000_000}
    if quick:
        train = {"steps": 40, "batch_size": 16, "eval_every": 20, "eval_windows": 64, "warmup_steps": 10, "eval_world_docs": 16,
                 "eval_tasks": ["arithmetic", "arguments"], "eval_tasks_every": 40, "eval_task_items": 8,
                 "save_every": 20, "keep_last": 3}
        model = {"block_size": 128}
        data["world_bytes"] = 300_000
    else:
        # checkpoints every 50 steps, all kept: the induction-head curve is read from them
        train = {"steps": 500, "batch_size": 16, "eval_every": 50, "eval_windows": 128, "warmup_steps": 30,
                 "save_every": 50, "keep_last": 10,
                 "muon_lr": 0.04, "lr": 6e-3, "schedule": "wsd", "eval_tasks": list(TRAINING_TASKS), "eval_tasks_every": 100}
        model = {"block_size": 256}
    return load_config(overrides=[f"out={out!r}"], train=train, model=model, data=data)


def held_out_passage(cfg: RunConfig, tokenizer, n_tokens: int = 600) -> str:
    """The start of a validation document (or a stretch of it), at most n_tokens long."""
    corpus = prepare_corpus(cfg.data, tokenizer, log=lambda *a: None)
    start = len(corpus.val) // 3
    ids = corpus.val[start : start + 8 * n_tokens].tolist()
    eot = tokenizer.eot_id
    if eot in ids[:-n_tokens]:
        ids = ids[ids.index(eot) + 1 :]
    if eot in ids:
        ids = ids[: ids.index(eot)]
    return tokenizer.decode(ids[:n_tokens])


def held_out_text(cfg: RunConfig, tokenizer, n_bytes: int) -> bytes:
    """The first n_bytes of the validation split: held-out files of the corpus (world documents come after them)."""
    corpus = prepare_corpus(cfg.data, tokenizer, log=lambda *a: None)
    ids = corpus.val[: 4 * n_bytes].tolist()
    eot = tokenizer.eot_id
    return tokenizer.decode_bytes([i for i in ids if i != eot])[:n_bytes]


def reasoning_runs(out: Path, quick: bool, log=print) -> tuple[dict, list[dict], object]:
    """The reasoning runs: the arithmetic sweep (its largest point is the arithmetic run, measured in full), then
    each other reasoning task's run. Returns ({task: measure_run(...)}, the sweep's rows, the sweep)."""
    sweep = reasoning_sweep("arithmetic", str(out / "sweep"), quick)
    log(f"scaling sweep on arithmetic: {len(sweep.grid.depth) * len(sweep.grid.tokens)} runs, the largest is the reasoning run")
    rows = run_sweep(sweep, log=log)
    runs = {"arithmetic": measure_run(largest_point(sweep).config.out, "arithmetic", quick, log=log)}
    others = tuple(task for task in REASONING_RUNS if task != "arithmetic")
    if others:
        runs.update(run_reasoning_study(out / "reasoning", quick, others, log=log)["runs"])
    return runs, rows, sweep


def sweep_figures(rows: list[dict], task: str) -> dict:
    """Exact match at the smallest and largest compute of the sweep, and each metric's width across compute."""
    ordered = sorted(rows, key=lambda r: r["C"])
    table = emergence(rows, [task])[task]
    return {"exact_match": [ordered[0]["tasks"][task]["exact_match"], ordered[-1]["tasks"][task]["exact_match"]],
            "widths": {r["metric"]: r["width_decades"] for r in table}, "table": {task: table}}


def task_scores(result: dict) -> dict:
    """A task's result row as summary.json gives it: n and the means of SUMMARY_METRICS."""
    flat = {"n": result["n"], **means(result)}
    return {m: flat[m] for m in SUMMARY_METRICS if m in flat}


def build_summary(seconds: float, main_results: list[dict], runs: dict, sweep: dict, icl: dict, compression: dict,
                  tuning: dict) -> dict:
    """summary.json: every headline figure of the report (documented in the README), and the claims computed from them."""
    second = next((task for task in runs if task != "arithmetic"), None)
    arithmetic = runs["arithmetic"]
    held_out = [r for r in tuning["rows"] if r["phrasing"] == "held-out"]
    base = next(r for r in held_out if r["prompting"] == "plain")
    tuned = [r for r in held_out if r["prompting"] == "chat"][-1]
    summary = {
        "demo_seconds": round(seconds, 1),
        "reasoning_task": "arithmetic",
        "second_task": second,
        "tasks": {name: {k: s[k] for k in SUMMARY_METRICS} for run in runs.values() for name, s in run["tasks"].items()},
        "main_model_tasks": {r["task"]: task_scores(r) for r in main_results if r["shots"] == 0},
        "sharpness": {task: {m: w["width_decades"] for m, w in run["sharpness"].items()} for task, run in runs.items()},
        "sharpness_tokens": {task: {m: [w["tokens_10"], w["tokens_90"]] for m, w in run["sharpness"].items()}
                             for task, run in runs.items()},
        "sweep_exact_match": {"arithmetic": sweep["exact_match"]},
        "sweep_sharpness": {"arithmetic": sweep["widths"]},
        "carry_probe": {k: arithmetic["carry_probe"][k] for k in ("accuracy", "random_model", "layer", "random_model_layer", "chance")},
        "floor": {"world": "arithmetic", "excess_bpb": arithmetic["excess_bpb"], "documents": arithmetic["excess_documents"]},
        "icl": icl["summary"],
        "compression": {"nextlab_bpb": compression["modes"]["adaptive"]["bits_per_byte"],
                        "nextlab_static_bpb": compression["modes"]["static"]["bits_per_byte"],
                        "xz_bpb": compression["baselines"].get("xz -9e"), "bytes": compression["bytes"]},
        "tuning": {"base_format_following": base["format"], "tuned_format_following": tuned["format"],
                   "base_exact_match": base["exact"], "tuned_exact_match": tuned["exact"]},
    }
    return {"claims": claim_rows(summary), **summary}


def run_demo(quick: bool = False, out: str = "runs/demo", log=print) -> Path:
    """Train the demo model and write its report and summary.json; returns the report's path."""
    started = time.perf_counter()
    cfg = demo_config(quick, out)
    if quick:
        cfg.train.progress = False
    # The demo owns its run directory: a new demo replaces the last one.
    for part in (CHECKPOINTS_DIR, "sweep", "tuned", "icl", "reasoning"):
        shutil.rmtree(Path(out) / part, ignore_errors=True)
    result = train(cfg, log=log)
    ckpt = load_checkpoint(result.checkpoint)
    temperature = 0.8
    samples = [
        (p, generate(ckpt.model, ckpt.tokenizer, p, max_new_tokens=200 if quick else 400, temperature=temperature, seed=i))
        for i, p in enumerate(DEMO_PROMPTS)
    ]
    passage = held_out_passage(cfg, ckpt.tokenizer)
    log("evaluating tasks")
    names = default_tasks(ckpt.config["run"]["data"])
    n_items = 16 if quick else 64
    tasks = [get_task(name, n_items, 1234, cfg.data.worlds, cfg.data.world_seed) for name in names]
    mapping = [t for t in tasks if t.name == "icl_mapping"]
    results = evaluate(ckpt.model, ckpt.tokenizer, [t for t in tasks if t.name != "icl_mapping"], [0, ICL_SHOTS[-1]])
    results += evaluate(ckpt.model, ckpt.tokenizer, mapping, list(ICL_SHOTS))
    log("reasoning: models trained on one world each, and the scaling sweep")
    runs, rows, sweep = reasoning_runs(Path(out), quick, log=log)
    sweep_result = sweep_figures(rows, "arithmetic")
    log("in-context learning: a small model on markov_icl and recall")
    icl = run_icl_study(Path(out) / "icl", quick, log=log)
    log("compressing held-out text")
    held_out = held_out_text(cfg, ckpt.tokenizer, 1_000 if quick else 12_000)
    compression = measure_compression(held_out, ckpt.model, ckpt.tokenizer)
    sections = [
        model_card_section(ckpt.config),
        loss_curve_section(result.metrics),
        floor_section(result.metrics),
        tasks_section(results, result.metrics),
        reasoning_section(runs),
        icl_section(icl),
        samples_section(samples, temperature, {task: run["examples"] for task, run in runs.items()}),
        surprisal_section(score(ckpt.model, ckpt.tokenizer, passage), "validation split of the built-in corpus"),
        compression_section(compression, "held-out Python source (validation files of the built-in corpus)"),
    ]
    log("probing")
    probes = [probe(ckpt.model, ckpt.tokenizer, w, n_docs=120 if quick else 300, knobs=world_knobs(ckpt.config, w))
              for w in ("hmm", "arguments")]
    probe_plots = [plot_probe(r, Path(out) / f"probe_{r.world}_{r.latent}.png") for r in probes]
    over_training = heads_over_training(out)
    heads_plot = plot_heads_over_training(over_training, Path(out) / "heads.png") if len(over_training) > 1 else None
    sections.append(probe_section(probes, probe_plots, heads_plot, checkpoint_head_scores(ckpt)))
    try:
        fits = fit_sweep(rows, n_bootstrap=50)
        sections.append(scaling_section(rows, fits, sweep_result["table"], plot_sweep(rows, fits, Path(sweep.out) / "plots")))
    except NextlabError as e:  # a --quick sweep is too small for some fits: say so in the report
        sections.append(Section("Scale does the heavy lifting", f"<p>No fit: {html.escape(str(e))}</p>"))
    log("instruction tuning")
    tuning = demo_tuning(ckpt.path, Path(out), quick, log=log)
    sections.append(tuning_section(tuning))
    summary = build_summary(time.perf_counter() - started, results, runs, sweep_result, icl, compression, tuning)
    sections = [claims_section(summary["claims"])] + [s for s in sections if s is not None]
    path = Path(out) / REPORT_FILE
    path.write_text(render("nextlab demo: next-token prediction on Python source and worlds", sections))
    summary_path = write_summary(out, summary)
    log(f"wrote {path} and {summary_path}")
    return path
