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
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from zoo.engine import distributed
from zoo.errors import TrainingError
from zoo.strategy import LossContext, apply_phase, set_train_mode


@dataclass
class EpochResult:
    epoch: int
    phase: str
    train_loss: float
    val: dict
    lr: list
    seconds: float
    images_per_second: float
    skipped_steps: int = 0
    cached_features: bool = False

    def record(self) -> dict:
        return {"epoch": self.epoch, "phase": self.phase,
                "train": {"loss": self.train_loss, "images_per_second": self.images_per_second,
                          "skipped_steps": self.skipped_steps},
                "val": self.val, "lr": self.lr, "seconds": round(self.seconds, 4),
                "cached_features": self.cached_features}


@dataclass
class FitState:
    """Everything needed to resume: saved after every complete epoch."""

    epoch: int = 0                 # epochs completed
    best_value: float | None = None
    best_epoch: int = 0
    best_state: dict | None = None
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    optimizer_state: dict | None = None  # of the phase in progress


class CheckpointPacer:
    """Decides when an epoch's checkpoint is worth writing.

    Always when it costs under 10% of the epoch it protects, and at least every
    ``max_gap`` seconds; a 10 ms cached-feature epoch is not made 4× slower by a 40 ms
    checkpoint.  The loop also saves at the end of every phase, so an interrupt loses at
    most ``max_gap`` seconds of work.
    """

    def __init__(self, max_gap: float = 5.0):
        self.cost = 0.0
        self.max_gap = max_gap
        self.last = time.perf_counter()

    def due(self, epoch_seconds: float) -> bool:
        return (self.cost <= 0.1 * epoch_seconds
                or time.perf_counter() - self.last >= self.max_gap)

    def save(self, checkpoint: Callable, state) -> None:
        start = time.perf_counter()
        checkpoint(state)
        self.last = time.perf_counter()
        self.cost = self.last - start


def make_optimizer(name: str, param_groups: list[dict], job) -> torch.optim.Optimizer:
    wd = job.train.weight_decay
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=job.train.lr, momentum=job.train.momentum,
                               weight_decay=wd, nesterov=True)
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


