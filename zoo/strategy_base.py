"""The base class strategy authors subclass: :class:`Strategy` (torch-free to import).

A strategy is an object with ``name``, ``defaults`` (its ``strategy.params``, overridable
with ``--set strategy.params.X=V``) and ``plan(model, groups, job) -> StrategyPlan``
(:mod:`zoo.strategy`).  What it may read, and nothing else (docs/hooks.md):

* ``job`` — the resolved :class:`zoo.jobspec.JobSpec` (``job.train.epochs``, ``job.strategy``);
* :meth:`Strategy.source_weights` — whether source weights were loaded
  (``model.backbone.weights_source``: ``"none"``/``"random-init"`` when not);
* :meth:`Strategy.source_classifier` — the source task's classifier, or ``None``
  (``model.backbone.source_classifier``, frozen; LwF and joint read its logits);
* ``groups`` — the backbone's layer groups, input side first, then ``head``.

Kept out of :mod:`zoo.strategy` (which imports torch) so a strategy pack registers its
strategies without importing torch.
"""
from __future__ import annotations

import math
from typing import Any

from zoo.errors import ConfigError, did_you_mean

NO_SOURCE_WEIGHTS = ("none", "random-init")


class Strategy:
    """Base: merges ``job.strategy.params`` over ``defaults`` and rejects unknown params.

    Optional attributes: ``auto`` (a :class:`zoo.strategy.AutoCandidate`: how ``auto`` may
    try it) and ``prepare(**extra)`` (run data, called before every ``plan``).
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
