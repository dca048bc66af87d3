"""``auto``'s successive halving over (strategy, LR) candidates, and the table that says why.

:func:`halve` expands the candidate strategies into (strategy, LR) pairs, scores the
``free`` and ``cheap`` ones once as the run will train them, runs the paid ones rung by
rung on growing budgets (:mod:`.auto_budget`, :func:`by_priority`;
which LR of a strategy first: :func:`lr_lean`, from the measured ones),
keeps the top ``1/eta`` after each rung, compares the paid finalist with the best measured
one at equal budgets (:func:`paid_or_measured`), and returns the winner, the reason and the
candidates × rungs table (plan notes).  Imports torch (through :mod:`.auto_trials`):
imported only when ``auto`` runs trials.
"""
from __future__ import annotations

import dataclasses
import math
import time

from .auto_budget import (MIN_BUDGET, MIN_FINAL, affordable, cache_cost,  # noqa: F401
                          rung_alive, rung_budgets, validation_cost)
from .auto_trials import PAID, Candidate, TrialResult, Trials


def _data(ctx) -> tuple[dict, dict]:
    """Labeled data by where candidates train, and the stream datasets."""
    bundle, source, target = ctx.data, ctx.source, ctx.target
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


def halve(ctx, starts_frozen: dict, model, groups, job, found, *, eta: int, rungs: int,
          budget: float, factor: float, lr_mode: str):
    """``(winner Candidate, why, table lines, every Candidate)`` for the run ``ctx``
    describes; ``starts_frozen``: strategy → its first phase freezes the backbone."""
    started = time.perf_counter()
    data, streams = _data(ctx)
    trials = Trials(model, groups, job, data, ctx.device, streams, ctx)
    log: list[str] = []
    cands = expand(found, trials, factor, lr_mode, log)
    epochs = job.train.epochs
    n_val = len(data["target"].val)
    if any(c.trains_on == "source" for c in cands):
        n_val = len(data["source"].val)
    # free and cheap candidates: scored once, trained as the run will train them
    # (their weights kept: the best one is the run's fallback when a paid one wins)
    measured = [_score(c, FULL, trials.run(c, epochs, keep_weights=True))
                for c in cands if c.cost not in PAID]
    # paid candidates: successive halving among themselves, at equal budgets
    val_cost = validation_cost(data, cands)
    # the shared backbone pass of the cached features is paid out of the same budget: it
    # is what auto's trials cost in all, in fine-tune runs, not what the paid ones cost
    budget = max(0.0, budget - cache_cost(data, cands) / max(1, epochs))
    lean = lr_lean([c for c in cands if c.cost not in PAID], n_val)
    if lean:
        log.append(f"LR lean: the measured candidates did best at their default LR {lean} "
                   f"{factor:g}; each paid strategy tries that LR first")
    paid = by_priority([c for c in cands if c.cost in PAID], starts_frozen, lean)
    kept = affordable(len(paid), epochs, eta, rungs, budget, val_cost)
    if kept < len(paid):  # the most likely ones stay; the rest are listed
        log.append(f"budget: {len(paid)} paid candidates, each trial's val pass costs "
                   f"{val_cost:.2f} epoch(s); {kept} fit {budget:.2g} × {epochs} epochs (what "
                   f"the cached features' pass leaves) with "
                   f"the finalist trained {MIN_FINAL:.0%} of the run or more — not tried: "
                   + ", ".join(c.label for c in paid[kept:]))
        paid = paid[:kept]
    budgets = rung_budgets(len(paid), epochs, eta, rungs, budget, val_cost) if paid else []
    alive, last = paid, []
    for r, b in enumerate(budgets):
        final_rung = r == len(budgets) - 1  # its weights: the winner's head start
        last = [_score(c, r, trials.run(c, b, keep_weights=final_rung)) for c in alive]
        if final_rung:
            break
        keep = max(1, math.ceil(len(alive) / eta))
        order = rank_rung(alive, last, n_val)
        alive = [alive[i] for i in sorted(order[:keep])]
    best = rank_rung(alive, last, n_val)[0] if last else None
    finalist = alive[best] if last else None
    rival, backup, hedge = None, None, False
    if measured:
        label, rival_why = choose(measured, n_val)
        rival = next(c for c in cands if c.label == label)
    if rival is None:  # nothing measured: the best of the last rung
        winner, why = finalist, (f"val accuracy {last[best].accuracy:.3f} after "
                                 f"{budgets[-1]:.2g} of {epochs} epoch(s), the best of the "
                                 f"{len(last)} candidate(s) of the last rung")
    elif finalist is None:  # nothing paid
        winner, why = rival, rival_why
    else:
        backup = best_fallback(finalist, [c for c in cands if c.cost not in PAID])
        winner, why, hedge = paid_or_measured(finalist, rival, budgets, epochs, n_val, trials,
                                              backup)
    fallback = backup if hedge else None
    for c in cands:  # only the winner's and the fallback's weights are worth their memory
        if c is not winner and c is not fallback:
            c.trained = None
    table = _table(cands, budgets, epochs, eta, time.perf_counter() - started, winner)
    return winner, why, table + log, cands, fallback


