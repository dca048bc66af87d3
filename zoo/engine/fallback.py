"""A plan's :class:`zoo.plan.Fallback` as "epoch 0" of the run's best-epoch bookkeeping.

``auto`` may train a slow candidate (a fine-tune) whose end it could only predict from short
trials, against a rival it measured exactly (a linear probe trained as it would run).  Rather
than trust the prediction, the run carries the rival's weights: :func:`seed_best` validates
them with the run's own validator before the first epoch and makes them the best so far, so
the run keeps them unless an epoch matches or beats them on the monitored val metric (a tie
goes to the trained model: the fallback guards against a run that ends worse, not one val
cannot tell apart) — and ends with whichever is better.  Seeded only on a fresh start: a resumed run's checkpoint holds its best
epoch (0 included) already.
"""
from __future__ import annotations

from typing import Callable

import torch

from zoo.engine.evaluation import evaluate


def seed_best(model, plan, loaders: dict, metrics: dict, job, rt, state,
              log: Callable) -> str | None:
    """Make ``plan.fallback``'s weights the run's best (epoch 0) when they can be compared:
    a note of what happened, or ``None`` without a fallback.  The model's own weights are
    put back afterwards."""
    fallback = getattr(plan, "fallback", None)
    if fallback is None:
        return None
    weights, fallback.weights = fallback.weights, None  # the run holds them from here on
    if weights is None or state.epoch or state.best_value is not None:
        return None  # resumed: the checkpoint's best epoch (0 included) stands
    val_loader = loaders.get("val")
    if val_loader is None or not len(val_loader.dataset):
        return _skip(fallback, log, "there is no val split to compare it on")
    if not isinstance(weights, dict):  # a plugin's plan: checked, never trusted
        return _skip(fallback, log, f"its weights are a {type(weights).__name__}, not a "
                     "state dict")
    own = model.state_dict()
    misfit = sorted(set(own) ^ set(weights), key=str) or [
        k for k in own if not isinstance(weights[k], torch.Tensor)
        or tuple(own[k].shape) != tuple(weights[k].shape)]
    if misfit:  # checked first: load_state_dict copies what fits before it raises
        return _skip(fallback, log, f"its weights do not fit the model ({misfit[0]!r})")
    mine = {k: v.detach().clone() for k, v in own.items()}
    model.load_state_dict(weights)
    model.eval()
    raw, _ = evaluate(model, val_loader, metrics, rt.device, rt.precision, rt.channels_last)
    model.load_state_dict(mine)
    val = {k: v for k, v in raw.items() if isinstance(v, float)}
    monitor = job.monitor.metric
    if monitor not in val:
        return _skip(fallback, log, f"the val metrics have no {monitor!r}")
    state.best_value, state.best_epoch, state.bad_epochs = val[monitor], 0, 0
    state.best_state = {k: v.to(own[k].device) for k, v in weights.items()}
    fallback.val = val
    note = (f"epoch 0 [fallback: {fallback.label}] val {monitor}={val[monitor]:.4f}: kept "
            "unless an epoch matches or beats it")
    log(note)
    return note


def _skip(fallback, log: Callable, why: str) -> str:
    fallback.note = f"not used: {why}"
    log(f"fallback {fallback.label} {fallback.note}")
    return fallback.note
