"""``zoo new-plugin NAME --kind KIND``: write a complete, installable plugin package.

Every kind gets the same layout (see docs/plugins.md for the walk-through)::

    zoo-NAME/
      pyproject.toml          entry point in group "zoo", explicit package list
      README.md               install, use, test
      zoo_NAME/__init__.py    the hook implementation and the component (lazy imports)
      tests/test_zoo_NAME.py  contract checks and a tiny run with zoo.testing

Templates are plain strings with ``__TOKEN__`` placeholders (no brace escaping in the
generated Python code).  Importing this module imports no torch.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ZooError

KINDS = ("backbone", "head", "strategy", "metric", "dataset")
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_CATALOG_KIND = {"backbone": "providers", "head": "heads", "strategy": "strategies",
                 "metric": "metrics", "dataset": "datasets"}


@dataclass(frozen=True)
class PluginNames:
    """The names one ``NAME`` turns into."""

    component: str    # what users type: --head NAME, --strategy NAME, NAME:arch ...
    dist: str         # the distribution (pip) name: zoo-NAME
    package: str      # the import package: zoo_NAME
    entry_point: str  # the entry-point name (zoo plugins, ZOO_LOAD_PLUGINS)
    title: str        # for docstrings: "Zoo Name"
    cls: str          # a class name: Name


def plugin_names(name: str) -> PluginNames:
    """Validate ``name`` (lowercase letters, digits, single hyphens) and derive the others."""
    raw = str(name).strip()
    if len(raw) > 40 or not _NAME.match(raw):
        raise ZooError(f"plugin name {name!r} is not usable: use lowercase letters, digits and "
                       "single hyphens, starting with a letter (e.g. cosine-head), at most 40 "
                       "characters")
    component = raw[4:] if raw.startswith("zoo-") else raw
    if not component or component in ("zoo", "testing"):
        raise ZooError(f"plugin name {name!r} is reserved; choose another")
    dist = f"zoo-{component}"
    package = dist.replace("-", "_")
    if keyword.iskeyword(package) or not package.isidentifier():
        raise ZooError(f"plugin name {name!r} does not give a Python package name")
    words = component.split("-")
    return PluginNames(component, dist, package, component,
                       "Zoo " + " ".join(w.capitalize() for w in words),
                       "".join(w.capitalize() for w in words))


def new_plugin(name: str, kind: str, directory: str | Path = ".", *,
               check_catalog: bool = True) -> tuple[Path, list[Path]]:
    """Write the plugin package for ``name`` of ``kind`` under ``directory``.

    Returns ``(plugin folder, files written)``.  Raises :class:`ZooError` for a bad name, an
    unknown kind, a folder that exists and is not empty, or (``check_catalog``) a component
    name already registered by an installed plugin.
    """
    if kind not in KINDS:
        raise ZooError(f"unknown plugin kind {kind!r}: choose one of {', '.join(KINDS)}")
    names = plugin_names(name)
    root = Path(directory).expanduser() / names.dist
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ZooError(f"{root} already exists and is not empty; choose another NAME or --dir")
    if check_catalog:
        _check_free(names.component, kind)
    files = render(names, kind)
    written = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return root, written


def _check_free(component: str, kind: str) -> None:
    """Refuse a component name an installed plugin already registers (a duplicate later)."""
    from zoo.catalog import get_catalog

    cat = get_catalog()
    table = cat.components[_CATALOG_KIND[kind]]
    if component in table:
        raise ZooError(f"{kind} '{component}' is already registered by plugin "
                       f"'{table[component].plugin}'; choose another NAME")


def render(names: PluginNames, kind: str) -> dict[str, str]:
    """The files of a plugin package: relative path → text."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        zoo_version = version("zoo")
    except PackageNotFoundError:
        zoo_version = "0.1.0"
    tokens = {  # tokens whose values hold other tokens come first
        "__USE__": USAGE[kind], "__DESCRIPTION__": DESCRIPTIONS[kind],
        "__COMPONENT__": names.component, "__DIST__": names.dist,
        "__PACKAGE__": names.package, "__EP__": names.entry_point, "__TITLE__": names.title,
        "__CLASS__": names.cls, "__KIND__": kind, "__ZOO_VERSION__": zoo_version,
        "__HOOK__": HOOKS[kind],
    }

    def fill(text: str) -> str:
        for key, value in tokens.items():
            text = text.replace(key, value)
        return text.lstrip("\n")

    return {
        "pyproject.toml": fill(PYPROJECT),
        "README.md": fill(README),
        f"{names.package}/__init__.py": fill(MODULES[kind]),
        f"tests/test_{names.package}.py": fill(TESTS[kind]),
    }


