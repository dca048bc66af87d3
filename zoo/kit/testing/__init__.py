"""The plugin authors' testing kit (public path: :mod:`zoo.testing`).

Three modules with one job each; this package re-exports their public names:

- :mod:`zoo.kit.testing.fixtures`: the pytest plugin (the ``pytest11`` entry point ``zoo``),
  fixtures only — ``zoo_plugins``, ``zoo_catalog``, ``zoo_run``, ``tiny_dataset``,
  ``tiny_backbone``.  Importing the kit does not register them; pytest loads them.
- :mod:`zoo.kit.testing.components`: tiny components — :func:`make_catalog` (a catalog of
  only the plugins under test), :class:`TinyProvider` (``testing:tiny_cnn``), the ``tiny``
  dataset (:func:`tiny_dataset_factory`), :func:`tiny_job`, :func:`run_tiny`,
  :func:`tiny_transfer_model`.
- contract checks (each raises ``AssertionError`` with a message that says what to fix):
  :mod:`zoo.kit.testing.checks` for model components and the lazy-import rule, and
  :mod:`zoo.kit.testing.data_checks` for datasets and metrics::

    check_backbone_provider(provider, arch)   listing builds nothing; feature_dim is the real
                                              output width; layer groups cover the body
    check_strategy(strategy, params=...)      plan is a well-formed StrategyPlan; frozen
                                              parameters and BN statistics do not move
    check_head(factory, **params)             output shape, gradients, safetensors round trip
    check_metric(factory, value_range=(0, 1)) update/compute/reset, accumulation, range
    check_dataset(factory, name=...)          lengths, labels, classes, uint8 (3, H, W)
                                              images, deterministic disjoint splits, transform
    check_lazy_import(module)                 importing + registering imports no torch

Importing the kit imports no torch (its pytest plugin is loaded in every pytest session).
"""
from __future__ import annotations

from zoo.hookspecs import hookimpl  # noqa: F401 (T.hookimpl, as the single module had)
from zoo.kit.testing.checks import (check_backbone_provider, check_head, check_lazy_import,
                                    check_strategy)
from zoo.kit.testing.components import (HEAVY_MODULES, TESTING_PLUGIN, TINY_DATASET,  # noqa: F401
                                        TINY_PROVIDER, TestingPlugin, TinyProvider,
                                        make_catalog, run_tiny, tiny_dataset_factory, tiny_job,
                                        tiny_transfer_model)
from zoo.kit.testing.data_checks import check_dataset, check_metric

__all__ = [
    "TESTING_PLUGIN", "TinyProvider", "check_backbone_provider", "check_dataset", "check_head",
    "check_lazy_import", "check_metric", "check_strategy", "make_catalog", "run_tiny",
    "tiny_dataset_factory", "tiny_job", "tiny_transfer_model",
]
# also importable, outside __all__: hookimpl, HEAVY_MODULES, TINY_DATASET, TINY_PROVIDER,
# TestingPlugin (what the single module exposed)
