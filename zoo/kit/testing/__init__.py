"""Fixtures and contract checks for plugin authors (a ``pytest11`` plugin, loaded by pytest).

Fixtures (available in every pytest session once zoo is installed)::

    zoo_plugins      the plugin objects under test; override it in your conftest/test file
                     (default: none)
    zoo_catalog      a Catalog with zoo's built-in plugins + ``zoo_plugins`` + the testing
                     components below, and no other installed plugin
    zoo_run          ``zoo_run(**job) -> summary``: a tiny in-process ``zoo run`` on
                     ``zoo_catalog`` (run folders under ``tmp_path``)
    tiny_dataset     the train split of the ``tiny`` dataset (uint8 3×32×32 images, 3 classes)
    tiny_backbone    a tiny conv-net :class:`zoo.backbones.Backbone` (``testing:tiny_cnn``)

Contract checks (each raises ``AssertionError`` with a message that says what to fix)::

    check_backbone_provider(provider, arch)   listing builds nothing; feature_dim is the real
                                              output width; layer groups cover the body
    check_strategy(strategy, params=...)      plan is a well-formed StrategyPlan; frozen
                                              parameters and BN statistics do not move
    check_head(factory, **params)             output shape, gradients, safetensors round trip
    check_metric(factory, value_range=(0, 1)) update/compute/reset, accumulation, range
    check_dataset(factory, name=...)          lengths, labels, classes, uint8 (3, H, W)
                                              images, deterministic disjoint splits, transform
    check_lazy_import(module)                 importing + registering imports no torch

Importing this module imports no torch (it is loaded in every pytest session); the testing
components import it only when they build something.
"""
from __future__ import annotations

import importlib.metadata as md
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest

from zoo.hookspecs import hookimpl

