"""A job from its layers: the built-in defaults, the chosen components' own defaults, the
registry, a preset, a config file, flags and ``--set``, merged in that order and validated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.catalog import Catalog, get_catalog
from zoo.errors import ConfigError, ZooError
from zoo.io.yamlio import deep_merge, set_path
from zoo.jobspec import JobSpec, Layer, job_from_tree, load_job_file
from zoo.registry import Registry, load_registry


def load_job(model: str | None = None, *, config: str | Path | None = None,
             preset: str | None = None, flags: dict | None = None, sets: list | None = None,
             registry: Registry | None = None, catalog: Catalog | None = None,
             **keys: Any) -> JobSpec:
    """A validated :class:`zoo.jobspec.JobSpec` from the usual layers.

    ``flags``/``keys`` are job-tree fragments (``{"train": {"epochs": 2}}``); ``sets`` are
    ``"a.b=c"`` strings.  Precedence: see :func:`build_job`.  ``catalog`` (default: the
    installed plugins') gives the components' defaults.
    """
    catalog = catalog if catalog is not None else get_catalog()
    reg = registry if registry is not None else catalog.registry
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
    return build_job(layers, reg, catalog)


def build_job(layers: list[Layer], registry: Registry | None = None,
              catalog: Catalog | None = None) -> JobSpec:
    """Merge ``layers`` over the defaults, fill in the catalog's default components, validate.

    Precedence, later winning (``docs/jobs.md``)::

        built-in defaults ← component defaults ← registry defaults ← registry per-component
        ← preset ← --config ← flags ← --set

    ``layers`` are the preset, config, flags and ``--set`` layers in that order.  The chosen
    components are known first (from ``layers`` over the registry's ``defaults:``; a name
    left out is the catalog's default), then their ``job_defaults`` apply in the order
    provider ← head ← metrics ← loggers ← dataset ← strategy, so where a dataset and a
    strategy set the same key the strategy wins.  Registry per-component sections follow:
    ``datasets.NAME`` (the ``data:`` section), then ``strategies.NAME``.
    """
    registry = registry or load_registry()
    catalog = catalog if catalog is not None else get_catalog()
    merged: dict = {}
    for layer in layers:
        merged = deep_merge(merged, layer.tree)
    chosen = deep_merge(registry.defaults, merged)
    names = _choose(catalog, chosen)
    tree = JobSpec().to_dict()
    for over in _component_defaults(catalog, names):
        tree = deep_merge(tree, over)
    tree = deep_merge(tree, registry.defaults)
    tree = deep_merge(tree, {"data": registry.datasets.get(names["data"], {})})
    tree = deep_merge(tree, registry.strategies.get(names["strategy"], {}))
    tree = deep_merge(tree, _names_tree(names))
    lines: dict = {}
    source = "job"
    for layer in layers:
        # validate each layer separately so errors name the file and line they came from
        job_from_tree(deep_merge(tree, layer.tree), layer.lines, layer.source)
        tree = deep_merge(tree, layer.tree)
        lines, source = layer.lines, layer.source
    return _finish(job_from_tree(tree, lines, source), catalog)


def _finish(job: JobSpec, catalog: Catalog, check_loggers: bool = True) -> JobSpec:
    if job.source_data is not None and job.source_data.name is None:
        job.source_data.name = _dataset_for(catalog, job.source_data.path)
    if job.target_data is not None and job.target_data.name is None:
        job.target_data.name = (catalog.unlabeled_path_dataset() if job.target_data.path
                                else catalog.default_name("datasets"))
    for name in job.loggers if check_loggers else []:  # unknown: an error with a did-you-mean, before any work
        catalog.get("loggers", str(name))
    return job


def complete_job(job: JobSpec, catalog: Catalog) -> JobSpec:
    """``job`` with its unset component names (``None``) filled from ``catalog``'s defaults.

    For a :class:`JobSpec` built without :func:`build_job` (``job_from_tree``, the kit's
    ``tiny_job``): every other key already has its value, so no component defaults apply.
    A job whose names are all set comes back equal.  Unknown ``loggers`` are left to the
    run, which warns about them (:func:`build_job` refuses them).
    """
    tree = job.to_dict()
    names = _choose(catalog, _without_none(tree))
    return _finish(job_from_tree(deep_merge(tree, _names_tree(names)), source="job"), catalog,
                   check_loggers=False)


def _without_none(tree: dict) -> dict:
    return {k: _without_none(v) if isinstance(v, dict) else v
            for k, v in tree.items() if v is not None}


def _choose(catalog: Catalog, tree: dict) -> dict:
    """The component each name field of ``tree`` picks, the catalog's default where unset."""
    def missing(what: str, key: str) -> ConfigError:
        return ConfigError(f"no {what} chosen and no installed plugin declares a default one "
                           f"— set '{key}' (or registry.yaml's defaults:)")

    data = tree.get("data") if isinstance(tree.get("data"), dict) else {}
    strategy = _name_in(tree, "strategy") or catalog.default_name("strategies")
    names: dict[str, Any] = {
        "model": tree.get("model") or catalog.default_model(),
        "data": _name_in(tree, "data") or _dataset_for(catalog, data.get("path")),
        # a strategy may choose the head it needs (ncm, knn: the heads they fit) in its
        # job_defaults; a head the job names still wins
        "head": (_name_in(tree, "head") or _strategy_head(catalog, strategy)
                 or catalog.default_name("heads")),
        "strategy": strategy,
        "metrics": tree.get("metrics") or catalog.default_metrics(),
    }
    for key, what, where in [("model", "model", "model"), ("data", "dataset", "data.name"),
                             ("head", "head", "head.name"),
                             ("strategy", "strategy", "strategy.name"),
                             ("metrics", "metric", "metrics")]:
        if not names[key]:
            raise missing(what, where)
    monitor = tree.get("monitor") if isinstance(tree.get("monitor"), dict) else {}
    defaults = catalog.default_metrics()
    names["monitor"] = monitor.get("metric") or (defaults or list(names["metrics"]))[0]
    loggers = tree.get("loggers")
    names["loggers"] = loggers if isinstance(loggers, list) else []
    return names


def _strategy_head(catalog: Catalog, strategy: Any) -> str | None:
    """The head name a strategy's ``job_defaults`` choose, if any (and it is known)."""
    if not isinstance(strategy, str) or not catalog.has("strategies", strategy):
        return None
    head = catalog.job_defaults("strategies", strategy).get("head")
    name = head.get("name") if isinstance(head, dict) else None
    return name if isinstance(name, str) and name else None


def _dataset_for(catalog: Catalog, path: Any) -> str | None:
    """A dataset name for a job that gives none: the path-serving one when there is a path."""
    if path and isinstance(path, str):
        return catalog.dataset_for_path(path)
    return catalog.path_dataset() if path else catalog.default_name("datasets")


def _component_defaults(catalog: Catalog, names: dict) -> list[dict]:
    """The chosen components' ``job_defaults``, lowest first (the strategy wins a tie)."""
    out = [catalog.job_defaults("providers", _provider_of(catalog, names["model"])),
           catalog.job_defaults("heads", names["head"])]
    metrics = names["metrics"] if isinstance(names["metrics"], list) else []
    out += [catalog.job_defaults("metrics", str(m)) for m in metrics]
    out += [catalog.job_defaults("loggers", str(n)) for n in names["loggers"]]
    out += [catalog.job_defaults("datasets", names["data"]),
            catalog.job_defaults("strategies", names["strategy"])]
    return [d for d in out if d]


def _provider_of(catalog: Catalog, model: Any) -> str | None:
    """The provider a model name resolves to — looked up only when some provider declares
    ``job_defaults`` (resolving a bare name lists models, which costs time)."""
    if not isinstance(model, str) or not catalog.declared("providers", "job_defaults"):
        return None
    try:
        return catalog.resolve_model(model).provider
    except ZooError:  # an unknown model fails later, where the run resolves it
        return None


def _names_tree(names: dict) -> dict:
    return {"model": names["model"], "data": {"name": names["data"]},
            "head": {"name": names["head"]}, "strategy": {"name": names["strategy"]},
            "metrics": list(names["metrics"]) if isinstance(names["metrics"], list)
            else names["metrics"], "monitor": {"metric": names["monitor"]}}


def _name_in(tree: dict, section: str) -> str | None:
    """``tree[section]["name"]`` when it is a string; wrong shapes are left to validation,
    which names them (``strategy: 5`` must not fail here with an AttributeError)."""
    node = tree.get(section)
    name = node.get("name") if isinstance(node, dict) else None
    return name if isinstance(name, str) else None
