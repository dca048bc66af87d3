"""Build what a job trains: backbone with resolved weights + head, its layer groups, the
strategy's plan and the metrics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoo.backbones import TransferModel, build_layer_groups
from zoo.errors import ConfigError, ZooError
from zoo.strategy import StrategyPlan, validate_plan
from zoo.weights.resolve import resolve_and_load


@dataclass
class BuiltModel:
    """The model of a job and what was decided while building it."""

    model: Any
    ref: Any
    weights: dict
    groups: list
    image_size: int


def build_model(catalog, job, num_classes: int, warnings: list) -> BuiltModel:
    """Backbone (with resolved weights) + head, and its layer groups."""
    ref = catalog.resolve_model(job.model)
    head_comp = catalog.get("heads", job.head.name)
    backbone, weights = resolve_and_load(catalog, ref, job.weights, warnings)
    try:
        head = head_comp.obj(backbone.feature_dim, num_classes, **job.head.params)
    except TypeError as exc:
        raise ConfigError(f"head '{job.head.name}' rejected its params {job.head.params}: "
                          f"{exc}") from None
    model = TransferModel(backbone, head)
    groups = build_layer_groups(model, catalog.provider(ref.provider))
    size = job.data.image_size or backbone.pretrained_cfg.input_size
    return BuiltModel(model, ref, weights, groups, int(size))


def make_plan(catalog, job, built: BuiltModel, extra: dict | None = None):
    comp = catalog.get("strategies", job.strategy.name)
    strategy = comp.obj
    if hasattr(strategy, "prepare"):  # every time: no state left from an earlier run
        strategy.prepare(**(extra or {}))
    plan = strategy.plan(built.model, built.groups, job)
    if not isinstance(plan, StrategyPlan):
        raise ZooError(f"strategy '{job.strategy.name}' (plugin {comp.plugin}) returned "
                       f"{type(plan).__name__}, not a zoo.strategy.StrategyPlan")
    validate_plan(plan, built.groups)
    return plan


def build_metrics(catalog, job, num_classes: int, device) -> tuple[dict, dict]:
    """``(scalar metrics, non-scalar metrics)`` as torchmetrics objects on ``device``."""
    names = list(dict.fromkeys(job.metrics + [job.monitor.metric]))
    scalar, other = {}, {}
    for name in names:
        if name == "loss":
            continue
        comp = catalog.get("metrics", name)
        metric = comp.obj(num_classes)
        if metric is None:
            continue
        (scalar if comp.options.get("scalar", True) else other)[name] = metric.to(device)
    if job.monitor.metric not in scalar and job.monitor.metric != "loss":
        raise ConfigError(f"monitor metric '{job.monitor.metric}' does not apply to this task "
                          f"({num_classes} classes)")
    return scalar, other
