"""A job from its layers: the built-in defaults, the chosen components' own defaults, the
registry, a preset, a config file, flags and ``--set``, merged in that order and validated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.catalog import get_catalog
from zoo.jobspec import JobSpec, Layer, job_from_tree, load_job_file
from zoo.io.yamlio import deep_merge, set_path
from zoo.registry import load_registry


def load_job(model: str | None = None, *, config: str | Path | None = None,
             preset: str | None = None, flags: dict | None = None, sets: list | None = None,
             registry=None, **keys: Any):
    """A validated :class:`zoo.jobspec.JobSpec` from the usual layers.

    ``flags``/``keys`` are job-tree fragments (``{"train": {"epochs": 2}}``); ``sets`` are
    ``"a.b=c"`` strings.  Precedence: registry ← preset ← config ← flags ← sets.
    """
    reg = registry if registry is not None else get_catalog().registry
    layers = []
    if preset:
        layers.append(Layer(f"preset '{preset}'", reg.preset(preset)))
    if config:
        layers.append(load_job_file(config))
    tree = deep_merge(flags or {}, keys)
    if model:
        tree["model"] = model
    if tree:
        layers.append(Layer("command line", tree))
    if sets:
        set_tree: dict = {}
        for item in sets:
            set_path(set_tree, item)
        layers.append(Layer("--set", set_tree))
    return build_job(layers, reg)


def build_job(layers: list[Layer], registry=None) -> JobSpec:
    """Merge ``layers`` over the registry's defaults and validate.

    The registry's per-strategy and per-dataset defaults are inserted right after its global
    defaults, once the strategy and dataset names are known from all layers.
    """
    registry = registry or load_registry()
    merged: dict = {}
    for layer in layers:
        merged = deep_merge(merged, layer.tree)
    base = deep_merge(JobSpec().to_dict(), registry.defaults)
    strategy = (merged.get("strategy") or {}).get("name") or base["strategy"]["name"]
    dataset = (merged.get("data") or {}).get("name") or base["data"]["name"]
    extra = [registry.strategies.get(strategy, {}), {"data": registry.datasets.get(dataset, {})}]
    tree = base
    for over in extra:
        tree = deep_merge(tree, over)
    lines: dict = {}
    source = "job"
    for layer in layers:
        # validate each layer separately so errors name the file and line they came from
        job_from_tree(deep_merge(tree, layer.tree), layer.lines, layer.source)
        tree = deep_merge(tree, layer.tree)
        lines, source = layer.lines, layer.source
    return job_from_tree(tree, lines, source)
