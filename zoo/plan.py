"""The plan vocabulary: what a strategy returns and what it is given — torch-free to import.

A strategy turns ``(model, groups, job, ctx)`` into a :class:`StrategyPlan`: a list of
:class:`Phase` objects (trainable :class:`GroupSetting` per layer group, parameter-level
:class:`Selection`, BatchNorm mode, LR, loss terms, extra data streams, or a closed-form
``fit``), declared :class:`ModelChange` objects (adapters), and, for a strategy that picks
another (``auto``), the :class:`Choice` it made.  :class:`PlanContext` is the frozen,
read-only view of the run a strategy may look at (its data, device, catalog, source and
target streams).  :class:`AutoCandidate` is how a strategy offers itself to ``auto``.

Nothing here imports torch: ``from zoo import StrategyPlan, Phase`` or ``from zoo.plan
import ...`` is cheap (a strategy pack registers without torch).  What needs torch — loss
terms (:class:`zoo.strategy.LossTerm`, an ``nn.Module``), applying phases and model changes
— is in :mod:`zoo.strategy` and :mod:`zoo.selection`, which re-export these names.

BatchNorm policy (per phase, for the *trainable* groups; frozen groups are always ``eval``):
``train`` (statistics update, affine trains), ``freeze-stats`` (running statistics fixed,
affine trains), ``freeze-all`` (statistics fixed, affine frozen).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from zoo.errors import ConfigError

if TYPE_CHECKING:  # annotations only: zoo.backbones imports torch
    from zoo.backbones import LayerGroup, TransferModel

BN_MODES = ("train", "freeze-stats", "freeze-all")
SELECTION_KINDS = ("bias", "norm")


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
    loss_terms: list = field(default_factory=list)  # zoo.strategy.LossTerm modules
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
    choice: Choice | None = None  # auto: what it chose (summary.json's "auto")
    # weights the run has to beat: validated as "epoch 0", kept until an epoch matches them
    fallback: Fallback | None = None
    # False: the run reads its train split through the eval transform (no augmentation),
    # whatever data.augment says — a frozen-backbone plan fits fixed features best
    augment: bool = True

    @property
    def epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def to_dict(self, groups: list[LayerGroup], model: TransferModel, base_lr: float,
                weight_decay: float = 0.0) -> dict:
        """What ``--plan`` shows: per phase, what trains (counts and % of the model's
        parameters — backbone and head, not the kept source classifier — by group and by
        selection), at which LR, the steps and streams; the model changes."""
        from zoo.selection import choose_params  # lazy: zoo.selection imports torch

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
                "total_params": total, "train_on": self.train_on, "augment": self.augment,
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




@dataclass(frozen=True)
class PlanContext:
    """The run as a strategy's ``plan(model, groups, job, ctx)`` may read it (frozen).

    ``data``: the job's splits as the run will see them (``.train``/``.val``/``.test``
    views with their transforms, ``.classes``); ``device`` the run's device; ``catalog``
    the installed components (``auto``'s candidates); ``source``/``target``: the splits of
    ``source_data``/``target_data`` when the job names them.  Every field may be ``None``
    (a plan made outside a run: a test, ``--plan`` without data).
    """

    data: Any = None
    device: Any = None
    catalog: Any = None
    source: Any = None
    target: Any = None

    @property
    def num_classes(self) -> int | None:
        return len(self.data.classes) if self.data is not None else None


@dataclass
class Fallback:
    """Weights a run keeps unless one of its epochs matches or beats them on the monitored
    val metric.

    ``auto`` hands the run the rival it measured exactly (a linear probe trained as it would
    run) when it trains a slower candidate it could only predict: the loop validates these
    weights with the run's own validator before the first epoch ("epoch 0" of the best-epoch
    bookkeeping), so the run ends with whichever is better on val.  ``weights`` is a complete
    state dict of the model as the plan leaves it (its model changes applied); ``label``
    names where they come from (``summary.json``'s ``fallback``)."""

    label: str
    weights: dict | None = field(default=None, repr=False)  # the run drops them once seeded
    note: str = ""
    val: dict = field(default_factory=dict)  # the run's val metrics of these weights

    def to_dict(self) -> dict:
        return {"from": self.label, "val": dict(self.val),
                **({"note": self.note} if self.note else {})}


@dataclass
class Choice:
    """What a strategy that runs another one (``auto``) chose: ``summary.json``'s top-level
    ``"auto"`` (``{"chosen", "lr", "trials": [...]}``), for the run folder and ``compare``."""

    chosen: str
    lr: float | None = None
    trials: list = field(default_factory=list)   # records with ``as_dict()`` (or dicts)
    skipped: dict = field(default_factory=dict)  # strategy → why it was no candidate

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "lr": self.lr,
                "trials": [t.as_dict() if hasattr(t, "as_dict") else dict(t)
                           for t in self.trials],
                "skipped": dict(self.skipped)}


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

    def matches(self, model) -> list[str]:
        """The parameter names of ``model`` this selection picks, in model order."""
        from zoo.selection import NORM_TYPES, _owned_by  # lazy: zoo.selection imports torch

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


