"""What the training loop computes besides its own control flow: the optimizer, the LR
schedule, class weights for the loss, and :func:`evaluate` (loss and metrics over a loader,
also the test pass and ``zoo eval``).  Split from :mod:`zoo.engine.loop` so that module is
the loop alone; the loop re-exports these names.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from zoo.engine import distributed
from zoo.engine.runtime import autocast_for
from zoo.errors import ConfigError


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


def class_weights(job, loader, device):
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
