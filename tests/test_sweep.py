"""Sweeps: a grid of ordinary runs that resumes, runs in parallel, and feeds the fits."""

import json
import time

import pytest
from conftest import run_cli

from nextlab.errors import NextlabError
from nextlab.scaling import fit_sweep, load_sweep_results, run_sweep, sweep_from_dict
from nextlab.scaling.sweep import model_shape, points


def tiny_sweep(out, depths=(1, 2), tokens=(4096,), seeds=(0,)) -> dict:
    return {
        "out": str(out),
        "grid": {"depth": list(depths), "aspect": 16, "head_dim": 16, "tokens": list(tokens), "seed": list(seeds)},
        "data": {"path": "", "worlds": {"arithmetic": 1.0}, "world_bytes": 30000},
        "model": {"block_size": 32},
        "train": {"batch_size": 8, "warmup_steps": 2, "eval_windows": 8, "eval_world_docs": 4, "threads": 1,
                  "eval_tasks": ["arithmetic"], "eval_task_items": 4},
    }


def test_ready_sweeps_load():
    from pathlib import Path

    from nextlab.scaling import load_sweep

    sweeps = sorted((Path(__file__).parent.parent / "configs" / "sweeps").glob("*.toml"))
    assert sweeps
    for path in sweeps:
        assert len(points(load_sweep(path))) >= 4


def test_size_knob_sets_depth_and_width():
    assert model_shape(3, 32, 32) == {"n_layer": 3, "n_embd": 96, "n_head": 3}
    assert model_shape(1, 16, 32) == {"n_layer": 1, "n_embd": 32, "n_head": 1}  # at least one head


def test_points_cover_the_grid(tmp_path):
    sweep = sweep_from_dict(tiny_sweep(tmp_path, depths=(1, 2), tokens=(4096, 8192), seeds=(0, 1)))
    ps = points(sweep)
    assert len(ps) == 8 and len({p.config.out for p in ps}) == 8
    p = next(p for p in ps if p.name == "d2-t8192-s1")
    assert p.config.model.n_layer == 2 and p.config.train.seed == 1 and p.config.train.steps == 8192 // (8 * 32)


def test_bad_grid_is_a_clear_error(tmp_path):
    bad = tiny_sweep(tmp_path)
    bad["grid"]["depth"] = []
    with pytest.raises(NextlabError, match="grid.depth must be a non-empty list"):
        sweep_from_dict(bad)
    bad = tiny_sweep(tmp_path)
    bad["grid"]["width"] = 3
    with pytest.raises(NextlabError, match="unknown key in \\[grid\\]"):
        sweep_from_dict(bad)
    bad = tiny_sweep(tmp_path)
    bad["train"]["lr"] = "fast"
    with pytest.raises(NextlabError, match="train.lr"):
        sweep_from_dict(bad)


def test_sweep_records_and_skips_finished_points(tmp_path):
    sweep = sweep_from_dict(tiny_sweep(tmp_path / "s"))
    rows = run_sweep(sweep, log=lambda *a: None)
    assert [r["name"] for r in rows] == ["d1-t4096-s0", "d2-t4096-s0"]
    for r in rows:
        assert r["C"] == 6 * r["N"] * r["D"] and r["D"] == 16 * 8 * 32
        assert r["val_loss"] > 0 and "arithmetic" in r["excess_bpb"] and "exact_match" in r["tasks"]["arithmetic"]
    assert rows[0]["N"] < rows[1]["N"]
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "s").rglob("point.json")}
    again = run_sweep(sweep, log=lambda *a: None)
    assert again == rows and before == {p: p.stat().st_mtime_ns for p in (tmp_path / "s").rglob("point.json")}


