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

Every ``register`` callback accepts, besides its kind's own arguments, these keywords
(built-in plugins use them exactly like third-party ones; the core names no component):

- ``description="..."``: one line for ``zoo heads``, ``zoo loggers`` ...
- ``job_defaults={...}``: a job-tree fragment (``{"train": {"lr": 0.01}, "data":
  {"augment": "none"}}``) applied when this component is chosen, below the registry,
  presets, config files and flags (precedence in ``docs/jobs.md``; between components a
  strategy's win over a dataset's).  Checked at registration: an unknown key, one that
  chooses a component (``model``, ``*.name``; a strategy may choose ``head.name``), a
  job-level key or path (``out``, ``name``, ``weights``, ``data.path`` ...), or another
  component's parameters, fails the plugin.
- ``default=True``: this component is its kind's default (the job leaves the name out);
  for metrics, every ``default=True`` metric of the first plugin that marks any is in the
  default ``metrics`` list, the first one is the default ``monitor.metric``.  Several
  plugins claiming a default: the first in plugin load order wins (built-ins first).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pluggy

from zoo.run_context import RunContext  # noqa: F401 (the hook specs' annotations)

if TYPE_CHECKING:  # annotations only (llm's hookspecs do the same): importing the specs
    # imports neither torch nor the engine, and these imports never run
    import click
    import torch

    from zoo.weights import ResolvedWeights, WeightStore

# the ``register`` callback each registration hook receives: ``register(name, obj, **kw)``
Register = Callable[..., None]

hookspec = pluggy.HookspecMarker("zoo")
hookimpl = pluggy.HookimplMarker("zoo")


@hookspec
def register_backbone_providers(register: Register) -> None:
    """Register backbone providers.

    :param register: ``register(name, provider)``.  ``provider`` implements
        :class:`zoo.backbones.BackboneProvider`: ``list_models(pattern, pretrained)``,
        ``info(arch)``, ``create(arch, weights)`` and ``layer_groups(backbone)``.
        ``name`` is the prefix users type (``timm:resnet18``).  Keyword
        ``default_model="arch"`` declares the model a job without ``model`` uses (the first
        such provider in the registry's ``providers`` order wins).
    """


@hookspec
def register_heads(register: Register) -> None:
    """Register classification heads.

    :param register: ``register(name, factory, description="")`` where
        ``factory(in_features, num_classes, **params) -> torch.nn.Module``.
    """


@hookspec
def register_strategies(register: Register) -> None:
    """Register transfer strategies.

    :param register: ``register(name, strategy, description="")`` where ``strategy`` has
        ``plan(model, groups, job, ctx) -> zoo.plan.StrategyPlan`` (``model`` a
        :class:`zoo.backbones.TransferModel`, ``groups`` its :class:`zoo.backbones.LayerGroup`
        list, input side first, ``"head"`` last; ``ctx`` the frozen
        :class:`zoo.plan.PlanContext`) and optionally ``defaults``, a dict of its
        parameters (``strategy.params``) with their default values.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register evaluation metrics.

    :param register: ``register(name, factory, mode="max", scalar=True, description="")``
        where ``factory(num_classes) -> torchmetrics.Metric`` (or ``None`` when the metric
        does not apply, e.g. top-5 with fewer than 5 classes).  ``mode`` says whether larger
        (``"max"``) or smaller (``"min"``) is better; non-scalar metrics are written to their
        own files instead of ``summary.json``'s ``test`` block.  Keywords: ``always=True``
        computes the metric on the test split of every run, named or not;
        ``writer=fn(run_dir, value, classes)`` writes its files from the test value (e.g.
        ``confusion.csv``); ``writes=("confusion.csv", ...)`` lists them (documentation);
        ``min_classes=5`` says the metric needs that many classes (checked before training
        when it is the monitor; factories are called at the first validation pass).
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets.

    :param register: ``register(name, factory, description="", prefix=False)`` where
        ``factory(spec, split, transform, seed) -> torch.utils.data.Dataset`` returns the split
        (``"train"``, ``"val"`` or ``"test"``) of the dataset described by ``spec``
        (a :class:`zoo.jobspec.DataSpec`), split deterministically from ``seed``.  The dataset yields ``(image, label)`` and has a
        ``classes`` list.  With ``prefix=True`` the factory serves every name
        ``NAME:SUFFIX`` (``spec.name`` holds the full name).  With ``serves_paths=True`` it
        serves ``--data PATH`` (a job with ``data.path`` and no ``data.name``); the first
        such dataset in plugin load order wins.  ``claims_paths=test`` (``test(path) ->
        bool``, top two levels of the folder only, nothing heavy imported) claims a path by
        its layout: the one claimant reads it; two claimants are an error naming both.
    """


@hookspec
def register_loggers(register: Register) -> None:
    """Register loggers (``job.loggers`` names them: ``--set loggers=[csv,mlflow]``).

    :param register: ``register(name, factory, description="")`` where
        ``factory(run, first_epoch) -> logger``; ``run`` is the
        :class:`zoo.run_context.RunContext` (``run.job``, ``run.dir``) and
        ``first_epoch`` the first epoch this process will log (> 1 on ``--resume``).  The
        logger has ``log_epoch(epoch, metrics)`` (``metrics``: the record written to
        ``metrics.jsonl``) and ``close(summary)`` (``summary``: ``summary.json``'s content,
        whether the run completed, was interrupted or failed).  Only rank 0 logs.  A
        factory that raises (e.g. :class:`zoo.errors.MissingDependencyError`) skips that
        logger with a one-line warning; a logger that raises is disabled for the rest of
        the run.  Import heavy libraries inside the factory.
    """


@hookspec(firstresult=True)
def resolve_weights(
        backbone: str, tag: str | None, store: WeightStore,
) -> ResolvedWeights | str | Path | dict[str, torch.Tensor] | None:
    """Find source weights for a backbone without the provider's hub.

    Called after an explicit file and zoo's own store were tried, before the provider's hub.
    zoo calls the implementations itself, one at a time in plugin load order (built-ins
    first; not pluggy's reverse order), and the first that returns something other than
    ``None`` wins.  One that raises is recorded in the "looked in" list of the error and
    the next one is tried.  (The spec is ``firstresult`` so a direct
    ``pm.hook.resolve_weights(...)`` also stops at the first answer.)

    :param backbone: the resolved model name, e.g. ``"timm:efficientnet_lite0"``.
    :param tag: the requested pretrained tag, or ``None`` for the default one.
    :param store: the :class:`zoo.weights.WeightStore` (to cache what is found).
    :return: a :class:`zoo.weights.ResolvedWeights`, a path to a ``.safetensors`` file,
        a state dict, or ``None`` to let the next plugin try.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add CLI subcommands.

    :param cli: the root :class:`click.Group`; call ``@cli.command()`` on it.
    """


@hookspec
def on_epoch_end(run: RunContext, epoch: int, metrics: dict[str, Any]) -> None:
    """Observe the end of an epoch (loggers, notifiers).  The return value is ignored.

    :param run: the :class:`zoo.run_context.RunContext` (public path ``zoo.runner``:
        ``run.job``, ``run.dir``, ``run.rank``).
    :param epoch: the epoch number, starting at 1.
    :param metrics: the record written to ``metrics.jsonl`` for this epoch.
    """


@hookspec
def on_run_end(run: RunContext, summary: dict[str, Any]) -> None:
    """Observe the end of a run, completed, interrupted or failed.  Return value ignored.

    :param run: the :class:`zoo.run_context.RunContext`.
    :param summary: the content of ``summary.json``.
    """