__all__ = [
    "TESTING_PLUGIN", "TinyProvider", "check_backbone_provider", "check_dataset", "check_head",
    "check_lazy_import", "check_metric", "check_strategy", "make_catalog", "run_tiny",
    "tiny_dataset_factory", "tiny_job", "tiny_transfer_model",
]

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
    from zoo.plugins import BUILTIN_DISTRIBUTION, PluginRecord

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
    from zoo.plugins import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP

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
    from zoo.plugins import BUILTIN_DISTRIBUTION, PluginRecord

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
    raise ``AssertionError`` with the recorded error.
    """
    from zoo.catalog import Catalog
    from zoo.plugins import ZooPluginManager
    from zoo.registry import load_registry

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
        from collections import OrderedDict

        from torch import nn

        from zoo.backbones import Backbone, PretrainedConfig
        from zoo.errors import WeightsError

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
        from zoo.backbones import default_layer_groups

        return default_layer_groups(backbone.body)

    def _width(self, arch: str) -> int:
        from zoo.errors import UnknownComponentError, did_you_mean

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
    import torch

    from zoo.errors import DataError

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
    order = torch.Generator().manual_seed(int(seed))
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for k in range(n_cls):
        idx = [k * per + int(i) for i in torch.randperm(per, generator=order)]
        n_val, n_test = round(per * val_frac), max(1, round(per * test_frac))
        parts["val"] += idx[:n_val]
        parts["test"] += idx[n_val:n_val + n_test]
        parts["train"] += idx[n_val + n_test:]
    positions = sorted(parts[split])
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
    from zoo.jobspec import JobSpec, deep_merge, job_from_tree

    tree = deep_merge(JobSpec().to_dict(), {
        "model": f"{TINY_PROVIDER}:tiny_cnn", "weights": "none", "device": "cpu",
        "data": {"name": TINY_DATASET, "augment": "none", "num_workers": 0},
        "train": {"epochs": 1, "batch_size": 16}, "metrics": ["accuracy"]})
    return job_from_tree(deep_merge(tree, overrides), source="tiny_job")


def run_tiny(catalog, out: str | Path, **overrides) -> dict:
    """Run :func:`tiny_job` (``out`` = parent of run folders) on ``catalog``; the summary."""
    from zoo.engine.pipeline import run

    job = tiny_job(out=str(out), **overrides)
    return run(job, catalog, quiet=True)


def tiny_transfer_model(num_classes: int = 3, backbone=None, head=None):
    """``(TransferModel, layer groups)`` of a tiny backbone (or ``backbone``) + a linear head."""
    from torch import nn

    from zoo.backbones import TransferModel, build_layer_groups

    backbone = backbone if backbone is not None else TinyProvider().create("tiny_cnn")
    head = head if head is not None else nn.Linear(backbone.feature_dim, num_classes)
    model = TransferModel(backbone, head)
    provider = TinyProvider() if backbone.provider == TINY_PROVIDER else _FallbackProvider()
    return model, build_layer_groups(model, provider)


class _FallbackProvider:
    def layer_groups(self, backbone):
        from zoo.backbones import default_layer_groups

        return default_layer_groups(backbone.body)


# =============================================================================================
# Contract checks
# =============================================================================================
def check_lazy_import(module: str, forbidden: tuple[str, ...] = HEAVY_MODULES,
                      timeout: float = 120) -> None:
    """Import ``module`` and run its ``register_*`` hooks in a fresh interpreter; none of
    ``forbidden`` may be imported (zoo's lazy-import rule: ``zoo --help`` stays fast)."""
    code = f"""
import sys
import {module} as plugin
from zoo.hookspecs import hookimpl
for name in dir(plugin):
    fn = getattr(plugin, name)
    if name.startswith("register_") and callable(fn) and hasattr(fn, "zoo_impl"):
        if name == "register_commands":
            continue
        fn(register=lambda *args, **kwargs: None)
heavy = sorted(m for m in {tuple(forbidden)!r} if m in sys.modules)
print(",".join(heavy))
"""
    import os

    # the child sees what this process sees (a package found through pytest's pythonpath)
    path = [p for p in sys.path if p and os.path.isdir(p)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        _fail(f"importing {module} and registering its components failed:\n{proc.stderr}")
    heavy = [m for m in proc.stdout.strip().split(",") if m]
    if heavy:
        _fail(f"importing {module} and registering its components imported "
              f"{', '.join(heavy)}: move those imports inside the functions that build "
              "things (create, factories, plan) — zoo's lazy-import rule")


def check_backbone_provider(provider, arch: str | None = None, *,
                            image_size: int | None = None, pretrained: bool = False,
                            batch: int = 2):
    """Check a :class:`zoo.backbones.BackboneProvider`; return the built backbone.

    - ``list_models()`` / ``list_models(pretrained=True)`` return lists of unique strings
      without building a model (``create`` is blocked while they run);
    - ``version()`` (optional) is a stable string; ``info(arch)`` is a dict;
    - ``create(arch)`` returns a :class:`zoo.backbones.Backbone` whose forward output width
      on a ``(batch, 3, S, S)`` input is ``feature_dim`` (and ``info``'s ``feature_dim``);
    - ``layer_groups(backbone)`` names every parameter of ``backbone.body`` exactly once,
      in ordered, uniquely named, non-empty groups.
    """
    import torch

    from zoo.backbones import Backbone, TransferModel, build_layer_groups

    pname = getattr(provider, "name", type(provider).__name__)
    blocked = []

    def _blocked_create(*args, **kwargs):
        blocked.append(args)
        raise AssertionError("create called while listing")

    had_own = "create" in vars(provider) if hasattr(provider, "__dict__") else False
    original = vars(provider).get("create") if had_own else None
    try:
        provider.create = _blocked_create
        names = provider.list_models(pretrained=False)
        tagged = provider.list_models(pretrained=True)
    except AttributeError:  # __slots__ or a read-only attribute: list without the guard
        names = provider.list_models(pretrained=False)
        tagged = provider.list_models(pretrained=True)
    finally:
        if had_own:
            provider.create = original
        elif "create" in getattr(provider, "__dict__", {}):
            del provider.create
    if blocked:
        _fail(f"provider {pname!r}: list_models() called create(); listing must not build "
              "models (keep names in a list or ask the library's registry)")
    for label, value in (("list_models()", names), ("list_models(pretrained=True)", tagged)):
        if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
            _fail(f"provider {pname!r}: {label} must return a list of str, got "
                  f"{type(value).__name__}")
        if len(set(value)) != len(value):
            dup = sorted({n for n in value if list(value).count(n) > 1})[:3]
            _fail(f"provider {pname!r}: {label} has duplicate names {dup}")
    if not names:
        _fail(f"provider {pname!r}: list_models() is empty")
    arch = arch or names[0]
    if arch not in names:
        _fail(f"provider {pname!r}: {arch!r} is not in list_models() ({names[:5]} ...)")
    if hasattr(provider, "version"):
        v1, v2 = provider.version(), provider.version()
        if not isinstance(v1, str) or v1 != v2:
            _fail(f"provider {pname!r}: version() must return the same str every call "
                  f"(got {v1!r}, {v2!r}); it keys zoo's model-list cache")
    info = provider.info(arch)
    if not isinstance(info, dict):
        _fail(f"provider {pname!r}: info({arch!r}) must return a dict, got "
              f"{type(info).__name__}")
    backbone = provider.create(arch, None, pretrained=pretrained)
    if not isinstance(backbone, Backbone):
        _fail(f"provider {pname!r}: create({arch!r}) returned {type(backbone).__name__}; wrap "
              "the model in zoo.backbones.Backbone(body, feature_dim, name=..., provider=...)")
    if not isinstance(backbone.feature_dim, int) or backbone.feature_dim <= 0:
        _fail(f"provider {pname!r}: feature_dim of {arch!r} must be a positive int")
    size = int(image_size or backbone.pretrained_cfg.input_size)
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.randn(batch, 3, size, size))
    if tuple(out.shape) != (batch, backbone.feature_dim):
        _fail(f"provider {pname!r}: {arch!r} says feature_dim={backbone.feature_dim} but its "
              f"forward on a ({batch}, 3, {size}, {size}) input gives {tuple(out.shape)}; "
              "the body must return pooled features (N, feature_dim)")
    if "feature_dim" in info and info["feature_dim"] != backbone.feature_dim:
        _fail(f"provider {pname!r}: info({arch!r})['feature_dim'] is {info['feature_dim']} "
              f"but the backbone's is {backbone.feature_dim}")
    groups = provider.layer_groups(backbone)
    body = [n for n, _ in backbone.body.named_parameters()]
    seen: dict[str, str] = {}
    gnames = []
    for item in groups:
        if (not isinstance(item, (tuple, list)) or len(item) != 2
                or not isinstance(item[0], str) or not isinstance(item[1], (list, tuple))):
            _fail(f"provider {pname!r}: layer_groups must be a list of (name, [parameter "
                  f"names]) pairs, got {item!r:.80}")
        gname, params = item
        gnames.append(gname)
        if not params:
            _fail(f"provider {pname!r}: layer group {gname!r} is empty")
        for p in params:
            if p not in body:
                _fail(f"provider {pname!r}: layer group {gname!r} names {p!r}, which is not "
                      "a parameter of backbone.body (names are relative to the body)")
            if p in seen:
                _fail(f"provider {pname!r}: parameter {p!r} is in layer groups "
                      f"{seen[p]!r} and {gname!r}; each parameter belongs to one group")
            seen[p] = gname
    if len(set(gnames)) != len(gnames) or "head" in gnames:
        _fail(f"provider {pname!r}: layer group names must be unique and not 'head': "
              f"{gnames}")
    missing = [p for p in body if p not in seen]
    if missing:
        _fail(f"provider {pname!r}: {len(missing)} parameters of {arch!r} are in no layer "
              f"group (e.g. {missing[0]!r}); strategies could not freeze or train them")
    model = TransferModel(backbone, torch.nn.Linear(backbone.feature_dim, 2))
    built = build_layer_groups(model, provider)
    if [g.name for g in built][:-1] != gnames:
        _fail(f"provider {pname!r}: build_layer_groups disagrees with layer_groups")
    return backbone


def check_strategy(strategy, params: dict | None = None, *, job=None, model=None,
                   groups=None, steps: int = 2, name: str | None = None):
    """Check a strategy object; return its :class:`zoo.strategy.StrategyPlan`.

    Plans on a tiny model (or ``model``/``groups``) with a job whose ``strategy.params`` are
    ``params``; the plan must be a well-formed StrategyPlan (:func:`zoo.strategy.validate_plan`).
    Then every phase runs ``steps`` SGD steps the way zoo's loop does (``apply_phase``,
    ``set_train_mode``, loss terms added): frozen parameters and the BatchNorm statistics the
    phase keeps fixed must not change, and something trainable must.
    """
    import torch
    from torch import nn

    from zoo.errors import ConfigError
    from zoo.strategy import (_BN_TYPES, LossContext, StrategyPlan, apply_phase,
                           set_train_mode, validate_plan)

    sname = name or getattr(strategy, "name", None) or type(strategy).__name__
    if not callable(getattr(strategy, "plan", None)):
        _fail(f"strategy {sname!r} has no plan(model, groups, job) method")
    defaults = getattr(strategy, "defaults", {})
    if not isinstance(defaults, dict):
        _fail(f"strategy {sname!r}: defaults must be a dict of its parameters")
    if model is None:
        model, groups = tiny_transfer_model()
    elif groups is None:
        model, groups = tiny_transfer_model(backbone=model.backbone, head=model.head)
    if job is None:
        job = tiny_job(strategy={"name": sname, "params": dict(params or {})},
                       train={"epochs": 2})
    plan = strategy.plan(model, groups, job)
    if not isinstance(plan, StrategyPlan):
        _fail(f"strategy {sname!r}: plan() returned {type(plan).__name__}, not a "
              "zoo.strategy.StrategyPlan — return StrategyPlan(name, [Phase(...)])")
    try:
        validate_plan(plan, groups)
    except ConfigError as exc:
        _fail(f"strategy {sname!r}: the plan is not well-formed: {exc}")
    if plan.epochs < 1:
        _fail(f"strategy {sname!r}: the plan has {plan.epochs} epochs in all")
    plan.to_dict(groups, model, job.train.lr)  # what `zoo run --plan` prints must work
    size = int(model.backbone.pretrained_cfg.input_size)
    num_classes = model.head(torch.zeros(1, model.backbone.feature_dim)).shape[-1] \
        if isinstance(model.head, nn.Module) else 2
    gen = torch.Generator().manual_seed(0)
    bn_modules = {n for n, m in model.named_modules() if isinstance(m, _BN_TYPES)}
    for phase in plan.phases:
        param_groups = apply_phase(model, groups, phase, job.train.lr)
        in_optimizer = {id(p) for g in param_groups for p in g["params"]}
        named = dict(model.named_parameters())
        frozen = [n for n, p in named.items() if id(p) not in in_optimizer]
        for n in frozen:
            if named[n].requires_grad:
                _fail(f"strategy {sname!r} phase {phase.name!r}: {n} requires grad but is "
                      "not trained")
        fixed_bn = set()
        for g in groups:
            setting = phase.groups.get(g.name)
            trainable = setting is not None and setting.trainable
            if g.name == "head":
                continue
            if not trainable or phase.bn != "train" or phase.backbone_frozen():
                fixed_bn.update(m for m in g.modules if m in bn_modules)
        before = {n: p.detach().clone() for n, p in named.items()}
        buffers = {n: b.clone() for n, b in model.named_buffers()
                   if n.rsplit(".", 1)[0] in fixed_bn}
        optimizer = torch.optim.SGD(param_groups, lr=job.train.lr)
        for step in range(steps):
            set_train_mode(model, groups, phase)
            x = torch.randn(4, 3, size, size, generator=gen)
            y = torch.randint(0, int(num_classes), (4,), generator=gen)
            features = model.backbone(x)
            logits = model.head(features)
            loss = nn.functional.cross_entropy(logits, y)
            for term in phase.loss_terms:
                ctx = LossContext(model=model, inputs=x, targets=y, features=features,
                                  logits=logits, step=step, epoch=1)
                loss = loss + term(ctx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for n in frozen:
            if not torch.equal(before[n], named[n].detach()):
                _fail(f"strategy {sname!r} phase {phase.name!r}: frozen parameter {n} changed "
                      f"after {steps} steps")
        for n, value in buffers.items():
            if value.is_floating_point() and not torch.equal(value, dict(
                    model.named_buffers())[n]):
                _fail(f"strategy {sname!r} phase {phase.name!r} (bn={phase.bn}): BatchNorm "
                      f"statistic {n} of a frozen or fixed-statistics group changed")
        moving = [n for n in named if id(named[n]) in in_optimizer
                  and not torch.equal(before[n], named[n].detach())]
        if any(g["lr"] > 0 for g in param_groups) and not moving:
            _fail(f"strategy {sname!r} phase {phase.name!r}: no trainable parameter changed "
                  f"after {steps} steps")
    return plan


def check_head(factory: Callable, in_features: int = 16, num_classes: int = 3, **params):
    """Check a head factory ``factory(in_features, num_classes, **params)``; return the head.

    The head must be a ``torch.nn.Module`` mapping ``(N, in_features)`` to finite
    ``(N, num_classes)`` logits (also for N=1 in eval mode), with trainable parameters that
    receive gradients, and its ``state_dict`` must survive a safetensors round trip.
    """
    import tempfile

    import torch
    from torch import nn

    fname = getattr(factory, "__name__", repr(factory))
    torch.manual_seed(0)
    head = factory(in_features, num_classes, **params)
    if not isinstance(head, nn.Module):
        _fail(f"head factory {fname} returned {type(head).__name__}, not a torch.nn.Module")
    x = torch.randn(5, in_features)
    head.train()
    out = head(x)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (5, num_classes):
        _fail(f"head {fname}: input (5, {in_features}) must give logits (5, {num_classes}), "
              f"got {tuple(getattr(out, 'shape', ()))}")
    if not torch.isfinite(out).all():
        _fail(f"head {fname}: logits are not finite")
    trainable = [p for p in head.parameters() if p.requires_grad]
    if not trainable:
        _fail(f"head {fname} has no trainable parameters")
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 0, 1]) % num_classes).backward()
    if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable):
        _fail(f"head {fname}: no parameter received a gradient")
    head.eval()
    with torch.no_grad():
        if tuple(head(x[:1]).shape) != (1, num_classes):
            _fail(f"head {fname}: a batch of one image in eval mode fails")
        expected = head(x)
    from safetensors.torch import load_file, save_file

    state = {k: v.detach().contiguous().clone() for k, v in head.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "head.safetensors"
        save_file(state, str(path))
        loaded = load_file(str(path))
    torch.manual_seed(1)
    again = factory(in_features, num_classes, **params)
    try:
        again.load_state_dict(loaded)
    except RuntimeError as exc:
        _fail(f"head {fname}: state_dict does not load back after a safetensors round "
              f"trip: {str(exc).splitlines()[0]}")
    again.eval()
    with torch.no_grad():
        if not torch.allclose(again(x), expected, atol=1e-6):
            _fail(f"head {fname}: outputs differ after a safetensors round trip (keep every "
                  "learned value in parameters or registered buffers)")
    return head


def check_metric(factory: Callable, num_classes: int = 4, *,
                 value_range: tuple[float, float] | None = (0.0, 1.0), scalar: bool = True):
    """Check a metric factory ``factory(num_classes)``; return the computed value.

    The loop feeds metrics softmax probabilities ``(N, C)`` and integer targets ``(N,)``.
    Checks: a torchmetrics-style object with ``update``/``compute``/``reset`` and ``to``;
    for scalar metrics a finite number inside ``value_range`` (``None``: any); two updates
    equal one update of both batches (eval batches differ in size); ``reset`` forgets.
    """
    import torch

    fname = getattr(factory, "__name__", repr(factory))
    metric = factory(num_classes)
    if metric is None:
        _fail(f"metric {fname} returned None for {num_classes} classes (None means 'does not "
              "apply'); call check_metric with a num_classes it applies to")
    for attr in ("update", "compute", "reset", "to"):
        if not callable(getattr(metric, attr, None)):
            _fail(f"metric {fname}: has no {attr}(); return a torchmetrics.Metric")
    metric = metric.to("cpu")
    gen = torch.Generator().manual_seed(0)

    def batch(n):
        probs = torch.softmax(torch.randn(n, num_classes, generator=gen), dim=1)
        return probs, torch.randint(0, num_classes, (n,), generator=gen)

    a, b = batch(13), batch(7)

    def value(m):
        out = m.compute()
        if not scalar:
            return out
        if isinstance(out, torch.Tensor):
            if out.numel() != 1:
                _fail(f"metric {fname} is scalar but compute() gave shape {tuple(out.shape)}; "
                      "register it with scalar=False or reduce it")
            out = out.item()
        if not isinstance(out, (int, float)) or not math.isfinite(out):
            _fail(f"metric {fname}: compute() gave {out!r}, not a finite number")
        if value_range is not None and not value_range[0] <= out <= value_range[1]:
            _fail(f"metric {fname}: value {out} outside {value_range}")
        return out

    metric.update(*a)
    metric.update(*b)
    both = value(metric)
    single = factory(num_classes).to("cpu")
    single.update(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
    if scalar and not math.isclose(both, value(single), rel_tol=1e-4, abs_tol=1e-5):
        _fail(f"metric {fname}: two updates give {both} but one update of the same data "
              f"gives {value(single)}; accumulate sums/counts, not per-batch means")
    metric.reset()
    metric.update(*b)
    fresh = factory(num_classes).to("cpu")
    fresh.update(*b)
    after, expected = value(metric), value(fresh)
    if scalar and not math.isclose(after, expected, rel_tol=1e-4, abs_tol=1e-5):
        _fail(f"metric {fname}: after reset() it gives {after}, a fresh one {expected}; "
              "reset() must clear every state")
    return both


class _MarkTransform:
    def __init__(self):
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        return ("transformed", image)


def check_dataset(factory: Callable, name: str = "dataset", params: dict | None = None, *,
                  spec=None, seed: int = 0, samples: int = 3) -> dict:
    """Check a dataset factory ``factory(spec, split, transform, seed)``; return the splits.

    For ``train``/``val``/``test`` with ``transform=None``: a sized dataset with the same
    ``classes`` (at least 2 strings); items are ``(uint8 tensor (3, H, W), int label)`` with
    labels in range; ``targets`` (when present) match the items; ``sample_ids`` (when present)
    are unique and the splits disjoint; the same seed gives the same splits; a transform is
    applied to the image (and only to it).
    """
    import torch

    from zoo.jobspec import DataSpec

    spec = spec if spec is not None else DataSpec(name=name, params=dict(params or {}))
    fname = getattr(factory, "__name__", repr(factory))
    splits = {}
    for split in ("train", "val", "test"):
        ds = factory(spec=spec, split=split, transform=None, seed=seed)
        if not hasattr(ds, "__len__") or not hasattr(ds, "__getitem__"):
            _fail(f"dataset {name!r} ({fname}): split {split!r} must be a sized dataset "
                  "(__len__ and __getitem__)")
        splits[split] = ds
    if len(splits["train"]) == 0:
        _fail(f"dataset {name!r}: the train split is empty")
    classes = getattr(splits["train"], "classes", None)
    if not isinstance(classes, (list, tuple)) or len(classes) < 2 or not all(
            isinstance(c, str) for c in classes):
        _fail(f"dataset {name!r}: 'classes' must be a list of at least 2 class names, got "
              f"{classes!r:.80}")
    ids_by_split = {}
    for split, ds in splits.items():
        if list(getattr(ds, "classes", [])) != list(classes):
            _fail(f"dataset {name!r}: split {split!r} has other classes than train; all "
                  "splits must share one list")
        n = len(ds)
        targets = getattr(ds, "targets", None)
        if targets is not None and len(targets) != n:
            _fail(f"dataset {name!r}: split {split!r} has {n} items but {len(targets)} targets")
        for i in sorted({0, n // 2, n - 1} if n else set())[:max(1, samples)]:
            item = ds[i]
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                _fail(f"dataset {name!r}: items must be (image, label) pairs")
            image, label = item
            if (not isinstance(image, torch.Tensor) or image.dtype != torch.uint8
                    or image.dim() != 3 or image.shape[0] != 3):
                _fail(f"dataset {name!r}: with transform=None an image must be a uint8 tensor "
                      f"(3, H, W), got {getattr(image, 'dtype', type(image).__name__)} "
                      f"{tuple(getattr(image, 'shape', ()))}")
            if isinstance(label, torch.Tensor) and label.numel() == 1:
                label = label.item()
            if isinstance(label, bool) or not isinstance(label, int) or \
                    not 0 <= label < len(classes):
                _fail(f"dataset {name!r}: label {label!r} of {split}[{i}] is not an int in "
                      f"[0, {len(classes)})")
            if targets is not None and int(targets[i]) != label:
                _fail(f"dataset {name!r}: {split}.targets[{i}] is {targets[i]} but the item's "
                      f"label is {label}")
        ids = getattr(ds, "sample_ids", None)
        if ids is not None:
            if len(ids) != n or len(set(ids)) != n:
                _fail(f"dataset {name!r}: sample_ids of {split!r} must be unique, one per item")
            ids_by_split[split] = set(ids)
    if len(ids_by_split) == 3:
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            common = ids_by_split[a] & ids_by_split[b]
            if common:
                _fail(f"dataset {name!r}: splits {a!r} and {b!r} share items "
                      f"(e.g. {sorted(common)[0]!r})")
    again = factory(spec=spec, split="train", transform=None, seed=seed)
    key = "sample_ids" if hasattr(again, "sample_ids") else "targets"
    if hasattr(again, key) and list(getattr(again, key)) != list(getattr(splits["train"], key)):
        _fail(f"dataset {name!r}: the same seed gave a different train split; split "
              "deterministically from `seed`")
    mark = _MarkTransform()
    transformed = factory(spec=spec, split="train", transform=mark, seed=seed)
    image, label = transformed[0]
    if mark.calls != 1 or not (isinstance(image, tuple) and image[0] == "transformed"):
        _fail(f"dataset {name!r}: the transform must be applied once to each image "
              "(return (transform(image), label))")
    if label != splits["train"][0][1]:
        _fail(f"dataset {name!r}: the transform changed the label")
    return splits


# =============================================================================================
# Fixtures
# =============================================================================================
@pytest.fixture
def zoo_plugins() -> list:
    """The plugin objects under test; override in your tests, e.g.::

        @pytest.fixture
        def zoo_plugins():
            import my_zoo_plugin
            return [my_zoo_plugin]
    """
    return []


@pytest.fixture
def zoo_catalog(zoo_plugins):
    """A Catalog of zoo's built-ins + ``zoo_plugins`` + the testing components (only)."""
    return make_catalog(*zoo_plugins)


@pytest.fixture
def zoo_run(zoo_catalog, tmp_path):
    """``zoo_run(**job) -> summary``: a tiny in-process run (see :func:`tiny_job`)."""
    def _run(**overrides):
        return run_tiny(zoo_catalog, tmp_path / "runs", **overrides)

    return _run


@pytest.fixture
def tiny_dataset():
    """The train split of the ``tiny`` dataset (uint8 (3, 32, 32) images, 3 classes)."""
    from zoo.jobspec import DataSpec

    return tiny_dataset_factory(DataSpec(name=TINY_DATASET), "train", None, 0)


@pytest.fixture
def tiny_backbone():
    """``testing:tiny_cnn``: a conv-net Backbone with ``feature_dim`` 16, input 32×32."""
    return TinyProvider().create("tiny_cnn")