def test_killed_point_resumes_from_its_checkpoint(tmp_path):
    """A run killed after a checkpoint, then the sweep run again: it resumes and ends as an uninterrupted one."""
    from nextlab.train import train

    whole = sweep_from_dict(tiny_sweep(tmp_path / "whole", depths=(1,), tokens=(8192,)))
    killed = sweep_from_dict(tiny_sweep(tmp_path / "killed", depths=(1,), tokens=(8192,)))
    [p] = points(killed)
    evals = []

    def kill_at_third_evaluation(message, *a, **k):
        if str(message).startswith("step"):
            evals.append(message)
            if len(evals) == 3:  # checkpoints are saved every quarter of the run
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(p.config, resume=True, log=kill_at_third_evaluation)
    assert not (tmp_path / "killed" / p.name / "point.json").exists()
    assert list((tmp_path / "killed" / p.name / "checkpoints").glob("step_*"))
    [resumed] = run_sweep(killed, log=lambda *a: None)
    [reference] = run_sweep(whole, log=lambda *a: None)
    assert resumed["val_loss"] == reference["val_loss"]


def test_parallel_jobs_keep_their_directories_apart(tmp_path):
    r = run_cli("sweep", str(_write(tmp_path, tiny_sweep(tmp_path / "par", depths=(1, 2, 3)))), "--jobs", "2")
    assert r.returncode == 0, r.stderr
    rows = load_sweep_results(tmp_path / "par")
    assert sorted(r["name"] for r in rows) == ["d1-t4096-s0", "d2-t4096-s0", "d3-t4096-s0"]
    for r in rows:
        cfg = json.loads((tmp_path / "par" / r["name"] / "checkpoints").glob("step_*").__next__().joinpath("config.json").read_text())
        assert cfg["model"]["n_layer"] == int(r["name"][1])  # each directory holds its own run


