"""``ReplaceHead``: a model change that gives the model another registered head before training.

``auto`` uses it for candidates whose job defaults name their own head (``ncm``/``knn`` fill
the ``ncm``/``knn`` heads): a plan cannot swap ``job.head``, so the winner's plan declares
"head → ncm" as a :class:`zoo.strategy.ModelChange`.  The new head module carries
``zoo_head = {"name", "params"}``: ``save_model`` records that head (not ``job.head``) in
``model.safetensors``, so ``load_run`` rebuilds it and eval/predict/export work.

:func:`plan_with_changes` plans a strategy as if the changes were applied (the head swapped
for the duration of ``plan``; the model is left as it was) and prepends them to the plan.

Imports torch (through :mod:`zoo.strategy`): imported only when ``auto`` plans.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch

from zoo.errors import ConfigError
from zoo.strategy import ModelChange
from zoo.strategy_base import call_plan


class ReplaceHead(ModelChange):
    """Replace ``model.head`` with a fresh head ``name(feature_dim, num_classes, **params)``."""

    name = "head"
    touches_backbone = False  # cached backbone features stay valid

    def __init__(self, head: str, params: dict, factory: Callable, in_features: int,
                 num_classes: int, replaces: str | None = None):
        self.head, self.params = head, dict(params)
        self.factory, self.in_features, self.num_classes = factory, in_features, num_classes
        self.replaces = replaces

    def build(self):
        """A new head module, tagged with its registered name and params."""
        module = self.factory(self.in_features, self.num_classes, **self.params)
        module.zoo_head = {"name": self.head, "params": dict(self.params)}
        return module

    def apply(self, model) -> None:
        if getattr(model.head, "zoo_head", None) == {"name": self.head, "params": self.params}:
            return  # already this head (a resume re-applies)
        model.head = self.build().to(_device(model))

    def describe(self) -> dict:
        return {"name": self.name, "head": self.head, "params": self.params,
                "replaces": self.replaces}


def head_change(catalog, model, job, own: dict, num_classes: int | None) -> ReplaceHead | None:
    """The change a strategy whose job defaults ``own`` name another head needs, or None."""
    spec = own.get("head") or {}
    name = spec.get("name")
    current = job.head.name
    if not name or name == current or getattr(model.head, "zoo_head", {}).get("name") == name:
        return None
    if not catalog.has("heads", name):
        raise ConfigError(f"its head '{name}' is not installed")
    classes = num_classes or _num_classes(model.head)
    return ReplaceHead(name, spec.get("params") or {}, catalog.get("heads", name).obj,
                       model.backbone.feature_dim, classes, replaces=current)


@contextmanager
def _swapped(model, changes: list):
    old = model.head
    for change in changes:
        model.head = change.build()
    try:
        yield
    finally:
        model.head = old


def plan_with_changes(strategy, model, groups, job, changes: list[Any], ctx=None):
    """``strategy.plan`` on the model as ``changes`` leave it; the plan declares them first."""
    if not changes:
        return call_plan(strategy, model, groups, job, ctx)
    with _swapped(model, changes):
        plan = call_plan(strategy, model, groups, job, ctx)
    plan.model_changes = [*changes, *plan.model_changes]
    return plan


def _device(model) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _num_classes(head) -> int:
    """Outputs of ``head`` without running it (the run's class count is not at hand)."""
    if isinstance(getattr(head, "num_classes", None), int):
        return head.num_classes
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    if linears:
        return linears[-1].out_features
    raise ConfigError(f"cannot tell how many classes head {type(head).__name__} predicts")
