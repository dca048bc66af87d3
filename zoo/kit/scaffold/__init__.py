"""``zoo new-plugin NAME --kind KIND``: write a complete, installable plugin package.

Every kind gets the same layout (see docs/plugins.md for the walk-through)::

    zoo-NAME/
      pyproject.toml          entry point in group "zoo", explicit package list
      README.md               install, use, test
      zoo_NAME/__init__.py    the hook implementation and the component (lazy imports)
      tests/test_zoo_NAME.py  contract checks and a tiny run with zoo.testing

The templates are real files shipped as package data in ``templates/`` (``*.tmpl``, so no
tool takes them for zoo's own modules or tests), read with :mod:`importlib.resources`:
``pyproject.toml.tmpl``, ``README.md.tmpl``, ``package/KIND.py.tmpl`` (the plugin module) and
``tests/header.py.tmpl`` + ``tests/KIND.py.tmpl`` (its tests).  They hold ``__TOKEN__``
placeholders (no brace escaping in the generated Python code).  Importing this module imports
no torch.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path

from zoo.catalog import get_catalog
from zoo.errors import ZooError

KINDS = ("backbone", "head", "strategy", "metric", "dataset", "logger")
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_CATALOG_KIND = {"backbone": "providers", "head": "heads", "strategy": "strategies",
                 "metric": "metrics", "dataset": "datasets", "logger": "loggers"}


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
    cat = get_catalog()
    table = cat.components[_CATALOG_KIND[kind]]
    if component in table:
        raise ZooError(f"{kind} '{component}' is already registered by plugin "
                       f"'{table[component].plugin}'; choose another NAME")


def render(names: PluginNames, kind: str) -> dict[str, str]:
    """The files of a plugin package: relative path → text."""
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
        "pyproject.toml": fill(template("pyproject.toml")),
        "README.md": fill(template("README.md")),
        f"{names.package}/__init__.py": fill(template(f"package/{kind}.py")),
        # one shared header (fixtures, lazy-import check), then the kind's own tests
        f"tests/test_{names.package}.py": fill(template("tests/header.py") + "\n\n"
                                               + template(f"tests/{kind}.py")),
    }


def template(name: str) -> str:
    """The text of ``templates/NAME.tmpl`` (package data, also inside a zip or wheel)."""
    return (files(__package__) / "templates" / f"{name}.tmpl").read_text(encoding="utf-8")


DESCRIPTIONS = {
    "backbone": "a backbone provider with two small conv nets",
    "head": "a classification head (LayerNorm, dropout, linear)",
    "strategy": "a transfer strategy (head first, then the last k backbone groups)",
    "metric": "a metric (balanced accuracy: mean per-class recall)",
    "dataset": "a synthetic dataset (oriented gradients, no files needed)",
    "logger": "a logger (one JSON line per epoch in the run folder)",
}
HOOKS = {"backbone": "register_backbone_providers", "head": "register_heads",
         "strategy": "register_strategies", "metric": "register_metrics",
         "dataset": "register_datasets", "logger": "register_loggers"}
USAGE = {
    "backbone": "zoo list '__COMPONENT__:*'\nzoo run __COMPONENT__:convnet_s --weights none",
    "head": "zoo heads\nzoo run resnet18 --head __COMPONENT__ --set head.params.dropout=0.1",
    "strategy": "zoo strategies\nzoo run resnet18 --strategy __COMPONENT__ "
                "--set strategy.params.k=2",
    "metric": "zoo metrics\nzoo run resnet18 --metrics accuracy,__COMPONENT__",
    "dataset": "zoo datasets\nzoo run resnet18 --data __COMPONENT__ "
               "--set data.params.per_class=40",
    "logger": "zoo loggers\nzoo run resnet18 --set loggers=[__COMPONENT__]",
}
