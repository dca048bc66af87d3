"""``zoo lr-find``: the learning-rate range test (Smith 2017; fastai's ``lr_find``).

:func:`lr_find` builds the job's model and strategy plan exactly as ``zoo run`` would, takes
the plan's first gradient phase (its trainable groups and per-group LR multipliers: the
sweep is *per strategy*), and trains a throwaway copy on the job's train split for
``steps`` steps while the base LR grows exponentially from ``start_lr`` to ``end_lr``.
The loss is smoothed as fastai does (exponential moving average, β = 0.98, bias-corrected);
the sweep stops early once the smoothed loss exceeds ``diverge ×`` its minimum or is not
finite.

Suggested LR: **the LR at the smoothed minimum / 10** — the classic rule (fastai's
``lr_min``): at the minimum the LR is already on the edge of divergence, a tenth of it is
still in the steep descent.  The *steepest descent* point (most negative slope of the
smoothed loss vs log LR, before the minimum) is reported too (``steepest_lr``); it is
noisier on a few hundred steps, so it is not the default.

A frozen-backbone phase (``linear-probe``) sweeps the head on cached features: one
backbone pass, then the sweep costs milliseconds.  A phase that reads extra data streams
(UDA) sweeps its supervised loss only.  Writes ``OUT/NAME/lr_find.json`` and ``lr_find.png``.

The sweep itself is :mod:`zoo.engine.lr_range` (the ``auto`` strategy's ``lr=auto`` uses it
too).  :func:`resolve_auto_lr` is ``--lr auto`` / ``train.lr: auto`` on ``run`` and
``compare``: the job's strategy is swept first (nothing written) and the job gets the base
LR that gives the swept phase the suggestion.
"""
from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from typing import Callable

from zoo.catalog import get_catalog
from zoo.io import atomic
from zoo.io import runfolder as rundir
from zoo.jobspec import TrainSpec
from zoo.plan import PlanContext
from zoo.layering import load_job

SCHEMA = 1


def suggest(lrs: list[float], smoothed: list[float]) -> dict:
    """``{"suggested_lr", "min_lr", "steepest_lr"}`` from a sweep (see the module docstring)."""
    from zoo.engine.lr_range import suggest as _suggest  # lazy: imports torch

    return _suggest(lrs, smoothed)


def _sweep(catalog, job, warnings: list, **sweep) -> tuple[dict, object]:
    """Prepare and plan ``job`` as ``zoo run`` would, then sweep a copy of its model."""
    import torch  # lazy: torch

    from zoo.engine.build import make_plan  # lazy: imports torch
    from zoo.engine.lr_range import check_range, range_test  # lazy: imports torch
    from zoo.engine.prepare import prepare  # lazy: imports torch
    from zoo.engine.runtime import pick_device  # lazy: imports torch

    check_range(sweep.get("start_lr", 1e-7), sweep.get("end_lr", 10.0),
                sweep.get("steps", 100), sweep.get("diverge", 4.0))
    torch.manual_seed(job.seed)
    prep = prepare(catalog, job, warnings)
    built = prep.built
    device = pick_device(job.device)
    plan = make_plan(catalog, job, built, PlanContext(data=prep.bundle, device=device,
                                                      catalog=catalog, source=prep.source,
                                                      target=prep.target))
    streams = any(p.streams for p in plan.phases)
    bundle = prep.source if streams and prep.source is not None else prep.bundle
    result = range_test(built.model, built.groups, plan, bundle.train, job, device, **sweep)
    result["notes"] = list(plan.notes) + result["notes"]
    return result, built


