"""Scaling-law fits: how loss falls with model size N and data D, with bootstrap intervals.

Two forms, both fitted the way Hoffmann et al. (2022, "approach 3") fit theirs, with the corrections of
Besiroglu et al. (2024, "Chinchilla scaling: a replication attempt"):

    L(x)    = E + A x^-alpha                  fit_power_law    (x = N non-embedding params, or D tokens)
    L(N, D) = E + A N^-alpha + B D^-beta      fit_chinchilla

The objective is the SUM over runs (not the mean: a mean shrinks the objective and its gradient until the
optimizer's tolerances stop it early) of a Huber loss on the log residuals log pred - log L. With E = exp(e), A = exp(a), B = exp(b),
log pred = logsumexp(e, a - alpha log N, b - beta log D) is finite for any parameter vector, so the
optimizer needs no bounds. The objective is not convex: the optimizer starts from the best points of a grid
and the lowest minimum wins. 95% intervals are percentiles over refits on runs resampled with replacement.

The optimizer is scipy's BFGS where Hoffmann et al. used L-BFGS. With five parameters L-BFGS's limited
memory (10 pairs) holds the whole BFGS update anyway, and scipy >= 1.15's L-BFGS-B calls LAPACK at every
step, which a multithreaded OpenBLAS on a busy CPU makes ~100x slower (scipy issue #22438).

Degenerate sweeps (one model size, equal losses, non-positive values) raise NextlabError instead of
returning numbers that mean nothing. extrapolation_check fits on all but the largest runs and predicts
them, which is what a scaling law is for.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber

from nextlab.errors import NextlabError

HUBER_DELTA = 1e-3  # Hoffmann et al.'s delta: below a 0.1% log residual the loss is quadratic, above it linear
GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_COEF = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)  # a, b (log A, log B)
GRID_EXPONENT = (0.0, 0.5, 1.0, 1.5, 2.0)  # alpha, beta
N_STARTS = 20  # BFGS runs from the N_STARTS grid points with the lowest objective (Chinchilla's grid has 4500)
N_BOOT_STARTS = 3  # a bootstrap refit starts from the full-data optimum and the best few grid points of its resample
BFGS_OPTIONS = {"maxiter": 2000, "gtol": 1e-8}  # the summed Huber loss is ~1e-4 and its gradient ~1: scipy's 1e-5 stops early
GRAD_TOL = 1e-6  # a start that stopped on precision loss still counts as converged if its gradient is this small
NAMES = {"N": "model sizes", "D": "dataset sizes"}


# ----------------------------------------------------------------------------------------------
# the model and its objective, shared by both forms
#
# theta = [e, a_1, alpha_1, ..., a_k, alpha_k]; log_x has shape (k, n), one row per variable.


def log_predict(theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(E + sum_i A_i x_i^-alpha_i) and the softmax weights of its terms (the gradient needs them).

    theta may carry leading batch dimensions (..., p), to score a whole grid at once.
    """
    k = log_x.shape[0]
    terms = [np.broadcast_to(theta[..., :1], theta.shape[:-1] + log_x.shape[1:])]
    terms += [theta[..., 1 + 2 * i, None] - theta[..., 2 + 2 * i, None] * log_x[i] for i in range(k)]
    t = np.stack(terms, axis=-2)  # (..., k + 1, n)
    m = t.max(axis=-2, keepdims=True)
    w = np.exp(t - m)
    s = w.sum(axis=-2, keepdims=True)
    return (m + np.log(s))[..., 0, :], w / s


