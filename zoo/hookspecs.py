"""The hook specifications every zoo plugin implements (pluggy project name ``"zoo"``).

Registration hooks receive a ``register`` callback (simonw/llm style) instead of returning
values, so the core can reject duplicate names and record which plugin supplied what.
Hooks are always called with keyword arguments; specs only ever *gain* arguments, and an
implementation may accept any subset of them (pluggy's rule).

Lazy-import rule: importing a plugin module and running its ``register_*`` hooks must not
import torch, torchvision or timm.  Heavy imports belong inside the functions that build
things (``create``, factories, ``plan``).  ``zoo --help`` and ``zoo plugins`` depend on it.

The protocols of the registered components are documented in ``docs/hooks.md`` and
checked by :mod:`zoo.testing`.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("zoo")
hookimpl = pluggy.HookimplMarker("zoo")


@hookspec
def register_backbone_providers(register):
    """Register backbone providers.

    :param register: ``register(name, provider)``.  ``provider`` implements
        :class:`zoo.backbones.BackboneProvider`: ``list_models(pattern, pretrained)``,
        ``info(arch)``, ``create(arch, weights)`` and ``layer_groups(backbone)``.
        ``name`` is the prefix users type (``timm:resnet18``).
    """


@hookspec
def register_heads(register):
    """Register classification heads.

    :param register: ``register(name, factory, description="")`` where
        ``factory(in_features, num_classes, **params) -> torch.nn.Module``.
    """


@hookspec
def register_strategies(register):
    """Register transfer strategies.

    :param register: ``register(name, strategy, description="")`` where ``strategy`` has
        ``plan(model, groups, job) -> zoo.strategy.StrategyPlan`` (``model`` a
        :class:`zoo.backbones.TransferModel`, ``groups`` its :class:`zoo.backbones.LayerGroup`
        list, input side first, ``"head"`` last) and optionally ``defaults``, a dict of its
        parameters (``strategy.params``) with their default values.
    """


@hookspec
def register_metrics(register):
    """Register evaluation metrics.

    :param register: ``register(name, factory, mode="max", scalar=True, description="")``
        where ``factory(num_classes) -> torchmetrics.Metric`` (or ``None`` when the metric
        does not apply, e.g. top-5 with fewer than 5 classes).  ``mode`` says whether larger
        (``"max"``) or smaller (``"min"``) is better; non-scalar metrics are written to their
        own files instead of ``summary.json``'s ``test`` block.
    """


@hookspec
def register_datasets(register):
    """Register datasets.

    :param register: ``register(name, factory, description="", prefix=False)`` where
        ``factory(spec, split, transform, seed) -> torch.utils.data.Dataset`` returns the split
        (``"train"``, ``"val"`` or ``"test"``) of the dataset described by ``spec``
        (a :class:`zoo.jobspec.DataSpec`), split deterministically from ``seed``.  The dataset yields ``(image, label)`` and has a
        ``classes`` list.  With ``prefix=True`` the factory serves every name
        ``NAME:SUFFIX`` (``spec.name`` holds the full name).
    """


@hookspec(firstresult=True)
def resolve_weights(backbone, tag, store):
    """Find source weights for a backbone without the provider's hub.

    Called after an explicit file and zoo's own store were tried, before the provider's hub.

    :param backbone: the resolved model name, e.g. ``"timm:efficientnet_lite0"``.
    :param tag: the requested pretrained tag, or ``None`` for the default one.
    :param store: the :class:`zoo.weights.resolve.WeightStore` (to cache what is found).
    :return: a :class:`zoo.weights.resolve.ResolvedWeights`, a path to a ``.safetensors`` file,
        a state dict, or ``None`` to let the next plugin try.
    """


@hookspec
def register_commands(cli):
    """Add CLI subcommands.

    :param cli: the root :class:`click.Group`; call ``@cli.command()`` on it.
    """


@hookspec
def on_epoch_end(run, epoch, metrics):
    """Observe the end of an epoch (loggers, notifiers).  The return value is ignored.

    :param run: the :class:`zoo.engine.pipeline.RunContext` (``run.job``, ``run.dir``, ``run.rank``).
    :param epoch: the epoch number, starting at 1.
    :param metrics: the record written to ``metrics.jsonl`` for this epoch.
    """


@hookspec
def on_run_end(run, summary):
    """Observe the end of a run, completed, interrupted or failed.  Return value ignored.

    :param run: the :class:`zoo.engine.pipeline.RunContext`.
    :param summary: the content of ``summary.json``.
    """
