"""Build what a job trains: backbone with resolved weights + head, its layer groups, the
strategy's plan and the metrics."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from zoo.backbones import TransferModel, build_layer_groups
from zoo import contracts
from zoo.errors import ConfigError, ZooError
from zoo.plan import PlanContext, validate_plan
from zoo.strategy_base import call_plan
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
    head_comp = catalog.get("heads", job.head.name)
    # model init depends on the seed alone, not on how weights were looked for (zoo.contracts)
    with contracts.isolated_rng(job.seed, "backbone"):
        ref = catalog.resolve_model(job.model)  # listing providers' models draws nothing
        backbone, weights = resolve_and_load(catalog, ref, job.weights, warnings)
    try:
        with contracts.isolated_rng(job.seed, "head"):
            head = head_comp.obj(backbone.feature_dim, num_classes, **job.head.params)
    except TypeError as exc:
        raise ConfigError(f"head '{job.head.name}' rejected its params {job.head.params}: "
                          f"{exc}") from None
    contracts.check_head(head_comp, head, backbone.feature_dim, num_classes)
    model = TransferModel(backbone, head)
    groups = build_layer_groups(model, catalog.provider(ref.provider))
    size = job.data.image_size or backbone.pretrained_cfg.input_size
    comp = catalog.get("providers", ref.provider)
    try:
        contracts.check_backbone_output(comp, backbone, int(size))
    except ZooError:  # a fixed-size model (a ViT) is resized to the run's size later
        own = int(backbone.pretrained_cfg.input_size)
        if own == int(size):
            raise
        contracts.check_backbone_output(comp, backbone, own)
    return BuiltModel(model, ref, weights, groups, int(size))


def make_plan(catalog, job, built: BuiltModel, ctx: PlanContext | None = None):
    """The job's strategy's plan for ``built``, given the run's :class:`PlanContext`."""
    comp = catalog.get("strategies", job.strategy.name)
    strategy = comp.obj
    ctx = ctx if ctx is not None else PlanContext(catalog=catalog)
    args = (built.model, built.groups, job, ctx)
    contracts.check_plan_callable(comp, strategy, args)  # 4 arguments, or the old 3
    plan = contracts.check_plan(comp, call_plan(strategy, built.model, built.groups, job,
                                                ctx, comp.plugin))
    validate_plan(plan, built.groups)
    return plan


def build_metrics(catalog, job, num_classes: int, device) -> tuple["MetricSet", "MetricSet"]:
    """``(scalar metrics, non-scalar metrics)``: torchmetrics objects on ``device``.

    Checked now, built on first use (the first validation pass): the factories import
    torchmetrics, about 1.5 s that would otherwise delay the first training step
    (docs/benchmarks.md). The monitor metric is checked before anything trains, from what
    its registration declares (``scalar``, ``min_classes``); a factory that still returns
    ``None`` for it is a one-line error when the set is built.
    """
    names = [n for n in dict.fromkeys(job.metrics + [job.monitor.metric]) if n != "loss"]
    comps = {name: catalog.get("metrics", name) for name in names}
    monitor = comps.get(job.monitor.metric)
    if monitor is not None and (not monitor.options.get("scalar", True)
                                or num_classes < int(monitor.options.get("min_classes", 1))):
        raise _monitor_error(job, num_classes)
    builder = _MetricBuilder(comps, job, num_classes, device)
    return MetricSet(builder, scalar=True), MetricSet(builder, scalar=False)


def _monitor_error(job, num_classes: int) -> ConfigError:
    return ConfigError(f"monitor metric '{job.monitor.metric}' does not apply to this task "
                       f"({num_classes} classes)")


class _MetricBuilder:
    """Builds every metric of a job once, when one of its :class:`MetricSet` is first read."""

    def __init__(self, comps: dict, job, num_classes: int, device):
        self.comps, self.job, self.num_classes, self.device = comps, job, num_classes, device
        self.built: tuple[dict, dict] | None = None

    def get(self, scalar: bool) -> dict:
        if self.built is None:
            found: tuple[dict, dict] = ({}, {})
            for name, comp in self.comps.items():
                metric = contracts.check_metric(comp, comp.obj(self.num_classes))
                if metric is not None:
                    found[0 if comp.options.get("scalar", True) else 1][name] = \
                        metric.to(self.device)
            if self.job.monitor.metric != "loss" and self.job.monitor.metric not in found[0]:
                raise _monitor_error(self.job, self.num_classes)
            self.built = found
        return self.built[0 if scalar else 1]


class MetricSet(Mapping):
    """A job's scalar (or non-scalar) metrics by name, built on first read."""

    def __init__(self, builder: _MetricBuilder, scalar: bool):
        self._builder, self._scalar = builder, scalar

    def _metrics(self) -> dict:
        return self._builder.get(self._scalar)

    def __getitem__(self, name: str):
        return self._metrics()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._metrics())

    def __len__(self) -> int:
        return len(self._metrics())
