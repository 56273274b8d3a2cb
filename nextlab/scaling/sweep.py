"""Sweeps: a grid of ordinary training runs over model size, token budget and seed.

A sweep file is a run config (the `[model]`, `[data]`, `[train]` sections every
point starts from) plus a `[grid]`:

    out = "runs/sweep"
    [grid]
    depth = [1, 2, 3, 4]     # the one size knob, as nanochat's --depth: n_layer = depth,
    aspect = 32              #   n_embd = aspect * depth, heads of head_dim channels
    head_dim = 32
    tokens = [500000, 1000000]   # training tokens per run (D); steps = tokens / (batch * block)
    seed = [0]

Each point trains in its own directory `OUT/d{depth}-t{tokens}-s{seed}` through
`nextlab.train.train` (a sweep has no training loop of its own) and, when done,
writes `point.json`: N (non-embedding parameters), D (tokens trained), C = 6ND,
the final validation loss and bits per byte, the excess over the entropy floor
per world, and the task metrics of both families. Running the sweep again skips
finished points and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nextlab.config import RunConfig, config_from_dict
from nextlab.errors import NextlabError

POINT_FILE = "point.json"
SWEEP_FILE = "sweep.json"


@dataclass
class Grid:
    depth: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    aspect: int = 32
    head_dim: int = 32
    tokens: list[int] = field(default_factory=lambda: [1_000_000])
    seed: list[int] = field(default_factory=lambda: [0])

    def problems(self) -> list[str]:
        out = []
        for name in ("depth", "tokens", "seed"):
            values = getattr(self, name)
            if not isinstance(values, list) or not values or not all(isinstance(v, int | float) for v in values):
                out.append(f"grid.{name} must be a non-empty list of numbers, got {values!r}")
        if any(d < 1 for d in self.depth if isinstance(d, int | float)):
            out.append(f"grid.depth values must be at least 1, got {self.depth}")
        if any(t < 1 for t in self.tokens if isinstance(t, int | float)):
            out.append(f"grid.tokens values must be at least 1, got {self.tokens}")
        if self.aspect < 1 or self.head_dim < 2 or self.head_dim % 2:
            out.append(f"grid.aspect must be >= 1 and grid.head_dim even, got {self.aspect}, {self.head_dim}")
        return out


@dataclass
class Sweep:
    out: str
    grid: Grid
    base: dict  # the run config every point starts from (model, data, train sections)


@dataclass
class Point:
    name: str  # d{depth}-t{tokens}-s{seed}
    config: RunConfig


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise NextlabError(f"{path}: no such sweep file") from None
    except tomllib.TOMLDecodeError as e:
        raise NextlabError(f"{path}: not valid TOML ({e})") from None
    return sweep_from_dict(raw, str(path))


def sweep_from_dict(raw: dict, source: str = "sweep") -> Sweep:
    raw = dict(raw)
    grid_raw = raw.pop("grid", {})
    try:
        grid = Grid(**grid_raw)
    except TypeError:
        valid = ", ".join(Grid.__dataclass_fields__)
        raise NextlabError(f"{source}: unknown key in [grid] {sorted(grid_raw)} (valid: {valid})") from None
    if grid.problems():
        raise NextlabError(f"{source}: " + "; ".join(grid.problems()))
    out = raw.pop("out", "runs/sweep")
    sweep = Sweep(out, grid, raw)
    points(sweep)  # every point's config must be valid before anything trains
    return sweep


def model_shape(depth: int, aspect: int, head_dim: int) -> dict:
    """nanochat's single size knob: depth layers, aspect * depth wide, heads of head_dim channels."""
    width = aspect * depth
    width = max(head_dim, head_dim * round(width / head_dim))
    return {"n_layer": depth, "n_embd": width, "n_head": width // head_dim}


def points(sweep: Sweep) -> list[Point]:
    """Every (depth, tokens, seed) of the grid, smallest runs first, each with its full run config."""
    out = []
    g = sweep.grid
    for depth in sorted(g.depth):
        for tokens in sorted(g.tokens):
            for seed in g.seed:
                name = f"d{int(depth)}-t{int(tokens)}-s{int(seed)}"
                values = json.loads(json.dumps(sweep.base))  # deep copy
                values.setdefault("model", {}).update(model_shape(int(depth), g.aspect, g.head_dim))
                cfg = config_from_dict({**values, "out": str(Path(sweep.out) / name)})
                t = cfg.train
                t.steps = max(1, math.ceil(tokens / (t.batch_size * cfg.model.block_size)))
                t.seed, t.progress = int(seed), False
                given = values.get("train", {})
                t.eval_every = given.get("eval_every", max(1, t.steps // 4))
                t.save_every = given.get("save_every", max(1, t.steps // 4))
                out.append(Point(name, cfg))
    return out


def read_point(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / POINT_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a point.json cut short counts as unfinished


def summarize_run(cfg: RunConfig, metrics: list[dict], n_params: int, wall_s: float) -> dict:
    """What a sweep records of one finished run (from its last metrics row)."""
    last = next((m for m in reversed(metrics) if m.get("val_loss") is not None), {})
    tokens = cfg.train.steps * cfg.train.batch_size * cfg.model.block_size
    worlds = {w: v.get("excess_bpb") for w, v in last.get("worlds", {}).items()}
    return {
        "name": Path(cfg.out).name,
        "n_layer": cfg.model.n_layer,
        "n_embd": cfg.model.n_embd,
        "seed": cfg.train.seed,
        "N": n_params,
        "D": tokens,
        "C": 6 * n_params * tokens,
        "val_loss": last.get("val_loss"),
        "val_bpb": last.get("val_bpb"),
        "excess_bpb": worlds,
        "tasks": last.get("tasks", {}),
        "wall_s": wall_s,
    }


def run_point(cfg: RunConfig, threads: int = 0) -> dict:
    """Train one point (resuming if it was interrupted) and write its point.json."""
    import torch

    from nextlab.checkpoint import load_checkpoint
    from nextlab.train import train

    done = read_point(cfg.out)
    if done is not None:
        return done
    if threads:
        cfg.train.threads = threads
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    result = train(cfg, resume=True, log=lambda *a, **k: None)
    n_params = load_checkpoint(result.checkpoint).model.num_params(non_embedding=True)
    record = summarize_run(cfg, result.metrics, n_params, time.perf_counter() - t0)
    tmp = Path(cfg.out) / (POINT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, Path(cfg.out) / POINT_FILE)
    return record


def run_sweep(sweep: Sweep, jobs: int = 1, log: Callable[[str], None] = print) -> list[dict]:
    """Train every point not yet finished; `jobs` points at a time, the cores shared between them."""
    from nextlab.data import prepare_corpus

    todo = points(sweep)
    Path(sweep.out).mkdir(parents=True, exist_ok=True)
    (Path(sweep.out) / "sweep_config.json").write_text(json.dumps({"out": sweep.out, "grid": vars(sweep.grid), **sweep.base}, indent=1))
    finished = {p.name for p in todo if read_point(p.config.out) is not None}
    log(f"sweep {sweep.out}: {len(todo)} points, {len(finished)} already done")
    if len(finished) < len(todo):
        prepare_corpus(todo[0].config.data, log=lambda *a: None)  # tokenize once, before parallel jobs share the cache
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    records: dict[str, dict] = {}

    def done(point: Point, record: dict) -> None:
        records[point.name] = record
        fresh = "" if point.name in finished else f" in {record['wall_s']:.0f} s"
        log(f"  {point.name}: N={record['N']:,} D={record['D']:,} val {record['val_loss']:.4f}{fresh}")

    if jobs <= 1:
        for p in todo:
            done(p, run_point(p.config, p.config.train.threads or threads))
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork after torch has started threads
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(run_point, p.config, threads): p for p in todo}  # cores / jobs each, whatever the config says
            for f in concurrent.futures.as_completed(futures):
                done(futures[f], f.result())
    rows = [records[p.name] for p in todo]
    (Path(sweep.out) / SWEEP_FILE).write_text(json.dumps(rows, indent=1))
    return rows


def load_sweep_results(sweep_dir: str | Path) -> list[dict]:
    """The point records of a sweep directory (finished points only)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NextlabError(f"{sweep_dir}: no such sweep directory")
    rows = [r for d in sorted(sweep_dir.iterdir()) if d.is_dir() and (r := read_point(d)) is not None]
    if not rows:
        raise NextlabError(f"{sweep_dir}: no finished runs (no */{POINT_FILE}); run `nextlab sweep` first")
    return rows