def objective(theta: np.ndarray, log_x: np.ndarray, log_loss: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Summed Huber loss of the log residuals and its gradient."""
    lp, w = log_predict(theta, log_x)
    r = lp - log_loss
    dr = np.clip(r, -delta, delta)  # d huber / d r
    grad = np.empty_like(theta)
    grad[0] = (dr * w[0]).sum()
    for i in range(log_x.shape[0]):
        grad[1 + 2 * i] = (dr * w[1 + i]).sum()
        grad[2 + 2 * i] = -(dr * log_x[i] * w[1 + i]).sum()  # sums, not @: BLAS threads only contend at this size
    return float(huber(delta, r).sum()), grad


def start_grid(k: int) -> np.ndarray:
    """Hoffmann et al.'s grid of starting points: e x (a, alpha) per variable."""
    per_term = list(itertools.product(GRID_COEF, GRID_EXPONENT))
    rows = [(e, *itertools.chain(*terms)) for e in GRID_E for terms in itertools.product(per_term, repeat=k)]
    return np.array(rows, dtype=float)


def best_grid_points(grid: np.ndarray, log_x: np.ndarray, log_loss: np.ndarray, delta: float, n: int) -> np.ndarray:
    lp, _ = log_predict(grid, log_x)
    scores = huber(delta, lp - log_loss).sum(axis=-1)
    return grid[np.argsort(scores)[:n]]


@dataclass(frozen=True)
class Minimum:
    theta: np.ndarray
    value: float
    converged: bool


def minimize_from(starts: np.ndarray, log_x: np.ndarray, log_loss: np.ndarray, delta: float) -> Minimum | None:
    """BFGS from every start; the lowest minimum, or None when no start converged."""
    runs = []
    for theta0 in starts:
        res = minimize(objective, theta0, args=(log_x, log_loss, delta), jac=True, method="BFGS", options=BFGS_OPTIONS)
        if np.all(np.isfinite(res.x)) and np.isfinite(res.fun):
            runs.append(Minimum(res.x, float(res.fun), bool(res.success or np.max(np.abs(res.jac)) < GRAD_TOL)))
    if not any(run.converged for run in runs):
        return None
    return min(runs, key=lambda run: run.value)


def fit_terms(log_x: np.ndarray, log_loss: np.ndarray, delta: float, n_bootstrap: int, seed: int) -> tuple[Minimum, np.ndarray]:
    """Best fit over the grid's starts, and the parameter vectors of the bootstrap refits that converged."""
    grid = start_grid(log_x.shape[0])
    best = minimize_from(best_grid_points(grid, log_x, log_loss, delta, N_STARTS), log_x, log_loss, delta)
    if best is None:
        raise NextlabError(
            f"the scaling-law fit did not converge from any of {N_STARTS} starting points; check that loss falls with scale, or add runs"
        )
    rng = np.random.default_rng(seed)
    n = log_loss.size
    boot = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)  # resample runs with replacement
        bx, by = log_x[:, idx], log_loss[idx]
        starts = np.vstack([best.theta, best_grid_points(grid, bx, by, delta, N_BOOT_STARTS)])
        refit = minimize_from(starts, bx, by, delta)
        if refit is not None:
            boot.append(refit.theta)
    return best, np.array(boot).reshape(-1, log_x.shape[0] * 2 + 1)


def percentile_ci(samples: np.ndarray) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size < 2:
        return (math.nan, math.nan)
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return (float(lo), float(hi))


# ----------------------------------------------------------------------------------------------
# input checks: say what is wrong with the sweep and what to do


def positive_array(name: str, values) -> np.ndarray:
    x = np.asarray(values, dtype=float).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(x) | (x <= 0))
    if bad.size:
        i = bad[0]
        raise NextlabError(f"{name} must be finite and positive; run {i} has {name} = {x[i]!r} ({bad.size} such run(s)); drop or fix them")
    return x


