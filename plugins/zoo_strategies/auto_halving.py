"""``auto``'s successive halving over (strategy, LR) candidates, and the table that says why.

:func:`halve` expands the candidate strategies into (strategy, LR) pairs, evaluates the
``free`` ones once, runs the others rung by rung on growing budgets
(:func:`rung_budgets`), keeps the top ``1/eta`` after each rung, and
returns the winner, the reason and the candidates × rungs table (plan notes).  Imports torch
(through :mod:`.auto_trials`): imported only when ``auto`` runs trials.
"""
from __future__ import annotations

import dataclasses
import math
import time

from .auto_trials import PAID, Candidate, TrialResult, Trials


def _data(auto) -> tuple[dict, dict]:
    """Labeled data by where candidates train, and the stream datasets."""
    extra = auto._extra
    bundle, source, target = extra["bundle"], extra.get("source_data"), extra.get("target_data")
    data = {"target": bundle}
    if source is not None and source.val is not None and len(source.val):
        data["source"] = source
    streams = {}
    if target is not None or source is not None:  # the target's images, labels dropped
        streams["target_unlabeled"] = target.train if target is not None else bundle.train
    if source is not None:
        streams["source"] = source.train
    return data, streams


def expand(found, trials: Trials | None, factor: float, lr_mode: str,
           log: list) -> list[Candidate]:
    """(strategy, LR) candidates: the default LR ×/÷ ``factor``, or the range test's LR."""
    out = []
    for name, obj, decl, sub, where, changes in found:
        base = Candidate(name, obj, decl.cost, sub, where, changes=changes)
        if decl.cost == "free":
            out.append(base)
            continue
        lr, origin = sub.train.lr, "default"
        if lr_mode == "auto" and trials is not None:
            try:
                found_lr = trials.find_lr(base)
                lr, origin = float(found_lr["base_lr"]), "lr-find"
            except Exception as exc:  # a failed sweep falls back to the default LR
                log.append(f"{name}: LR range test failed ({str(exc).splitlines()[0]}); "
                           f"default lr {lr:g}")
        grid = [(lr, origin)] if lr_mode == "auto" or factor == 1.0 else [
            (lr / factor, f"{origin} ÷ {factor:g}"), (lr, origin),
            (lr * factor, f"{origin} × {factor:g}")]
        for value, why in grid:
            job = dataclasses.replace(sub, train=dataclasses.replace(sub.train, lr=value))
            out.append(dataclasses.replace(base, job=job, lr=value, lr_from=why, scores={}))
    return out


def halve(auto, model, groups, job, found, *, eta: int, rungs: int, budget: float,
          factor: float, lr_mode: str):
    """``(winner Candidate, why, table lines)``; ``auto.last_trials`` gets every candidate."""
    started = time.perf_counter()
    data, streams = _data(auto)
    trials = Trials(model, groups, job, data, auto._extra.get("device"), streams)
    log: list[str] = []
    cands = expand(found, trials, factor, lr_mode, log)
    auto.last_trials = cands
    free = [c for c in cands if c.cost == "free"]
    alive = [c for c in cands if c.cost != "free"]
    finals: list[TrialResult] = []
    for c in free:  # no gradient steps: one evaluation, no rungs
        finals.append(_score(c, "once", trials.run(c, 1)))
    epochs = job.train.epochs
    val_cost = validation_cost(data, cands)
    paid = [c for c in alive if c.cost in PAID]
    kept = affordable(len(paid), epochs, eta, rungs, budget, val_cost)
    if kept < len(paid):  # the val passes alone would overspend: the most likely ones stay
        ranked = sorted(paid, key=lambda c: (c.lr_from not in (None, "default", "lr-find"),
                                             c.cost != "full", paid.index(c)))
        dropped = ranked[kept:]
        alive = [c for c in alive if c not in dropped]
        log.append(f"budget: {len(paid)} paid candidates, each trial's val pass costs "
                   f"{val_cost:.2f} epoch(s); {kept} fit {budget:g} × {epochs} epochs — not "
                   "tried: " + ", ".join(c.label for c in dropped))
    budgets = rung_budgets(kept, epochs, eta, rungs, budget, val_cost)
    last: list[TrialResult] = []
    for r, b in enumerate(budgets):
        if not alive:
            break
        last = [_score(c, r, trials.run(c, b)) for c in alive]
        if r == len(budgets) - 1 or len(alive) == 1:
            break
        keep = max(1, math.ceil(len(alive) / eta))
        order = sorted(range(len(alive)), key=lambda i: (-last[i].accuracy, last[i].loss, i))
        alive = [alive[i] for i in sorted(order[:keep])]
    finals = last + finals
    n_val = len(data["target"].val)
    if any(c.trains_on == "source" for c in cands):
        n_val = len(data["source"].val)
    label, why = choose(finals, n_val)
    winner = next(c for c in cands if c.label == label)
    seconds = time.perf_counter() - started
    table = _table(cands, budgets, epochs, eta, seconds, winner, finals)
    return winner, why, table + log


