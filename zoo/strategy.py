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

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

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


NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm,
              nn.modules.instancenorm._InstanceNorm)
PHASE_STEPS = ("gradient", "none")
STREAMS = ("target_unlabeled", "source")


@dataclass
class Selection:
    """Parameters a phase trains, chosen at parameter granularity (beyond whole groups).

    Declarative, so ``--plan --json`` can show it: ``kinds`` (``"bias"``: every bias;
    ``"norm"``: the affine parameters of normalisation layers), ``params`` (fnmatch patterns
    over the :class:`~zoo.backbones.TransferModel`'s parameter names) and ``modules``
    (module class names, e.g. ``"LayerNorm"``: all their parameters) are OR-ed.  ``where`` is
    a Python predicate ``(name, parameter) -> bool`` for the API, shown by its ``__name__``.
    ``weight_decay`` ``None`` means the job's, except 0 for biases and norm parameters.
    The source classifier never trains, whatever a selection says.
    """

    name: str
    kinds: tuple = ()
    params: tuple = ()
    modules: tuple = ()
    where: Callable[[str, Any], bool] | None = None
    lr_mult: float = 1.0
    weight_decay: float | None = None

    def matches(self, model: nn.Module) -> list[str]:
        """The parameter names of ``model`` this selection picks, in model order."""
        chosen: set[str] = set()
        norm_owned = _owned_by(model, NORM_TYPES)
        by_type = _owned_by(model, None, self.modules) if self.modules else set()
        for pname, param in model.named_parameters():
            if pname.startswith("backbone.source_classifier."):
                continue
            leaf = pname.rsplit(".", 1)[-1]
            if (("bias" in self.kinds and leaf == "bias")
                    or ("norm" in self.kinds and pname in norm_owned)
                    or any(fnmatch.fnmatchcase(pname, pat) for pat in self.params)
                    or pname in by_type
                    or (self.where is not None and self.where(pname, param))):
                chosen.add(pname)
        return [n for n, _ in model.named_parameters() if n in chosen]

    def to_dict(self) -> dict:
        return {"name": self.name, "kinds": list(self.kinds), "params": list(self.params),
                "modules": list(self.modules),
                "where": getattr(self.where, "__name__", repr(self.where)) if self.where else None,
                "lr_mult": self.lr_mult, "weight_decay": self.weight_decay}


def _owned_by(model: nn.Module, types, names=()) -> set[str]:
    out = set()
    for mname, module in model.named_modules():
        if (types is not None and isinstance(module, types)) or type(module).__name__ in names:
            out.update(f"{mname}.{p}" if mname else p
                       for p, _ in module.named_parameters(recurse=False))
    return out


class ModelChange:
    """A declared change of the model before training (e.g. inject LoRA adapters).

    The loop calls ``apply(model)`` once, before the first phase (and again on ``--resume``,
    before the checkpoint is loaded), instead of a strategy mutating what it was handed.
    After training, ``finalize(model, run_dir)`` may write extra files (adapter weights) and
    return a model that loads with its provider alone (adapters merged), or ``None`` to keep
    the model as it is.  ``describe()`` is what ``--plan`` shows.
    """

    name: str = "change"

    def apply(self, model) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}

    def finalize(self, model, run_dir):
        return None


@dataclass
class PhaseContext:
    """What a phase without gradient steps (``steps="none"``) gets in ``fit(ctx)``.

    ``features(split)`` returns ``(features, labels)`` of a split from the frozen backbone
    (cached: one backbone pass per split); ``loader(name)`` a DataLoader of ``"train"``,
    ``"val"`` or an extra stream the phase declared (``"target_unlabeled"``, ``"source"``).
    """

    model: Any
    job: Any
    device: Any
    classes: list
    features: Callable[[str], tuple]
    loader: Callable[[str], Any]
    log: Callable = print


@dataclass
class AutoCandidate:
    """How a strategy can be one of ``auto``'s candidates (``Strategy.auto``; None: never).

    ``cost``: ``"free"`` (no gradient steps), ``"cheap"`` (frozen backbone, cached
    features), ``"partial"`` (part of the backbone trains), ``"full"`` (all of it).
    """

    cost: str = "full"
    needs_source_weights: bool = False
    needs: tuple = ()              # extra data streams the strategy reads


@dataclass
class Phase:
    """One stretch of training with a fixed set of trainable groups and learning rates."""

    name: str
    epochs: int
    groups: dict[str, GroupSetting]       # layer-group name → setting (head included)
    bn: str = "train"
    lr: float | None = None               # base LR for this phase (None: job's train.lr)
    loss_terms: list[LossTerm] = field(default_factory=list)
    select: list[Selection] = field(default_factory=list)  # parameter-level selections
    steps: str = "gradient"               # gradient | none (no optimizer steps: fit() runs)
    fit: Callable[[PhaseContext], None] | None = None  # steps="none": closed-form work
    streams: tuple = ()                   # extra data streams read: target_unlabeled, source

    def trainable_groups(self) -> list[str]:
        return [n for n, s in self.groups.items() if s.trainable]

    def backbone_frozen(self) -> bool:
        """True when no backbone parameter trains (then cached features are exact)."""
        if self.select:
            return False  # a selection may pick backbone parameters (biases, adapters)
        return not any(s.trainable for n, s in self.groups.items() if n != "head")


@dataclass
class StrategyPlan:
    strategy: str
    phases: list[Phase]
    notes: list[str] = field(default_factory=list)
    model_changes: list[ModelChange] = field(default_factory=list)

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
