"""Test-time adaptation of a trained model to unlabeled target images: TENT and AdaBN.

- **TENT** (Wang, Shelhamer, Liu, Olshausen & Darrell, *Tent: Fully Test-Time Adaptation by
  Entropy Minimization*, ICLR 2021): only the normalisation layers' affine parameters
  (BatchNorm, LayerNorm, GroupNorm scale and shift) train, to minimise the mean entropy of
  the model's predictions on target batches; BatchNorm normalises with the batch's own
  statistics while adapting.  Bounded: a fixed, small number of steps — entropy
  minimisation run long collapses to confident wrong predictions (tent issue #7: 61.8 %
  → 34.8 % over three epochs).  :func:`tent_episodic` is the paper's episodic variant: every
  batch starts again from the source weights.
- **AdaBN** (Li et al., 2016): every BatchNorm layer's running statistics re-estimated on the
  target (reset, then a cumulative average), no weight changed.

After TENT the BatchNorm statistics are re-estimated on the target too (:func:`reestimate_bn`),
so the adapted model in eval mode normalises as it did while adapting, and it can be saved
and reloaded as any run's model.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
from torch import nn

from zoo.errors import ConfigError

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_NORM = _BN + (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d)


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _BN)]


def norm_affine_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every normalisation layer's scale and shift (also timm's
    norm layers, which subclass these, and any module whose class name ends in ``Norm``
    or ``Norm2d`` with ``weight``/``bias``: fused norm-activation layers)."""
    out = []
    for mname, module in model.named_modules():
        kind = type(module).__name__
        if not (isinstance(module, _NORM) or kind.endswith(("Norm", "Norm2d", "NormAct2d"))):
            continue
        for pname in ("weight", "bias"):
            p = getattr(module, pname, None)
            if isinstance(p, nn.Parameter):
                out.append((f"{mname}.{pname}" if mname else pname, p))
    return out


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of the softmax predictions (nats)."""
    logp = logits.float().log_softmax(dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


def _tent_mode(model: nn.Module) -> None:
    """Eval mode (no dropout), BatchNorm layers in train mode: batch statistics."""
    model.eval()
    for m in batchnorm_layers(model):
        m.train()


def tent(model: nn.Module, batches: Iterable, steps: int, lr: float, device,
         log: Callable = lambda message: None) -> dict:
    """``steps`` TENT updates on ``batches`` (images, or ``(images, ...)`` tuples; cycled
    when shorter); returns ``{"steps", "images", "entropy_first", "entropy_last", "params"}``.
    """
    named = norm_affine_params(model)
    if not named:
        raise ConfigError("TENT adapts the scale and shift of normalisation layers, and this "
                          "model has none — nothing to adapt (try --method adabn, or none)")
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for _, p in named]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))  # the paper's choice
    _tent_mode(model)
    curve, images = [], 0
    source = iter(batches)
    for step in range(steps):
        try:
            batch = next(source)
        except StopIteration:
            source = iter(batches)
            batch = next(source)
        inputs = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(device)
        loss = entropy(model(inputs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        curve.append(float(loss.detach()))
        images += len(inputs)
        if step == 0 or (step + 1) % 10 == 0 or step + 1 == steps:
            log(f"tent step {step + 1}/{steps}: entropy {curve[-1]:.4f}")
    optimizer.zero_grad(set_to_none=True)  # free the last step's gradients before evaluation
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return {"steps": steps, "images": images, "entropy_first": curve[0] if curve else None,
            "entropy_last": curve[-1] if curve else None, "entropy": curve,
            "params": sum(p.numel() for p in params)}


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches: Iterable, device,
                  max_batches: int | None = None) -> dict:
    """AdaBN: reset every BatchNorm layer's statistics and average them (cumulatively,
    ``momentum=None``) over the target batches; nothing else changes."""
    layers = batchnorm_layers(model)
    if not layers:
        return {"layers": 0, "images": 0}
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    images = 0
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(inputs.to(device))
            images += len(inputs)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.eval()
    return {"layers": len(layers), "images": images}


def tent_episodic(model: nn.Module, loader, steps: int, lr: float, device):
    """The paper's episodic TENT over a labelled loader: each batch adapts a fresh copy of
    the source model for ``steps`` updates and is then predicted (batch statistics).
    Returns ``(logits, targets)`` of every batch, for the metrics."""
    source = copy.deepcopy(model.state_dict())
    logits, targets = [], []
    for inputs, labels in loader:
        model.load_state_dict(source)
        tent(model, [inputs], steps, lr, device)
        _tent_mode(model)
        with torch.no_grad():
            logits.append(model(inputs.to(device)).float().cpu())
        targets.append(torch.as_tensor(labels))
    model.load_state_dict(source)
    model.eval()
    return torch.cat(logits), torch.cat(targets)
