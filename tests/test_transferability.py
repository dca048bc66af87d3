"""The transferability estimators against direct computations on small synthetic problems."""
from __future__ import annotations

import math

import numpy as np
import pytest

from zoo.tools import transferability as tr


def _log_evidence_direct(f, y, alpha, beta):
    """log N(y; 0, β⁻¹I + α⁻¹FFᵀ) / N by Cholesky: the evidence with w integrated out."""
    n = f.shape[0]
    cov = np.eye(n) / beta + f @ f.T / alpha
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, y)
    logdet = 2 * np.sum(np.log(np.diag(chol)))
    return (-0.5 * (n * math.log(2 * math.pi) + logdet + sol @ sol)) / n


def _brute_force_max(f, y):
    """max over (α, β) of the direct evidence: a log grid, then Nelder-Mead from its best."""
    from scipy.optimize import minimize

    grid = np.linspace(-8, 10, 49)
    best = max(((a, b) for a in grid for b in grid),
               key=lambda p: _log_evidence_direct(f, y, math.exp(p[0]), math.exp(p[1])))
    grid_best = _log_evidence_direct(f, y, math.exp(best[0]), math.exp(best[1]))
    res = minimize(lambda p: -_log_evidence_direct(f, y, math.exp(p[0]), math.exp(p[1])),
                   np.array(best), method="Nelder-Mead",
                   options={"xatol": 1e-9, "fatol": 1e-13, "maxiter": 4000})
    return max(grid_best, -res.fun), grid_best


def _problem(n, d, k, signal, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)  # every class present
    f = rng.normal(size=(n, d))
    f[:, :k] += signal * np.eye(k)[y]
    return f, y


@pytest.mark.parametrize("n,d", [(30, 6), (12, 40)])  # N > D (eigh path) and N < D (SVD path)
def test_logme_evidence_is_the_gaussian_marginal_likelihood(n, d):
    f, y = _problem(n, d, 3, 1.0, 0)
    col = (y == 1).astype(float)
    for alpha, beta in [(0.3, 2.0), (5.0, 0.7), (120.0, 9.0)]:
        assert tr.logme_evidence(f, col, alpha, beta) == pytest.approx(
            _log_evidence_direct(f, col, alpha, beta), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("n,d,signal", [(40, 6, 1.5), (30, 5, 0.0), (12, 40, 0.0),
                                        (25, 60, 2.0)])
def test_logme_fixed_point_matches_brute_force_maximisation(n, d, signal):
    """The fixed point finds the evidence maximum over (α, β) that a grid + simplex finds."""
    f, y = _problem(n, d, 3, signal, 1)
    fits = tr.logme_fit(f, y)
    assert len(fits) == 3
    for k, fit in enumerate(fits):
        col = (y == k).astype(float)
        brute, grid_best = _brute_force_max(f, col)
        assert fit.evidence == pytest.approx(brute, abs=2e-6)
        assert fit.evidence >= grid_best - 1e-9  # never below any grid point
        if math.isfinite(fit.alpha):  # an interior maximum: the reported α, β attain it
            assert _log_evidence_direct(f, col, fit.alpha, fit.beta) == pytest.approx(
                fit.evidence, abs=1e-7)
    assert tr.logme(f, y) == pytest.approx(np.mean([fit.evidence for fit in fits]))


def test_logme_prefers_informative_features_and_ignores_scale():
    f, y = _problem(60, 8, 3, 2.0, 2)
    noise = np.random.default_rng(3).normal(size=f.shape)
    assert tr.logme(f, y) > tr.logme(noise, y) + 0.1
    # the evidence maximum is invariant to rescaling the features (α absorbs the scale)
    assert tr.logme(f * 1000.0, y) == pytest.approx(tr.logme(f, y), abs=1e-6)


def test_logme_accepts_torch_and_regression_targets_and_rejects_nan():
    import torch

    f, y = _problem(20, 4, 2, 1.0, 4)
    assert tr.logme(torch.tensor(f), torch.tensor(y)) == pytest.approx(tr.logme(f, y))
    targets = np.stack([(y == 0).astype(float), (y == 1).astype(float)], axis=1)
    assert tr.logme(f, targets) == pytest.approx(tr.logme(f, y))
    bad = f.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tr.logme(bad, y)


def _leep_loops(theta, y):
    n, z_count = len(theta), len(theta[0])
    k_count = max(y) + 1
    joint = [[0.0] * z_count for _ in range(k_count)]
    for i in range(n):
        for z in range(z_count):
            joint[y[i]][z] += theta[i][z] / n
    pz = [sum(joint[k][z] for k in range(k_count)) for z in range(z_count)]
    total = 0.0
    for i in range(n):
        eep = sum(joint[y[i]][z] / pz[z] * theta[i][z] for z in range(z_count))
        total += math.log(eep)
    return total / n


def _nce_loops(z, y):
    n = len(y)
    pairs, pz = {}, {}
    for yi, zi in zip(y, z):
        pairs[(yi, zi)] = pairs.get((yi, zi), 0) + 1
        pz[zi] = pz.get(zi, 0) + 1
    return sum(c / n * math.log(c / pz[zi]) for (yi, zi), c in pairs.items())


def test_leep_matches_its_formula_with_explicit_loops():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(50, 7)) * 2
    y = rng.integers(0, 4, 50)
    theta = tr.softmax(logits)
    assert np.allclose(theta.sum(1), 1)
    assert tr.leep(theta, y) == pytest.approx(_leep_loops(theta.tolist(), y.tolist()), rel=1e-12)
    # a perfect, deterministic source → target map gives LEEP = 0 (log 1)
    z = rng.integers(0, 6, 40)
    assert tr.leep(np.eye(6)[z], z % 3) == pytest.approx(0.0, abs=1e-12)
    # uninformative source predictions: LEEP = Σ_y p(y) log p(y) (the label entropy, negated)
    y2 = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    p = np.bincount(y2) / len(y2)
    assert tr.leep(np.full((10, 5), 0.2), y2) == pytest.approx(float(np.sum(p * np.log(p))))