def test_fit_refuses_degenerate_sweeps(tmp_path):
    one = [{"N": 1000, "D": 5000, "C": 3e7, "val_loss": 2.0, "tasks": {}}]
    with pytest.raises(NextlabError, match="several finished runs"):
        fit_sweep(one)
    flat = [{"N": n, "D": 5000, "C": 6 * n * 5000, "val_loss": 2.0, "tasks": {}} for n in (1e3, 1e4, 1e5, 1e6)]
    with pytest.raises(NextlabError, match="same validation loss"):
        fit_sweep(flat)
    r = run_cli("fit", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "no such sweep directory" in r.stderr


def _write(tmp_path, sweep: dict):
    import tomllib  # noqa: F401  (the file is read back with tomllib by the CLI)

    path = tmp_path / "sweep.toml"
    lines = [f'out = "{sweep["out"]}"']
    for section in ("grid", "data", "model", "train"):
        lines.append(f"[{section}]")
        for k, v in sweep[section].items():
            lines.append(f"{k} = {_toml(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(v):
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def synthetic_sweep(root, noise=0.005, seed=0):
    """point.json records drawn from a known law, with a task whose per-token accuracy rises smoothly."""
    import numpy as np

    rng = np.random.default_rng(seed)
    E, A, B, alpha, beta = 1.2, 300.0, 900.0, 0.4, 0.35
    for n in (2e4, 6e4, 2e5, 6e5, 2e6, 6e6):
        for d in (1e6, 4e6, 1.6e7):
            loss = (E + A * n**-alpha + B * d**-beta) * float(np.exp(rng.normal(0, noise)))
            p = 1 / (1 + np.exp(-2 * (np.log10(6 * n * d) - 13.5)))  # per-token accuracy, smooth in log C
            name = f"d{int(n)}-t{int(d)}-s0"
            (root / name).mkdir(parents=True)
            record = {"name": name, "N": n, "D": d, "C": 6 * n * d, "val_loss": loss, "wall_s": 1.0,
                      "tasks": {"sums": {"token_accuracy": p, "exact_match": p**8, "target_logprob": 8 * np.log(p)}}}
            (root / name / "point.json").write_text(json.dumps(record))
    return E, alpha, beta


def test_fit_cli_recovers_a_known_law(tmp_path):
    E, alpha, beta = synthetic_sweep(tmp_path / "syn")
    r = run_cli("fit", str(tmp_path / "syn"), "--bootstrap", "20", "--json", str(tmp_path / "fits.json"))
    assert r.returncode == 0, r.stderr
    fits = json.loads((tmp_path / "fits.json").read_text())
    law = fits["L(N, D)"]
    assert abs(law["alpha"] - alpha) < 0.05 and abs(law["beta"] - beta) < 0.05 and abs(law["E"] - E) / E < 0.05
    assert fits["extrapolation"]["max_abs_rel_error"] < 0.02
    assert "compute-optimal allocation" in r.stdout and "extrapolation" in r.stdout
    for png in ("loss_vs_scale.png", "iso_loss.png", "scores_vs_compute.png"):
        assert (tmp_path / "syn" / "plots" / png).stat().st_size > 1000


def test_emergence_cli_exact_match_is_sharper(tmp_path):
    synthetic_sweep(tmp_path / "syn")
    r = run_cli("emergence", str(tmp_path / "syn"), "--json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    rows = {row["metric"]: row for row in json.loads((tmp_path / "e.json").read_text())["across_sweep"]["sums"]}
    assert rows["exact_match"]["width_decades"] < rows["token_accuracy"]["width_decades"]
    assert "no task evaluations during training" in r.stdout  # synthetic runs have no metrics.jsonl: said, not crashed


def _figures(rows):
    """A point's record without its wall-clock time."""
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_two_shards_together_are_the_whole_grid(tmp_path):
    whole = run_sweep(sweep_from_dict(tiny_sweep(tmp_path / "whole", depths=(1, 2, 3))), log=lambda *a: None)
    sharded = tiny_sweep(tmp_path / "sharded", depths=(1, 2, 3))
    path = _write(tmp_path, sharded)
    shares = [run_cli("sweep", str(path), "--shard", share, "--no-progress") for share in ("1/2", "2/2")]
    assert [r.returncode for r in shares] == [0, 0], [r.stderr for r in shares]
    assert "2 runs (share 1/2)" in shares[0].stdout and "1 runs (share 2/2)" in shares[1].stdout
    assert not (tmp_path / "sharded" / "sweep.json").exists()  # no share holds the whole grid
    assert _figures(sorted(load_sweep_results(tmp_path / "sharded"), key=lambda r: r["name"])) == _figures(whole)
    for bad in ("0/2", "3/2", "1", "a/b", "-1/2"):
        r = run_cli("sweep", str(path), f"--shard={bad}")
        assert r.returncode == 2 and "--shard must be I/N" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_sweep_on_a_local_ray_cluster_records_what_a_local_one_does(tmp_path):
    ray = pytest.importorskip("ray")
    local = run_sweep(sweep_from_dict(tiny_sweep(tmp_path / "local", depths=(1, 2), seeds=(0, 1))), log=lambda *a: None)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        on_ray = run_sweep(sweep_from_dict(tiny_sweep(tmp_path / "ray", depths=(1, 2), seeds=(0, 1))), ray="local",
                           log=lambda *a: None)
    finally:
        ray.shutdown()
    assert len(on_ray) == 4 and _figures(on_ray) == _figures(local)
    assert all((tmp_path / "ray" / r["name"] / "point.json").exists() for r in on_ray)


def test_sigterm_stops_a_parallel_sweep_with_checkpoints_and_a_rerun_finishes_it(tmp_path):
    """The sweep passes SIGTERM to its running points: each writes a checkpoint and stops; the sweep exits 75,
    and running it again ends with the records of an uninterrupted sweep."""
    import signal
    import subprocess
    import sys

    grid = {"depths": (1, 2), "tokens": (131072,)}  # ~4 s a point here: neither can finish before the signal
    whole = run_sweep(sweep_from_dict(tiny_sweep(tmp_path / "whole", **grid)), log=lambda *a: None)
    path = _write(tmp_path, tiny_sweep(tmp_path / "stopped", **grid))
    cmd = [sys.executable, "-m", "nextlab", "sweep", str(path), "--jobs", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list((tmp_path / "stopped").glob("*/metrics.jsonl"))) < 2:  # both points are training
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    assert not list((tmp_path / "stopped").glob("*/point.json")), "a point finished before the signal: make them longer"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "stopped: on SIGTERM: 2 points stopped with a checkpoint" in err and "run the same sweep again" in err, err
    assert all(list((tmp_path / "stopped" / r["name"] / "checkpoints").glob("step_*")) for r in whole)
    again = run_cli("sweep", str(path), "--jobs", "2", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert _figures(sorted(load_sweep_results(tmp_path / "stopped"), key=lambda r: r["name"])) == _figures(whole)