def best_fallback(finalist: Candidate, measured: list[Candidate]) -> Candidate | None:
    """The measured candidate the finalist's run can fall back to: the best by val accuracy
    (then val loss) among those whose weights fit the run's model (:func:`can_fall_back`) —
    the overall best measured one may have its own head (``ncm``), which cannot be."""
    fit = [c for c in measured if FULL in c.scores and can_fall_back(finalist, c)]
    return max(fit, key=lambda c: (c.scores[FULL][0], -c.scores[FULL][1]), default=None)


def can_fall_back(finalist: Candidate, rival: Candidate) -> bool:
    """The run of ``finalist`` can carry ``rival``'s trial weights as its fallback: the
    rival kept them, both train on the same labeled data and neither changes the model
    (an own head, adapters: the state dicts would not match)."""
    return (rival.trained is not None and rival.trained_diff and not rival.changes
            and not rival.changes_model and not finalist.changes
            and not finalist.changes_model and rival.trains_on == finalist.trains_on)


def rank_rung(alive: list[Candidate], results: list[TrialResult], n_val: int) -> list[int]:
    """Indices of a rung's candidates, best first: more val images right, then the lower val
    loss — except between LR variants of one strategy with the same number right, where the
    larger LR goes first: a short trial favours small steps (the short-horizon bias, Wu et
    al., ICLR 2018) and a larger LR's early loss is the higher one."""
    right = [round(r.accuracy * max(1, n_val)) for r in results]
    order = sorted(range(len(alive)), key=lambda i: (-right[i], results[i].loss, i))
    for a in range(len(order)):
        for b in range(a + 1, len(order)):
            i, j = order[a], order[b]
            if (right[i] == right[j] and alive[i].strategy == alive[j].strategy
                    and (alive[j].lr or 0) > (alive[i].lr or 0)):
                order[a], order[b] = j, i
    return order


FULL = "full"  # the score key of a candidate trained (or evaluated) as the run will


def _direction(c: Candidate) -> str:
    """``"×"``/``"÷"``: ``c`` is its strategy's larger/smaller LR variant; ``""``: the default."""
    text = c.lr_from or "default"
    return "÷" if "÷" in text else "×" if "×" in text else ""


def lr_lean(measured: list[Candidate], n_val: int) -> str:
    """Which way the measured (free and cheap) candidates' LR grid leans: ``"×"`` when a
    strategy's larger LR variant, trained as the run would train it, beats its default on
    val by both counts — more val images right and the lower val loss —, ``"÷"`` when its
    smaller one does; ``""`` when neither does (a loss alone is no lean: on a few dozen val
    images it moves with the LR even where the accuracy cannot tell), when no strategy was
    measured at several LRs, or when the strategies disagree."""
    groups: dict[str, list[Candidate]] = {}
    for c in measured:
        if FULL in c.scores and c.lr is not None:
            groups.setdefault(c.strategy, []).append(c)
    leans = set()
    for g in groups.values():
        default = next((c for c in g if _direction(c) == ""), None)
        if default is None or len(g) < 2:
            continue
        right = {id(c): round(c.scores[FULL][0] * max(1, n_val)) for c in g}
        better = [c for c in g if right[id(c)] > right[id(default)]
                  and c.scores[FULL][1] < default.scores[FULL][1]]
        best = max(better, key=lambda c: (right[id(c)], -c.scores[FULL][1]), default=default)
        leans.add(_direction(best))
    return leans.pop() if len(leans) == 1 else ""