def check_sweep(arrays: dict[str, np.ndarray], loss: np.ndarray, n_params: int) -> None:
    for name, x in arrays.items():
        if x.size != loss.size:
            raise NextlabError(f"{name} has {x.size} values but loss has {loss.size}; give one {name} per run")
    if loss.size < n_params + 1:
        raise NextlabError(f"need at least {n_params + 1} runs to fit {n_params} parameters; the sweep has {loss.size}")
    for name, x in arrays.items():
        distinct = np.unique(x).size
        if distinct < 3:
            what = NAMES.get(name, f"distinct values of {name}")
            raise NextlabError(f"need at least 3 {what}; the sweep has {distinct}: add runs at other {name} to fit how loss scales")
    if np.ptp(np.log(loss)) < 1e-12:
        raise NextlabError(f"all {loss.size} losses are equal ({loss[0]:.6g}): there is no variation to fit a scaling law to")


def clean(value):
    """JSON-safe: tuples to lists, numpy to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def ci_text(name: str, ci: tuple[float, float]) -> str:
    if not all(map(math.isfinite, ci)):
        return ""
    dash = "-" if ci[0] >= 0 else " to "  # "-0.51--0.38" would be hard to read
    return f"{name} 95% CI {ci[0]:.2f}{dash}{ci[1]:.2f}"


# ----------------------------------------------------------------------------------------------
# L(x) = E + A x^-alpha


@dataclass(frozen=True)
class PowerLawFit:
    """L(x) = E + A x^-alpha. `ci` maps each parameter to its 95% bootstrap interval (NaN without a bootstrap)."""

    E: float
    A: float
    alpha: float
    ci: dict[str, tuple[float, float]]
    n_points: int
    converged: bool  # the lowest minimum is a converged BFGS run (some start always is, or the fit raises)
    objective: float  # summed Huber loss at the optimum
    n_bootstrap: int  # resamples whose refit converged; the intervals use these
    variable: str = "x"

    def predict(self, x) -> np.ndarray:
        return self.E + self.A * np.asarray(x, dtype=float) ** -self.alpha

    def summary(self) -> str:
        text = f"L({self.variable}) = {self.E:.3g} + {self.A:.3g} {self.variable}^{-self.alpha:.2f}"
        ci = ci_text("alpha", self.ci["alpha"])
        text += f"  ({ci})" if ci else ""
        return text + ("" if self.converged else "  [best start did not converge]")

    def to_dict(self) -> dict:
        return clean(
            {
                "form": f"L({self.variable}) = E + A {self.variable}^-alpha",
                "E": self.E,
                "A": self.A,
                "alpha": self.alpha,
                "ci": self.ci,
                "n_points": self.n_points,
                "converged": self.converged,
                "objective": self.objective,
                "n_bootstrap": self.n_bootstrap,
                "variable": self.variable,
            }
        )


def fit_power_law(x, loss, *, n_bootstrap: int = 200, seed: int = 0, huber_delta: float = HUBER_DELTA, variable: str = "x") -> PowerLawFit:
    """Fit L(x) = E + A x^-alpha (x: N non-embedding params or D tokens) and bootstrap 95% intervals."""
    x, loss = positive_array(variable, x), positive_array("loss", loss)
    check_sweep({variable: x}, loss, n_params=3)
    best, boot = fit_terms(np.log(x)[None], np.log(loss), huber_delta, n_bootstrap, seed)
    e, a, alpha = best.theta
    with np.errstate(over="ignore"):  # a wild bootstrap refit may put A at exp(800): inf is its honest percentile
        ci = {"E": percentile_ci(np.exp(boot[:, 0])), "A": percentile_ci(np.exp(boot[:, 1])), "alpha": percentile_ci(boot[:, 2])}
    E, A = (float(v) for v in np.exp([e, a]))
    return PowerLawFit(E, A, float(alpha), ci, int(loss.size), best.converged, best.value, len(boot), variable)


# ----------------------------------------------------------------------------------------------
# L(N, D) = E + A N^-alpha + B D^-beta


def optimal_exponents(alpha, beta):
    """N_opt ~ C^a, D_opt ~ C^b under C = 6 N D (NaN where alpha + beta = 0)."""
    total = np.asarray(alpha, dtype=float) + beta
    with np.errstate(divide="ignore", invalid="ignore"):
        return beta / total, alpha / total


@dataclass(frozen=True)
class ChinchillaFit:
    """L(N, D) = E + A/N^alpha + B/D^beta. `ci` maps each parameter, and the compute-optimal exponents a and b, to 95% intervals."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    ci: dict[str, tuple[float, float]]
    n_points: int
    converged: bool
    objective: float
    n_bootstrap: int

    def predict(self, N, D) -> np.ndarray:
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A * N**-self.alpha + self.B * D**-self.beta

    @property
    def exponents(self) -> tuple[float, float]:
        """(a, b): N_opt grows as C^a and D_opt as C^b, a + b = 1."""
        a, b = optimal_exponents(self.alpha, self.beta)
        return float(a), float(b)

    def compute_optimal(self, C):
        """(N_opt, D_opt) minimizing L under C = 6 N D (Hoffmann et al., appendix D.2)."""
        if not (self.alpha > 0 and self.beta > 0):
            raise NextlabError(
                f"no compute-optimal allocation: it needs alpha > 0 and beta > 0, the fit has {self.alpha:.3g} and {self.beta:.3g}"
            )
        a, b = self.exponents
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        budget = np.asarray(C, dtype=float) / 6
        return G * budget**a, budget**b / G

    def summary(self) -> str:
        text = f"L(N, D) = {self.E:.3g} + {self.A:.3g} N^{-self.alpha:.2f} + {self.B:.3g} D^{-self.beta:.2f}"
        cis = ", ".join(filter(None, [ci_text("alpha", self.ci["alpha"]), ci_text("beta", self.ci["beta"])]))
        text += f"  ({cis})" if cis else ""
        if self.alpha > 0 and self.beta > 0:
            a, b = self.exponents
            text += f"; N_opt ~ C^{a:.2f}, D_opt ~ C^{b:.2f}"
        return text + ("" if self.converged else "  [best start did not converge]")

    def to_dict(self) -> dict:
        a, b = self.exponents
        return clean(
            {
                "form": "L(N, D) = E + A N^-alpha + B D^-beta",
                "E": self.E,
                "A": self.A,
                "B": self.B,
                "alpha": self.alpha,
                "beta": self.beta,
                "a": a,
                "b": b,
                "ci": self.ci,
                "n_points": self.n_points,
                "converged": self.converged,
                "objective": self.objective,
                "n_bootstrap": self.n_bootstrap,
            }
        )


