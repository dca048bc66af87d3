"""How much ``auto``'s trials may train: rung budgets, how many paid candidates fit.

Arithmetic in epochs of the paid candidates' training: each rung's
per-candidate budget (:func:`rung_budgets`), how many paid candidates the budget affords
(:func:`affordable`), and what the shared work costs out of it — the cached features' pass
(:func:`cache_cost`) and each trial's val pass (:func:`validation_cost`). Used by
:mod:`.auto_halving`.
"""
from __future__ import annotations

import math

from .auto_trials import PAID


def rung_alive(n_paid: int, eta: int, rungs: int) -> list[int]:
    """Paid candidates alive at each rung: ``ceil(n / eta^r)``, ending at the first rung
    with one left (a lone survivor is not trained again from scratch on a bigger budget),
    but at least two rungs when ``rungs`` allows: the finalist's trend needs two points."""
    alive = [max(1, n_paid)]
    while len(alive) < rungs and (alive[-1] > 1 or len(alive) < 2):
        alive.append(math.ceil(alive[0] / eta ** len(alive)))
    return alive


def rung_budgets(n_paid: int, epochs: int, eta: int, rungs: int, budget: float,
                 val_cost: float = 0.0) -> list[float]:
    """Per-candidate budgets (in epochs) of each rung: ``b·eta^r``, ``b`` such that the paid
    candidates alive at each rung (:func:`rung_alive`) cost ``budget × epochs`` in all,
    their val passes (``val_cost`` epochs per trial) included; never more than ``epochs``
    per candidate, never under :data:`MIN_BUDGET`."""
    return [min(float(epochs), max(MIN_BUDGET, b))
            for b in _raw_budgets(n_paid, epochs, eta, rungs, budget, val_cost)]


def _raw_budgets(n_paid, epochs, eta, rungs, budget, val_cost) -> list[float]:
    alive = rung_alive(n_paid, eta, rungs)
    weights = [n * eta ** r for r, n in enumerate(alive)]
    left = budget * epochs - val_cost * sum(alive)
    b0 = left / max(1e-9, sum(weights))
    return [b0 * eta ** r for r in range(len(alive))]


MIN_BUDGET = 0.1  # epochs: the smallest rung-0 trial (below it a trial's score is noise)
MIN_FINAL = 0.2  # of train.epochs: the least the finalist trains (its trend is read there)


def affordable(n_paid: int, epochs: int, eta: int, rungs: int, budget: float,
               val_cost: float) -> int:
    """How many paid candidates the budget affords when every trial also pays its val
    pass, rung 0 trains each for at least :data:`MIN_BUDGET` epochs and the finalist for
    at least :data:`MIN_FINAL` of the run (at least one candidate)."""
    for n in range(n_paid, 1, -1):
        raw = _raw_budgets(n, epochs, eta, rungs, budget, val_cost)
        if raw[0] >= MIN_BUDGET and min(float(epochs), raw[-1]) >= MIN_FINAL * epochs:
            return n
    return min(1, n_paid)


def cache_cost(data: dict, cands) -> float:
    """The cached features' one backbone pass (train and val, forward only) in epochs of the
    paid candidates' training; 0 when no candidate trains on them (all paid, none frozen)."""
    cached = {c.trains_on for c in cands if c.cost not in PAID}
    if not cached:
        return 0.0
    where = next((c.trains_on for c in cands if c.cost in PAID), "target")
    n_train = max(1, len((data.get(where) or data["target"]).train))
    images = sum(len(b.train) + (len(b.val) if b.val is not None else 0)
                 for k, b in data.items() if k in cached)
    return images / n_train / 3.0


def validation_cost(data: dict, cands) -> float:
    """A trial's val pass in epochs of training: val images over train images, a third
    (a forward pass against forward + backward)."""
    where = next((c.trains_on for c in cands if c.cost in PAID), "target")
    bundle = data.get(where) or data["target"]
    n_train = max(1, len(bundle.train))
    return (len(bundle.val) if bundle.val is not None else 0) / n_train / 3.0