def test_nce_matches_its_formula_with_explicit_loops():
    rng = np.random.default_rng(6)
    theta = tr.softmax(rng.normal(size=(60, 9)) * 3)
    y = rng.integers(0, 5, 60)
    z = theta.argmax(1)
    assert tr.nce(theta, y) == pytest.approx(_nce_loops(z.tolist(), y.tolist()), rel=1e-12)
    # the target label is a function of the source prediction: H(Y|Z) = 0
    assert tr.nce(np.eye(9)[z], z // 3) == pytest.approx(0.0, abs=1e-12)
    # LEEP ≥ NCE for hard (one-hot) source predictions: they coincide
    hard = np.eye(9)[z]
    assert tr.leep(hard, y) == pytest.approx(tr.nce(hard, y), rel=1e-12)


def test_knn_and_probe_accuracy():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(3, 10)) * 5
    y = np.repeat(np.arange(3), 20)
    x = centres[y] + rng.normal(size=(60, 10))
    yt = np.repeat(np.arange(3), 5)
    xt = centres[yt] + rng.normal(size=(15, 10))
    assert tr.knn_accuracy(x, y, xt, yt) == 1.0
    assert tr.probe_accuracy(x, y, xt, yt) == 1.0
    assert tr.knn_accuracy(x, y) == 1.0  # leave-one-out
    noise = rng.normal(size=(60, 10))
    assert tr.knn_accuracy(noise, y) < 0.7


def test_probe_leave_one_out_equals_explicit_refits():
    """The hat-matrix shortcut gives exactly what N separate ridge fits give."""
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 24)
    x = rng.normal(size=(24, 5)) + 0.8 * np.eye(3)[y] @ rng.normal(size=(3, 5))
    fast = tr.probe_accuracy(x, y, ridge=0.5)
    mu, sd = x.mean(0), x.std(0) + 1e-8
    xa = np.hstack([(x - mu) / sd, np.ones((24, 1))])
    onehot = np.eye(3)[y]
    lam = 0.5 * 24
    hits = 0
    for i in range(24):
        keep = np.arange(24) != i
        w = np.linalg.solve(xa[keep].T @ xa[keep] + lam * np.eye(6), xa[keep].T @ onehot[keep])
        hits += int(np.argmax(xa[i] @ w) == y[i])
    assert fast == pytest.approx(hits / 24)
