"""Tiny components for plugin tests: a catalog of only the plugins under test, a tiny provider
(``testing:tiny_cnn``), the ``tiny`` dataset, and builders of tiny jobs, runs and models.

Importing this module imports no torch (the pytest plugin imports it in every session);
torch is imported only when something is built.
"""
from __future__ import annotations

import importlib.metadata as md
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import Any

from zoo.catalog import Catalog
from zoo.engine.splits import stratified_split
from zoo.errors import DataError, UnknownComponentError, WeightsError, did_you_mean
from zoo.hookspecs import hookimpl
from zoo.jobspec import JobSpec, deep_merge, job_from_tree
from zoo.layering import complete_job  # noqa: F401 (tests import it from here)
from zoo.names import prefer_plugins
from zoo.plugins import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP, PluginRecord, ZooPluginManager
from zoo.registry import load_registry

TESTING_PLUGIN = "zoo-testing"       # the plugin name of the testing components
TINY_PROVIDER = "testing"            # provider of testing:tiny_cnn / testing:tiny_cnn_wide
TINY_DATASET = "tiny"                # dataset name: --data tiny
HEAVY_MODULES = ("torch", "torchvision", "timm")


def _fail(message: str) -> None:
    raise AssertionError(message)

# =============================================================================================
# Catalogs with only the plugins under test
# =============================================================================================
def _entry_point_for(module_name: str):
    for ep in md.entry_points(group="zoo"):
        if ep.value == module_name or ep.value.split(":")[0] == module_name:
            return ep
    return None


def _record_for(plugin: Any, name: str | None = None):
    """A PluginRecord for ``plugin``: its entry point's name and distribution when installed."""
    module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
    ep = _entry_point_for(plugin.__name__) if isinstance(plugin, ModuleType) else None
    dist = getattr(ep, "dist", None) if ep is not None else None
    if name is None:
        name = (ep.name if ep is not None else
                plugin.__name__ if isinstance(plugin, ModuleType) else
                getattr(plugin, "name", None) or type(plugin).__name__)
    return PluginRecord(name=name, module=module,
                        distribution=dist.name if dist else None,
                        version=dist.version if dist else None,
                        builtin=bool(dist and dist.name == BUILTIN_DISTRIBUTION),
                        requires=list(dist.requires or []) if dist else [])


def _load_builtins(pm) -> None:
    """Load only zoo's own entry points (the built-in plugins) into ``pm``."""
    seen: set[str] = set()
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        if dist is None or dist.name != BUILTIN_DISTRIBUTION or ep.name in seen:
            continue
        seen.add(ep.name)
        record = _record_for_entry_point(ep)
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - recorded like the real loader does
            pm._fail(record, f"import failed: {type(exc).__name__}: {exc}")
            continue
        pm.add_plugin(plugin, record)


def _record_for_entry_point(ep):
    dist = ep.dist
    return PluginRecord(name=ep.name, distribution=dist.name, version=dist.version,
                        module=ep.value, builtin=dist.name == BUILTIN_DISTRIBUTION,
                        requires=list(dist.requires or []))


def make_catalog(*plugins: Any, builtins: bool = True, entry_points: bool = False,
                 testing: bool = True, registry=None):
    """A fresh :class:`zoo.catalog.Catalog` holding exactly the plugins asked for.

    :param plugins: plugin objects to register besides the loaded ones: modules (named after
        their entry point when installed, else the module name), objects with ``@hookimpl``
        methods (named by their ``name`` attribute or class), or ``(name, object)`` pairs.
    :param builtins: load zoo's built-in plugins (timm, torchvision, heads, ...).
    :param entry_points: load *every* installed plugin instead (what ``zoo`` itself does).
    :param testing: add the testing components: provider ``testing`` (``testing:tiny_cnn``)
        and dataset ``tiny``.
    :param registry: a :class:`zoo.registry.Registry` (default: the built-in one, extended
        by ``$ZOO_REGISTRY``).

    A plugin given here that fails validation or whose registration hook raises makes this
    raise ``AssertionError`` with the recorded error.  A name a plugin given here shares
    with a built-in is that plugin's in this catalog (the built-in one stays reachable as
    ``PLUGIN:NAME``), so a plugin's tests exercise its own component.
    """
    pm = ZooPluginManager()
    if entry_points:
        pm.load_entry_points()
    elif builtins:
        _load_builtins(pm)
    wanted = []
    if testing and not pm.has_plugin(TESTING_PLUGIN):
        wanted.append((TESTING_PLUGIN, TestingPlugin()))
    for plugin in plugins:
        wanted.append(plugin if isinstance(plugin, tuple) else (None, plugin))
    names = []
    for name, obj in wanted:
        if pm.is_registered(obj):  # already loaded through its entry point
            names.append(pm.get_name(obj))
            continue
        record = _record_for(obj, name)
        if not pm.add_plugin(obj, record):
            _fail(f"plugin {record.name!r} failed to load: {record.error}")
        names.append(record.name)
    catalog = Catalog(pm, registry=registry if registry is not None else load_registry())
    for name in names:
        record = pm.records.get(name)
        if record is not None and record.status == "failed":
            _fail(f"plugin {name!r} failed: {record.error}")
    # the plugins under test answer the names they share with a built-in: their tests
    # must exercise their own component (`name` = PLUGIN:NAME reaches the other one)
    prefer_plugins(catalog, [n for n in names if n != TESTING_PLUGIN])
    return catalog


