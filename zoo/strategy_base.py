"""The base class strategy authors subclass: :class:`Strategy` (torch-free to import), and
:func:`call_plan`, how zoo asks any strategy for its plan.

A strategy is a stateless object with ``name``, ``defaults`` (its ``strategy.params``,
overridable with ``--set strategy.params.X=V``) and ``plan(model, groups, job, ctx) ->
StrategyPlan`` (:mod:`zoo.plan`).  One object may be planned many times, concurrently:
everything a plan depends on comes in through its arguments.  What it may read, and
nothing else (docs/hooks.md):

* ``job`` — the resolved :class:`zoo.jobspec.JobSpec` (``job.train.epochs``, ``job.strategy``);
* ``ctx`` — the frozen :class:`zoo.plan.PlanContext`: the run's data views, device, catalog,
  source and target splits (any of them may be ``None``: a plan made outside a run);
* :meth:`Strategy.source_weights` — whether source weights were loaded
  (``model.backbone.weights_source``: ``"none"``/``"random-init"`` when not);
* :meth:`Strategy.source_classifier` — the source task's classifier, or ``None``
  (``model.backbone.source_classifier``, frozen; LwF and joint read its logits);
* ``groups`` — the backbone's layer groups, input side first, then ``head``.

Kept out of :mod:`zoo.strategy` (which imports torch) so a strategy pack registers its
strategies without importing torch.

The 3-argument ``plan(model, groups, job)`` of earlier releases (with an optional
``prepare(**extra)`` called first) still works for one release: :func:`call_plan` prints a
one-line notice on stderr naming the strategy and its plugin, once per process.
"""
from __future__ import annotations

import inspect
import math
import sys
from typing import Any

from zoo.errors import ConfigError, did_you_mean

NO_SOURCE_WEIGHTS = ("none", "random-init")


class Strategy:
    """Base: merges ``job.strategy.params`` over ``defaults`` and rejects unknown params.

    Optional attribute: ``auto`` (a :class:`zoo.plan.AutoCandidate`: how ``auto`` may try
    it).  Subclasses define ``plan(self, model, groups, job, ctx=None)``.
    """

    name = "base"
    defaults: dict = {}

    def params(self, job) -> dict:
        """``job.strategy.params`` over :attr:`defaults`; a ConfigError on an unknown key."""
        unknown = set(job.strategy.params) - set(self.defaults)
        if unknown:
            key = sorted(unknown)[0]
            known = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError(f"strategy '{self.name}' has no parameter '{key}'"
                              f"{did_you_mean(key, self.defaults)} (parameters: {known})")
        return {**self.defaults, **job.strategy.params}

    @staticmethod
    def source_weights(model) -> bool:
        """True when the backbone starts from source weights (not ``--weights none``)."""
        return getattr(model.backbone, "weights_source", "unknown") not in NO_SOURCE_WEIGHTS

    @staticmethod
    def source_classifier(model) -> Any:
        """The source task's classifier (features → source logits), or ``None``."""
        return getattr(model.backbone, "source_classifier", None)

    # -- helpers for parameter values (``--set`` gives ints, floats or strings) ---------------
    def flag(self, p: dict, key: str) -> bool:
        """``p[key]`` as a bool (true/false, yes/no, on/off, 1/0), else a ConfigError."""
        value = p[key]
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"strategy '{self.name}': parameter '{key}' must be true or false, "
                          f"got {value!r}")

    def number(self, p: dict, key: str, kind=float, low=None, high=None):
        """``p[key]`` as ``kind`` within ``[low, high]``, else a ConfigError naming the key."""
        value = p[key]
        try:
            if isinstance(value, bool):
                raise ValueError
            if not math.isfinite(float(value)):  # .inf/.nan: never a usable parameter
                raise ValueError
            number = kind(float(value)) if kind is int else kind(value)
            if kind is int and float(value) != number:
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"strategy '{self.name}': parameter '{key}' must be "
                              f"{'an integer' if kind is int else 'a number'}, got {value!r}"
                              ) from None
        if (low is not None and number < low) or (high is not None and number > high):
            rng = (f"from {low} to {high}" if low is not None and high is not None
                   else f">= {low}" if low is not None else f"<= {high}")
            raise ConfigError(f"strategy '{self.name}': parameter '{key}' must be {rng}, "
                              f"got {value!r}")
        return number


_NOTIFIED: set = set()  # (strategy, plugin) pairs told about the 3-argument plan already


def takes_context(plan) -> bool:
    """True when ``plan`` accepts the plan context (a 4th positional argument or ``ctx``)."""
    try:
        params = list(inspect.signature(plan).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: assume the current protocol
        return True
    if any(p.kind == p.VAR_POSITIONAL for p in params) or any(p.name == "ctx" for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 4


def legacy_extra(ctx) -> dict:
    """What the old ``prepare(**extra)`` received, from a plan context."""
    if ctx is None:
        return {}
    return {"bundle": ctx.data, "device": ctx.device, "catalog": ctx.catalog,
            "source_data": ctx.source, "target_data": ctx.target}


def call_plan(strategy, model, groups, job, ctx=None, plugin: str | None = None):
    """``strategy.plan(model, groups, job, ctx)``; a strategy still on the 3-argument form
    gets its ``prepare(**extra)`` (if any) and ``plan(model, groups, job)``, and a one-line
    notice on stderr naming it and its plugin (once per process)."""
    if takes_context(strategy.plan):
        return strategy.plan(model, groups, job, ctx)
    name = getattr(strategy, "name", type(strategy).__name__)
    if (name, plugin) not in _NOTIFIED:
        _NOTIFIED.add((name, plugin))
        where = f" (plugin {plugin})" if plugin else ""
        print(f"zoo: deprecated: strategy '{name}'{where} defines plan(model, groups, job); "
              "define plan(self, model, groups, job, ctx=None) — the 3-argument form stops "
              "working in the next release (docs/hooks.md)", file=sys.stderr)
    if hasattr(strategy, "prepare"):
        strategy.prepare(**legacy_extra(ctx))
    return strategy.plan(model, groups, job)
