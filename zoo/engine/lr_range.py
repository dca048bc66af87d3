"""The learning-rate range test itself (Smith 2017; fastai's ``lr_find``), on a planned model.

Used by ``zoo lr-find`` and ``--lr auto`` (:mod:`zoo.tools.lr_find`) and by the ``auto``
strategy's ``lr=auto`` (plugins may import the engine, not the tools layer).

:func:`range_test` takes a plan's first gradient phase (its trainable groups and per-group
LR multipliers: the sweep is *per strategy*) and trains ``model`` — the caller passes a
throwaway copy — for ``steps`` steps while the base LR grows exponentially from
``start_lr`` to ``end_lr``.  The loss is smoothed as fastai does (exponential moving
average, β = 0.98, bias-corrected); the sweep stops once the smoothed loss exceeds
``diverge ×`` its minimum or is not finite.  A frozen-backbone phase sweeps the head on
features from one backbone pass; a phase that reads extra streams (UDA) sweeps its
supervised loss only.

:func:`suggest`: **the LR at the smoothed minimum / 10** (fastai's ``lr_min``); the
steepest-descent LR is reported too (noisier on a few hundred steps).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from zoo.engine.data import make_loader
from zoo.engine.features import extract_features
from zoo.engine.loop import make_optimizer
from zoo.engine.runtime import autocast_for
from zoo.errors import ConfigError
from zoo.strategy import LossContext, apply_model_changes, apply_phase, set_train_mode

BETA = 0.98   # fastai's smoothing


def check_range(start_lr: float, end_lr: float, steps: int, diverge: float) -> None:
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"need 0 < --start-lr < --end-lr, got {start_lr:g} and {end_lr:g}")
    if not 10 <= steps <= 10000:
        raise ConfigError(f"--steps must be from 10 to 10000, got {steps}")
    if diverge <= 1:
        raise ConfigError(f"--diverge must be > 1 (a multiple of the minimum loss), got "
                          f"{diverge:g}")


def suggest(lrs: list[float], smoothed: list[float]) -> dict:
    """``{"suggested_lr", "min_lr", "steepest_lr", "rule"}`` from a sweep."""
    import numpy as np  # lazy: numpy only when analysing a sweep

    if len(lrs) < 3:
        raise ConfigError("the LR sweep stopped after fewer than 3 steps — lower "
                          "--start-lr or check the data")
    loss = np.asarray(smoothed, dtype=np.float64)
    i_min = int(np.nanargmin(loss))
    min_lr = float(lrs[i_min])
    steepest = None
    if i_min >= 2:
        slope = np.gradient(loss[:i_min + 1], np.log10(np.asarray(lrs[:i_min + 1])))
        steepest = float(lrs[int(np.argmin(slope))])
    return {"suggested_lr": max(float(lrs[0]), min_lr / 10.0), "min_lr": min_lr,
            "steepest_lr": steepest, "rule": "lr at the smoothed-loss minimum / 10"}


def sweep_phase(plan, strategy: str):
    """The phase a sweep trains: the first gradient phase that uses the base LR."""
    gradient = [p for p in plan.phases if p.steps == "gradient" and p.epochs > 0]
    if not gradient:
        raise ConfigError(f"strategy '{strategy}' takes no gradient step: there is no "
                          "learning rate to find")
    return next((p for p in gradient if p.lr is None), gradient[0])


def _sweep_data(model, plan, phase, train, job, device, bs: int):
    """``(loader, forward, cached)``: a frozen-backbone phase sweeps the head alone on
    features from one backbone pass; any other phase runs the model on images."""
    cached = phase.backbone_frozen() and not plan.model_changes and not any(
        getattr(t, "needs_features", True) for t in phase.loss_terms)
    if not cached:
        loader = make_loader(train, bs, True, job.seed, job.data.num_workers, device.type)
        return loader, model, False
    feats, labels = extract_features(
        model.backbone, make_loader(train, bs, False, job.seed, job.data.num_workers,
                                    device.type), device, job.train.precision)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(feats, labels), batch_size=bs, shuffle=True,
        generator=torch.Generator().manual_seed(job.seed))
    return loader, model.head, True


def range_test(model, groups, plan, train, job, device, *, start_lr: float = 1e-7,
               end_lr: float = 10.0, steps: int = 100, diverge: float = 4.0) -> dict:
    """Sweep ``model`` (a copy: it is trained) on the dataset ``train``; the sweep's record.

    Returns ``{"phase", "phase_lr_mult", "base_lr", "cached_features", "batch_size", "steps",
    "stopped", "lrs", "loss", "smoothed_loss", "notes", **suggest(...)}``: ``base_lr`` is the
    ``train.lr`` that gives the swept phase the suggested LR.
    """
    check_range(start_lr, end_lr, steps, diverge)
    phase = sweep_phase(plan, plan.strategy)
    notes: list[str] = []
    if phase.lr is not None:
        notes.append(f"phase '{phase.name}' sets its own lr ({phase.lr:g}); the sweep scales it")
    model = model.to(device)
    bs = max(1, min(job.train.batch_size, len(train)))
    loader, forward, cached = _sweep_data(model, plan, phase, train, job, device, bs)
    terms = [] if phase.streams else list(phase.loss_terms)
    if phase.streams:
        notes.append(f"phase '{phase.name}' reads {', '.join(phase.streams)}: the sweep "
                     "uses its supervised loss only")
    for t in terms:
        t.to(device)
    apply_model_changes(plan, model, groups)  # adapters (LoRA) before the sweep
    param_groups = apply_phase(model, groups, phase, 1.0, job.train.weight_decay)
    mults = [g["lr"] / (phase.lr or 1.0) for g in param_groups]
    optimizer = make_optimizer(job.train.optimizer, param_groups, job)
    criterion = nn.CrossEntropyLoss(label_smoothing=job.train.label_smoothing)
    set_train_mode(model, groups, phase)
    ratio = end_lr / start_lr
    lrs, raw, smoothed = [], [], []
    avg, best, stopped = 0.0, math.inf, None
    it = iter(loader)
    for i in range(steps):
        try:
            inputs, targets = next(it)
        except StopIteration:
            it = iter(loader)
            inputs, targets = next(it)
        lr = start_lr * ratio ** (i / (steps - 1))
        for group, mult in zip(optimizer.param_groups, mults):
            group["lr"] = lr * mult
        inputs, targets = inputs.to(device), torch.as_tensor(targets).to(device)
        with autocast_for(device, job.train.precision):
            if terms:
                features = model.backbone(inputs)
                logits = model.head(features)
                loss = criterion(logits.float(), targets)
                ctx = LossContext(model, inputs, targets, features, logits, i, 1)
                for term in terms:
                    loss = loss + term(ctx)
            else:
                loss = criterion(forward(inputs).float(), targets)
        value = loss.item()
        if not math.isfinite(value):
            stopped = f"loss not finite at lr {lr:.3g} (step {i + 1})"
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        avg = BETA * avg + (1 - BETA) * value
        smooth = avg / (1 - BETA ** (i + 1))
        lrs.append(lr)
        raw.append(value)
        smoothed.append(smooth)
        best = min(best, smooth)
        if i > 0 and smooth > diverge * best:
            stopped = (f"smoothed loss {smooth:.3g} > {diverge:g} × its minimum {best:.3g} "
                       f"at lr {lr:.3g} (step {i + 1})")
            break
    optimizer.zero_grad(set_to_none=True)  # free the last step's gradients (not needed)
    found = suggest(lrs, smoothed)
    # the phase's LR over the job's base LR (lp-ft's probe: 10): the base LR to use is
    # the suggestion divided by it
    mult = phase.lr / job.train.lr if phase.lr is not None else 1.0
    return {"phase": phase.name, "phase_lr_mult": mult,
            "base_lr": found["suggested_lr"] / mult if mult > 0 else found["suggested_lr"],
            "cached_features": cached, "batch_size": bs,
            "steps": len(lrs), "stopped": stopped, **found, "lrs": lrs,
            "loss": raw, "smoothed_loss": smoothed, "notes": notes}
