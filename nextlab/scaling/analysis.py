"""What a finished sweep says: scaling-law fits, the compute-optimal frontier, emergence, and plots.

Everything here reads the `point.json` records a sweep wrote; nothing trains.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from nextlab.errors import NextlabError
from nextlab.scaling.emergence import sharpness_table
from nextlab.scaling.fit import extrapolation_check, fit_chinchilla, fit_power_law

# Both metric families (nextlab.evals): exact match is all-or-nothing, the others give partial credit.
EMERGENCE_METRICS = ("exact_match", "token_accuracy", "target_logprob", "edit_distance")
BOUNDS = {"exact_match": (0.0, 1.0), "token_accuracy": (0.0, 1.0)}


def _arrays(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [r for r in rows if r.get("val_loss") is not None]
    return (np.array([r["N"] for r in rows], float), np.array([r["D"] for r in rows], float),
            np.array([r["val_loss"] for r in rows], float))


def fit_sweep(rows: list[dict], n_bootstrap: int = 200, seed: int = 0) -> dict:
    """The laws a sweep supports: L(N) (at the largest D), L(D) (at the largest N), L(N, D), and extrapolation.

    A form the sweep cannot support is reported with the reason instead of a number.
    """
    N, D, loss = _arrays(rows)
    out: dict = {"runs": len(loss), "distinct_N": int(np.unique(N).size), "distinct_D": int(np.unique(D).size)}
    if len(loss) < 2:
        raise NextlabError(f"a scaling fit needs several finished runs; the sweep has {len(loss)}")
    if np.ptp(loss) == 0:
        raise NextlabError("every run has the same validation loss: there is nothing to fit (did the runs train at all?)")

    def attempt(key: str, fn):
        try:
            out[key] = fn()
        except NextlabError as e:
            out[key] = {"skipped": str(e)}

    at_max_d = D == D.max()
    at_max_n = N == N.max()
    attempt("L(N)", lambda: fit_power_law(N[at_max_d], loss[at_max_d], n_bootstrap=n_bootstrap, seed=seed, variable="N"))
    attempt("L(D)", lambda: fit_power_law(D[at_max_n], loss[at_max_n], n_bootstrap=n_bootstrap, seed=seed, variable="D"))
    attempt("L(N, D)", lambda: fit_chinchilla(N, D, loss, n_bootstrap=n_bootstrap, seed=seed))
    attempt("extrapolation", lambda: extrapolation_check(N, D if np.unique(D).size > 1 else None, loss))
    law = out.get("L(N, D)")
    if not isinstance(law, dict) and law.alpha > 0 and law.beta > 0:
        budgets = np.logspace(math.log10(6 * N.min() * D.min()), math.log10(6 * N.max() * D.max()) + 1, 5)
        n_opt, d_opt = law.compute_optimal(budgets)
        out["compute_optimal"] = [{"C": float(c), "N_opt": float(n), "D_opt": float(d)} for c, n, d in zip(budgets, n_opt, d_opt)]
    return out


def fit_report(fits: dict) -> str:
    lines = [f"{fits['runs']} runs, {fits['distinct_N']} model sizes, {fits['distinct_D']} token budgets"]
    for key in ("L(N)", "L(D)", "L(N, D)"):
        f = fits[key]
        lines.append(f"{key}: " + (f"not fitted: {f['skipped']}" if isinstance(f, dict) else f.summary()))
    ext = fits["extrapolation"]
    lines.append("extrapolation: " + (f"not checked: {ext['skipped']}" if isinstance(ext, dict) else ext.summary()))
    if "compute_optimal" in fits:
        lines.append("compute-optimal allocation (C = 6ND):")
        lines += [f"  C={r['C']:.3g}: N_opt={r['N_opt']:.3g}, D_opt={r['D_opt']:.3g} ({r['D_opt'] / r['N_opt']:.1f} tokens/param)"
                  for r in fits["compute_optimal"]]
    return "\n".join(lines)


def fits_to_json(fits: dict) -> dict:
    return {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in fits.items()}


def task_names(rows: list[dict]) -> list[str]:
    return sorted({name for r in rows for name in r.get("tasks", {})})


def emergence(rows: list[dict], tasks: list[str] | None = None, x_key: str = "C") -> dict[str, list[dict]]:
    """Per task, one row per metric: how sharp its rise is against compute (log10 C), as a sigmoid's width."""
    out = {}
    for task in tasks or task_names(rows):
        points = [{"x": r[x_key], **r["tasks"][task]} for r in rows if task in r.get("tasks", {})]
        if not points:
            raise NextlabError(f"task {task!r} was not evaluated in this sweep; it has {', '.join(task_names(rows)) or 'none'}")
        metrics = [m for m in EMERGENCE_METRICS if any(m in p for p in points)]
        out[task] = sharpness_table(points, metrics, x_key="x", bounds=BOUNDS)
    return out


