"""The pack's base class and helpers, and its two simplest strategies: ``finetune``, ``linear-probe``."""


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

    # -- helpers for parameter values (``--set`` gives ints, floats or strings) ---------------
    def number(self, p: dict, key: str, kind=float, low=None, high=None):
        """``p[key]`` as ``kind`` within ``[low, high]``, else a ConfigError naming the key."""
        from zoo.errors import ConfigError

        value = p[key]
        try:
            if isinstance(value, bool):
                raise ValueError
            number = kind(float(value)) if kind is int else kind(value)
            if kind is int and float(value) != number:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"strategy '{self.name}': parameter '{key}' must be "
                              f"{'an integer' if kind is int else 'a number'}, got {value!r}"
                              ) from None
        if (low is not None and number < low) or (high is not None and number > high):
            rng = (f"from {low} to {high}" if low is not None and high is not None
                   else f">= {low}" if low is not None else f"<= {high}")
            raise ConfigError(f"strategy '{self.name}': parameter '{key}' must be {rng}, "
                              f"got {value!r}")
        return number


def has_source_weights(model) -> bool:
    """False when the backbone starts from random init (``--weights none`` or no weights)."""
    return getattr(model.backbone, "weights_source", "unknown") not in ("none", "random-init")


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


def backbone_groups(groups) -> list:
    """The backbone's layer groups, input side first (the head left out)."""
    return [g for g in groups if g.name != "head"]


class Finetune(Strategy):
    """All layers train; the backbone at ``lr × backbone_lr_mult`` (auto: 0.1, or 1.0 from scratch)."""

    name = "finetune"
    defaults = {"backbone_lr_mult": "auto"}

    def plan(self, model, groups, job):
        from zoo.strategy import Phase, StrategyPlan, all_groups, resolve_bn

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

    def plan(self, model, groups, job):
        from zoo.strategy import Phase, StrategyPlan, all_groups, resolve_bn

        self.params(job)
        resolve_bn(job, "freeze-all")  # validates the value; see the comment below
        settings = all_groups(groups, trainable=False)
        # a frozen backbone's BN never moves, whatever strategy.bn says
        phase = Phase("probe", job.train.epochs, settings, bn="freeze-all")
        notes = [] if job.strategy.bn in (None, "freeze-all") else [
            f"strategy.bn={job.strategy.bn} ignored: the backbone is frozen, its BatchNorm "
            "statistics and affine parameters stay fixed"]
        return StrategyPlan(self.name, [phase], notes)