def fit_chinchilla(N, D, loss, *, n_bootstrap: int = 200, seed: int = 0, huber_delta: float = HUBER_DELTA) -> ChinchillaFit:
    """Hoffmann et al.'s approach 3 with Besiroglu et al.'s corrections, and bootstrap 95% intervals.

    Of the 4500-point grid (e x a x alpha x b x beta) the objective is evaluated everywhere and BFGS
    starts from the best N_STARTS points.
    """
    N, D, loss = positive_array("N", N), positive_array("D", D), positive_array("loss", loss)
    check_sweep({"N": N, "D": D}, loss, n_params=5)
    log_x = np.log(np.stack([N, D]))
    if abs(np.corrcoef(log_x)[0, 1]) > 1 - 1e-9:
        raise NextlabError("N and D move together (D is a power of N in every run): vary them independently, or fit L(N) alone")
    best, boot = fit_terms(log_x, np.log(loss), huber_delta, n_bootstrap, seed)
    e, a, alpha, b, beta = best.theta
    boot_a, boot_b = optimal_exponents(boot[:, 2], boot[:, 4])
    ci = {
        "E": percentile_ci(np.exp(boot[:, 0])),
        "A": percentile_ci(np.exp(boot[:, 1])),
        "alpha": percentile_ci(boot[:, 2]),
        "B": percentile_ci(np.exp(boot[:, 3])),
        "beta": percentile_ci(boot[:, 4]),
        "a": percentile_ci(boot_a),
        "b": percentile_ci(boot_b),
    }
    E, A, B = (float(v) for v in np.exp([e, a, b]))
    return ChinchillaFit(E, A, B, float(alpha), float(beta), ci, int(loss.size), best.converged, best.value, len(boot))