DESCRIPTIONS = {
    "backbone": "a backbone provider with two small conv nets",
    "head": "a classification head (LayerNorm, dropout, linear)",
    "strategy": "a transfer strategy (head first, then the last k backbone groups)",
    "metric": "a metric (balanced accuracy: mean per-class recall)",
    "dataset": "a synthetic dataset (oriented gradients, no files needed)",
}
HOOKS = {"backbone": "register_backbone_providers", "head": "register_heads",
         "strategy": "register_strategies", "metric": "register_metrics",
         "dataset": "register_datasets"}
USAGE = {
    "backbone": "zoo list '__COMPONENT__:*'\nzoo run __COMPONENT__:convnet_s --weights none",
    "head": "zoo heads\nzoo run resnet18 --head __COMPONENT__ --set head.params.dropout=0.1",
    "strategy": "zoo strategies\nzoo run resnet18 --strategy __COMPONENT__ "
                "--set strategy.params.k=2",
    "metric": "zoo metrics\nzoo run resnet18 --metrics accuracy,__COMPONENT__",
    "dataset": "zoo datasets\nzoo run resnet18 --data __COMPONENT__ "
               "--set data.params.per_class=40",
}

PYPROJECT = '''
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "zoo plugin: __DESCRIPTION__"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["zoo>=__ZOO_VERSION__"]

[project.optional-dependencies]
test = ["pytest>=8"]

# zoo finds plugins through the "zoo" entry-point group; "__EP__" is the plugin name that
# `zoo plugins` shows and that ZOO_LOAD_PLUGINS takes.
[project.entry-points.zoo]
__EP__ = "__PACKAGE__"

# Explicit package list: the wheel ships the plugin package only (never tests/).
[tool.setuptools]
packages = ["__PACKAGE__"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
'''

README = '''
# __DIST__

A zoo plugin: __DESCRIPTION__.
It implements the `__HOOK__` hook (see zoo's docs/hooks.md).

## Install

```bash
pip install -e .
zoo plugins --hook __HOOK__      # lists "__EP__"
```

## Use

```bash
__USE__
```

## Test

```bash
pip install -e ".[test]"
python -m pytest tests -q
```

The tests use zoo's plugin-testing kit (`zoo.testing`): the contract check for this kind of
component, the lazy-import rule (importing the plugin imports no torch) and a tiny
end-to-end run on zoo's `tiny` test dataset.
'''

# -- modules ------------------------------------------------------------------------------------
HEAD_MODULE = '''
"""__TITLE__: a zoo plugin registering the ``__COMPONENT__`` head.

Lazy-import rule: importing this module and registering the head imports no torch; the
factory imports it when zoo builds a model.
"""
from zoo.hookspecs import hookimpl

__version__ = "0.1.0"


def make_head(in_features: int, num_classes: int, dropout: float = 0.0):
    """LayerNorm on the pooled features, optional dropout, then a linear classifier."""
    from torch import nn

    return nn.Sequential(nn.LayerNorm(in_features), nn.Dropout(float(dropout)),
                         nn.Linear(in_features, num_classes))


@hookimpl
def register_heads(register):
    register("__COMPONENT__", make_head, description="LayerNorm + dropout + linear (dropout)")
'''

