"""Linear probes: can a linear map read a latent variable off the residual stream?

Ridge regression for continuous latents (scored by R^2), multinomial logistic
regression for discrete ones (scored by accuracy). Both are fitted on one set of
documents and scored on another. A probe's score means little alone, so every
result carries its controls (see `probe_layers`):

- the same probe on a randomly initialized model of the same shape: what the
  architecture and the token identities give for free;
- shuffled labels: the same probe fitted and scored with the labels permuted
  across positions, which measures what the probe finds in noise (chance, for a
  probe that is not overfitting). Selectivity, as Hewitt and Liang (2019) define
  it, is the score on the latent minus the score on the control. (Their control
  task, a random label per token type, is degenerate on these worlds: with 3 HMM
  symbols or 10 digits, token identity predicts it perfectly; measured 1.000 at
  every layer of the demo model.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

RIDGE_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """R^2 averaged over output dimensions (dimensions with no variance are skipped)."""
    y, pred = y.reshape(len(y), -1), pred.reshape(len(pred), -1)
    var = y.var(0)
    keep = var > 1e-12
    if not keep.any():
        return float("nan")
    return float(np.mean(1 - ((y - pred) ** 2).mean(0)[keep] / var[keep]))


def ridge_fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, lam: float) -> np.ndarray:
    x_train, x_test = _standardize(x_train, x_test)
    y_mean = y_train.mean(0)
    a = x_train.T @ x_train + lam * len(x_train) * np.eye(x_train.shape[1])
    w = np.linalg.solve(a, x_train.T @ (y_train - y_mean))
    return x_test @ w + y_mean


def ridge_probe(x_train, y_train, x_test, y_test) -> float:
    """R^2 on the test set; the penalty is chosen on the last fifth of the training set."""
    x_train, y_train = np.asarray(x_train, np.float64), np.asarray(y_train, np.float64).reshape(len(x_train), -1)
    x_test, y_test = np.asarray(x_test, np.float64), np.asarray(y_test, np.float64).reshape(len(x_test), -1)
    cut = max(1, int(0.8 * len(x_train)))
    best = max(RIDGE_LAMBDAS, key=lambda lam: r2_score(y_train[cut:], ridge_fit_predict(x_train[:cut], y_train[:cut], x_train[cut:], lam)))
    return r2_score(y_test, ridge_fit_predict(x_train, y_train, x_test, best))


def logistic_probe(x_train, y_train, x_test, y_test, l2: float = 1e-3, seed: int = 0) -> float:
    """Accuracy on the test set of a multinomial logistic regression (L2-penalized, full-batch L-BFGS)."""
    x_train, x_test = _standardize(np.asarray(x_train, np.float64), np.asarray(x_test, np.float64))
    classes, y_train_idx = np.unique(np.asarray(y_train), return_inverse=True)
    if len(classes) == 1:
        return float(np.mean(np.asarray(y_test) == classes[0]))
    gen = torch.Generator().manual_seed(seed)
    xt = torch.tensor(x_train, dtype=torch.float64)
    yt = torch.tensor(y_train_idx)
    w = (0.01 * torch.randn(xt.shape[1], len(classes), generator=gen, dtype=torch.float64)).requires_grad_()
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = classes[(torch.tensor(x_test, dtype=torch.float64) @ w + b).argmax(1).numpy()]
    return float(np.mean(pred == np.asarray(y_test)))


def shuffled(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The labels permuted across positions: no relation to the activations is left."""
    return labels[np.random.default_rng(seed).permutation(len(labels))]


@dataclass
class ProbeData:
    """Activations per hook point, and the latent and token id at every probed position."""

    acts: dict[str, np.ndarray]  # hook name -> (n, d)
    labels: np.ndarray  # (n,) discrete or (n, k) continuous
    doc: np.ndarray  # (n,) which document each position came from


def chance(labels_test: np.ndarray, labels_train: np.ndarray, continuous: bool) -> float:
    """What knowing nothing scores: R^2 0 for regression, the majority class's share for classification."""
    if continuous:
        return 0.0
    values, counts = np.unique(labels_train, return_counts=True)
    return float(np.mean(labels_test == values[counts.argmax()]))


def probe_layers(trained: ProbeData, random_init: ProbeData | None, continuous: bool, train_fraction: float = 0.7,
                 seed: int = 0) -> list[dict]:
    """Per hook point: the probe's score, and its controls (random model, shuffled labels, selectivity, chance).

    Documents, not positions, are split into train and test: a probe never scores on a document it saw.
    """
    docs = np.unique(trained.doc)
    rng = np.random.default_rng(seed)
    train_docs = set(rng.permutation(docs)[: max(1, int(train_fraction * len(docs)))].tolist())
    is_train = np.array([d in train_docs for d in trained.doc.tolist()])
    if is_train.all() or not is_train.any():
        raise ValueError("need at least two documents to split into probe train and test sets")
    fit = ridge_probe if continuous else (lambda a, b, c, d: logistic_probe(a, b, c, d, seed=seed))
    y = trained.labels
    y_control = shuffled(y, seed)
    rows = []
    for name, x in trained.acts.items():
        row = {
            "hook": name,
            "score": fit(x[is_train], y[is_train], x[~is_train], y[~is_train]),
            "shuffled": fit(x[is_train], y_control[is_train], x[~is_train], y_control[~is_train]),
            "chance": chance(y[~is_train], y[is_train], continuous),
        }
        if random_init is not None:
            xr = random_init.acts[name]
            row["random_model"] = fit(xr[is_train], y[is_train], xr[~is_train], y[~is_train])
        row["selectivity"] = row["score"] - row["shuffled"]
        rows.append(row)
    return rows
