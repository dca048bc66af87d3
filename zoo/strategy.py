"""Strategy plans: what trains, at which learning rate, with which BatchNorm policy.

A strategy plugin turns ``(model, job)`` into a :class:`StrategyPlan` — a list of
:class:`Phase` objects — and the training loop executes it.  Multi-phase strategies
(probe then fine-tune, gradual unfreezing) are several phases; regularizers (L2-SP, LwF,
joint training) are :class:`LossTerm` modules added to a phase's loss.  The loop's shape never
changes for a new strategy.

BatchNorm policy (per phase, for the *trainable* groups; frozen groups are always ``eval``):
``train`` (statistics update, affine trains), ``freeze-stats`` (running statistics fixed,
affine trains), ``freeze-all`` (statistics fixed, affine frozen).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from zoo.backbones import LayerGroup, TransferModel
from zoo.errors import ConfigError

BN_MODES = ("train", "freeze-stats", "freeze-all")
_BN_TYPES = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


@dataclass
class GroupSetting:
    trainable: bool = True
    lr_mult: float = 1.0


@dataclass
class LossContext:
    """What a loss term may look at for one training step."""

    model: TransferModel
    inputs: Any
    targets: Any
    features: Any        # backbone features of ``inputs`` (None on cached-feature steps)
    logits: Any
    step: int = 0
    epoch: int = 0


class LossTerm(nn.Module):
    """A term added to the task loss: ``forward(ctx) -> scalar tensor`` (already weighted).

    Parameters of a loss term (e.g. the joint strategy's source head) are trained too.
    """

    name: str = "term"
    needs_features: bool = True  # the term reads ctx.features / ctx.inputs

    def forward(self, ctx: LossContext):  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Phase:
    """One stretch of training with a fixed set of trainable groups and learning rates."""

    name: str
    epochs: int
    groups: dict[str, GroupSetting]       # layer-group name → setting (head included)
    bn: str = "train"
    lr: float | None = None               # base LR for this phase (None: job's train.lr)
    loss_terms: list[LossTerm] = field(default_factory=list)

    def trainable_groups(self) -> list[str]:
        return [n for n, s in self.groups.items() if s.trainable]

    def backbone_frozen(self) -> bool:
        return not any(s.trainable for n, s in self.groups.items() if n != "head")


@dataclass
class StrategyPlan:
    strategy: str
    phases: list[Phase]
    notes: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def to_dict(self, groups: list[LayerGroup], model: TransferModel, base_lr: float) -> dict:
        sizes = {g.name: g.numel(model) for g in groups}
        phases = []
        for phase in self.phases:
            lr = phase.lr if phase.lr is not None else base_lr
            phases.append({
                "name": phase.name, "epochs": phase.epochs, "bn": phase.bn,
                "base_lr": lr,
                "groups": [{"name": g.name, "params": sizes[g.name],
                            "trainable": phase.groups.get(g.name, GroupSetting(False)).trainable,
                            "lr": (lr * phase.groups[g.name].lr_mult
                                   if phase.groups.get(g.name, GroupSetting(False)).trainable
                                   else 0.0)}
                           for g in groups],
                "trainable_params": sum(sizes[g.name] for g in groups
                                        if phase.groups.get(g.name, GroupSetting(False)).trainable),
                "loss_terms": [t.name for t in phase.loss_terms],
            })
        return {"strategy": self.strategy, "epochs": self.epochs, "phases": phases,
                "notes": self.notes}


def all_groups(groups: list[LayerGroup], trainable: bool = True, lr_mult: float = 1.0,
               head_lr_mult: float = 1.0) -> dict[str, GroupSetting]:
    """Every backbone group with one setting, the head trainable at ``head_lr_mult``."""
    out = {g.name: GroupSetting(trainable, lr_mult) for g in groups if g.name != "head"}
    out["head"] = GroupSetting(True, head_lr_mult)
    return out


def resolve_bn(job, default: str) -> str:
    bn = job.strategy.bn or default
    if bn not in BN_MODES:
        raise ConfigError(f"strategy.bn {bn!r}: choose one of {', '.join(BN_MODES)}")
    return bn


def validate_plan(plan: StrategyPlan, groups: list[LayerGroup]) -> None:
    names = {g.name for g in groups}
    if not plan.phases:
        raise ConfigError(f"strategy '{plan.strategy}' planned no phase")
    for phase in plan.phases:
        unknown = set(phase.groups) - names
        if unknown:
            raise ConfigError(f"strategy '{plan.strategy}' names unknown layer groups "
                              f"{sorted(unknown)}; groups are {sorted(names)}")
        if phase.bn not in BN_MODES:
            raise ConfigError(f"strategy '{plan.strategy}' phase '{phase.name}' has BN mode "
                              f"{phase.bn!r}; choose one of {', '.join(BN_MODES)}")
        if phase.epochs < 0:
            raise ConfigError(f"strategy '{plan.strategy}' phase '{phase.name}' has "
                              f"{phase.epochs} epochs")
        if not phase.trainable_groups() and not phase.loss_terms:
            raise ConfigError(f"strategy '{plan.strategy}' phase '{phase.name}' trains nothing")


def apply_phase(model: TransferModel, groups: list[LayerGroup], phase: Phase,
                base_lr: float) -> list[dict]:
    """Set ``requires_grad`` per the phase; return optimizer parameter groups.

    The source classifier never trains.  Parameters of frozen groups get
    ``requires_grad=False`` so no gradient is computed for them at all.
    """
    params = dict(model.named_parameters())
    for p in params.values():
        p.requires_grad_(False)
    lr = phase.lr if phase.lr is not None else base_lr
    bn_affine_frozen = phase.bn == "freeze-all"
    bn_params = _bn_param_names(model) if bn_affine_frozen else set()
    param_groups = []
    for group in groups:
        setting = phase.groups.get(group.name)
        if setting is None or not setting.trainable:
            continue
        chosen = [params[n] for n in group.params
                  if not (group.name != "head" and n in bn_params)]
        for p in chosen:
            p.requires_grad_(True)
        if chosen:
            param_groups.append({"params": chosen, "lr": lr * setting.lr_mult,
                                 "name": group.name})
    for term in phase.loss_terms:
        extra = [p for p in term.parameters()]
        for p in extra:
            p.requires_grad_(True)
        if extra:
            param_groups.append({"params": extra, "lr": lr, "name": f"term:{term.name}"})
    return param_groups


def _bn_param_names(model: nn.Module) -> set[str]:
    out = set()
    for mname, module in model.named_modules():
        if isinstance(module, _BN_TYPES):
            out.update(f"{mname}.{p}" for p, _ in module.named_parameters())
    return out


def set_train_mode(model: TransferModel, groups: list[LayerGroup], phase: Phase) -> None:
    """``model.train()``, then BatchNorm (and dropout) of frozen groups back to ``eval``.

    Call after every ``model.train()``: a frozen layer's BN must not update its running
    statistics (Lightning #15062 got this wrong), and ``freeze-stats``/``freeze-all`` keep
    trainable groups' statistics fixed too.
    """
    model.train()
    if model.backbone.source_classifier is not None:
        model.backbone.source_classifier.eval()
    for group in groups:
        setting = phase.groups.get(group.name)
        frozen = setting is None or not setting.trainable
        if not frozen and (phase.bn == "train" or group.name == "head"):
            continue
        for mname in group.modules:
            module = model.get_submodule(mname)
            if frozen or isinstance(module, _BN_TYPES):
                module.eval()
    if phase.backbone_frozen():
        # the whole backbone is a fixed function: eval mode everywhere (dropout, BN, ...)
        model.backbone.eval()