STRATEGY_MODULE = '''
"""__TITLE__: a zoo plugin registering the ``__COMPONENT__`` strategy.

Phase 1 trains the head alone (backbone frozen, ``head_epochs``); phase 2 trains the head
and the last ``k`` backbone layer groups (at ``lr × backbone_lr_mult``).  Layer groups come
from the backbone's provider, so this works on every backbone.

Lazy-import rule: importing this module imports no torch; ``plan`` imports zoo.strategy.
"""
from zoo.hookspecs import hookimpl

__version__ = "0.1.0"


class __CLASS__Strategy:
    """Head first, then the head and the last k backbone groups (k, head_epochs, backbone_lr_mult)."""

    name = "__COMPONENT__"
    defaults = {"k": 1, "head_epochs": 1, "backbone_lr_mult": 0.1}

    def plan(self, model, groups, job):
        from zoo.errors import ConfigError, did_you_mean
        from zoo.strategy import GroupSetting, Phase, StrategyPlan, all_groups, resolve_bn

        unknown = sorted(set(job.strategy.params) - set(self.defaults))
        if unknown:
            raise ConfigError(f"strategy '{self.name}' has no parameter '{unknown[0]}'"
                              f"{did_you_mean(unknown[0], self.defaults)} "
                              f"(parameters: {', '.join(self.defaults)})")
        p = {**self.defaults, **job.strategy.params}
        k = int(p["k"])
        if k < 0:
            raise ConfigError(f"strategy '{self.name}': k must be >= 0, got {k}")
        backbone = [g.name for g in groups if g.name != "head"]
        top = backbone[len(backbone) - k:] if k else []
        epochs = job.train.epochs
        head_epochs = min(int(p["head_epochs"]), epochs - 1) if top else 0
        phases = []
        if head_epochs > 0:
            phases.append(Phase("head", head_epochs, all_groups(groups, trainable=False),
                                bn="freeze-all"))
        settings = all_groups(groups, trainable=False)
        for name in top:
            settings[name] = GroupSetting(True, float(p["backbone_lr_mult"]))
        phases.append(Phase(f"top-{k}", epochs - head_epochs, settings,
                            bn=resolve_bn(job, "train") if top else "freeze-all"))
        return StrategyPlan(self.name, phases,
                            [f"trains the head and {', '.join(top) or 'no backbone group'}"])


@hookimpl
def register_strategies(register):
    register("__COMPONENT__", __CLASS__Strategy(), description=__CLASS__Strategy.__doc__)
'''

METRIC_MODULE = '''
"""__TITLE__: a zoo plugin registering the ``__COMPONENT__`` metric.

Balanced accuracy: the mean of the per-class recalls, robust to class imbalance.  zoo's loop
passes softmax probabilities ``(N, C)`` and integer targets ``(N,)`` to ``update``.

Lazy-import rule: importing this module imports no torch; the factory imports torchmetrics.
"""
from zoo.hookspecs import hookimpl

__version__ = "0.1.0"


def make_metric(num_classes: int):
    """A torchmetrics Metric, or None when the metric does not apply to ``num_classes``."""
    if num_classes < 2:
        return None
    from torchmetrics.classification import MulticlassAccuracy

    return MulticlassAccuracy(num_classes=num_classes, average="macro")


@hookimpl
def register_metrics(register):
    register("__COMPONENT__", make_metric, mode="max",
             description="balanced accuracy (mean per-class recall)")
'''

DATASET_MODULE = '''
"""__TITLE__: a zoo plugin registering the ``__COMPONENT__`` dataset.

Synthetic images that need no files: class *k* is a linear colour gradient at angle
``k × 180° / classes`` plus noise.  ``data.params``: ``classes`` (2-12, default 4),
``per_class`` (default 50), ``size`` (default 32), ``data_seed`` (default 0).  The pixels
depend only on the params; the job's ``seed`` chooses the stratified split
(``data.val_split``/``test_split``; ``data.max_per_class`` caps the train split).

The factory returns a dataset yielding ``(transform(image), label)`` where ``image`` is a
uint8 tensor (3, H, W), with ``classes``, ``targets`` and ``sample_ids`` (zoo's contract).

Lazy-import rule: importing this module imports no torch; the factory does.
"""
import math

from zoo.hookspecs import hookimpl

__version__ = "0.1.0"
DEFAULTS = {"classes": 4, "per_class": 50, "size": 32, "data_seed": 0}


class GradientDataset:
    """One split: images kept in memory (zoo then loads in the main process)."""

    in_memory = True

    def __init__(self, images, positions, labels, classes, split, transform):
        self.images, self.positions, self.split = images, positions, split
        self.targets = [labels[p] for p in positions]
        self.sample_ids = [f"__COMPONENT__:{p}" for p in positions]
        self.classes, self.transform, self.warnings = classes, transform, []

    def __len__(self):
        return len(self.positions)

    def __getitem__(self, index):
        image = self.images[self.positions[index]]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def make_dataset(spec, split, transform, seed):
    """``register_datasets`` factory: the ``split`` of the dataset ``spec`` describes."""
    import torch

    from zoo.errors import DataError

    params = {**DEFAULTS, **(spec.params or {})}
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise DataError(f"unknown __COMPONENT__ parameter '{unknown[0]}' "
                        f"(it takes {', '.join(DEFAULTS)})")
    n_cls, per, size = int(params["classes"]), int(params["per_class"]), int(params["size"])
    if not 2 <= n_cls <= 12 or per < 3 or not 8 <= size <= 256:
        raise DataError("__COMPONENT__ needs 2-12 classes, per_class >= 3, size 8-256")
    gen = torch.Generator().manual_seed(int(params["data_seed"]))
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                            indexing="ij")
    images, labels = [], []
    for k in range(n_cls):
        angle = math.pi * k / n_cls
        ramp = math.cos(angle) * xs + math.sin(angle) * ys          # (size, size) in [-1.4, 1.4]
        for _ in range(per):
            colour = torch.rand(3, 1, 1, generator=gen) * 0.6 + 0.2
            noise = torch.randn(3, size, size, generator=gen) * 0.08
            img = 0.5 + 0.35 * ramp * colour + noise
            images.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
            labels.append(k)
    images = torch.stack(images)
    order = torch.Generator().manual_seed(int(seed))
    parts = {"train": [], "val": [], "test": []}
    for k in range(n_cls):
        idx = [k * per + int(i) for i in torch.randperm(per, generator=order)]
        n_val = round(per * spec.val_split)
        n_test = max(1, round(per * spec.test_split))
        train = idx[n_val + n_test:]
        if spec.max_per_class:
            train = train[:spec.max_per_class]
        parts["val"] += idx[:n_val]
        parts["test"] += idx[n_val:n_val + n_test]
        parts["train"] += train
    if split not in parts:
        raise DataError(f"unknown split {split!r}")
    classes = [f"{round(180 * k / n_cls)}deg" for k in range(n_cls)]
    return GradientDataset(images, sorted(parts[split]), labels, classes, split, transform)


@hookimpl
def register_datasets(register):
    register("__COMPONENT__", make_dataset,
             description="synthetic oriented colour gradients (classes, per_class, size)")
'''

