"""Transferability estimators: how well will a pretrained backbone transfer, before training?

Every estimator here scores a *frozen* backbone on a labelled target set from quantities that
one forward pass gives (features, or the source classifier's softmax); higher is better for
all of them.  They are short linear algebra (numpy, float64) and follow the papers:

- :func:`logme` — LogME, You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained
  Models for Transfer Learning", ICML 2021.  Needs features only.
- :func:`leep` — LEEP, Nguyen, Hassner, Seeger & Archambeau, "LEEP: A New Measure to Evaluate
  Transferability of Learned Representations", ICML 2020.  Needs the source classifier.
- :func:`nce` — NCE, Tran, Nguyen & Hassner, "Transferability and Hardness of Supervised
  Classification Tasks", ICCV 2019 (with source labels predicted by the source model, as in
  the LEEP paper's comparison).  Needs the source classifier.
- :func:`knn_accuracy` / :func:`probe_accuracy` — sanity columns: k-NN (cosine) and a
  closed-form ridge linear probe, accuracy on a held-out split.

Inputs may be numpy arrays or torch tensors; outputs are Python floats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["logme", "logme_fit", "logme_evidence", "LogMEFit", "leep", "nce",
           "knn_accuracy", "probe_accuracy", "softmax"]


def _array(x, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _labels(y) -> np.ndarray:
    y = _array(y, np.int64).reshape(-1)
    if y.size and y.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    return y


# -- LogME ----------------------------------------------------------------------------------
@dataclass
class LogMEFit:
    """The evidence maximum of one target column: ``evidence`` is already divided by N."""

    evidence: float
    alpha: float
    beta: float
    iterations: int
    converged: bool


def _svd(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin SVD of F (N × D): ``(U [N, r], sigma [r])`` with σ_i = s_i², s_i > 0 (rank r).

    LogME's "SVD trick" (You et al. 2021, Sec. 3.3): with F = U S Vᵀ, A = αI + βFᵀF is
    diagonal in V's basis, so every iteration costs O(N·r) instead of a D × D inverse; the
    decomposition is computed once and shared by every class.
    """
    n, d = features.shape
    if n >= d:  # eigen-decomposition of the D × D Gram matrix is cheaper than the SVD of F
        evals, evecs = np.linalg.eigh(features.T @ features)
        keep = evals > max(evals.max(initial=0.0), 0.0) * 1e-12 * max(n, d)
        sigma = evals[keep]
        u = features @ evecs[:, keep] / np.sqrt(sigma)[None, :]
        return u, sigma
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    keep = s > (s.max(initial=0.0) * 1e-10)
    return u[:, keep], s[keep] ** 2


def _evidence_terms(alpha, beta, sigma, z, y_perp2, n, d):
    """The m-dependent terms of the evidence at (α, β), via the SVD (no D × D algebra).

    With z = Uᵀy and m = βA⁻¹Fᵀy:  ‖m‖² = Σ_i (β s_i z_i / (α + βσ_i))²,
    ‖Fm − y‖² = ‖y − UUᵀy‖² + Σ_i (α z_i / (α + βσ_i))²,
    log|A| = Σ_i log(α + βσ_i) + (D − r) log α,   γ = Σ_i βσ_i / (α + βσ_i).

    Vectorised over target columns: ``z`` is (r, K), ``alpha``/``beta``/``y_perp2`` (K,).
    """
    denom = alpha[None, :] + beta[None, :] * sigma[:, None]                 # (r, K)
    m2 = np.sum((beta[None, :] * np.sqrt(sigma)[:, None] * z / denom) ** 2, axis=0)
    res2 = y_perp2 + np.sum((alpha[None, :] * z / denom) ** 2, axis=0)
    logdet = np.sum(np.log(denom), axis=0) + (d - sigma.size) * np.log(alpha)
    gamma = np.sum(beta[None, :] * sigma[:, None] / denom, axis=0)
    return m2, res2, logdet, gamma


def _evidence_value(alpha, beta, m2, res2, logdet, n, d):
    """L(α, β) = N/2 log β + D/2 log α − N/2 log 2π − β/2 ‖Fm − y‖² − α/2 mᵀm − ½ log|A|."""
    return (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * res2 - alpha / 2 * m2 - logdet / 2)


