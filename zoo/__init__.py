"""zoo: a plugin-based model zoo for transfer learning on images.

The public Python API.  Names are imported lazily so that ``import zoo`` (and ``zoo --help``)
never imports torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "list_models": "zoo.api",
    "model_info": "zoo.api",
    "create_backbone": "zoo.api",
    "create_model": "zoo.api",
    "load_job": "zoo.api",
    "run": "zoo.api",
    "plan": "zoo.api",
    "get_catalog": "zoo.api",
    "measure_shift": "zoo.api",     # zoo shift: domain gap (docs/domain.md)
    "lr_find": "zoo.api",           # zoo lr-find: the LR range test
    "JobSpec": "zoo.jobspec",
    "StrategyPlan": "zoo.plan",     # the plan vocabulary: torch-free (zoo.plan)
    "Phase": "zoo.plan",
    "GroupSetting": "zoo.plan",
    "Selection": "zoo.plan",
    "ModelChange": "zoo.plan",
    "AutoCandidate": "zoo.plan",
    "PlanContext": "zoo.plan",
    "PhaseContext": "zoo.plan",
    "LossContext": "zoo.plan",
    "Choice": "zoo.plan",
    "Fallback": "zoo.plan",
    "Strategy": "zoo.strategy_base",
    "LossTerm": "zoo.strategy",     # an nn.Module: imports torch
    "Backbone": "zoo.backbones",
    "TransferModel": "zoo.backbones",
    "PretrainedConfig": "zoo.backbones",
    "hookimpl": "zoo.hookspecs",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
