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

Points run here, in local processes (`jobs`), or as Ray tasks on a cluster
(`ray`); a share of the grid (`shard`) can run anywhere a scheduler puts it, and
the analyses read the union of the point.json files.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import math
import multiprocessing
import os
import signal
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nextlab.config import RunConfig, config_from_dict
from nextlab.errors import NextlabError
from nextlab.preemption import SIGNALS, Preempted, StopSignals

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
    except IsADirectoryError:
        raise NextlabError(f"{path}: is a directory, not a sweep file") from None
    except OSError as e:
        raise NextlabError(f"{path}: cannot read the sweep file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise NextlabError(f"{path}: not a sweep file (not UTF-8 text)") from None
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


def shard_of(todo: list[Point], shard: tuple[int, int] | None) -> list[Point]:
    """Share i of n (1-based) of the grid: every n-th point from the i-th, so the shares are disjoint, together
    make the whole grid, and each gets small and large points alike."""
    if shard is None:
        return todo
    i, n = shard
    if not 1 <= i <= n:
        raise NextlabError(f"--shard {i}/{n}: the share must be between 1 and {n}")
    return todo[i - 1 :: n]


def run_sweep(sweep: Sweep, jobs: int = 1, log: Callable[[str], None] = print, shard: tuple[int, int] | None = None,
              ray: str | None = None, progress: bool = False) -> list[dict]:
    """Train every point (of share `shard`, see shard_of) not yet finished; their records, in grid order.

    Points run in this process (jobs 1), in `jobs` local processes that share the cores, or as Ray tasks
    (`ray`: a cluster's address, or "local" to start one on this machine). On SIGTERM or SIGINT the points
    running write their checkpoints and stop, and `preemption.Preempted` is raised; running the sweep again
    picks up where it stopped. Only a whole grid writes sweep.json; `nextlab fit` reads the point.json files."""
    from nextlab.data import prepare_corpus

    todo = shard_of(points(sweep), shard)
    Path(sweep.out).mkdir(parents=True, exist_ok=True)
    _write_json(Path(sweep.out) / "sweep_config.json", {"out": sweep.out, "grid": vars(sweep.grid), **sweep.base})
    records = {p.name: r for p in todo if (r := read_point(p.config.out)) is not None}  # finished points
    finished = set(records)
    share = "" if shard is None else f" (share {shard[0]}/{shard[1]})"
    log(f"sweep {sweep.out}{share}: {len(todo)} points, {len(finished)} already done")
    pending = [p for p in todo if p.name not in finished]
    if pending and ray is None:
        prepare_corpus(todo[0].config.data, log=lambda *a: None)  # tokenize once, before parallel jobs share the cache
    bar = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress)
    with bar, StopSignals() as stop:
        task = bar.add_task("points", total=len(todo), completed=len(finished))
        if ray is not None:
            ran = _on_ray(pending, ray, stop)
        elif jobs > 1:
            ran = _in_processes(pending, jobs, stop)
        else:
            ran = _here(pending, max(1, os.cpu_count() or 1), stop)
        for point, record in ran:
            records[point.name] = record
            bar.advance(task)
            (bar.console.print if progress else log)(
                f"  {point.name}: N={record['N']:,} D={record['D']:,} val {record['val_loss']:.4f} in {record['wall_s']:.0f} s")
    rows = [records[p.name] for p in todo]
    if shard is None:
        _write_json(Path(sweep.out) / SWEEP_FILE, rows)
    return rows


def _write_json(path: Path, value) -> None:
    """Whole or not at all: shares of one sweep may write the same file at once."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


AGAIN = "run the same sweep again to continue"


def _stopped(stop: StopSignals, stopped: list[str], left: list[str]) -> Preempted:
    return Preempted(f"on {stop.requested}: {len(stopped)} points stopped with a checkpoint ({', '.join(stopped) or 'none'}), "
                     f"{len(left)} not started", AGAIN)


def _here(pending: list[Point], threads: int, stop: StopSignals) -> Iterator[tuple[Point, dict]]:
    """One point after another in this process (each point's training takes the signals while it runs)."""
    for i, p in enumerate(pending):
        if stop.requested:
            raise _stopped(stop, [], [q.name for q in pending[i:]])
        try:
            record = run_point(p.config, p.config.train.threads or threads)
        except Preempted as e:
            raise Preempted(f"point {p.name} stopped {e.what}", AGAIN) from None
        yield p, record


def _ignore_signals() -> None:
    """A pool process between points leaves SIGTERM and SIGINT to the sweep, which passes them to running points
    (whose training takes them while it runs); otherwise a Ctrl-C would kill idle processes and break the pool."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _in_processes(pending: list[Point], jobs: int, stop: StopSignals) -> Iterator[tuple[Point, dict]]:
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))  # cores / jobs each, whatever the config says
    ctx = multiprocessing.get_context("spawn")  # no fork after torch has started threads
    stop.on_signal = lambda signum: [os.kill(c.pid, signum) for c in multiprocessing.active_children()]
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_ignore_signals) as pool:
        futures = {pool.submit(run_point, p.config, threads): p for p in pending}
        stopped = []
        for f in concurrent.futures.as_completed(futures):
            if stop.requested:
                for other in futures:
                    other.cancel()
            if f.cancelled():
                continue
            try:
                yield futures[f], f.result()
            except Preempted:
                stopped.append(futures[f].name)
        if stop.requested:
            raise _stopped(stop, stopped, [p.name for f, p in futures.items() if f.cancelled()])


def _on_ray(pending: list[Point], address: str, stop: StopSignals) -> Iterator[tuple[Point, dict]]:
    """Each point a Ray task declaring what it uses: its threads as CPUs, or one GPU. Paths are made absolute, as
    Ray's workers need not start where this process did (on a cluster, the run directory must be shared)."""
    try:
        import ray
    except ImportError:
        raise NextlabError("--ray needs Ray: pip install 'nextlab[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    remote = ray.remote(run_point)
    refs = {}
    for p in pending:
        cfg = copy.deepcopy(p.config)
        cfg.out = str(Path(cfg.out).resolve())
        if cfg.data.path not in ("", "stdlib"):
            cfg.data.path = str(Path(cfg.data.path).resolve())
        threads = cfg.train.threads or 1
        gpus = 1 if cfg.train.device.startswith("cuda") else 0
        refs[remote.options(num_cpus=threads, num_gpus=gpus).remote(cfg, threads)] = p
    # a point's training takes SIGINT while it runs: Ray's cancel delivers one to the task
    stop.on_signal = lambda signum: [ray.cancel(ref) for ref in refs]
    waiting, stopped, left = list(refs), [], []
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1)
        try:
            yield refs[ready[0]], ray.get(ready[0])
        except Preempted:
            stopped.append(refs[ready[0]].name)
        except ray.exceptions.TaskCancelledError:
            left.append(refs[ready[0]].name)
    if stop.requested:
        raise _stopped(stop, stopped, left)


def load_sweep_results(sweep_dir: str | Path) -> list[dict]:
    """The point records of a sweep directory (finished points only)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NextlabError(f"{sweep_dir}: no such sweep directory")
    rows = [r for d in sorted(sweep_dir.iterdir()) if d.is_dir() and (r := read_point(d)) is not None]
    if not rows:
        raise NextlabError(f"{sweep_dir}: no finished runs (no */{POINT_FILE}); run `nextlab sweep` first")
    return rows