# =============================================================================================
# Testing components: a tiny provider and a tiny dataset (torch imported only when building)
# =============================================================================================
class TinyProvider:
    """A :class:`zoo.backbones.BackboneProvider` of two tiny conv nets (no weights).

    ``tiny_cnn`` (features 16) and ``tiny_cnn_wide`` (features 32): two conv/BN/ReLU stages
    and global average pooling; native input 32×32; a random 10-class source classifier
    (``classifier.*`` in the original naming).  Fast enough for any test.
    """

    name = TINY_PROVIDER
    WIDTHS = {"tiny_cnn": 8, "tiny_cnn_wide": 16}
    SOURCE_CLASSES = 10

    def list_models(self, pretrained: bool = False) -> list[str]:
        return [] if pretrained else list(self.WIDTHS)

    def version(self) -> str:
        return "zoo-testing-1"

    def info(self, arch: str) -> dict:
        backbone = self.create(arch)
        return {"provider": TINY_PROVIDER, "arch": arch, "feature_dim": backbone.feature_dim,
                "params": sum(p.numel() for p in backbone.parameters()),
                "pretrained_tags": [], "default_tag": None,
                "pretrained_cfg": backbone.pretrained_cfg.as_dict(),
                "num_source_classes": self.SOURCE_CLASSES}

    def create(self, arch: str, tag: str | None = None, pretrained: bool = False):
        from torch import nn  # lazy: torch (the pytest plugin imports this module)

        from zoo.backbones import Backbone, PretrainedConfig  # lazy: imports torch

        width = self._width(arch)
        if pretrained or tag:
            raise WeightsError(f"{TINY_PROVIDER}:{arch} has no pretrained weights")
        body = nn.Sequential(OrderedDict([
            ("stem", nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU())),
            ("stage1", nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False),
                                     nn.BatchNorm2d(2 * width), nn.ReLU())),
            ("pool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten(1)),
        ]))
        cfg = PretrainedConfig(input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
        # a (random) source classifier, as real providers keep one: LwF & co. work on it
        source = nn.Linear(2 * width, self.SOURCE_CLASSES)
        return Backbone(body, 2 * width, name=arch, provider=TINY_PROVIDER, pretrained_cfg=cfg,
                        source_classifier=source, classifier_name="classifier",
                        num_source_classes=self.SOURCE_CLASSES)

    def layer_groups(self, backbone) -> list[tuple[str, list[str]]]:
        from zoo.backbones import default_layer_groups  # lazy: imports torch

        return default_layer_groups(backbone.body)

    def _width(self, arch: str) -> int:
        if arch not in self.WIDTHS:
            raise UnknownComponentError(f"unknown model '{arch}' in provider "
                                        f"'{TINY_PROVIDER}'{did_you_mean(arch, self.WIDTHS)}")
        return self.WIDTHS[arch]


_TINY_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40), (180, 60, 200),
                 (40, 200, 210), (240, 140, 30), (128, 128, 128)]
_TINY_DEFAULTS = {"classes": 3, "per_class": 12, "size": 32, "data_seed": 0}


