"""Built-in transfer strategies, from frozen features to full fine-tuning.

Each strategy is a small class with ``defaults`` (its ``strategy.params``, overridable with
``--set strategy.params.X=V``) and ``plan(model, groups, job) -> StrategyPlan``.  A strategy
that needs run data (``joint``: the source task, ``auto``: the target splits for its trials)
also has ``prepare(**extra)``, which the runner calls before every ``plan``.

Importing this package imports no torch: the plan classes live in :mod:`zoo.strategy`,
imported when a plan is made, and the torch modules of this pack (:mod:`.terms`,
the trials of :mod:`.auto`) are imported inside ``plan``.

Modules: :mod:`.base` (base class, ``finetune``, ``linear-probe``), :mod:`.schedules`
(``lp-ft``, ``gradual-unfreeze``, ``partial``, ``layer-decay``), :mod:`.regularized`
(``l2-sp``, ``lwf``, ``joint``), :mod:`.auto` (``auto``).  docs/strategies.md describes each.
"""
from zoo.hookspecs import hookimpl

from .auto import Auto
from .base import Finetune, LinearProbe, Strategy, backbone_groups, backbone_lr_mult, has_source_weights  # noqa: F401
from .regularized import L2SP, Joint, LwF
from .schedules import GradualUnfreeze, LayerDecay, LpFt, Partial


def strategy_classes() -> dict:
    """Every strategy class of this pack by name (imports no torch)."""
    classes = [Finetune, LinearProbe, LpFt, GradualUnfreeze, Partial, LayerDecay, L2SP, LwF,
               Joint, Auto]
    return {cls.name: cls for cls in classes}


@hookimpl
def register_strategies(register):
    for name, cls in strategy_classes().items():
        first = (cls.__doc__ or "").strip().splitlines()[0]
        register(name, cls(), description=first.replace("``", ""))