def by_priority(paid: list[Candidate], starts_frozen: dict, lean: str = "") -> list[Candidate]:
    """Paid candidates, the ones the budget keeps first: full-cost strategies before partial
    ones (the cached probe cannot stand in for them); among those, strategies whose plan
    starts with the backbone frozen (lp-ft) last — their short trials mostly re-measure the
    probe they start with, which is measured exactly already; then each strategy's default
    (or range-test) LR, its larger LR (few epochs favour it), the smaller; ties keep the
    catalog's order.

    ``lean`` (:func:`lr_lean`): the LR variant the measured probe did best with goes before
    the default. A paid strategy's new head starts as the probe's linear problem, and a
    probe that wants larger (smaller) steps than its default says the same of the head —
    and, through it, of the features' distance from the target — for the whole run, at
    no cost; where the budget affords one LR of a strategy, it is that one."""
    def variant(c: Candidate) -> int:
        d = _direction(c)
        if lean and d == lean:
            return 0
        return 1 if d == "" else 2 if d == "×" else 3
    return sorted(paid, key=lambda c: (c.cost != "full", bool(starts_frozen.get(c.strategy)),
                                       variant(c), paid.index(c)))


def paid_or_measured(finalist, rival, budgets, epochs, n_val, trials,
                     fallback: Candidate | None = None):
    """``(winner, why, hedged)``: the paid finalist, trained on a fraction of the run,
    against the best free/cheap candidate (``rival``), measured as it will run; ``hedged``:
    the run trains the finalist and keeps ``fallback``'s weights (a measured candidate whose
    weights fit the run's model, :func:`best_fallback`; ``None``: there is none) unless an
    epoch beats them.

    A short trial under-rates a candidate that learns slowly (the low-fidelity bias of
    successive halving), so the two are compared at equal budgets: the rival is trained on
    the finalist's first and last rung budgets too, and the finalist's gap to it is
    extended in log-epochs to the run's ``epochs`` (learning curves are close to linear in
    log-time before they saturate; Domhan et al. 2015 extrapolate them to stop trials
    early).  The finalist wins when that prediction beats the rival's measured score by
    more than one val image.

    Otherwise auto *cannot tell* when the finalist is catching up (its gap to the rival
    closed by more than one val image from the first rung to the last) and the two usual
    ways to extend a learning curve disagree: linear in log-epochs it falls short, linear in
    epochs (the optimistic bound: early curves are still convex in log-time) it wins.  A
    two-point extension from trials of a few epochs on a small val split under-rates
    methods that need many epochs (a 5-shot, 30-epoch fine-tune predicted 0.67 ended at 0.88
    against a 0.85 probe).  So does a gap that does not close while the finalist's own curve,
    extended in log-epochs, passes the rival's measured end: over the trials' short budgets a
    probe gains as fast as a fine-tune, then stops (on a 20-shot, 224-px task a fine-tune
    whose trials were 0.17 behind the probe at 0.4 and at 1.2 of 6 epochs ended level with
    it on val, 7 points ahead on test).  Then the finalist trains for the whole run with the
    fallback's weights (:class:`zoo.plan.Fallback`; the rival's when they fit the model, else
    the best measured that fits): the run validates them as epoch 0 and keeps them unless an
    epoch beats them — val decides at the end, where it can tell, for one run's cost.  A
    finalist that falls further behind as it trains longer, or a run without a fallback,
    leaves the rival the winner (a tie goes to the measured one)."""
    rungs = sorted(r for r in finalist.scores if r != FULL)
    first, lastr = rungs[0], rungs[-1]
    for r in (first, lastr):  # the rival on the same budgets (a free one: the same score)
        if r not in rival.scores:
            rival.scores[r] = (rival.scores[FULL] if rival.cost == "free" else
                               _as_tuple(trials.run(rival, budgets[r], equal_budget=True)))
    f1, fl = finalist.scores[first][0], finalist.scores[lastr][0]
    r1, rl, measured = rival.scores[first][0], rival.scores[lastr][0], rival.scores[FULL][0]
    b1, bl = budgets[first], budgets[lastr]
    gap1, gapl = f1 - r1, fl - rl
    predicted = optimistic = own = fl  # no trend to extend (one rung, or trained to the end)
    if b1 < bl < epochs:
        slope = (gapl - gap1) / math.log(bl / b1)
        predicted = min(1.0, measured + gapl + slope * math.log(epochs / bl))
        # the same two points extended linearly in epochs: the optimistic bound (a curve
        # that is still convex in log-time, as early ones are, keeps closing that fast)
        optimistic = min(1.0, measured + gapl + (gapl - gap1) / (bl - b1) * (epochs - bl))
        # the finalist's own curve extended in log-epochs, against the rival's measured end:
        # the gap's extension assumes the rival keeps gaining as it did over the trials'
        # budgets, which a probe that is done early (its end measured) does not
        own = min(1.0, fl + (fl - f1) / math.log(bl / b1) * math.log(epochs / bl))
    predicted = max(fl, predicted)
    tol = 1.0 / max(1, n_val)
    trend = (f"at equal budgets {finalist.label} vs {rival.label}: {gap1:+.3f} at "
             f"{b1:.2g} epoch(s), {gapl:+.3f} at {bl:.2g}")
    fall_back = fallback is not None
    kept = (f"; {fallback.label}'s weights are the run's fallback: kept unless an epoch matches "
            "or beats their val score") if fall_back else ""
    if predicted > measured + tol + 1e-9:
        return finalist, (f"predicted val accuracy {predicted:.3f} at {epochs} epochs vs "
                          f"{rival.label} {measured:.3f} ({trend}; extended in log-epochs)"
                          + kept), fall_back
    if (fall_back and gapl - gap1 > tol + 1e-9 and bl < epochs
            and optimistic > measured + tol + 1e-9):
        return finalist, (f"cannot tell: {finalist.label} catches up with {rival.label} "
                          f"({trend}); extended in log-epochs it ends at {predicted:.3f}, "
                          f"linearly in epochs at {optimistic:.3f}, vs {measured:.3f} at "
                          f"{epochs} epochs; it trains the whole run" + kept), True
    if fall_back and bl < epochs and fl - f1 > tol + 1e-9 and own > measured + tol + 1e-9:
        return finalist, (f"cannot tell: {finalist.label}'s gap to {rival.label} extended in "
                          f"log-epochs ends at {predicted:.3f} ({trend}), its own curve "
                          f"({f1:.3f} → {fl:.3f}) at {own:.3f}, vs {measured:.3f} at "
                          f"{epochs} epochs; it trains the whole run" + kept), True
    return rival, (f"val accuracy {measured:.3f} as it will run vs {finalist.label} "
                   f"predicted {predicted:.3f} at {epochs} epochs ({trend}; extended in "
                   f"log-epochs, at most {optimistic:.3f} linearly in epochs; a tie goes to "
                   "the measured one)"), False