def emergence_over_training(run_dir: str | Path, n_params: int, tasks: list[str] | None = None) -> dict[str, list[dict]]:
    """The same sharpness figures over the training steps of one run (compute = 6 N tokens-so-far)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise NextlabError(f"{path}: missing, so no task evaluations during training to analyse")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [{"C": 6 * n_params * r["tokens"], "tasks": r["tasks"]} for r in rows if r.get("tasks") and r.get("tokens")]
    if not rows:
        raise NextlabError(f"{path}: no task evaluations during training (set train.eval_tasks)")
    return emergence(rows, tasks)


def emergence_report(table: dict[str, list[dict]], what: str = "compute") -> str:
    lines = [f"sharpness of each task's rise against {what}: 10-90% width of a sigmoid in decades (smaller = more abrupt)"]
    for task, rows in table.items():
        lines.append(f"{task}:")
        for r in rows:
            width = "no transition" if r["width_decades"] is None else f"{r['width_decades']:.2f} decades"
            mid = "" if r["midpoint"] is None else f", midpoint 10^{r['midpoint']:.2f}"
            r2 = "" if r["r2"] is None else f", R^2 {r['r2']:.2f}"
            note = f"  [{r['note']}]" if r["note"] else ""
            lines.append(f"  {r['metric']:<15} {width}{mid}{r2}{note}")
    return "\n".join(lines)


# --- plots --------------------------------------------------------------------------------------


def plot_sweep(rows: list[dict], fits: dict, out_dir: str | Path, tasks: list[str] | None = None) -> list[Path]:
    """Loss against N, D and C with the fits; iso-loss contours and the compute-optimal frontier; scores against C."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    N, D, loss = _arrays(rows)
    written = []
    law = fits.get("L(N, D)")
    law = None if isinstance(law, dict) else law

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, x, name in ((axes[0], N, "N (non-embedding parameters)"), (axes[1], D, "D (tokens)"), (axes[2], 6 * N * D, "C = 6ND (FLOPs)")):
        sc = ax.scatter(x, loss, c=np.log10(D if ax is axes[0] else N), cmap="viridis", s=22)
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("validation loss (nats/token)")
        fig.colorbar(sc, ax=ax, label="log10 D" if ax is axes[0] else "log10 N")
    for key, ax, x in (("L(N)", axes[0], N), ("L(D)", axes[1], D)):
        f = fits.get(key)
        if f is not None and not isinstance(f, dict):
            grid = np.logspace(np.log10(x.min()), np.log10(x.max()) + 0.3, 100)
            ax.plot(grid, f.predict(grid), "k--", lw=1, label=f.summary().split("  ")[0])
            ax.legend(fontsize=7)
    if law is not None and law.alpha > 0 and law.beta > 0:
        c = np.logspace(np.log10((6 * N * D).min()), np.log10((6 * N * D).max()) + 0.5, 100)
        n_opt, d_opt = law.compute_optimal(c)
        axes[2].plot(c, law.predict(n_opt, d_opt), "r-", lw=1, label="compute-optimal frontier (fit)")
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "loss_vs_scale.png"))

    if law is not None:
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        n_grid = np.logspace(np.log10(N.min()) - 0.3, np.log10(N.max()) + 0.5, 120)
        d_grid = np.logspace(np.log10(D.min()) - 0.3, np.log10(D.max()) + 0.5, 120)
        nn, dd = np.meshgrid(n_grid, d_grid)
        cs = ax.contour(nn, dd, law.predict(nn, dd), levels=12, cmap="viridis")
        ax.clabel(cs, fontsize=7)
        ax.scatter(N, D, c="k", s=14, label="runs")
        if law.alpha > 0 and law.beta > 0:
            c = np.logspace(np.log10((6 * nn * dd).min()), np.log10((6 * nn * dd).max()), 60)
            n_opt, d_opt = law.compute_optimal(c)
            keep = (n_opt >= n_grid[0]) & (n_opt <= n_grid[-1]) & (d_opt >= d_grid[0]) & (d_opt <= d_grid[-1])
            ax.plot(n_opt[keep], d_opt[keep], "r-", label="compute-optimal N, D")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (non-embedding parameters)")
        ax.set_ylabel("D (tokens)")
        ax.set_title("iso-loss contours of the fitted L(N, D)", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "iso_loss.png"))

    names = tasks or task_names(rows)
    if names:
        metrics = [m for m in EMERGENCE_METRICS if any(m in r.get("tasks", {}).get(t, {}) for r in rows for t in names)]
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.3), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for task in names:
                pts = sorted((r["C"], r["tasks"][task][metric]) for r in rows if metric in r.get("tasks", {}).get(task, {}))
                if pts:
                    ax.plot(*zip(*pts), "o-", ms=3, label=task)
            ax.set_xscale("log")
            ax.set_xlabel("C (FLOPs)")
            ax.set_title(metric, fontsize=10)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "scores_vs_compute.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
