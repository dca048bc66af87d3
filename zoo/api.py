"""The Python API that the CLI wraps: everything ``zoo`` does is callable from here.

The CLI imports nothing of zoo but this module (and :mod:`zoo.errors`); the functions of
the lower layers it needs are re-exported here under names that say what they do
(``pull_weights``, ``evaluate_run``, ``rank_models`` ...), imported when first used so that
``import zoo.api`` stays free of torch (``_FACADE`` below).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import contracts, hookspecs
from zoo.catalog import Catalog, get_catalog
from zoo.errors import ConfigError
from zoo.io import runfolder
from zoo.jobspec import JobSpec, job_from_tree, load_job_file
from zoo.layering import complete_job, load_job
from zoo.modelcache import cached_model_info
from zoo.weights.resolve import resolve_and_load

if TYPE_CHECKING:  # annotations only: zoo.backbones imports torch
    from zoo.backbones import Backbone, TransferModel


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Model names (``provider:arch[.tag]``) from every installed provider, fnmatch-filtered."""
    return [ref.full for ref in get_catalog().list_models(pattern, pretrained)]


def model_info(name: str) -> dict:
    cat = get_catalog()
    ref = cat.resolve_model(name)
    info = dict(cached_model_info(cat, ref.provider, ref.arch))
    info.setdefault("provider", ref.provider)
    info.setdefault("arch", ref.arch)
    info["name"] = ref.full
    info["also_in"] = [p for p in cat.provider_order() if p != ref.provider
                       and ref.arch in set(cat._models_of(p, False))]
    return info


def create_backbone(name: str, weights: str = "auto") -> Backbone:
    """A :class:`zoo.backbones.Backbone` for ``name`` with the weights ``weights`` resolves."""
    cat = get_catalog()
    backbone, _ = resolve_and_load(cat, cat.resolve_model(name), weights, [])
    return backbone


def create_model(name: str, num_classes: int, head: str | None = None, weights: str = "auto",
                 **head_params: Any) -> TransferModel:
    """Backbone + head (``None``: the catalog's default head) as a
    :class:`zoo.backbones.TransferModel`."""
    from zoo.backbones import TransferModel  # lazy: imports torch

    cat = get_catalog()
    backbone = create_backbone(name, weights)
    head = head or cat.default_name("heads")
    if head is None:
        raise ConfigError("no head given and no installed plugin declares a default head")
    head_comp = cat.get("heads", head)
    head_module = head_comp.obj(backbone.feature_dim, num_classes, **head_params)
    contracts.check_head(head_comp, head_module, backbone.feature_dim, num_classes)
    return TransferModel(backbone, head_module)


def prepare_job(job: JobSpec | None = None, *, catalog: Catalog | None = None,
                **kwargs: Any) -> tuple[JobSpec, Catalog]:
    """The one place a job is built and completed: ``(complete JobSpec, Catalog)``.

    ``job`` (a JobSpec, its unset component names filled from the catalog's defaults) or
    keyword arguments for :func:`load_job` (every layer, components' ``job_defaults``
    included).  :mod:`zoo.engine` receives what this returns and never builds either.
    """
    cat = catalog or get_catalog()
    if job is None:
        return load_job(catalog=cat, **kwargs), cat
    return (job if _is_complete(job) else complete_job(job, cat)), cat


def _is_complete(job: JobSpec) -> bool:
    """Every component name set (a job :func:`load_job` built): nothing to complete."""
    extra = [d for d in (job.source_data, job.target_data) if d is not None]
    return bool(job.model and job.data.name and job.head.name and job.strategy.name
                and job.metrics and job.monitor.metric and all(d.name for d in extra))


def run(job: JobSpec | None = None, *, catalog: Catalog | None = None,
        **kwargs: Any) -> dict:
    """Run a job (a JobSpec, or keyword arguments for :func:`load_job`); return the summary."""
    from zoo.engine.pipeline import run as _run  # lazy: torch

    options = {k: kwargs.pop(k) for k in ("quiet", "console", "resume", "on_plan")
               if k in kwargs}
    job, cat = prepare_job(job, catalog=catalog, **kwargs)
    options.setdefault("quiet", True)
    console = options.get("console")
    log = None if options["quiet"] else (
        (lambda m: console.print(m, markup=False, highlight=False)) if console else print)
    job, found = resolve_auto_lr(job, catalog=cat, log=log)
    return _run(job, cat, lr_find=found, **options)


