"""Scaling-law fits and emergence sharpness on synthetic data whose true parameters are known.

Noise is multiplicative log-normal with a fixed seed, so each fit sees the same data on every run. With
1% noise the fitted E scatters by about 2.5% from seed to seed, so the 5% tolerance on E is about two
standard deviations; the exponents are far better determined (within 0.01 on every seed we tried).
Bootstraps are kept small (30 resamples) so the file runs in seconds.
"""

import json
import math
import re

import numpy as np
import pytest
from scipy.special import expit

from nextlab.errors import NextlabError
from nextlab.scaling.emergence import fit_sigmoid, sharpness_table
from nextlab.scaling.fit import extrapolation_check, fit_chinchilla, fit_power_law

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al.'s approach-3 fit


def chinchilla_loss(N, D):
    c = CHINCHILLA
    return c["E"] + c["A"] * N ** -c["alpha"] + c["B"] * D ** -c["beta"]


def sweep(n_sizes=6, n_data=7):
    """Every model size trained for every data size: N in 1e5..1e8, D in 1e6..1e10."""
    N, D = np.meshgrid(np.logspace(5, 8, n_sizes), np.logspace(6, 10, n_data))
    return N.ravel(), D.ravel()


def noisy(loss, sigma=0.01, seed=1):
    return loss * np.exp(np.random.default_rng(seed).normal(0, sigma, np.shape(loss)))


@pytest.fixture(scope="module")
def chinchilla_fit():
    N, D = sweep()
    return fit_chinchilla(N, D, noisy(chinchilla_loss(N, D)), n_bootstrap=30, seed=1)


# ----------------------------------------------------------------------------------------------
# fits recover the law they were generated from


def test_chinchilla_recovers_parameters(chinchilla_fit):
    fit = chinchilla_fit
    assert fit.converged and fit.n_points == 42
    assert abs(fit.alpha - CHINCHILLA["alpha"]) < 0.05
    assert abs(fit.beta - CHINCHILLA["beta"]) < 0.05
    assert abs(fit.E / CHINCHILLA["E"] - 1) < 0.05
    assert fit.n_bootstrap >= 25  # nearly every resample's refit converged
    lo, hi = fit.ci["alpha"]
    assert lo <= CHINCHILLA["alpha"] <= hi
    lo, hi = fit.ci["beta"]
    assert lo <= CHINCHILLA["beta"] <= hi
    assert fit.ci["E"][0] < fit.E < fit.ci["E"][1]


def test_chinchilla_noiseless_is_exact():
    N, D = sweep(5, 5)
    fit = fit_chinchilla(N, D, chinchilla_loss(N, D), n_bootstrap=0)
    for name, true in CHINCHILLA.items():
        assert getattr(fit, name) == pytest.approx(true, rel=1e-3), name
    assert all(math.isnan(v) for v in fit.ci["alpha"])  # no bootstrap, no interval


def test_power_law_recovers_parameters():
    N = np.logspace(4, 9, 11)
    loss = noisy(1.69 + 406.4 * N**-0.34, seed=1)
    fit = fit_power_law(N, loss, n_bootstrap=30, seed=1, variable="N")
    assert fit.converged
    assert abs(fit.alpha - 0.34) < 0.05
    assert abs(fit.E / 1.69 - 1) < 0.05
    assert fit.ci["alpha"][0] <= 0.34 <= fit.ci["alpha"][1]
    assert np.allclose(fit.predict(N), loss, rtol=0.03)


def test_summaries_and_json(chinchilla_fit):
    power = fit_power_law(np.logspace(4, 8, 6), 1.5 + 30 * np.logspace(4, 8, 6) ** -0.3, n_bootstrap=5, variable="N")
    assert re.fullmatch(r"L\(N\) = [\d.]+ \+ [\d.]+ N\^-0\.\d\d  \(alpha 95% CI \d\.\d\d-\d\.\d\d\)", power.summary()), power.summary()
    assert "N_opt ~ C^" in chinchilla_fit.summary()
    for fit in (power, chinchilla_fit):
        d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
        assert d["alpha"] == pytest.approx(fit.alpha)
        assert len(d["ci"]["alpha"]) == 2


# ----------------------------------------------------------------------------------------------
# compute-optimal allocation


