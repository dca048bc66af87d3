"""The Python API that the CLI wraps: everything ``zoo`` does is callable from here."""
from __future__ import annotations


from zoo.catalog import get_catalog
from zoo.layering import load_job

def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Model names (``provider:arch[.tag]``) from every installed provider, fnmatch-filtered."""
    return [ref.full for ref in get_catalog().list_models(pattern, pretrained)]


def model_info(name: str) -> dict:
    from zoo.modelcache import cached_model_info

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
    from zoo.weights.resolve import resolve_and_load

    cat = get_catalog()
    backbone, _ = resolve_and_load(cat, cat.resolve_model(name), weights, [])
    return backbone


def create_model(name: str, num_classes: int, head: str = "linear", weights: str = "auto",
                 **head_params):
    """Backbone + head as a :class:`zoo.backbones.TransferModel`."""
    from zoo.backbones import TransferModel

    cat = get_catalog()
    backbone = create_backbone(name, weights)
    head_module = cat.get("heads", head).obj(backbone.feature_dim, num_classes, **head_params)
    return TransferModel(backbone, head_module)


def run(job=None, **kwargs):
    """Run a job (a JobSpec, or keyword arguments for :func:`load_job`); return the summary."""
    from zoo.engine.pipeline import run as _run

    options = {k: kwargs.pop(k) for k in ("quiet", "console", "resume", "on_plan")
               if k in kwargs}
    if job is None:
        job = load_job(**kwargs)
    options.setdefault("quiet", True)
    return _run(job, get_catalog(), **options)


def plan(job=None, **kwargs) -> dict:
    """The strategy plan of a job as a dict (phases, groups, LRs), without training."""
    from zoo.engine.pipeline import run as _run

    if job is None:
        job = load_job(**kwargs)
    return _run(job, get_catalog(), quiet=True, plan_only=True)
