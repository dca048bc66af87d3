"""The Python API that the CLI wraps: everything ``zoo`` does is callable from here."""
from __future__ import annotations

from pathlib import Path
from typing import Any

_CATALOG = None


def get_catalog(refresh: bool = False, registry: str | Path | None = None):
    """The process-wide :class:`zoo.catalog.Catalog` (plugins loaded once)."""
    global _CATALOG
    if _CATALOG is None or refresh or registry is not None:
        from .catalog import Catalog
        from .registry import load_registry

        _CATALOG = Catalog(registry=load_registry(registry))
    return _CATALOG


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Model names (``provider:arch[.tag]``) from every installed provider, fnmatch-filtered."""
    return [ref.full for ref in get_catalog().list_models(pattern, pretrained)]


def model_info(name: str) -> dict:
    from .modelcache import cached_model_info

    cat = get_catalog()
    ref = cat.resolve_model(name)
    info = dict(cached_model_info(cat, ref.provider, ref.arch))
    info.setdefault("provider", ref.provider)
    info.setdefault("arch", ref.arch)
    info["name"] = ref.full
    info["also_in"] = [p for p in cat.provider_order() if p != ref.provider
                       and ref.arch in set(cat._models_of(p, False))]
    return info


def create_backbone(name: str, weights: str = "auto"):
    """A :class:`zoo.backbones.Backbone` for ``name`` with the weights ``weights`` resolves."""
    from .weights import resolve_and_load

    cat = get_catalog()
    backbone, _ = resolve_and_load(cat, cat.resolve_model(name), weights, [])
    return backbone


def create_model(name: str, num_classes: int, head: str = "linear", weights: str = "auto",
                 **head_params):
    """Backbone + head as a :class:`zoo.backbones.TransferModel`."""
    from .backbones import TransferModel

    cat = get_catalog()
    backbone = create_backbone(name, weights)
    head_module = cat.get("heads", head).obj(backbone.feature_dim, num_classes, **head_params)
    return TransferModel(backbone, head_module)


def load_job(model: str | None = None, *, config: str | Path | None = None,
             preset: str | None = None, flags: dict | None = None, sets: list | None = None,
             registry=None, **keys: Any):
    """A validated :class:`zoo.jobspec.JobSpec` from the usual layers.

    ``flags``/``keys`` are job-tree fragments (``{"train": {"epochs": 2}}``); ``sets`` are
    ``"a.b=c"`` strings.  Precedence: registry ← preset ← config ← flags ← sets.
    """
    from .jobspec import Layer, build_job, deep_merge, load_job_file, set_path
    from .registry import load_registry

    reg = registry if registry is not None else get_catalog().registry \
        if _CATALOG is not None else load_registry()
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


def run(job=None, **kwargs):
    """Run a job (a JobSpec, or keyword arguments for :func:`load_job`); return the summary."""
    from .runner import run as _run

    options = {k: kwargs.pop(k) for k in ("quiet", "console", "resume", "on_plan")
               if k in kwargs}
    if job is None:
        job = load_job(**kwargs)
    options.setdefault("quiet", True)
    return _run(job, get_catalog(), **options)


def plan(job=None, **kwargs) -> dict:
    """The strategy plan of a job as a dict (phases, groups, LRs), without training."""
    from .runner import run as _run

    if job is None:
        job = load_job(**kwargs)
    return _run(job, get_catalog(), quiet=True, plan_only=True)