BACKBONE_MODULE = '''
"""__TITLE__: a zoo plugin registering the ``__COMPONENT__`` backbone provider.

Two small conv nets, ``__COMPONENT__:convnet_s`` and ``__COMPONENT__:convnet_m``, without
pretrained weights (run them with ``--weights none``).  Replace ``ARCHS`` and ``_body`` with
your own models; keep the provider contract (zoo.backbones.BackboneProvider):

- ``list_models(pretrained)`` is cheap: names only, no model is built;
- ``create`` returns a ``zoo.backbones.Backbone`` whose forward gives pooled features
  ``(N, feature_dim)``;
- ``layer_groups`` names every parameter of ``backbone.body`` once, input side first
  (strategies freeze and train by these groups).

Lazy-import rule: importing this module imports no torch; ``create`` does.
"""
import hashlib

from zoo.hookspecs import hookimpl

__version__ = "0.1.0"
PROVIDER = "__COMPONENT__"
ARCHS = {"convnet_s": (16, 32), "convnet_m": (32, 64, 128)}   # arch -> stage widths


class __CLASS__Provider:
    """Small conv nets: conv/BN/ReLU stages (stride 2), global average pooling."""

    name = PROVIDER

    def list_models(self, pretrained=False):
        return [] if pretrained else list(ARCHS)   # no pretrained weights

    def version(self):
        # keys zoo's model-list cache: change it whenever the list may change
        return f"{__version__}-{hashlib.sha1(','.join(ARCHS).encode()).hexdigest()[:8]}"

    def info(self, arch):
        widths = self._widths(arch)
        return {"provider": PROVIDER, "arch": arch, "feature_dim": widths[-1],
                "pretrained_tags": [], "default_tag": None,
                "pretrained_cfg": {"input_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3,
                                   "interpolation": "bilinear", "crop_pct": 1.0}}

    def create(self, arch, tag=None, pretrained=False):
        from collections import OrderedDict

        from torch import nn

        from zoo.backbones import Backbone, PretrainedConfig
        from zoo.errors import WeightsError

        widths = self._widths(arch)
        if pretrained or tag:
            raise WeightsError(f"{PROVIDER}:{arch} has no pretrained weights; "
                               "use --weights none")
        stages, width = [], 3
        for i, out in enumerate(widths):
            stages.append((f"stage{i}", nn.Sequential(
                nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out), nn.ReLU(inplace=True))))
            width = out
        body = nn.Sequential(OrderedDict(stages + [("pool", nn.AdaptiveAvgPool2d(1)),
                                                   ("flatten", nn.Flatten(1))]))
        cfg = PretrainedConfig(input_size=64, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
        return Backbone(body, widths[-1], name=arch, provider=PROVIDER, pretrained_cfg=cfg)

    def layer_groups(self, backbone):
        return [(name, [f"{name}.{p}" for p, _ in module.named_parameters()])
                for name, module in backbone.body.named_children()
                if any(True for _ in module.parameters())]

    def _widths(self, arch):
        from zoo.errors import UnknownComponentError, did_you_mean

        if arch not in ARCHS:
            raise UnknownComponentError(f"unknown model '{arch}' in provider '{PROVIDER}'"
                                        f"{did_you_mean(arch, ARCHS)}")
        return ARCHS[arch]


@hookimpl
def register_backbone_providers(register):
    register(PROVIDER, __CLASS__Provider(), description="small conv nets (no weights)")
'''