def _as_tuple(result: TrialResult) -> tuple:
    return (result.accuracy, result.loss, result.seconds)


def _score(cand: Candidate, rung, result: TrialResult) -> TrialResult:
    cand.scores[rung] = _as_tuple(result)
    return result


def _table(cands, budgets, epochs, eta, seconds, winner) -> list[str]:
    """The candidates × rungs table, one note per line (val accuracy / val loss)."""
    used = sorted({r for c in cands for r in c.scores if r != FULL})
    heads = [f"rung {r} ({budgets[r] / epochs:.0%})" for r in used]
    if any(FULL in c.scores for c in cands):
        heads.append("as it runs")
    width = max([len(c.label) for c in cands] + [9])
    lines = [f"trials: successive halving of the paid candidates, eta {eta}, budgets "
             + ", ".join(f"{b:.2g}" for b in budgets)
             + f" of {epochs} epoch(s) per candidate, {seconds:.1f}s; val accuracy "
             f"(val loss), the top 1/{eta} of each rung go on; free and cheap candidates "
             "trained as the run will train them",
             "  " + "candidate".ljust(width) + "  cost     lr from        "
             + "  ".join(h.ljust(15) for h in heads)]
    for c in cands:
        cells = []
        for r in used + ([FULL] if heads and heads[-1] == "as it runs" else []):
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
