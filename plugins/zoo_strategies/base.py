"""The pack's base class and helpers, and its two simplest strategies: ``finetune``, ``linear-probe``."""

from zoo.plan import AutoCandidate, Phase, StrategyPlan, all_groups, resolve_bn
from zoo.strategy_base import Strategy as _CoreStrategy


class Strategy(_CoreStrategy):
    """The pack's base: :class:`zoo.strategy_base.Strategy` (``zoo.strategy.Strategy``).

    Kept as ``zoo_strategies.Strategy`` for plugins that subclassed it before it moved into
    the core; third-party strategies subclass ``zoo.strategy.Strategy`` (docs/hooks.md).
    """


def has_source_weights(model) -> bool:
    """False when the backbone starts from random init (``--weights none`` or no weights)."""
    return Strategy.source_weights(model)


def backbone_lr_mult(strategy: Strategy, p: dict, model, notes: list) -> float:
    """``backbone_lr_mult`` of ``p``: ``auto`` is 0.1 with source weights, 1.0 without."""
    mult = p["backbone_lr_mult"]
    if mult == "auto":
        # a lower backbone LR protects source features; random init has none to protect
        mult = 0.1 if has_source_weights(model) else 1.0
        notes.append(f"backbone_lr_mult auto → {mult}" + (
            "" if mult == 0.1 else " (no source weights: training from scratch)"))
        return mult
    return strategy.number(p, "backbone_lr_mult", float, 0.0)


def auto_candidate(cost: str):
    """This pack's :class:`zoo.strategy.AutoCandidate` of ``cost`` (``Strategy.auto``)."""
    return AutoCandidate(cost=cost)


def backbone_groups(groups) -> list:
    """The backbone's layer groups, input side first (the head left out)."""
    return [g for g in groups if g.name != "head"]


class Finetune(Strategy):
    """All layers train; the backbone at ``lr × backbone_lr_mult`` (auto: 0.1, or 1.0 from scratch)."""

    name = "finetune"
    defaults = {"backbone_lr_mult": "auto"}

    @property
    def auto(self):  # one of auto's candidates: every layer trains
        return auto_candidate("full")

    def plan(self, model, groups, job, ctx=None):
        p = self.params(job)
        notes: list = []
        mult = backbone_lr_mult(self, p, model, notes)
        settings = all_groups(groups, trainable=True, lr_mult=mult)
        phase = Phase("finetune", job.train.epochs, settings, bn=resolve_bn(job, "train"))
        return StrategyPlan(self.name, [phase], notes)


class LinearProbe(Strategy):
    """Backbone frozen (eval mode, BatchNorm statistics fixed); only the head trains."""

    name = "linear-probe"
    defaults: dict = {}

    @property
    def auto(self):  # one of auto's candidates: the head on cached features
        return auto_candidate("cheap")

    def plan(self, model, groups, job, ctx=None):
        self.params(job)
        resolve_bn(job, "freeze-all")  # validates the value; see the comment below
        settings = all_groups(groups, trainable=False)
        # a frozen backbone's BN never moves, whatever strategy.bn says
        phase = Phase("probe", job.train.epochs, settings, bn="freeze-all")
        notes = [] if job.strategy.bn in (None, "freeze-all") else [
            f"strategy.bn={job.strategy.bn} ignored: the backbone is frozen, its BatchNorm "
            "statistics and affine parameters stay fixed"]
        return StrategyPlan(self.name, [phase], notes)