def autocast_for(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
    """
    state = state or FitState()
    t = job.train
    monitor, mode = job.monitor.metric, job.monitor.mode
    criterion = nn.CrossEntropyLoss(weight=_class_weights(job, loaders["train"], device),
                                    label_smoothing=t.label_smoothing)
    scaler = (torch.amp.GradScaler("cuda") if t.precision == "fp16" and device.type == "cuda"
              else None)
    ckpt = CheckpointPacer()
    fault = _fault()  # test-only fault injection, read once
    fault_epoch = _fault_epoch()
    epoch_base = 0
    for phase in plan.phases:
        if state.epoch >= epoch_base + phase.epochs:  # finished before a resume
            epoch_base += phase.epochs
            continue
        param_groups = apply_phase(model, groups, phase, t.lr)
        if state.best_state is not None:  # tensors shared while frozen may train now
            state.best_state = {k: v.clone() if k in trainable_names(model) else v
                                for k, v in state.best_state.items()}
        for term in phase.loss_terms:
            term.to(device)
        planned_lrs = [g["lr"] for g in param_groups]
        optimizer = make_optimizer(t.optimizer, param_groups, job)
        if state.optimizer_state is not None and state.epoch > epoch_base:
            optimizer.load_state_dict(state.optimizer_state)
        cached = feature_loaders(phase) if feature_loaders else None
        train_loader = cached["train"] if cached else loaders["train"]
        val_loader = cached["val"] if cached else loaders.get("val")
        forward = model.head if cached else model
        steps_per_epoch = max(1, len(train_loader))
        total_steps = steps_per_epoch * phase.epochs
        warmup = steps_per_epoch * min(t.warmup_epochs, phase.epochs)
        needs_features = any(getattr(term, "needs_features", True) for term in phase.loss_terms)
        # under torchrun: this phase's trainable part in DDP (rebuilt every phase); else None
        ddp = distributed.wrap_phase(model, phase, cached is not None,
                                     bool(phase.loss_terms) and needs_features)

        for epoch_in_phase in range(state.epoch - epoch_base, phase.epochs):
            epoch = epoch_base + epoch_in_phase + 1
            start = time.perf_counter()
            set_train_mode(model, groups, phase)
            _seed_epoch(train_loader, job.seed, epoch)
            running, seen, skipped = 0.0, 0, 0
            task = progress.add_task(f"epoch {epoch}/{plan.epochs} [{phase.name}]",
                                     total=steps_per_epoch, loss="-", ips="-") if progress else None
            for step, (inputs, targets) in enumerate(train_loader):
                global_step = epoch_in_phase * steps_per_epoch + step
                factor = lr_factor(global_step, total_steps, warmup, t.scheduler)
                for group, base in zip(optimizer.param_groups, planned_lrs):
                    group["lr"] = base * factor
                inputs = inputs.to(device, non_blocking=True)
                if t.channels_last and inputs.dim() == 4:
                    inputs = inputs.to(memory_format=torch.channels_last)
                targets = targets.to(device, non_blocking=True)
                with autocast_for(device, t.precision):
                    if ddp is not None:
                        features, logits = ddp(inputs)
                    elif phase.loss_terms and not cached and needs_features:
                        features = model.backbone(inputs)
                        logits = model.head(features)
                    else:
                        features, logits = None, forward(inputs)
                    loss = criterion(logits.float(), targets)
                    if phase.loss_terms:
                        ctx = LossContext(model, inputs, targets, features, logits, step, epoch)
                        for term in phase.loss_terms:
                            loss = loss + term(ctx)
                loss_value = loss.item()  # the one host sync per step (NaN check, progress)
                bad = not math.isfinite(loss_value) or bool(fault and _fault_nan(epoch, step))
                if distributed.any_rank(bad):  # all ranks skip (or stop) together
                    if t.on_nan == "skip":
                        skipped += 1
                        optimizer.zero_grad(set_to_none=True)
                        continue
                    raise TrainingError(
                        f"loss became {loss_value} at epoch {epoch}, step {step + 1} — lower "
                        f"the learning rate (now {t.lr:g}, e.g. --lr {t.lr / 10:g}) or use "
                        "--set train.on_nan=skip; the last good checkpoint is kept")
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    if t.grad_clip:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(_trainable(optimizer), t.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    if t.grad_clip:
                        nn.utils.clip_grad_norm_(_trainable(optimizer), t.grad_clip)
                    optimizer.step()
                running += loss_value * targets.numel()
                seen += targets.numel()
                if progress is not None:
                    elapsed = time.perf_counter() - start
                    progress.update(task, advance=1, loss=f"{running / max(1, seen):.4f}",
                                    ips=f"{seen / max(elapsed, 1e-9):.0f}")
                if fault:
                    _fault_interrupt_mid_epoch(epoch, step)
            if progress is not None:
                progress.remove_task(task)
            running, seen, skipped = distributed.all_reduce_sums(running, seen, skipped)
            distributed.sync_buffers(model)  # rank 0's BatchNorm statistics everywhere
            distributed.check_in_sync(model, f"after epoch {epoch}")
            if seen == 0 and skipped:
                raise TrainingError(f"every step of epoch {epoch} had a non-finite loss — "
                                    f"lower the learning rate (now {t.lr:g})")

            # -- validation and best-epoch bookkeeping ----------------------------------
            model.eval()
            val: dict = {}
            if val_loader is not None and len(val_loader.dataset) > 0:
                val_raw, _ = evaluate(forward, val_loader, metrics, device, t.precision,
                                      t.channels_last)
                val = {k: v for k, v in val_raw.items() if isinstance(v, float)}
            elapsed = time.perf_counter() - start
            result = EpochResult(epoch, phase.name, running / max(1, seen), val,
                                 [g["lr"] for g in optimizer.param_groups], elapsed,
                                 seen / max(elapsed, 1e-9), skipped, cached is not None)
            state.epoch = epoch
            state.history.append(result.record())
            value = val.get(monitor, val.get("loss")) if val else -result.train_loss
            improved = (state.best_value is None or
                        (value > state.best_value if mode == "max" or monitor not in val
                         else value < state.best_value))
            if improved:
                state.best_value, state.best_epoch, state.bad_epochs = value, epoch, 0
                state.best_state = snapshot(model)
            else:
                state.bad_epochs += 1
            state.optimizer_state = optimizer.state_dict()
            if on_epoch:
                on_epoch(result)
            if checkpoint and (ckpt.due(elapsed) or epoch_in_phase == phase.epochs - 1
                               or epoch == fault_epoch or t.early_stop_patience):
                ckpt.save(checkpoint, state)
            if fault_epoch is not None and epoch == fault_epoch:
                raise KeyboardInterrupt  # test-only: ZOO_FAULT=interrupt_after_epoch:N
            if t.early_stop_patience and state.bad_epochs >= t.early_stop_patience:
                log(f"early stop: no {monitor} improvement for {state.bad_epochs} epochs")
                state.epoch = plan.epochs
                return state
        epoch_base += phase.epochs
        state.optimizer_state = None
    return state


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def snapshot(model: nn.Module) -> dict:
    """The model's state for "best epoch so far": trainable parameters and buffers are
    copied; frozen parameters are shared (they cannot change during this phase, and
    :func:`fit` copies them before a later phase trains them) — a frozen backbone is not
    duplicated in memory."""
    train = trainable_names(model)
    params = {n for n, _ in model.named_parameters()}
    return {k: (v.detach().clone() if k in train or k not in params else v.detach())
            for k, v in model.state_dict().items()}


def _trainable(optimizer) -> list:
    return [p for g in optimizer.param_groups for p in g["params"]]


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
            from zoo.errors import ConfigError
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


# -- test-only fault injection (documented in docs/reliability.md) -------------------------
def _fault() -> str:
    return os.environ.get("ZOO_FAULT", "")


def _fault_epoch() -> int | None:
    f = _fault()
    return int(f.split(":", 1)[1]) if f.startswith("interrupt_after_epoch:") else None


def _fault_nan(epoch: int, step: int) -> bool:
    f = _fault()
    return f == f"nan_at:{epoch}:{step + 1}" or (f == "nan_always")


def _fault_interrupt_mid_epoch(epoch: int, step: int) -> None:
    f = _fault()
    if (f.startswith("crash_rank:") and distributed.active() and epoch == 1 and step == 0
            and f == f"crash_rank:{distributed.rank()}"):
        distributed.crash_now()  # a hard crash of one rank after its first step
    if f.startswith("signal_at:"):
        _, e, s, sig = (f.split(":") + ["INT"])[:4]
        if int(e) == epoch and int(s) == step + 1:
            import signal
            os.kill(os.getpid(), getattr(signal, f"SIG{sig}"))
    if f == f"interrupt_at:{epoch}:{step + 1}":
        raise KeyboardInterrupt