def logme_evidence(features, y, alpha: float, beta: float) -> float:
    """log p(y | F, α, β) / N for one target column ``y`` at fixed α, β (You et al. 2021).

    The model: y = Fw + ε with prior w ~ N(0, α⁻¹I) and noise ε ~ N(0, β⁻¹I); integrating w
    out gives the evidence

        L(α, β) = N/2 log β + D/2 log α − N/2 log 2π − β/2 ‖Fm − y‖² − α/2 mᵀm − ½ log|A|,
        A = αI + βFᵀF,   m = βA⁻¹Fᵀy,

    which equals log N(y; 0, β⁻¹I + α⁻¹FFᵀ).  Returned divided by N, as LogME reports it.
    """
    f = _array(features)
    y = _array(y).reshape(-1, 1)
    n, d = f.shape
    u, sigma = _svd(f)
    z = u.T @ y
    y_perp2 = np.maximum(np.sum(y * y, axis=0) - np.sum(z * z, axis=0), 0.0)
    a, b = np.array([float(alpha)]), np.array([float(beta)])
    m2, res2, logdet, _ = _evidence_terms(a, b, sigma, z, y_perp2, n, d)
    return float(_evidence_value(a, b, m2, res2, logdet, n, d)[0] / n)


def _fit_columns(u, sigma, cols, n, d, max_iter, tol) -> list[LogMEFit]:
    """Algorithm 1 of You et al. (2021): the MacKay fixed-point iteration, per column y.

    Starting from α = β = 1, repeat until α/β stops changing (relative ``tol``):

        γ = Σ_i βσ_i / (α + βσ_i),   m = βA⁻¹Fᵀy,
        α ← γ / mᵀm,                β ← (N − γ) / ‖Fm − y‖².

    At the fixed point ∂L/∂α = ∂L/∂β = 0: the evidence is maximised over (α, β).  Every
    column iterates independently (vectorised; a settled column is frozen).
    """
    z = u.T @ cols                                                           # (r, K)
    y_perp2 = np.maximum(np.sum(cols * cols, axis=0) - np.sum(z * z, axis=0), 0.0)
    k = cols.shape[1]
    eps = 1e-12
    alpha, beta = np.ones(k), np.ones(k)
    active = np.ones(k, dtype=bool)
    converged = np.zeros(k, dtype=bool)
    iterations = np.zeros(k, dtype=int)
    previous = np.full(k, -np.inf)
    for _ in range(max_iter):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        a, b = alpha[idx], beta[idx]
        m2, res2, logdet, gamma = _evidence_terms(a, b, sigma, z[:, idx], y_perp2[idx], n, d)
        value = _evidence_value(a, b, m2, res2, logdet, n, d) / n
        new_a = np.where(gamma > eps, gamma / np.maximum(m2, eps), 1 / eps)
        new_b = (n - gamma) / np.maximum(res2, eps)
        new_a, new_b = np.clip(new_a, eps, 1 / eps), np.clip(new_b, eps, 1 / eps)
        change = np.abs(new_a / new_b - a / b) / (a / b)
        alpha[idx], beta[idx] = new_a, new_b
        iterations[idx] += 1
        # settled: α/β stopped moving; or the evidence stalled (features that explain none
        # of y drive α → ∞, i.e. w → 0: the supremum is approached but never reached)
        settled = change < tol
        stalled = np.abs(value - previous[idx]) < 1e-10
        converged[idx] = settled
        active[idx[settled | stalled]] = False
        previous[idx] = value
    m2, res2, logdet, _ = _evidence_terms(alpha, beta, sigma, z, y_perp2, n, d)
    values = _evidence_value(alpha, beta, m2, res2, logdet, n, d) / n
    # The boundary α → ∞ (w ≡ 0, y is pure noise): L → N/2 log β − N/2 log 2π − β/2 ‖y‖²,
    # maximal at β = N/‖y‖².  Where the iteration is still creeping towards it, take it.
    yy = np.maximum(np.sum(cols * cols, axis=0), 1e-300)
    limit = 0.5 * np.log(n / yy) - 0.5 * math.log(2 * math.pi) - 0.5
    at_limit = (limit > values) & ~converged
    fits = []
    for j in range(k):
        if at_limit[j]:
            fits.append(LogMEFit(float(limit[j]), math.inf, float(n / yy[j]),
                                 int(iterations[j]), True))
        else:
            fits.append(LogMEFit(float(values[j]), float(alpha[j]), float(beta[j]),
                                 int(iterations[j]), bool(converged[j])))
    return fits


