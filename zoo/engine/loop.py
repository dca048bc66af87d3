"""The training loop: one explicit function, in the spirit of Lightning Fabric's examples.

:func:`fit` executes a :class:`zoo.strategy.StrategyPlan` phase by phase and epoch by
epoch: set trainable groups and BatchNorm modes, build the optimizer, run the steps, evaluate
on the val split, keep the best weights by the monitored metric, checkpoint.  Plugins observe
it through ``on_epoch_end``; strategies change it only through their plan and loss terms.

Frozen-backbone phases with deterministic inputs train on cached features
(:mod:`zoo.engine.features`): ``batch_forward`` is then just the head.

Under torchrun (:mod:`zoo.engine.distributed`) each phase's trainable part is wrapped in
DistributedDataParallel, and the epoch's train loss, the evaluation loss and a non-finite
loss are agreed on by all ranks (torchmetrics syncs the metrics itself).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from zoo.engine import best_weights
from zoo.engine import ema as weight_ema
from zoo.engine.fallback import seed_best
from zoo.engine.evaluation import (class_weights, evaluate, lr_factor,  # noqa: F401
                                   make_optimizer)
from zoo.engine.guard import signals_deferred
from zoo.engine.loop_hooks import NO_HOOKS, LoopHooks
from zoo.engine.phases import StreamFeeder, closed_form_epoch
from zoo.engine.runtime import Runtime
from zoo.engine.state import (CheckpointPacer, EpochResult, FitState,  # noqa: F401
                              snapshot, trainable_names)
from zoo.errors import TrainingError
from zoo.strategy import LossContext, apply_model_changes, apply_phase, set_train_mode


@dataclass
class _Fit:
    """What every phase, epoch and step of one :func:`fit` shares."""

    model: nn.Module
    groups: list
    plan: Any
    loaders: dict
    metrics: dict
    job: Any
    rt: Runtime
    state: FitState
    feature_loaders: Callable | None
    on_epoch: Callable | None
    checkpoint: Callable | None
    progress: Any
    log: Callable
    hooks: LoopHooks
    criterion: Any = None
    pacer: CheckpointPacer = field(default_factory=CheckpointPacer)
    ema: Any = None  # train.ema: the weights' average (zoo.engine.ema), None without it


@dataclass
class _Phase:
    """One gradient phase as the loop runs it: its optimizer, loaders and schedule."""

    phase: Any
    epoch_base: int
    optimizer: Any
    planned_lrs: list
    train_loader: Any
    val_loader: Any
    forward: Callable
    cached: bool
    feeder: StreamFeeder | None
    ddp: Any
    needs_features: bool
    steps_per_epoch: int
    total_steps: int
    warmup: int


def fit(model: nn.Module, groups, plan, loaders: dict, metrics: dict, job, runtime: Runtime,
        *, state: FitState | None = None, feature_loaders: Callable | None = None,
        on_epoch: Callable | None = None, checkpoint: Callable | None = None,
        progress=None, log: Callable = print, hooks: LoopHooks = NO_HOOKS) -> FitState:
    """Run ``plan`` to the end (or resume from ``state``); return the final state.

    :param loaders: ``{"train", "val"}`` DataLoaders of images.
    :param runtime: the :class:`zoo.engine.runtime.Runtime` (device, precision, DDP): the
        loop reaches them through it only.
    :param feature_loaders: ``phase -> {"train", "val"} | None``: cached-feature loaders
        for a phase whose backbone is frozen (``None``: run the backbone every step).
    :param on_epoch: called with each :class:`EpochResult` (metrics.jsonl, hooks).
    :param checkpoint: called with the state after every complete epoch (resume).
    :param hooks: :class:`zoo.engine.loop_hooks.LoopHooks` (test-only faults; none by
        default), wired by the caller.
    """
    if not isinstance(runtime, Runtime):
        raise TypeError("fit() takes a zoo.engine.runtime.Runtime (Runtime.for_job(job, "
                        f"device)), not {type(runtime).__name__}")
    f = _Fit(model, groups, plan, loaders, metrics, job, runtime, state or FitState(),
             feature_loaders, on_epoch, checkpoint, progress, log, hooks)
    if _stopped_before(f):
        return f.state
    f.criterion = nn.CrossEntropyLoss(weight=class_weights(job, loaders["train"],
                                                            runtime.device),
                                      label_smoothing=job.train.label_smoothing)
    apply_model_changes(plan, model, groups)  # once per model (the pipeline did it already)
    f.ema = weight_ema.start(model, job, f.state)  # train.ema: None without it
    # a plan's fallback (auto's measured rival) is the best so far before epoch 1
    seed_best(model, plan, loaders, metrics, job, runtime, f.state, log)
    epoch_base = 0
    for phase in plan.phases:
        if f.state.epoch >= epoch_base + phase.epochs:  # finished before a resume
            epoch_base += phase.epochs
            continue
        run_phase = _closed_form_phase if phase.steps == "none" else _gradient_phase
        if run_phase(f, phase, epoch_base):  # early stop
            return f.state
        epoch_base += phase.epochs
        f.state.optimizer_state = None
    return f.state


def _stopped_before(f: _Fit) -> bool:
    """Resumed after early stopping: the uninterrupted run trained no more epochs."""
    s, patience = f.state, f.job.train.early_stop_patience
    if s.stopped_early or (patience and s.epoch and s.bad_epochs >= patience):
        s.stopped_early, s.epoch = True, f.plan.epochs
        return True
    return False


def _closed_form_phase(f: _Fit, phase, epoch_base: int) -> bool:
    """A ``steps="none"`` phase: ``fit(ctx)`` then val, per epoch; checkpointed each."""
    # cached features only while nothing before this phase changed the backbone
    plan = f.plan
    fresh = all(p.steps == "gradient" and p.backbone_frozen() and not plan.model_changes
                for p in plan.phases[:plan.phases.index(phase)])
    cached = f.feature_loaders(phase) if f.feature_loaders and fresh else None
    for epoch_in_phase in range(f.state.epoch - epoch_base, phase.epochs):
        epoch = epoch_base + epoch_in_phase + 1
        result = closed_form_epoch(phase, epoch, f.model, f.job, f.loaders, f.metrics, f.rt,
                                   f.state, cached, f.log)
        if f.ema is not None:  # the closed-form result is the new starting point
            f.ema.reset(f.model)
        # the epoch's line in metrics.jsonl and its checkpoint: both or neither
        with signals_deferred():
            if f.on_epoch:
                f.on_epoch(result)
            if f.checkpoint:
                f.pacer.save(f.checkpoint, f.state)
        f.hooks.after_epoch(epoch)
    return False


def _start_phase(f: _Fit, phase, epoch_base: int) -> _Phase:
    """Trainable groups and selections, the optimizer (a resume's state), the loaders
    (cached features when no backbone parameter trains), the schedule, DDP."""
    t, model, state = f.job.train, f.model, f.state
    param_groups = apply_phase(model, f.groups, phase, t.lr, t.weight_decay)
    if isinstance(state.best_state, best_weights.BestOnDisk):  # shared ones may train now
        state.best_state = state.best_state.unshared(trainable_names(model))
    elif state.best_state is not None:  # tensors shared while frozen may train now
        state.best_state = {k: v.clone() if k in trainable_names(model) else v
                            for k, v in state.best_state.items()}
    for term in phase.loss_terms:
        term.to(f.rt.device)
    optimizer = make_optimizer(t.optimizer, param_groups, f.job)
    if state.optimizer_state is not None and state.epoch > epoch_base:
        optimizer.load_state_dict(state.optimizer_state)
    # a phase that trains any backbone parameter (selections, adapters) never runs on
    # cached features, whatever its groups say
    backbone_trains = any(p.requires_grad for p in model.backbone.parameters())
    cached = f.feature_loaders(phase) if f.feature_loaders and not backbone_trains else None
    train_loader = cached["train"] if cached else f.loaders["train"]
    steps = max(1, len(train_loader))
    needs_features = any(getattr(term, "needs_features", True) for term in phase.loss_terms)
    # under torchrun: this phase's trainable part in DDP (rebuilt every phase); else None
    ddp = f.rt.wrap_phase(model, phase, cached is not None,
                          bool(phase.loss_terms) and needs_features)
    return _Phase(phase, epoch_base, optimizer, [g["lr"] for g in param_groups],
                  train_loader, cached["val"] if cached else f.loaders.get("val"),
                  model.head if cached else model, cached is not None,
                  StreamFeeder(phase, f.loaders, f.rt.inputs) if phase.streams else None,
                  ddp, needs_features, steps, steps * phase.epochs,
                  steps * min(t.warmup_epochs, phase.epochs))


def _gradient_phase(f: _Fit, phase, epoch_base: int) -> bool:
    """Every remaining epoch of a gradient phase; True when early stopping ends the run."""
    p = _start_phase(f, phase, epoch_base)
    for epoch_in_phase in range(f.state.epoch - epoch_base, phase.epochs):
        result = _train_epoch(f, p, epoch_in_phase)
        if _end_epoch(f, p, result, epoch_in_phase):
            return True
    return False


def _train_epoch(f: _Fit, p: _Phase, epoch_in_phase: int) -> EpochResult:
    """One epoch's steps, then validation: its :class:`EpochResult`."""
    epoch = p.epoch_base + epoch_in_phase + 1
    start = time.perf_counter()
    set_train_mode(f.model, f.groups, p.phase)
    _seed_epoch(p.train_loader, f.job.seed, epoch, f.rt.rank)
    if p.feeder is not None:
        p.feeder.start_epoch(f.job.seed, epoch)
    totals = _EpochTotals()
    task = f.progress.add_task(f"epoch {epoch}/{f.plan.epochs} [{p.phase.name}]",
                               total=p.steps_per_epoch, loss="-", ips="-") \
        if f.progress else None
    for step, batch in enumerate(p.train_loader):
        if not _step(f, p, batch, epoch, epoch_in_phase * p.steps_per_epoch + step, step,
                     totals):
            continue  # skipped (a non-finite loss, on_nan: skip)
        if f.progress is not None:
            elapsed = time.perf_counter() - start
            f.progress.update(task, advance=1, loss=f"{totals.running / max(1, totals.seen):.4f}",
                              ips=f"{totals.seen / max(elapsed, 1e-9):.0f}")
        f.hooks.after_step(epoch, step)
    if f.progress is not None:
        f.progress.remove_task(task)
    return _finish_epoch(f, p, epoch, start, totals)


@dataclass
class _EpochTotals:
    running: float = 0.0   # sum of loss × batch size
    seen: int = 0          # images that took a step
    skipped: int = 0       # steps skipped for a non-finite loss (on_nan: skip)
    steps: int = 0         # optimizer steps taken
    streams: dict = field(default_factory=dict)  # images read per extra stream


def _step(f: _Fit, p: _Phase, batch, epoch: int, global_step: int, step: int,
          totals: _EpochTotals) -> bool:
    """One training step: the scheduled LR, forward, loss (+ terms), backward, step;
    False when the step was skipped."""
    t, rt, phase = f.job.train, f.rt, p.phase
    factor = lr_factor(global_step, p.total_steps, p.warmup, t.scheduler)
    for group, base in zip(p.optimizer.param_groups, p.planned_lrs):
        group["lr"] = base * factor
    inputs, targets = rt.inputs(batch[0]), rt.targets(batch[1])
    streams = p.feeder.next() if p.feeder is not None else {}
    for name, images in streams.items():
        totals.streams[name] = totals.streams.get(name, 0) + len(images)
    loss = _loss(f, p, inputs, targets, streams, epoch, step)
    loss_value = loss.item()  # the one host sync per step (NaN check, progress)
    bad = not math.isfinite(loss_value) or f.hooks.bad_loss(epoch, step)
    if rt.any_rank(bad):  # all ranks skip (or stop) together
        if t.on_nan == "skip":
            totals.skipped += 1
            p.optimizer.zero_grad(set_to_none=True)
            return False
        raise TrainingError(
            f"loss became {loss_value} at epoch {epoch}, step {step + 1} — lower the "
            f"learning rate (now {t.lr:g}, e.g. --lr {t.lr / 10:g}) or use "
            "--set train.on_nan=skip; the last good checkpoint is kept")
    rt.backward_and_step(loss, p.optimizer)
    if f.ema is not None:
        f.ema.update(f.model)
    totals.steps += 1
    totals.running += loss_value * targets.numel()
    totals.seen += targets.numel()
    return True


def _loss(f: _Fit, p: _Phase, inputs, targets, streams: dict, epoch: int, step: int):
    """The task loss of one batch plus the phase's loss terms, under autocast."""
    phase, model = p.phase, f.model
    with f.rt.autocast():
        if p.ddp is not None:
            features, logits = p.ddp(inputs)
        elif phase.loss_terms and not p.cached and p.needs_features:
            features = model.backbone(inputs)
            logits = model.head(features)
        else:
            features, logits = None, p.forward(inputs)
        loss = f.criterion(logits.float(), targets)
        if phase.loss_terms:
            ctx = LossContext(model, inputs, targets, features, logits, step, epoch, streams)
            for term in phase.loss_terms:
                loss = loss + term(ctx)
    return loss


def _finish_epoch(f: _Fit, p: _Phase, epoch: int, start: float,
                  totals: _EpochTotals) -> EpochResult:
    """Totals agreed across ranks, BN statistics synced, validation: the epoch's result."""
    rt = f.rt
    running, seen, skipped = rt.all_reduce_sums(totals.running, totals.seen, totals.skipped)
    rt.end_epoch(f.model, epoch)
    if seen == 0 and skipped:
        raise TrainingError(f"every step of epoch {epoch} had a non-finite loss — "
                            f"lower the learning rate (now {f.job.train.lr:g})")
    f.model.eval()
    val: dict = {}
    if p.val_loader is not None and len(p.val_loader.dataset) > 0:
        val_raw, _ = evaluate(p.forward, p.val_loader, f.metrics, rt.device, rt.precision,
                              rt.channels_last)
        val = {k: v for k, v in val_raw.items() if isinstance(v, float)}
        if f.ema is not None:  # the average validated too: ema_* in the record
            weight_ema.validate(f.ema, f.model, lambda: evaluate(
                p.forward, p.val_loader, f.metrics, rt.device, rt.precision,
                rt.channels_last)[0], val)
    elapsed = time.perf_counter() - start
    passes = {} if p.cached else {"train": seen, **(
        {"val": len(p.val_loader.dataset)} if val else {})}
    return EpochResult(epoch, p.phase.name, running / max(1, seen), val,
                       [g["lr"] for g in p.optimizer.param_groups], elapsed,
                       seen / max(elapsed, 1e-9), skipped, p.cached, totals.steps,
                       {**passes, **totals.streams})


def _end_epoch(f: _Fit, p: _Phase, result: EpochResult, epoch_in_phase: int) -> bool:
    """Best-epoch bookkeeping, ``on_epoch``, the checkpoint decision, early stopping (True:
    the run stops here)."""
    state, t, epoch = f.state, f.job.train, result.epoch
    monitor, mode = f.job.monitor.metric, f.job.monitor.mode
    state.epoch = epoch
    state.history.append(result.record())
    val = result.val
    value = val.get(monitor, val.get("loss")) if val else -result.train_loss
    value, from_ema = weight_ema.pick(f.ema, val, monitor, mode, value)
    improved = (state.best_value is None or
                (value > state.best_value if mode == "max" or monitor not in val
                 else value < state.best_value)
                # a tie with the plan's fallback (the only "epoch 0") goes to the trained
                # model: the fallback is for a run that ends worse, not one val cannot tell
                or (state.best_epoch == 0 and value == state.best_value))
    # every phase end is written (the next phase starts a new optimizer) except the run's
    # last epoch: pacing decides there, a held one is written on a signal or a failure,
    # and the results follow in a second or two
    phase_end = epoch_in_phase == p.phase.epochs - 1 and epoch < f.plan.epochs
    write = bool(f.checkpoint) and (f.pacer.due(result.seconds) or phase_end
                                    or bool(t.early_stop_patience))
    if improved:
        state.best_value, state.best_epoch, state.bad_epochs = value, epoch, 0
        # written now: the checkpoint keeps the best weights on disk, no copy in memory
        state.best_state = weight_ema.keep_best(
            f.ema, f.model, from_ema, live=write and getattr(f.checkpoint, "keeps_best", False))
    else:
        state.bad_epochs += 1
    state.optimizer_state = p.optimizer.state_dict()
    # a signal from here to the checkpoint's rename waits: no completed epoch is lost
    with signals_deferred():
        if f.on_epoch:
            f.on_epoch(result)
        if write:
            f.pacer.save(f.checkpoint, state)
        elif f.checkpoint:
            f.pacer.hold(f.checkpoint, state, f.model)
        if isinstance(state.best_state, best_weights.LiveBest):  # not kept on disk after all
            state.best_state = snapshot(f.model)
    f.hooks.after_epoch(epoch)
    if t.early_stop_patience and state.bad_epochs >= t.early_stop_patience:
        f.log(f"early stop: no {monitor} improvement for {state.bad_epochs} epochs")
        state.epoch, state.stopped_early = f.plan.epochs, True
        if f.checkpoint:  # so that a resume from here trains nothing more
            f.pacer.save(f.checkpoint, state)
        return True
    return False


def _seed_epoch(loader, seed: int, epoch: int, rank: int = 0) -> None:
    # Shuffling and augmentation depend on (seed, epoch) only, so a resumed run sees the
    # same batches and the same random crops as an uninterrupted one.
    # Under torchrun the loader's generator (hence the permutation shared by the ranks) is
    # the same on every rank; the global seed, which drives augmentation, differs per rank.
    torch.manual_seed(seed * 100_003 + epoch + 1_000_003 * rank)
    gen = getattr(loader, "generator", None)
    if gen is not None:
        gen.manual_seed(seed * 100_003 + epoch)
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if getattr(loader.dataset, "streaming", False):  # a stream orders itself by the epoch
        loader.dataset.set_epoch(epoch)