def test_compute_optimal_is_on_budget_and_minimal(chinchilla_fit):
    fit = chinchilla_fit
    for C in (1e18, 1e21, 1e24):
        N_opt, D_opt = fit.compute_optimal(C)
        assert 6 * N_opt * D_opt == pytest.approx(C, rel=1e-12)
        Ns = np.logspace(np.log10(N_opt) - 2, np.log10(N_opt) + 2, 40001)  # 1e-4 decades apart
        N_brute = Ns[np.argmin(fit.predict(Ns, C / (6 * Ns)))]
        assert abs(np.log10(N_brute / N_opt)) < 2e-4
    a, b = fit.exponents
    assert a + b == pytest.approx(1)
    (N1, _), (N2, _) = fit.compute_optimal(1e20), fit.compute_optimal(1e22)
    assert np.log10(N2 / N1) / 2 == pytest.approx(a)
    assert fit.ci["a"][0] <= a <= fit.ci["a"][1]
    N_arr, D_arr = fit.compute_optimal(np.array([1e20, 1e22]))
    assert N_arr.shape == (2,) and N_arr[0] == pytest.approx(N1)


# ----------------------------------------------------------------------------------------------
# extrapolation to the largest runs


def test_extrapolation_chinchilla_noiseless():
    N, D = sweep(6, 5)
    result = extrapolation_check(N, D, chinchilla_loss(N, D))
    assert result.form == "L(N, D)"
    assert result.n_train == 25 and len(result.actual) == 5
    assert set(result.N) == {N.max()}
    assert result.max_abs_rel_error < 0.01
    assert "held out 5 run(s)" in result.summary()
    json.dumps(result.to_dict(), allow_nan=False)


def test_extrapolation_power_law_forms():
    N = np.logspace(5, 8, 6)
    loss = 1.69 + 406.4 * N**-0.34
    for D in (np.full(6, 1e9), None):
        result = extrapolation_check(N, D, loss)
        assert result.form == "L(N)" and result.n_train == 5
        assert result.max_abs_rel_error < 0.01
    D = np.logspace(6, 10, 6)
    result = extrapolation_check(np.full(6, 1e7), D, 1.69 + 410.7 * D**-0.28)
    assert result.form == "L(D)" and result.D == (1e10,)
    assert result.max_abs_rel_error < 0.01


def test_extrapolation_needs_three_smaller_sizes():
    N, D = sweep(3, 5)  # holding out the largest leaves 2 model sizes
    with pytest.raises(NextlabError, match="need at least 3 model sizes below the largest; the sweep has 2"):
        extrapolation_check(N, D, chinchilla_loss(N, D))
    with pytest.raises(NextlabError, match="holdout"):
        extrapolation_check(N, D, chinchilla_loss(N, D), holdout="random")


# ----------------------------------------------------------------------------------------------
# degenerate sweeps fail with a message that says what to do


def test_one_run_is_an_error():
    with pytest.raises(NextlabError, match="need at least 4 runs to fit 3 parameters; the sweep has 1"):
        fit_power_law([1e6], [3.0])
    with pytest.raises(NextlabError, match="need at least 6 runs to fit 5 parameters; the sweep has 1"):
        fit_chinchilla([1e6], [1e9], [3.0])


def test_one_model_size_is_an_error():
    D = np.logspace(6, 10, 8)
    with pytest.raises(NextlabError, match="need at least 3 model sizes; the sweep has 1"):
        fit_chinchilla(np.full(8, 1e6), D, 1.69 + 410.7 * D**-0.28)


def test_equal_losses_are_an_error():
    N, D = sweep(4, 4)
    with pytest.raises(NextlabError, match="losses are equal"):
        fit_chinchilla(N, D, np.full(N.size, 2.5))
    with pytest.raises(NextlabError, match="losses are equal"):
        fit_power_law(np.logspace(4, 8, 5), np.full(5, 2.5))


@pytest.mark.parametrize("bad", [-1.0, 0.0, math.nan, math.inf])
def test_non_positive_or_non_finite_loss_is_an_error(bad):
    N = np.logspace(4, 8, 5)
    loss = 1.5 + 30 * N**-0.3
    loss[2] = bad
    with pytest.raises(NextlabError, match="loss must be finite and positive; run 2"):
        fit_power_law(N, loss)