# ----------------------------------------------------------------------------------------------
# does the law predict the largest runs from the smaller ones?


@dataclass(frozen=True)
class ExtrapolationResult:
    form: str  # "L(N, D)", "L(N)" or "L(D)"
    fit: PowerLawFit | ChinchillaFit
    n_train: int
    N: tuple[float, ...]  # the held-out runs
    D: tuple[float, ...]
    actual: tuple[float, ...]
    predicted: tuple[float, ...]

    @property
    def rel_error(self) -> tuple[float, ...]:
        """(predicted - actual) / actual per held-out run."""
        return tuple((p - a) / a for p, a in zip(self.predicted, self.actual, strict=True))

    @property
    def max_abs_rel_error(self) -> float:
        return max(abs(r) for r in self.rel_error)

    def summary(self) -> str:
        lines = [
            f"{self.form} fitted on {self.n_train} runs: {self.fit.summary()}",
            f"held out {len(self.actual)} run(s); predicted vs actual loss:",
        ]
        for n, d, a, p, r in zip(self.N, self.D, self.actual, self.predicted, self.rel_error, strict=True):
            at = f"N={n:.3g}" + (f" D={d:.3g}" if math.isfinite(d) else "")  # D is NaN when the sweep gave none
            lines.append(f"  {at}: predicted {p:.4f}, actual {a:.4f} ({100 * r:+.2f}%)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        held = [
            {"N": n, "D": d, "actual": a, "predicted": p, "rel_error": r}
            for n, d, a, p, r in zip(self.N, self.D, self.actual, self.predicted, self.rel_error, strict=True)
        ]
        return clean(
            {
                "form": self.form,
                "fit": self.fit.to_dict(),
                "n_train": self.n_train,
                "held_out": held,
                "max_abs_rel_error": self.max_abs_rel_error,
            }
        )


def extrapolation_check(N, D, loss, holdout: str = "largest", *, n_bootstrap: int = 0, seed: int = 0) -> ExtrapolationResult:
    """Fit on every run but those at the largest N, and predict those.

    The form follows the sweep: L(N, D) when both vary, L(N) when every D is equal (or D is None), and
    L(D) when every N is equal (then the runs at the largest D are held out).
    """
    if holdout != "largest":
        raise NextlabError(f"unknown holdout {holdout!r}; the only one is 'largest'")
    loss = positive_array("loss", loss)
    N = positive_array("N", N)
    D = np.full_like(N, math.nan) if D is None else positive_array("D", D)
    if N.size != loss.size or D.size != loss.size:
        raise NextlabError(f"N, D and loss must have one value per run; got {N.size}, {D.size} and {loss.size}")
    vary_n, vary_d = np.unique(N).size > 1, np.unique(D[np.isfinite(D)]).size > 1
    form, key = ("L(D)", "D") if vary_d and not vary_n else ("L(N, D)" if vary_d else "L(N)", "N")
    x = D if key == "D" else N
    test = x == x.max()
    train = ~test
    distinct = np.unique(x[train]).size
    if distinct < 3:
        raise NextlabError(f"to extrapolate, need at least 3 {NAMES[key]} below the largest; the sweep has {distinct}: add smaller runs")
    if form == "L(N, D)":
        fit = fit_chinchilla(N[train], D[train], loss[train], n_bootstrap=n_bootstrap, seed=seed)
        predicted = fit.predict(N[test], D[test])
    else:
        fit = fit_power_law(x[train], loss[train], n_bootstrap=n_bootstrap, seed=seed, variable=key)
        predicted = fit.predict(x[test])
    return ExtrapolationResult(form, fit, int(train.sum()), floats(N[test]), floats(D[test]), floats(loss[test]), floats(predicted))


def floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values).reshape(-1))
