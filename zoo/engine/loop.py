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
from typing import Any, Callable

import torch
from torch import nn

from zoo import faults
from zoo.engine import distributed
from zoo.engine import ema as weight_ema
from zoo.engine.guard import signals_deferred
from zoo.engine.runtime import Runtime, autocast_for
from zoo.engine.state import (CheckpointPacer, EpochResult, FitState,  # noqa: F401
                              snapshot, trainable_names)
from zoo.errors import ConfigError, TrainingError
from zoo.engine.phases import PhaseStats, StreamFeeder, run_fit_phase
from zoo.strategy import LossContext, apply_model_changes, apply_phase, set_train_mode


def make_optimizer(name: str, param_groups: list[dict], job) -> torch.optim.Optimizer:
    wd = job.train.weight_decay
    if name == "sgd":
        momentum = job.train.momentum  # torch refuses Nesterov without momentum
        return torch.optim.SGD(param_groups, lr=job.train.lr, momentum=momentum,
                               weight_decay=wd, nesterov=bool(job.train.nesterov and momentum))
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=job.train.lr, weight_decay=wd)
    return torch.optim.AdamW(param_groups, lr=job.train.lr, weight_decay=wd)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the planned LR at ``step`` of ``total`` (linear warmup, then cosine)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.inference_mode()