def test_other_bad_sweeps():
    N, D = sweep(4, 4)
    with pytest.raises(NextlabError, match="N must be finite and positive"):
        fit_chinchilla(-N, D, chinchilla_loss(N, D))
    with pytest.raises(NextlabError, match="one D per run"):
        fit_chinchilla(N, D[:-1], chinchilla_loss(N, D))
    N = np.logspace(5, 8, 8)
    with pytest.raises(NextlabError, match="move together"):
        fit_chinchilla(N, 20 * N, chinchilla_loss(N, 20 * N))


# ----------------------------------------------------------------------------------------------
# emergence: sharpness of a capability curve


X = np.linspace(17, 23, 61)  # log10 compute, 0.1 decades apart


@pytest.mark.parametrize("s", [0.1, 1.0])
def test_sigmoid_recovers_midpoint_and_width(s):
    score = expit((X - 20.3) / s) + np.random.default_rng(0).normal(0, 0.01, X.size)
    true_width = 2 * math.log(9) * s
    for fit in (fit_sigmoid(X, score), fit_sigmoid(X, score, lower=0, upper=1)):
        assert abs(fit.x0 - 20.3) < 0.1
        assert fit.width_decades == pytest.approx(true_width, rel=0.1)
        assert fit.r2 > 0.99 and fit.contained and fit.note == ""
        assert fit.lo < fit.hi


def test_sigmoid_falling_curve_has_negative_scale():
    score = 1 - expit((X - 20.3) / 0.5)
    for fit in (fit_sigmoid(X, score), fit_sigmoid(X, score, lower=0, upper=1)):
        assert fit.s < 0
        assert fit.width_decades == pytest.approx(2 * math.log(9) * 0.5, rel=0.01)
        assert fit.x0 == pytest.approx(20.3, abs=0.01)


def test_exact_match_is_sharper_than_per_token_accuracy():
    # Schaeffer et al.: per-token accuracy p rises smoothly with log compute; exact match of a
    # 10-token answer is about p^10, and looks far more "emergent" on the same models
    x = np.linspace(18, 24, 13)
    p = expit(x - 21)
    per_token = fit_sigmoid(x, p, lower=0, upper=1)
    exact = fit_sigmoid(x, p**10, lower=0, upper=1)
    assert per_token.width_decades == pytest.approx(2 * math.log(9), rel=1e-3)
    assert exact.contained and exact.x0 > per_token.x0
    assert exact.width_decades < 0.7 * per_token.width_decades


def test_flat_and_tiny_curves_give_a_note_not_an_error():
    flat = fit_sigmoid(X, np.full(X.size, 0.25))
    assert flat.width_decades == math.inf and "flat" in flat.note and not flat.contained
    assert json.loads(json.dumps(flat.to_dict(), allow_nan=False))["width_decades"] is None
    assert "too few points" in fit_sigmoid([20, 21], [0.1, 0.9]).note


def test_uncontained_transition_is_flagged():
    x = np.linspace(17, 20, 16)
    fit = fit_sigmoid(x, expit((x - 21.5) / 0.4), lower=0, upper=1)
    assert not fit.contained and "not contained" in fit.note
    assert fit.x0 == pytest.approx(21.5, abs=0.05)


def test_sharpness_table_survives_flat_and_missing_metrics():
    x = np.linspace(18, 24, 13)
    p = expit(x - 21)
    points = [{"compute": 10**v, "token_accuracy": q, "exact_match": q**10, "brier": 0.25} for v, q in zip(x, p, strict=True)]
    del points[0]["exact_match"]
    rows = sharpness_table(points, ["token_accuracy", "exact_match", "brier", "absent"], bounds={"exact_match": (0, 1)})
    by_metric = {row["metric"]: row for row in rows}
    assert by_metric["exact_match"]["n_points"] == 12
    assert by_metric["exact_match"]["width_decades"] < by_metric["token_accuracy"]["width_decades"]
    assert by_metric["token_accuracy"]["midpoint"] == pytest.approx(21, abs=0.01)
    assert by_metric["brier"]["width_decades"] is None and "flat" in by_metric["brier"]["note"]
    assert by_metric["absent"]["n_points"] == 0
    json.dumps(rows, allow_nan=False)
    with pytest.raises(NextlabError, match="positive compute"):
        sharpness_table([{"compute": 0, "m": 1.0}], ["m"])
