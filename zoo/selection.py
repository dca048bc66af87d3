"""Parameter-level selection: which parameters a phase trains, at which LR and weight decay.

:class:`zoo.plan.Selection` is the declarative part of a :class:`zoo.plan.Phase` (biases, norm
affine parameters, name patterns, module types, a predicate); :func:`choose_params` merges a
phase's selections with its trainable layer groups and :func:`apply_phase` turns the result
into ``requires_grad`` flags and optimizer parameter groups.  Split from :mod:`zoo.strategy`
(the plan classes) to keep each module to one job.
"""
from __future__ import annotations

from typing import Any

from torch import nn

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm,
              nn.modules.instancenorm._InstanceNorm)
_BN_TYPES = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


def _owned_by(model: nn.Module, types, names=()) -> set[str]:
    out = set()
    for mname, module in model.named_modules():
        if (types is not None and isinstance(module, types)) or type(module).__name__ in names:
            out.update(f"{mname}.{p}" if mname else p
                       for p, _ in module.named_parameters(recurse=False))
    return out


def no_decay_names(model: nn.Module) -> set[str]:
    """Biases and normalisation parameters: no weight decay by default (timm's habit)."""
    return ({n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] == "bias"}
            | _owned_by(model, NORM_TYPES))


def choose_params(model: nn.Module, groups: list, phase: Any, lr: float,
                  weight_decay: float | None = None) -> dict[str, dict]:
    """Which parameters ``phase`` trains: ``name -> {lr, weight_decay, source, selection}``.

    Selections first (the first selection naming a parameter owns it: its ``lr_mult`` and
    weight decay — ``None`` means the job's, except 0 for biases and norm parameters), then
    the trainable groups' remaining parameters at the group's LR and the job's weight decay.
    ``freeze-all`` drops the BatchNorm parameters of trainable backbone groups, never ones a
    selection asked for.  The source classifier never trains.
    """
    params = dict(model.named_parameters())
    chosen: dict[str, dict] = {}
    if phase.select:
        no_decay = no_decay_names(model)
        for sel in phase.select:
            for pname in sel.matches(model):
                if pname in chosen:
                    continue
                wd = (sel.weight_decay if sel.weight_decay is not None
                      else 0.0 if pname in no_decay else weight_decay)
                chosen[pname] = {"lr": lr * sel.lr_mult, "weight_decay": wd,
                                 "source": sel.name, "selection": True}
    bn_params = bn_param_names(model) if phase.bn == "freeze-all" else set()
    for group in groups:
        setting = phase.setting(group.name)
        if not setting.trainable:
            continue
        for pname in group.params:
            if pname in chosen or pname not in params or (group.name != "head"
                                                          and pname in bn_params):
                continue
            if pname.startswith("backbone.source_classifier."):
                continue
            chosen[pname] = {"lr": lr * setting.lr_mult, "weight_decay": weight_decay,
                             "source": group.name, "selection": False}
    order = {n: i for i, n in enumerate(params)}
    return dict(sorted(chosen.items(), key=lambda kv: order[kv[0]]))


def apply_phase(model: nn.Module, groups: list, phase: Any,
                base_lr: float, weight_decay: float | None = None) -> list[dict]:
    """Set ``requires_grad`` per the phase; return optimizer parameter groups.

    One optimizer group per layer group and per (selection, weight decay); each carries
    ``lr``, ``name`` and, where it is decided here, ``weight_decay``.  Parameters that do not
    train get ``requires_grad=False`` so no gradient is computed for them at all.
    """
    params = dict(model.named_parameters())
    for p in params.values():
        p.requires_grad_(False)
    lr = phase.lr if phase.lr is not None else base_lr
    buckets: dict[tuple, dict] = {}
    for pname, c in choose_params(model, groups, phase, lr, weight_decay).items():
        params[pname].requires_grad_(True)
        name = f"select:{c['source']}" if c["selection"] else c["source"]
        key = (name, c["lr"], c["weight_decay"])
        if key not in buckets:
            buckets[key] = {"params": [], "lr": c["lr"], "name": name}
            if c["weight_decay"] is not None:
                buckets[key]["weight_decay"] = c["weight_decay"]
                if c["selection"] and c["weight_decay"] == 0.0 and weight_decay:
                    buckets[key]["name"] = f"{name}:no_decay"
        buckets[key]["params"].append(params[pname])
    param_groups = list(buckets.values())
    for term in phase.loss_terms:
        extra = [p for p in term.parameters()]
        for p in extra:
            p.requires_grad_(True)
        if extra:
            param_groups.append({"params": extra, "lr": lr, "name": f"term:{term.name}"})
    return param_groups


def bn_param_names(model: nn.Module) -> set[str]:
    """Parameters of BatchNorm layers (``freeze-all`` freezes them in trainable groups)."""
    out = set()
    for mname, module in model.named_modules():
        if isinstance(module, _BN_TYPES):
            out.update(f"{mname}.{p}" for p, _ in module.named_parameters())
    return out
