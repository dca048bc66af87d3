"""Built-in transfer strategies, from frozen features to full fine-tuning.

Each strategy is a small class with ``defaults`` (its ``strategy.params``) and
``plan(model, groups, job) -> StrategyPlan``.  Importing this module imports no torch: the
plan classes live in :mod:`zoo.strategy`, imported when a plan is made.
"""
from zoo.hookspecs import hookimpl


class Strategy:
    """Base: merges ``job.strategy.params`` over ``defaults`` and rejects unknown params."""

    name = "base"
    defaults: dict = {}

    def params(self, job) -> dict:
        from zoo.errors import ConfigError, did_you_mean

        unknown = set(job.strategy.params) - set(self.defaults)
        if unknown:
            key = sorted(unknown)[0]
            known = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError(f"strategy '{self.name}' has no parameter '{key}'"
                              f"{did_you_mean(key, self.defaults)} (parameters: {known})")
        return {**self.defaults, **job.strategy.params}


def has_source_weights(model) -> bool:
    """False when the backbone starts from random init (``--weights none`` or no weights)."""
    return getattr(model.backbone, "weights_source", "unknown") not in ("none", "random-init")


class Finetune(Strategy):
    """All layers train; the backbone at ``lr × backbone_lr_mult`` (auto: 0.1, or 1.0 from scratch)."""

    name = "finetune"
    defaults = {"backbone_lr_mult": "auto"}

    def plan(self, model, groups, job):
        from zoo.strategy import Phase, StrategyPlan, all_groups, resolve_bn

        p = self.params(job)
        mult, notes = p["backbone_lr_mult"], []
        if mult == "auto":
            # a lower backbone LR protects source features; random init has none to protect
            mult = 0.1 if has_source_weights(model) else 1.0
            notes.append(f"backbone_lr_mult auto → {mult}" + (
                "" if mult == 0.1 else " (no source weights: training from scratch)"))
        mult = float(mult)
        settings = all_groups(groups, trainable=True, lr_mult=mult)
        phase = Phase("finetune", job.train.epochs, settings, bn=resolve_bn(job, "train"))
        return StrategyPlan(self.name, [phase], notes)


class LinearProbe(Strategy):
    """Backbone frozen (eval mode, BatchNorm statistics fixed); only the head trains."""

    name = "linear-probe"
    defaults: dict = {}

    def plan(self, model, groups, job):
        from zoo.strategy import Phase, StrategyPlan, all_groups

        self.params(job)
        settings = all_groups(groups, trainable=False)
        # a frozen backbone's BN never moves, whatever strategy.bn says
        phase = Phase("probe", job.train.epochs, settings, bn="freeze-all")
        return StrategyPlan(self.name, [phase])


@hookimpl
def register_strategies(register):
    register("finetune", Finetune(), description=Finetune.__doc__)
    register("linear-probe", LinearProbe(), description=LinearProbe.__doc__)