def lr_find(model: str | None = None, *, flags: dict | None = None,
            sets: list[str] | None = None, config=None, preset: str | None = None,
            start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
            diverge: float = 4.0, catalog=None, log: Callable | None = None) -> dict:
    """Run the LR range test for the job; write and return ``lr_find.json``'s content."""
    log = log or (lambda msg: None)
    from zoo.engine.lr_range import check_range  # lazy: imports torch

    check_range(start_lr, end_lr, steps, diverge)
    catalog = catalog or get_catalog()
    job = load_job(model, config=config, preset=preset, flags=dict(flags or {}),
                   sets=list(sets or []), registry=catalog.registry, catalog=catalog)
    if job.train.lr == "auto":  # the sweep decides the LR; the base LR it scales is 1
        job = _with_lr(job, 1.0)
    started = time.perf_counter()
    warnings: list[str] = []
    found, built = _sweep(catalog, job, warnings, start_lr=start_lr, end_lr=end_lr,
                          steps=steps, diverge=diverge)
    if found["stopped"]:
        log(f"stopped early: {found['stopped']}")
    folder = rundir.new_run_dir(job.out, job.name or
                                f"lr-find-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}",
                                "lr-find", "lr-find")
    result = {"schema": SCHEMA, "kind": "lr-find", "dir": str(folder), "model": built.ref.full,
              "weights": built.weights.get("source"), "strategy": job.strategy.name,
              "optimizer": job.train.optimizer, "start_lr": start_lr, "end_lr": end_lr,
              "steps_planned": steps, **found, "warnings": warnings,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "seconds": round(time.perf_counter() - started, 3), "plot": None}
    try:
        _plot(result, folder / "lr_find.png")
        result["plot"] = str(folder / "lr_find.png")
    except Exception as exc:  # a plot must never lose the numbers
        warnings.append(f"could not draw lr_find.png: {exc}")
    atomic.write_json(folder / "lr_find.json", result)
    return result


def _with_lr(job, lr):
    return dataclasses.replace(job, train=dataclasses.replace(job.train, lr=lr))


def resolve_auto_lr(job, catalog=None, log: Callable | None = None, *, steps: int = 100,
                    start_lr: float = 1e-7, end_lr: float = 10.0) -> tuple[object, dict | None]:
    """``job`` with ``train.lr: auto`` replaced by the range test's suggestion for its
    strategy, and the sweep's record (``None`` when the LR was a number already).

    ``auto`` (the strategy) finds an LR per candidate itself: its ``train.lr auto`` becomes
    ``strategy.params.lr: auto`` over the default base LR.
    """
    if job.train.lr != "auto":
        return job, None
    log = log or (lambda msg: None)
    catalog = catalog or get_catalog()
    if job.strategy.name == "auto":
        default = TrainSpec().lr
        job = dataclasses.replace(_with_lr(job, default), strategy=dataclasses.replace(
            job.strategy, params={**job.strategy.params, "lr": "auto"}))
        log(f"--lr auto with strategy auto: each candidate's LR comes from its own range "
            f"test (strategy.params.lr=auto); base lr {default:g}")
        return job, {"strategy": "auto", "per_candidate": True}
    started = time.perf_counter()
    found, _ = _sweep(catalog, _with_lr(job, 1.0), [], start_lr=start_lr, end_lr=end_lr,
                      steps=steps, diverge=4.0)
    lr = float(found["base_lr"])  # the phase's suggestion over its LR multiplier
    record = {"strategy": job.strategy.name, "lr": lr, "suggested_lr": found["suggested_lr"],
              "phase_lr_mult": found["phase_lr_mult"], "min_lr": found["min_lr"],
              "steepest_lr": found["steepest_lr"], "rule": found["rule"],
              "start_lr": start_lr, "end_lr": end_lr, "steps": found["steps"],
              "stopped": found["stopped"], "phase": found["phase"],
              "seconds": round(time.perf_counter() - started, 3)}
    log(f"--lr auto: LR range test for {job.strategy.name} ({found['steps']} steps, "
        f"{start_lr:g}..{end_lr:g}) suggests lr {lr:.3g} ({found['rule']})")
    return _with_lr(job, lr), record


def _plot(result: dict, path) -> None:
    from zoo.io.plots import _figure, _save  # lazy: matplotlib

    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result["lrs"], result["loss"], color="tab:gray", alpha=0.4, label="loss")
    ax.plot(result["lrs"], result["smoothed_loss"], color="tab:blue", label="smoothed")
    ax.axvline(result["suggested_lr"], color="tab:red", ls="--",
               label=f"suggested {result['suggested_lr']:.2g} (min/10)")
    if result.get("steepest_lr"):
        ax.axvline(result["steepest_lr"], color="tab:green", ls=":",
                   label=f"steepest {result['steepest_lr']:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("train loss")
    ax.set_title(f"{result['model']} · {result['strategy']} ({result['phase']})", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
