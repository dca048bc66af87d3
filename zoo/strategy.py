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
from typing import Any, Callable

from torch import nn

from zoo.backbones import LayerGroup, TransferModel
from zoo.errors import ConfigError
from zoo.selection import (NORM_TYPES, SELECTION_KINDS, Selection, apply_phase,  # noqa: F401
                           bn_param_names, choose_params)
from zoo.strategy_base import Strategy  # noqa: F401  (the authors' base class, re-exported)

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
    # one batch of inputs per extra stream the phase declared (``Phase.streams``), on the
    # device, labels dropped: ``streams["target_unlabeled"]`` is a tensor of images
    streams: dict = field(default_factory=dict)


class LossTerm(nn.Module):
    """A term added to the task loss: ``forward(ctx) -> scalar tensor`` (already weighted).

    Parameters of a loss term (e.g. the joint strategy's source head) are trained too.
    """

    name: str = "term"
    needs_features: bool = True  # the term reads ctx.features / ctx.inputs

    def forward(self, ctx: LossContext):  # pragma: no cover - interface
        raise NotImplementedError


PHASE_STEPS = ("gradient", "none")
STREAMS = ("target_unlabeled", "source")


class ModelChange:
    """A declared change of the model before training (e.g. inject LoRA adapters).

    The loop calls ``apply(model)`` once, before the first phase (and again on ``--resume``,
    before the checkpoint is loaded), instead of a strategy mutating what it was handed.
    After training, ``finalize(model, run_dir)`` may write extra files (adapter weights) and
    return a model that loads with its provider alone (adapters merged), or ``None`` to keep
    the model as it is.  ``describe()`` is what ``--plan`` shows.  ``touches_backbone``
    False (a new head only) keeps cached backbone features valid: trials still use them.
    """

    name: str = "change"
    touches_backbone: bool = True

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

    def setting(self, group: str) -> GroupSetting:
        """The setting of ``group``; a group the phase does not name is frozen — except the
        head, which trains unless the strategy says otherwise."""
        return self.groups.get(group, GroupSetting(group == "head"))

    def trainable_groups(self) -> list[str]:
        names = [n for n, s in self.groups.items() if s.trainable]
        return names + (["head"] if "head" not in self.groups else [])

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
    # where the supervised loss trains: "target" (the job's data), "source" (source_data,
    # as in unsupervised domain adaptation) or "auto" (source when a phase reads
    # target_unlabeled and the job has source_data; zoo.engine.phases.trains_on)
    train_on: str = "auto"

    @property
    def epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def to_dict(self, groups: list[LayerGroup], model: TransferModel, base_lr: float,
                weight_decay: float = 0.0) -> dict:
        """What ``--plan`` shows: per phase, what trains (counts and % of the model's
        parameters — backbone and head, not the kept source classifier — by group and by
        selection), at which LR, the steps and streams; the model changes."""
        named = dict(model.named_parameters())
        # % of the model that transfers: the kept source classifier (never trained, not in
        # the target forward pass) is left out of the total
        total = sum(p.numel() for n, p in named.items()
                    if not n.startswith("backbone.source_classifier.")) or 1

        def pct(n: int) -> float:
            return round(100.0 * n / total, 4)
        phases = []
        for phase in self.phases:
            lr = phase.lr if phase.lr is not None else base_lr
            chosen = choose_params(model, groups, phase, lr, weight_decay)
            by_group: dict[str, int] = {}
            by_sel: dict[str, int] = {}
            for pname, c in chosen.items():
                counts = by_sel if c["selection"] else by_group
                counts[c["source"]] = counts.get(c["source"], 0) + named[pname].numel()
            group_rows = []
            for g in groups:
                size = g.numel(model)
                setting = phase.setting(g.name)
                group_rows.append({
                    "name": g.name, "params": size, "percent": pct(size),
                    "trainable": setting.trainable,
                    "trainable_params": by_group.get(g.name, 0),
                    "lr": lr * setting.lr_mult if setting.trainable else 0.0})
            sel_rows = []
            for sel in phase.select:
                n = by_sel.get(sel.name, 0)
                sel_rows.append({**sel.to_dict(), "lr": lr * sel.lr_mult,
                                 "tensors": sum(1 for c in chosen.values()
                                                if c["selection"] and c["source"] == sel.name),
                                 "trainable_params": n, "percent": pct(n)})
            trainable = sum(named[n].numel() for n in chosen)
            phases.append({
                "name": phase.name, "epochs": phase.epochs, "bn": phase.bn,
                "base_lr": lr, "steps": phase.steps, "streams": list(phase.streams),
                "groups": group_rows, "selections": sel_rows,
                "trainable_params": trainable, "trainable_percent": pct(trainable),
                "backbone_frozen": phase.backbone_frozen(),
                "loss_terms": [t.name for t in phase.loss_terms],
            })
        return {"strategy": self.strategy, "epochs": self.epochs, "phases": phases,
                "total_params": total, "train_on": self.train_on,
                "model_changes": [c.describe() for c in self.model_changes],
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
    if plan.train_on not in ("auto", "target", "source"):
        raise ConfigError(f"strategy '{plan.strategy}' has train_on {plan.train_on!r}; choose "
                          "auto, target or source")
    for change in plan.model_changes:
        if not isinstance(change, ModelChange):
            raise ConfigError(f"strategy '{plan.strategy}' declared a model change of type "
                              f"{type(change).__name__}, not a zoo.strategy.ModelChange")
    for phase in plan.phases:
        where = f"strategy '{plan.strategy}' phase '{phase.name}'"
        unknown = set(phase.groups) - names
        if unknown:
            raise ConfigError(f"strategy '{plan.strategy}' names unknown layer groups "
                              f"{sorted(unknown)}; groups are {sorted(names)}")
        if phase.bn not in BN_MODES:
            raise ConfigError(f"{where} has BN mode {phase.bn!r}; choose one of "
                              f"{', '.join(BN_MODES)}")
        if phase.epochs < 0:
            raise ConfigError(f"{where} has {phase.epochs} epochs")
        if phase.steps not in PHASE_STEPS:
            raise ConfigError(f"{where} has steps {phase.steps!r}; choose one of "
                              f"{', '.join(PHASE_STEPS)}")
        if isinstance(phase.streams, str):
            raise ConfigError(f"{where}: streams must be a tuple of names, got the string "
                              f"{phase.streams!r} (write ({phase.streams!r},))")
        unknown_streams = [s for s in phase.streams if s not in STREAMS]
        if unknown_streams:
            raise ConfigError(f"{where} reads unknown stream {unknown_streams[0]!r}; "
                              f"streams are {', '.join(STREAMS)}")
        for sel in phase.select:
            if not isinstance(sel, Selection):
                raise ConfigError(f"{where} selects with a {type(sel).__name__}, not a "
                                  "zoo.strategy.Selection")
            bad_kinds = [k for k in sel.kinds if k not in SELECTION_KINDS]
            if bad_kinds:
                raise ConfigError(f"{where}: selection '{sel.name}' has kind "
                                  f"{bad_kinds[0]!r}; kinds are {', '.join(SELECTION_KINDS)}")
            if not (sel.lr_mult >= 0) or (sel.weight_decay is not None
                                          and not sel.weight_decay >= 0):
                raise ConfigError(f"{where}: selection '{sel.name}' needs lr_mult >= 0 and "
                                  "weight_decay >= 0 (or None)")
        if phase.steps == "none":  # closed-form work (fit), not gradient steps
            if phase.fit is None:
                raise ConfigError(f"{where} has steps='none' but no fit(ctx)")
            continue
        if not phase.trainable_groups() and not phase.loss_terms and not phase.select:
            raise ConfigError(f"{where} trains nothing")


def apply_model_changes(plan: StrategyPlan, model: TransferModel,
                        groups: list[LayerGroup]) -> bool:
    """Apply the plan's model changes once (idempotent per model); keep ``groups`` true.

    A change may move parameters and modules (peft wraps a ``Linear`` as ``base_layer``):
    every layer group is renamed by object identity, so the groups still name the same
    tensors; new parameters (adapters) belong to no group — a phase trains them through a
    :class:`Selection` — except a replaced head's (``head.*``), which join the head group.
    Returns True when something was applied now.
    """
    done = model.__dict__.setdefault("_zoo_applied_changes", [])
    todo = [c for c in plan.model_changes if not any(c is d for d in done)]
    if not todo:
        return False
    before_p = {n: id(p) for n, p in model.named_parameters()}
    before_m = {n: id(m) for n, m in model.named_modules()}
    for change in todo:
        change.apply(model)
        done.append(change)
    after_p = {id(p): n for n, p in model.named_parameters()}
    after_m = {id(m): n for n, m in model.named_modules()}
    for g in groups:
        g.params = [after_p[before_p[n]] for n in g.params if before_p.get(n) in after_p]
        g.modules = [after_m[before_m[n]] for n in g.modules if before_m.get(n) in after_m]
    head = next((g for g in groups if g.name == "head"), None)
    if head is not None:  # a replaced head: its new parameters are the head group's
        grouped = {n for g in groups for n in g.params}
        fresh = [n for n in after_p.values() if n.startswith("head.") and n not in grouped]
        head.params += fresh
        head.modules = list(dict.fromkeys(head.modules + [n.rsplit(".", 1)[0] for n in fresh]))
    return True


def finalize_model_changes(plan: StrategyPlan, model: TransferModel, run_dir) -> TransferModel:
    """After training: each change may write files to ``run_dir`` and return the model that
    loads with its provider alone (adapters merged); the last such model is returned."""
    for change in plan.model_changes:
        out = change.finalize(model, run_dir)
        if out is not None:
            model = out
    return model


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
        frozen = not phase.setting(group.name).trainable
        if not frozen and (phase.bn == "train" or group.name == "head"):
            continue
        for mname in group.modules:
            module = model.get_submodule(mname)
            if frozen or isinstance(module, _BN_TYPES):
                module.eval()
    if phase.backbone_frozen():
        # the whole backbone is a fixed function: eval mode everywhere (dropout, BN, ...)
        model.backbone.eval()