def resolve_auto_lr(job: JobSpec, *, catalog: Catalog,
                    log: Any = None) -> tuple[JobSpec, dict | None]:
    """``job`` (complete: :func:`prepare_job`) with ``train.lr: auto`` (``--lr auto``)
    replaced by the LR range test's suggestion for its strategy
    (:func:`zoo.tools.lr_find.resolve_auto_lr`), and the sweep's record (``None`` when
    ``train.lr`` was a number)."""
    if job.train.lr != "auto":
        return job, None
    from zoo.tools.lr_find import resolve_auto_lr as _resolve  # lazy: imports torch on use

    return _resolve(job, catalog, log)


def plan(job: JobSpec | None = None, *, catalog: Catalog | None = None,
         **kwargs: Any) -> dict:
    """The strategy plan of a job as a dict (phases, groups, LRs), without training."""
    from zoo.engine.pipeline import plan_job  # lazy: torch

    job, cat = prepare_job(job, catalog=catalog, **kwargs)
    job, _ = resolve_auto_lr(job, catalog=cat)
    return plan_job(job, cat)


def is_rank_process() -> bool:
    """True inside a torchrun-launched process (WORLD_SIZE set)."""
    from zoo.engine import distributed  # lazy: torch

    return distributed.launched()


def rank_of_process() -> int:
    """This process's rank from the torchrun environment (0 outside torchrun)."""
    from zoo.engine import distributed  # lazy: torch

    return distributed.env_rank()


def launch_ranks(nproc: int, zoo_args: list[str]) -> int:
    """Start ``nproc`` ranks of ``zoo ZOO_ARGS`` under torchrun; return its exit status."""
    from zoo.engine import distributed  # lazy: torch

    return distributed.launch(nproc, zoo_args)


def read_run_summary(run_dir: str | Path) -> dict | None:
    """``summary.json`` of a run folder (checked to be one), or None when it has none."""
    return runfolder.read_summary(runfolder.require_run_dir(run_dir))


def load_run_job(run_dir: str | Path) -> JobSpec:
    """The validated :class:`zoo.jobspec.JobSpec` a run folder was started with (resume)."""
    folder = runfolder.require_run_dir(run_dir)
    layer = load_job_file(folder / "job.yaml")
    return job_from_tree(layer.tree, layer.lines, layer.source)


def hook_names() -> list[str]:
    """The names of every hook a plugin can implement."""
    return sorted(n for n in dir(hookspecs) if not n.startswith("_")
                  and hasattr(getattr(hookspecs, n), "zoo_spec"))


# name → (module, attribute): lower-layer functions the CLI uses, imported on first use
_FACADE = {
    "JobSpec": ("zoo.jobspec", "JobSpec"),
    "natural_key": ("zoo.catalog", "natural_key"),
    "check_out_dir": ("zoo.io.runfolder", "check_out_dir"),
    "WeightStore": ("zoo.weights.store", "WeightStore"),
    "pull_weights": ("zoo.weights.manage", "pull"),
    "import_weights": ("zoo.weights.manage", "import_file"),
    "weights_path": ("zoo.weights.manage", "store_path"),
    "remove_weights": ("zoo.weights.manage", "remove_model"),
    "evaluate_run": ("zoo.runs.reuse", "evaluate_run"),
    "list_runs": ("zoo.runs.reuse", "list_runs"),
    "predict": ("zoo.runs.predict", "predict"),
    "export_run": ("zoo.runs.export", "export_run"),
    "push_run": ("zoo.runs.push", "push_run"),
    "compare": ("zoo.tools.compare", "compare"),
    "soup_runs": ("zoo.runs.soup", "soup"),
    "adapt_run": ("zoo.runs.adapt", "adapt"),
    "data_params": ("zoo.runs.adapt", "parse_params"),
    "emit_sweep": ("zoo.tools.sweep", "emit"),
    "collect_sweep": ("zoo.tools.sweep", "collect"),
    "write_shards": ("zoo.tools.shard", "write_shards"),
    "rank_models": ("zoo.tools.rank", "rank"),
    "ranked": ("zoo.tools.rank", "ranked"),
    "RANK_METRICS": ("zoo.tools.rank", "METRICS"),
    "explain": ("zoo.tools.explain", "explain"),
    "top_losses": ("zoo.tools.explain", "top_losses"),
    "measure_shift": ("zoo.tools.shift", "measure_shift"),
    "shift_domain": ("zoo.tools.shift", "domain_arg"),
    "lr_find": ("zoo.tools.lr_find", "lr_find"),
    "check_environment": ("zoo.settings", "check_environment"),
    "setting_flag": ("zoo.settings", "flag"),
}


def __getattr__(name: str) -> Any:
    target = _FACADE.get(name)
    if target is None:
        raise AttributeError(f"module 'zoo.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value