def evaluate(forward: Callable, loader, metrics: dict, device: torch.device,
             precision: str = "fp32", channels_last: bool = False,
             collect: bool = False, flush_rows: int = 8192) -> tuple[dict, dict]:
    """Loss and every metric over ``loader``; with ``collect``, also per-sample outputs.

    Logits are buffered and handed to the metrics every ``flush_rows`` rows: one metric
    update per few thousand samples instead of one per batch keeps evaluation as fast as a
    plain ``inference_mode`` loop (benchmarks/overhead.py).
    """
    for m in metrics.values():
        m.reset()
    total_loss, count = 0.0, 0
    buffer: list[tuple[torch.Tensor, torch.Tensor]] = []
    buffered = 0
    outputs: dict[str, list] = {"probs": [], "targets": []}

    def flush():
        if not buffer:
            return
        nonlocal total_loss
        logits = torch.cat([b[0] for b in buffer])
        targets = torch.cat([b[1] for b in buffer])
        buffer.clear()
        total_loss += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        probs = logits.softmax(dim=1)
        for m in metrics.values():
            m.update(probs, targets)
        if collect:
            outputs["probs"].append(probs.cpu())
            outputs["targets"].append(targets.cpu())

    for inputs, targets in loader:
        inputs = inputs.to(device, non_blocking=True)
        if channels_last and inputs.dim() == 4:
            inputs = inputs.to(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with autocast_for(device, precision):
            logits = forward(inputs)
        count += targets.numel()
        buffer.append((logits.float(), targets))
        buffered += targets.numel()
        if buffered >= flush_rows:
            flush()
            buffered = 0
    flush()
    total_loss, count = distributed.all_reduce_sums(total_loss, count)  # no-op in 1 process
    results: dict[str, Any] = {"loss": total_loss / max(1, count)}
    for name, m in metrics.items():
        value = m.compute()
        results[name] = value.item() if value.numel() == 1 else value.cpu()
    if collect and outputs["probs"]:
        outputs = {k: torch.cat(v) for k, v in outputs.items()}
    return results, outputs


def fit(model: nn.Module, groups, plan, loaders: dict, metrics: dict, job, device,
        *, state: FitState | None = None, feature_loaders: Callable | None = None,
        on_epoch: Callable | None = None, checkpoint: Callable | None = None,
        progress=None, log: Callable = print) -> FitState:
    """Run ``plan`` to the end (or resume from ``state``); return the final state.

    :param loaders: ``{"train", "val"}`` DataLoaders of images.
    :param feature_loaders: ``phase -> {"train", "val"} | None``: cached-feature loaders
        for a phase whose backbone is frozen (``None``: run the backbone every step).
    :param on_epoch: called with each :class:`EpochResult` (metrics.jsonl, hooks).
    :param checkpoint: called with the state after every complete epoch (resume).
    :param device: a :class:`zoo.engine.runtime.Runtime`, or a device (a Runtime is made
        from the job's precision, channels_last and grad_clip).
    """
    rt = device if isinstance(device, Runtime) else Runtime.for_job(job, device)
    state = state or FitState()
    if state.stopped_early or (job.train.early_stop_patience and state.epoch and
                               state.bad_epochs >= job.train.early_stop_patience):
        # resumed after early stopping: the uninterrupted run trained no more epochs
        state.stopped_early = True
        state.epoch = plan.epochs
        return state
    t = job.train
    monitor, mode = job.monitor.metric, job.monitor.mode
    criterion = nn.CrossEntropyLoss(weight=_class_weights(job, loaders["train"], rt.device),
                                    label_smoothing=t.label_smoothing)
    ckpt = CheckpointPacer()
    fault_epoch = faults.interrupt_after_epoch()  # test-only (zoo.faults)
    apply_model_changes(plan, model, groups)  # once per model (the pipeline did it already)
    ema = weight_ema.start(model, job, state)  # train.ema: None without it
    epoch_base = 0
    for phase in plan.phases:
        if state.epoch >= epoch_base + phase.epochs:  # finished before a resume
            epoch_base += phase.epochs
            continue
        if phase.steps == "none":  # closed-form work: fit(ctx), then val like an epoch
            # cached features only while nothing before this phase changed the backbone
            fresh = all(p.steps == "gradient" and p.backbone_frozen() and not plan.model_changes
                        for p in plan.phases[:plan.phases.index(phase)])
            cached = feature_loaders(phase) if feature_loaders and fresh else None
            for epoch_in_phase in range(state.epoch - epoch_base, phase.epochs):
                epoch = epoch_base + epoch_in_phase + 1
                result = _fit_epoch(phase, epoch, model, job, loaders, metrics, rt, state,
                                    cached, log)
                if ema is not None:  # the closed-form result is the new starting point
                    ema.reset(model)
                # the epoch's line in metrics.jsonl and its checkpoint: both or neither
                with signals_deferred():
                    if on_epoch:
                        on_epoch(result)
                    if checkpoint:
                        ckpt.save(checkpoint, state)
                if fault_epoch is not None and epoch == fault_epoch:
                    raise KeyboardInterrupt  # test-only: ZOO_FAULT=interrupt_after_epoch:N
            epoch_base += phase.epochs
            state.optimizer_state = None
            continue
        param_groups = apply_phase(model, groups, phase, t.lr, t.weight_decay)
        if state.best_state is not None:  # tensors shared while frozen may train now
            state.best_state = {k: v.clone() if k in trainable_names(model) else v
                                for k, v in state.best_state.items()}
        for term in phase.loss_terms:
            term.to(rt.device)
        planned_lrs = [g["lr"] for g in param_groups]
        optimizer = make_optimizer(t.optimizer, param_groups, job)
        if state.optimizer_state is not None and state.epoch > epoch_base:
            optimizer.load_state_dict(state.optimizer_state)
        # a phase that trains any backbone parameter (selections, adapters) never runs on
        # cached features, whatever its groups say
        backbone_trains = any(p.requires_grad for p in model.backbone.parameters())
        cached = feature_loaders(phase) if feature_loaders and not backbone_trains else None
        feeder = StreamFeeder(phase, loaders, rt.inputs) if phase.streams else None
        train_loader = cached["train"] if cached else loaders["train"]
        val_loader = cached["val"] if cached else loaders.get("val")
        forward = model.head if cached else model
        steps_per_epoch = max(1, len(train_loader))
        total_steps = steps_per_epoch * phase.epochs
        warmup = steps_per_epoch * min(t.warmup_epochs, phase.epochs)
        needs_features = any(getattr(term, "needs_features", True) for term in phase.loss_terms)
        # under torchrun: this phase's trainable part in DDP (rebuilt every phase); else None
        ddp = rt.wrap_phase(model, phase, cached is not None,
                            bool(phase.loss_terms) and needs_features)

        for epoch_in_phase in range(state.epoch - epoch_base, phase.epochs):
            epoch = epoch_base + epoch_in_phase + 1
            start = time.perf_counter()
            set_train_mode(model, groups, phase)
            _seed_epoch(train_loader, job.seed, epoch)
            if feeder is not None:
                feeder.start_epoch(job.seed, epoch)
            running, seen, skipped, n_steps, stream_seen = 0.0, 0, 0, 0, {}
            task = progress.add_task(f"epoch {epoch}/{plan.epochs} [{phase.name}]",
                                     total=steps_per_epoch, loss="-", ips="-") if progress else None
            for step, (inputs, targets) in enumerate(train_loader):
                global_step = epoch_in_phase * steps_per_epoch + step
                factor = lr_factor(global_step, total_steps, warmup, t.scheduler)
                for group, base in zip(optimizer.param_groups, planned_lrs):
                    group["lr"] = base * factor
                inputs, targets = rt.inputs(inputs), rt.targets(targets)
                streams = feeder.next() if feeder is not None else {}
                for name, batch in streams.items():
                    stream_seen[name] = stream_seen.get(name, 0) + len(batch)
                with rt.autocast():
                    if ddp is not None:
                        features, logits = ddp(inputs)
                    elif phase.loss_terms and not cached and needs_features:
                        features = model.backbone(inputs)
                        logits = model.head(features)
                    else:
                        features, logits = None, forward(inputs)
                    loss = criterion(logits.float(), targets)
                    if phase.loss_terms:
                        ctx = LossContext(model, inputs, targets, features, logits, step, epoch,
                                          streams)
                        for term in phase.loss_terms:
                            loss = loss + term(ctx)
                loss_value = loss.item()  # the one host sync per step (NaN check, progress)
                bad = not math.isfinite(loss_value) or faults.nan_at(epoch, step)
                if rt.any_rank(bad):  # all ranks skip (or stop) together
                    if t.on_nan == "skip":
                        skipped += 1
                        optimizer.zero_grad(set_to_none=True)
                        continue
                    raise TrainingError(
                        f"loss became {loss_value} at epoch {epoch}, step {step + 1} — lower "
                        f"the learning rate (now {t.lr:g}, e.g. --lr {t.lr / 10:g}) or use "
                        "--set train.on_nan=skip; the last good checkpoint is kept")
                rt.backward_and_step(loss, optimizer)
                if ema is not None:
                    ema.update(model)
                n_steps += 1
                running += loss_value * targets.numel()
                seen += targets.numel()
                if progress is not None:
                    elapsed = time.perf_counter() - start
                    progress.update(task, advance=1, loss=f"{running / max(1, seen):.4f}",
                                    ips=f"{seen / max(elapsed, 1e-9):.0f}")
                faults.after_step(epoch, step, distributed.rank(), distributed.active(),
                                  distributed.crash_now)
            if progress is not None:
                progress.remove_task(task)
            running, seen, skipped = rt.all_reduce_sums(running, seen, skipped)
            rt.end_epoch(model, epoch)
            if seen == 0 and skipped:
                raise TrainingError(f"every step of epoch {epoch} had a non-finite loss — "
                                    f"lower the learning rate (now {t.lr:g})")

            # -- validation and best-epoch bookkeeping ----------------------------------
            model.eval()
            val: dict = {}
            if val_loader is not None and len(val_loader.dataset) > 0:
                val_raw, _ = evaluate(forward, val_loader, metrics, rt.device, t.precision,
                                      t.channels_last)
                val = {k: v for k, v in val_raw.items() if isinstance(v, float)}
                if ema is not None:  # the average validated too: ema_* in the record
                    weight_ema.validate(ema, model, lambda: evaluate(
                        forward, val_loader, metrics, rt.device, t.precision,
                        t.channels_last)[0], val)
            elapsed = time.perf_counter() - start
            passes = {} if cached else {"train": seen, **(
                {"val": len(val_loader.dataset)} if val else {})}
            result = EpochResult(epoch, phase.name, running / max(1, seen), val,
                                 [g["lr"] for g in optimizer.param_groups], elapsed,
                                 seen / max(elapsed, 1e-9), skipped, cached is not None,
                                 n_steps, {**passes, **stream_seen})
            state.epoch = epoch
            state.history.append(result.record())
            value = val.get(monitor, val.get("loss")) if val else -result.train_loss
            value, from_ema = weight_ema.pick(ema, val, monitor, mode, value)
            improved = (state.best_value is None or
                        (value > state.best_value if mode == "max" or monitor not in val
                         else value < state.best_value))
            if improved:
                state.best_value, state.best_epoch, state.bad_epochs = value, epoch, 0
                state.best_state = weight_ema.keep_best(ema, model, from_ema)
            else:
                state.bad_epochs += 1
            state.optimizer_state = optimizer.state_dict()
            # a signal from here to the checkpoint's rename waits: no completed epoch is lost
            with signals_deferred():
                if on_epoch:
                    on_epoch(result)
                # every phase end is written (the next phase starts a new optimizer) except
                # the run's last epoch: pacing decides there, a held one is written on a
                # signal or a failure, and the results follow in a second or two
                phase_end = epoch_in_phase == phase.epochs - 1 and epoch < plan.epochs
                if checkpoint and (ckpt.due(elapsed) or phase_end
                                   or epoch == fault_epoch or t.early_stop_patience):
                    ckpt.save(checkpoint, state)
                elif checkpoint:
                    ckpt.hold(checkpoint, state, model)
            if fault_epoch is not None and epoch == fault_epoch:
                raise KeyboardInterrupt  # test-only: ZOO_FAULT=interrupt_after_epoch:N
            if t.early_stop_patience and state.bad_epochs >= t.early_stop_patience:
                log(f"early stop: no {monitor} improvement for {state.bad_epochs} epochs")
                state.epoch, state.stopped_early = plan.epochs, True
                if checkpoint:  # so that a resume from here trains nothing more
                    ckpt.save(checkpoint, state)
                return state
        epoch_base += phase.epochs
        state.optimizer_state = None
    return state


def _fit_epoch(phase, epoch: int, model, job, loaders: dict, metrics: dict, rt, state,
               cached: dict | None, log) -> EpochResult:
    """One epoch of a ``steps="none"`` phase: ``phase.fit(ctx)``, then val like an epoch.

    Its result is always kept as the best state: a closed-form step (a fitted head,
    re-estimated statistics) is the method's answer, which the val split does not veto.
    """
    start = time.perf_counter()

    def from_cache(split: str):
        loader = (cached or {}).get(split)
        return tuple(loader.dataset.tensors) if loader is not None else None

    stats = PhaseStats(phase.name, phase.steps)
    run_fit_phase(phase, model, job, loaders["train"].dataset.classes, loaders, rt.device,
                  from_cache, stats, log)
    model.eval()
    val: dict = {}
    val_loader = loaders.get("val")
    if val_loader is not None and len(val_loader.dataset) > 0:
        val_raw, _ = evaluate(model, val_loader, metrics, rt.device, job.train.precision,
                              job.train.channels_last)
        val = {k: v for k, v in val_raw.items() if isinstance(v, float)}
        stats.backbone_passes["val"] = len(val_loader.dataset)
    elapsed = time.perf_counter() - start
    result = EpochResult(epoch, phase.name, 0.0, val, [], elapsed, 0.0, 0, cached is not None,
                         0, stats.backbone_passes)
    state.epoch = epoch
    state.history.append(result.record())
    state.best_value = val.get(job.monitor.metric, val.get("loss")) if val else 0.0
    state.best_epoch, state.bad_epochs = epoch, 0
    state.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.optimizer_state = None
    return result


def _class_weights(job, loader, device):
    cw = job.train.class_weights
    if cw is None:
        return None
    targets = getattr(loader.dataset, "targets", None)
    num_classes = len(loader.dataset.classes)
    if cw == "balanced":
        counts = torch.bincount(torch.as_tensor(targets), minlength=num_classes).float()
        weights = counts.sum() / (num_classes * counts.clamp_min(1))
    else:
        weights = torch.as_tensor([float(w) for w in cw])
        if weights.numel() != num_classes:
            raise ConfigError(f"'train.class_weights' has {weights.numel()} values for "
                              f"{num_classes} classes")
    return weights.to(device)


def _seed_epoch(loader, seed: int, epoch: int) -> None:
    # Shuffling and augmentation depend on (seed, epoch) only, so a resumed run sees the
    # same batches and the same random crops as an uninterrupted one.
    # Under torchrun the loader's generator (hence the permutation shared by the ranks) is
    # the same on every rank; the global seed, which drives augmentation, differs per rank.
    torch.manual_seed(seed * 100_003 + epoch + 1_000_003 * distributed.rank())
    gen = getattr(loader, "generator", None)
    if gen is not None:
        gen.manual_seed(seed * 100_003 + epoch)
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if getattr(loader.dataset, "streaming", False):  # a stream orders itself by the epoch
        loader.dataset.set_epoch(epoch)