MODULES = {"head": HEAD_MODULE, "strategy": STRATEGY_MODULE, "metric": METRIC_MODULE,
           "dataset": DATASET_MODULE, "backbone": BACKBONE_MODULE}

# -- tests --------------------------------------------------------------------------------------
TEST_HEADER = '''
"""Tests of __DIST__ with zoo's plugin-testing kit (zoo.testing, a pytest plugin).

``zoo_catalog`` holds zoo's built-ins, the ``zoo_plugins`` below and the testing components
(``testing:tiny_cnn``, dataset ``tiny``); ``zoo_run(**job)`` runs a tiny job on it.
"""
import pytest

import __PACKAGE__ as plugin
from zoo.testing import (check_backbone_provider, check_dataset, check_head,
                         check_lazy_import, check_metric, check_strategy)


@pytest.fixture
def zoo_plugins():
    return [plugin]


def test_importing_imports_no_torch():
    check_lazy_import("__PACKAGE__")

'''

TESTS = {
    "head": TEST_HEADER + '''
def test_head_contract():
    check_head(plugin.make_head)
    check_head(plugin.make_head, in_features=8, num_classes=5, dropout=0.2)


def test_registered(zoo_catalog):
    assert zoo_catalog.get("heads", "__COMPONENT__").obj is plugin.make_head


def test_tiny_run(zoo_run):
    summary = zoo_run(head={"name": "__COMPONENT__", "params": {"dropout": 0.1}})
    assert summary["status"] == "completed"
''',
    "strategy": TEST_HEADER + '''
def test_strategy_contract():
    plan = check_strategy(plugin.__CLASS__Strategy())
    assert [p.name for p in plan.phases] == ["head", "top-1"]
    check_strategy(plugin.__CLASS__Strategy(), {"k": 2, "head_epochs": 0})


def test_unknown_param_is_an_error():
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean"):
        check_strategy(plugin.__CLASS__Strategy(), {"kk": 2})


def test_tiny_run(zoo_run):
    summary = zoo_run(strategy={"name": "__COMPONENT__"}, train={"epochs": 2})
    assert summary["status"] == "completed" and summary["strategy"] == "__COMPONENT__"
''',
    "metric": TEST_HEADER + '''
def test_metric_contract():
    check_metric(plugin.make_metric, num_classes=4, value_range=(0.0, 1.0))
    assert plugin.make_metric(1) is None


def test_tiny_run(zoo_run):
    summary = zoo_run(metrics=["accuracy", "__COMPONENT__"])
    assert 0.0 <= summary["test"]["__COMPONENT__"] <= 1.0
''',
    "dataset": TEST_HEADER + '''
def test_dataset_contract():
    splits = check_dataset(plugin.make_dataset, name="__COMPONENT__",
                           params={"per_class": 10, "classes": 3})
    assert len(splits["train"].classes) == 3


def test_tiny_run(zoo_run):
    summary = zoo_run(data={"name": "__COMPONENT__", "params": {"per_class": 10}})
    assert summary["status"] == "completed" and summary["num_classes"] == 4
''',
    "backbone": TEST_HEADER + '''
@pytest.mark.parametrize("arch", ["convnet_s", "convnet_m"])
def test_provider_contract(arch):
    check_backbone_provider(plugin.__CLASS__Provider(), arch)


def test_tiny_run(zoo_run):
    summary = zoo_run(model="__COMPONENT__:convnet_s")
    assert summary["status"] == "completed" and summary["provider"] == "__COMPONENT__"
''',
}