def tiny_dataset_factory(spec, split: str, transform=None, seed: int = 0):
    """The ``tiny`` dataset (a factory as ``register_datasets`` expects it).

    Class *k* is a square of colour *k* on a noisy grey background; ``data.params``:
    ``classes`` (2–8, default 3), ``per_class`` (default 12), ``size`` (default 32),
    ``data_seed``.  Splits are stratified by ``spec.val_split``/``test_split`` from ``seed``.
    """
    import torch  # lazy: torch (the pytest plugin imports this module)

    params = {**_TINY_DEFAULTS, **dict(getattr(spec, "params", None) or {})}
    unknown = set(params) - set(_TINY_DEFAULTS)
    if unknown:
        raise DataError(f"unknown tiny dataset parameter {sorted(unknown)[0]!r} "
                        f"(it takes {', '.join(_TINY_DEFAULTS)})")
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split {split!r}: train, val or test")
    n_cls, per, size = int(params["classes"]), int(params["per_class"]), int(params["size"])
    if not 2 <= n_cls <= len(_TINY_COLOURS):
        raise DataError(f"tiny 'classes' must be from 2 to {len(_TINY_COLOURS)}")
    gen = torch.Generator().manual_seed(int(params["data_seed"]))
    images = torch.empty(n_cls * per, 3, size, size, dtype=torch.uint8)
    labels = []
    for k in range(n_cls):
        for i in range(per):
            img = 100 + torch.randint(-30, 30, (3, size, size), generator=gen)
            side = int(torch.randint(size // 3, size // 2 + 1, (1,), generator=gen))
            x, y = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=gen))
            img[:, y:y + side, x:x + side] = torch.tensor(_TINY_COLOURS[k]).view(3, 1, 1)
            images[k * per + i] = img.clamp(0, 255).to(torch.uint8)
            labels.append(k)
    val_frac = float(getattr(spec, "val_split", 0.2))
    test_frac = float(getattr(spec, "test_split", 0.2))
    parts, _ = stratified_split(labels, val_frac, test_frac, int(seed))  # zoo's one split
    positions = parts[split]
    return _TinyDataset(images, positions, labels, [f"{TINY_DATASET}:{p}" for p in positions],
                        [f"colour{k}" for k in range(n_cls)], split, transform)


class _TinyDataset:
    """One split of the ``tiny`` dataset: ``(image, label)``, ``classes``, ``targets``."""

    in_memory = True

    def __init__(self, images, positions, labels, sample_ids, classes, split, transform):
        self.images, self.positions = images, positions
        self.targets = [labels[p] for p in positions]
        self.sample_ids, self.classes, self.split = sample_ids, classes, split
        self.transform, self.warnings = transform, []

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int):
        image = self.images[self.positions[index]]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


class TestingPlugin:
    """The testing components as a plugin (name ``zoo-testing``)."""

    __test__ = False  # not a pytest test class
    name = TESTING_PLUGIN

    @hookimpl
    def register_backbone_providers(self, register):
        register(TINY_PROVIDER, TinyProvider(), description="tiny conv nets for tests")

    @hookimpl
    def register_datasets(self, register):
        register(TINY_DATASET, tiny_dataset_factory,
                 description="tiny coloured squares for tests (3 classes, 32×32)")


# =============================================================================================
# Small builders
# =============================================================================================
def tiny_job(**overrides):
    """A validated :class:`zoo.jobspec.JobSpec` for a very small CPU run.

    Defaults: ``testing:tiny_cnn``, ``--weights none``, the ``tiny`` dataset, 1 epoch,
    batch 16, accuracy only, CPU.  ``overrides`` are job-tree fragments, merged
    (``head={"name": "cosine"}``, ``strategy={"name": "x", "params": {...}}``, ``out=...``).
    """
    tree = deep_merge(JobSpec().to_dict(), TINY_JOB)
    return job_from_tree(deep_merge(tree, overrides), source="tiny_job")


#: the job-tree layer of a tiny run (:func:`tiny_job`, :func:`run_tiny`)
TINY_JOB = {"model": f"{TINY_PROVIDER}:tiny_cnn", "weights": "none", "device": "cpu",
            "data": {"name": TINY_DATASET, "augment": "none", "num_workers": 0},
            "train": {"epochs": 1, "batch_size": 16}, "metrics": ["accuracy"]}


def run_tiny(catalog, out: str | Path, **overrides) -> dict:
    """A tiny run (``out`` = parent of run folders) on ``catalog``; the summary.

    The same path as ``zoo run``: :func:`zoo.api.run` builds the job from the layer
    :data:`TINY_JOB` + ``overrides``, so the chosen components' ``job_defaults`` apply as
    they do for the plugin's users (a strategy's LR, a dataset's image size).
    """
    from zoo import api  # lazy: the pytest plugin imports this module; keep it light

    return api.run(catalog=catalog, flags=deep_merge(TINY_JOB, {"out": str(out), **overrides}),
                   quiet=True)


def tiny_transfer_model(num_classes: int = 3, backbone=None, head=None):
    """``(TransferModel, layer groups)`` of a tiny backbone (or ``backbone``) + a linear head."""
    from torch import nn  # lazy: torch (the pytest plugin imports this module)

    from zoo.backbones import TransferModel, build_layer_groups  # lazy: imports torch

    backbone = backbone if backbone is not None else TinyProvider().create("tiny_cnn")
    head = head if head is not None else nn.Linear(backbone.feature_dim, num_classes)
    model = TransferModel(backbone, head)
    provider = TinyProvider() if backbone.provider == TINY_PROVIDER else _FallbackProvider()
    return model, build_layer_groups(model, provider)


class _FallbackProvider:
    def layer_groups(self, backbone):
        from zoo.backbones import default_layer_groups  # lazy: imports torch

        return default_layer_groups(backbone.body)