def _score(cand: Candidate, rung, result: TrialResult) -> TrialResult:
    cand.scores[rung] = (result.accuracy, result.loss, result.seconds)
    return result


def _table(cands, budgets, epochs, eta, seconds, winner, finals) -> list[str]:
    """The candidates × rungs table, one note per line (val accuracy / val loss)."""
    used = sorted({r for c in cands for r in c.scores if r != "once"})
    heads = [f"rung {r} ({budgets[r] / epochs:.0%})" for r in used]
    if any("once" in c.scores for c in cands):
        heads.append("once")
    width = max([len(c.label) for c in cands] + [9])
    lines = [f"trials: successive halving, eta {eta}, budgets "
             + ", ".join(f"{b:.2g}" for b in budgets[:len(used)] or budgets)
             + f" of {epochs} epoch(s) per candidate, {seconds:.1f}s; val accuracy "
             f"(val loss), the top 1/{eta} of each rung go on",
             "  " + "candidate".ljust(width) + "  cost     lr from        "
             + "  ".join(h.ljust(15) for h in heads)]
    for c in cands:
        cells = []
        for r in used + (["once"] if heads and heads[-1] == "once" else []):
            s = c.scores.get(r)
            cells.append((f"{s[0]:.3f} ({s[1]:.3f})" if s else "-").ljust(15))
        mark = "  <- chosen" if c is winner else ""
        lines.append("  " + c.label.ljust(width) + f"  {c.cost:<7}  {c.lr_from or '-':<13}  "
                     + "  ".join(cells) + mark)
    return lines


def choose(trials: list, n_val: int) -> tuple[str, str]:
    """Best val accuracy; within one val image of it, the lowest val loss."""
    best = max(t.accuracy for t in trials)
    tol = 1.0 / max(1, n_val) + 1e-9
    tied = [t for t in trials if t.accuracy >= best - tol]
    winner = min(tied, key=lambda t: t.loss)
    others = [t for t in trials if t is not winner]
    if not others:
        return winner.strategy, f"val accuracy {winner.accuracy:.3f}, the only finalist"
    if len(tied) > 1:
        why = (f"val accuracy {winner.accuracy:.3f} ties with "
               + ", ".join(f"{t.strategy} {t.accuracy:.3f}" for t in tied if t is not winner)
               + f" (within one of {n_val} val images); lowest val loss {winner.loss:.3f}")
    else:
        runner = max(others, key=lambda t: t.accuracy)
        why = (f"best val accuracy {winner.accuracy:.3f} vs {runner.strategy} "
               f"{runner.accuracy:.3f} (+{100 * (winner.accuracy - runner.accuracy):.1f} "
               f"points; one val image is {100 / max(1, n_val):.1f})")
    return winner.strategy, why


def rung_budgets(n_paid: int, epochs: int, eta: int, rungs: int, budget: float,
                 val_cost: float = 0.0) -> list[float]:
    """Per-candidate budgets (in epochs) of each rung: ``b·eta^r``, ``b`` such that the paid
    candidates alive at each rung (``ceil(n / eta^r)``) cost ``budget × epochs`` in all,
    their val passes (``val_cost`` epochs per trial) included; never more than ``epochs``
    per candidate, never under :data:`MIN_BUDGET`."""
    alive = [math.ceil(max(1, n_paid) / eta ** r) for r in range(rungs)]
    weights = [n * eta ** r for r, n in enumerate(alive)]
    left = budget * epochs - val_cost * sum(alive)
    b0 = max(MIN_BUDGET, left / max(1e-9, sum(weights)))
    return [min(float(epochs), b0 * eta ** r) for r in range(rungs)]


MIN_BUDGET = 0.1  # epochs: the smallest rung-0 trial (below it a trial's score is noise)


def affordable(n_paid: int, epochs: int, eta: int, rungs: int, budget: float,
               val_cost: float) -> int:
    """How many paid candidates the budget affords when every trial also pays its val
    pass and rung 0 trains each for at least :data:`MIN_BUDGET` epochs (at least one)."""
    for n in range(n_paid, 1, -1):
        alive = [math.ceil(n / eta ** r) for r in range(rungs)]
        need = sum(a * (MIN_BUDGET * eta ** r + val_cost) for r, a in enumerate(alive))
        if need <= budget * epochs:
            return n
    return min(1, n_paid)


def validation_cost(data: dict, cands) -> float:
    """A trial's val pass in epochs of training: val images over train images, a third
    (a forward pass against forward + backward)."""
    where = next((c.trains_on for c in cands if c.cost in PAID), "target")
    bundle = data.get(where) or data["target"]
    n_train = max(1, len(bundle.train))
    return (len(bundle.val) if bundle.val is not None else 0) / n_train / 3.0