def logme_fit(features, targets, *, max_iter: int = 500, tol: float = 1e-7) -> list[LogMEFit]:
    """The per-column fits of :func:`logme` (one per class for labels, one per target column).

    ``targets``: class indices (N,) — one-hot columns are scored — or a real matrix (N, K)
    (regression targets, scored as given).
    """
    f = _array(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain NaN or inf")
    n, d = f.shape
    t = np.asarray(targets.detach().cpu().numpy() if hasattr(targets, "detach") else targets)
    if t.ndim == 1 and np.issubdtype(t.dtype, np.integer):
        labels = _labels(t)
        k = int(labels.max()) + 1
        cols = np.zeros((n, k))
        cols[np.arange(n), labels] = 1.0
        cols = cols[:, np.unique(labels)]  # classes absent from the sample carry no evidence
    else:
        cols = _array(t).reshape(n, -1)
    u, sigma = _svd(f)
    return _fit_columns(u, sigma, cols, n, d, max_iter, tol)


def logme(features, targets, **kwargs) -> float:
    """LogME (You et al., ICML 2021): the mean over target columns of max_{α,β} L(α, β) / N.

    For classification the target columns are the one-hot class indicators; each gets its own
    Bayesian linear regression (see :func:`logme_evidence` for L and :func:`_fit_columns` for
    the fixed-point maximisation).  Values are log-likelihoods per sample: higher means the
    features explain the labels better with a linear model, without any training.
    """
    fits = logme_fit(features, targets, **kwargs)
    return float(np.mean([fit.evidence for fit in fits]))


# -- LEEP and NCE ---------------------------------------------------------------------------
def softmax(logits) -> np.ndarray:
    x = _array(logits)
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def leep(source_probs, labels) -> float:
    """LEEP (Nguyen et al., ICML 2020) from the source model's softmax θ(x) on target data.

    With n target samples (x_i, y_i) and Z source classes:

        P̂(y, z) = 1/n Σ_{i: y_i = y} θ(x_i)_z          (empirical joint of target y, source z)
        P̂(y | z) = P̂(y, z) / P̂(z),  P̂(z) = Σ_y P̂(y, z)
        LEEP = 1/n Σ_i log( Σ_z P̂(y_i | z) θ(x_i)_z )

    i.e. the average log-likelihood of the "expected empirical predictor" that maps source
    predictions to target labels.  ≤ 0; higher is better.
    """
    theta = _array(source_probs)
    y = _labels(labels)
    n = theta.shape[0]
    if y.shape[0] != n:
        raise ValueError("source_probs and labels differ in length")
    k = int(y.max()) + 1
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    joint = onehot.T @ theta / n                         # (K, Z)
    marginal = joint.sum(axis=0, keepdims=True)          # (1, Z)
    cond = joint / np.maximum(marginal, 1e-300)          # P̂(y | z)
    eep = theta @ cond.T                                 # (n, K): Σ_z P̂(y|z) θ_z
    return float(np.mean(np.log(np.maximum(eep[np.arange(n), y], 1e-300))))


def nce(source_probs, labels) -> float:
    """NCE (Tran et al., ICCV 2019): the negative conditional entropy −H(Y | Z).

    Z are hard source labels, here z_i = argmax_z θ(x_i)_z (the source model's prediction, as
    in the LEEP paper's comparison); with the empirical joint of (y, z) counts,

        P̂(y, z) = 1/n |{i: y_i = y, z_i = z}|,   P̂(y | z) = P̂(y, z) / P̂(z)
        NCE = −H(Y | Z) = Σ_{y,z} P̂(y, z) log P̂(y | z).

    ≤ 0; 0 when the target label is a function of the source prediction.
    """
    theta = _array(source_probs)
    y = _labels(labels)
    z = np.argmax(theta, axis=1) if theta.ndim == 2 else _labels(theta)
    n = y.shape[0]
    _, zi = np.unique(z, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((yi.max() + 1, zi.max() + 1))
    np.add.at(joint, (yi, zi), 1.0)
    joint /= n
    pz = joint.sum(axis=0, keepdims=True)
    mask = joint > 0
    return float(np.sum(joint[mask] * np.log((joint / pz)[mask])))


# -- sanity columns: held-out accuracy --------------------------------------------------------
def knn_accuracy(train_x, train_y, test_x=None, test_y=None, k: int = 5) -> float:
    """Accuracy of a k-NN classifier (cosine similarity, majority vote; ties go to the class
    with the larger summed similarity).  Without a test set: leave-one-out on the train set."""
    a = _array(train_x)
    ya = _labels(train_y)
    loo = test_x is None
    b, yb = (a, ya) if loo else (_array(test_x), _labels(test_y))
    if b.shape[0] == 0:
        return float("nan")

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    sim = unit(b) @ unit(a).T
    if loo:
        np.fill_diagonal(sim, -np.inf)
    k = max(1, min(k, a.shape[0] - (1 if loo else 0)))
    nn = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    classes = int(max(ya.max(), yb.max())) + 1
    votes = np.zeros((b.shape[0], classes))
    weight = np.zeros((b.shape[0], classes))
    rows = np.arange(b.shape[0])[:, None]
    np.add.at(votes, (rows, ya[nn]), 1.0)
    np.add.at(weight, (rows, ya[nn]), np.take_along_axis(sim, nn, axis=1))
    pred = np.argmax(votes + 1e-6 * (weight - weight.min()) / (np.ptp(weight) + 1e-12), axis=1)
    return float(np.mean(pred == yb))


def probe_accuracy(train_x, train_y, test_x=None, test_y=None, ridge: float = 1.0) -> float:
    """Accuracy of a closed-form linear probe: ridge regression of one-hot labels on
    standardised features, W = (XᵀX + λN·I)⁻¹XᵀY, predict argmax XW.  Without a test set:
    leave-one-out (exact, via the hat matrix's diagonal)."""
    a = _array(train_x)
    ya = _labels(train_y)
    mu, sd = a.mean(axis=0), a.std(axis=0) + 1e-8
    xa = np.hstack([(a - mu) / sd, np.ones((a.shape[0], 1))])
    classes = int(ya.max()) + 1
    if test_y is not None:
        classes = max(classes, int(_labels(test_y).max()) + 1)
    ya1 = np.zeros((a.shape[0], classes))
    ya1[np.arange(a.shape[0]), ya] = 1.0
    lam = ridge * a.shape[0]
    n, d = xa.shape
    if d <= n:
        w = np.linalg.solve(xa.T @ xa + lam * np.eye(d), xa.T @ ya1)
    else:  # dual form: W = Xᵀ(XXᵀ + λI)⁻¹Y
        w = xa.T @ np.linalg.solve(xa @ xa.T + lam * np.eye(n), ya1)
    if test_x is None:
        gram_inv = np.linalg.inv(xa @ xa.T + lam * np.eye(n))
        hat_diag = 1.0 - lam * np.diag(gram_inv)        # H = X(XᵀX+λI)⁻¹Xᵀ = I − λ(XXᵀ+λI)⁻¹
        fitted = xa @ w
        loo = (fitted - hat_diag[:, None] * ya1) / np.maximum(1 - hat_diag, 1e-12)[:, None]
        return float(np.mean(np.argmax(loo, axis=1) == ya))
    b = _array(test_x)
    if b.shape[0] == 0:
        return float("nan")
    xb = np.hstack([(b - mu) / sd, np.ones((b.shape[0], 1))])
    return float(np.mean(np.argmax(xb @ w, axis=1) == _labels(test_y)))
