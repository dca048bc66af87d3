"""The plugin author's kit as shipped: the testing kit split into fixtures / components /
checks, the scaffold's templates as package data, the typed hook specs, and the public
import paths of docs/hooks.md covering what the public modules export."""
from __future__ import annotations

import importlib
import importlib.metadata as md
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

import zoo.hookspecs
import zoo.kit.scaffold as scaffold
from test_architecture import public_names

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# -- zoo.kit.testing: fixtures apart from the utilities -----------------------------------------
def test_pytest_plugin_is_the_fixtures_module():
    (ep,) = [e for e in md.entry_points(group="pytest11") if e.name == "zoo"]
    assert ep.value == "zoo.kit.testing.fixtures"
    assert PYPROJECT["project"]["entry-points"]["pytest11"]["zoo"] == ep.value
    fixtures = importlib.import_module(ep.value)
    for name in ("zoo_plugins", "zoo_catalog", "zoo_run", "tiny_dataset", "tiny_backbone"):
        assert hasattr(fixtures, name), name


def test_utilities_register_no_fixtures_and_import_no_pytest_or_torch():
    code = ("import sys, zoo.kit.testing as t\n"
            "assert 'zoo.kit.testing.fixtures' not in sys.modules\n"
            "bad = [m for m in ('torch', 'pytest', 'timm') if m in sys.modules]\n"
            "assert not bad, bad\n"
            "print(len(t.__all__))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                         capture_output=True, text=True).stdout
    assert int(out) == 13


def test_public_names_come_from_their_modules():
    import zoo.kit.testing as kit
    from zoo.kit.testing import checks, components, data_checks

    assert kit.check_head is checks.check_head and kit.check_dataset is data_checks.check_dataset
    assert kit.make_catalog is components.make_catalog and kit.hookimpl is zoo.hookspecs.hookimpl
    alias = importlib.import_module("zoo.testing")
    assert sorted(alias.__all__) == sorted(kit.__all__)
    assert all(getattr(alias, n) is getattr(kit, n) for n in kit.__all__)


# -- scaffold templates: real files, shipped as package data ------------------------------------
def test_every_kind_has_its_template_files():
    root = Path(scaffold.__file__).parent / "templates"
    for kind in scaffold.KINDS:
        assert (root / "package" / f"{kind}.py.tmpl").is_file(), kind
        assert (root / "tests" / f"{kind}.py.tmpl").is_file(), kind
    assert scaffold.template("pyproject.toml").startswith("[build-system]")
    with pytest.raises(FileNotFoundError):
        scaffold.template("package/nope.py")


def test_rendered_files_are_the_templates_filled():
    names = scaffold.plugin_names("cosine-head")
    files = scaffold.render(names, "head")
    module = files["zoo_cosine_head/__init__.py"]
    assert module == scaffold.template("package/head.py").replace(
        "__TITLE__", "Zoo Cosine Head").replace("__COMPONENT__", "cosine-head")
    test = files["tests/test_zoo_cosine_head.py"]
    assert "import zoo_cosine_head as plugin" in test and "def test_head_contract" in test
    assert not any("__COMPONENT__" in text or "__PACKAGE__" in text for text in files.values())


def test_pyproject_ships_templates_and_py_typed():
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["zoo"]
    assert "py.typed" in data and "kit/scaffold/templates/**/*" in data
    assert (ROOT / "zoo" / "py.typed").is_file()
    packages = set(PYPROJECT["tool"]["setuptools"]["packages"])
    # every folder of zoo/ that holds code or templates is a listed package
    for folder in (ROOT / "zoo").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__" and any(
                f.suffix in (".py", ".tmpl") for f in folder.iterdir()):
            name = ".".join(folder.relative_to(ROOT).parts)
            assert name in packages, f"{name} is missing from [tool.setuptools] packages"


# -- types where people read them -------------------------------------------------------------
def test_hook_specs_are_typed_without_importing_torch():
    code = ("import sys, zoo.hookspecs\n"
            "bad = [m for m in ('torch', 'zoo.engine.context', 'zoo.weights', 'click')"
            " if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    import click
    import torch  # noqa: F401

    from zoo.engine.context import RunContext
    from zoo.weights import WeightStore

    ns = {**vars(zoo.hookspecs), "RunContext": RunContext, "WeightStore": WeightStore,
          "ResolvedWeights": object, "click": click, "torch": torch}
    hooks = [n for n in dir(zoo.hookspecs) if hasattr(getattr(zoo.hookspecs, n),
                                                      "zoo_spec")]
    assert len(hooks) >= 9
    for name in hooks:
        hints = typing.get_type_hints(getattr(zoo.hookspecs, name), ns)
        args = getattr(zoo.hookspecs, name).__code__.co_varnames[
            :getattr(zoo.hookspecs, name).__code__.co_argcount]
        assert set(args) <= set(hints) and "return" in hints, name
    assert typing.get_type_hints(zoo.hookspecs.on_epoch_end, ns)["run"] is RunContext
    assert typing.get_type_hints(zoo.hookspecs.register_commands, ns)["cli"] is click.Group


@pytest.mark.parametrize("module", ["zoo.api", "zoo.catalog", "zoo.jobspec", "zoo.layering"])
def test_public_functions_are_annotated(module):
    import ast

    path = ROOT / (module.replace(".", "/") + ".py")
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            params = [p for p in a.posonlyargs + a.args + a.kwonlyargs
                      if p.arg not in ("self", "cls")] + [p for p in (a.vararg, a.kwarg) if p]
            missing += [f"{node.name}({p.arg})" for p in params if p.annotation is None]
            if node.returns is None and node.name != "__init__":
                missing.append(f"{node.name} -> ?")
    assert not missing, f"{module}: unannotated {missing}"


# -- public import paths ----------------------------------------------------------------------
@pytest.mark.parametrize("module", ["zoo", "zoo.testing", "zoo.weights"])
def test_documented_paths_cover_every_exported_name(module):
    documented = {name for mod, name in public_names() if mod == module}
    exported = set(importlib.import_module(module).__all__)
    assert exported <= documented, f"{module}: not in docs/hooks.md {exported - documented}"


def test_documented_error_classes_are_all_of_them():
    import zoo.errors

    documented = {name for mod, name in public_names() if mod == "zoo.errors"}
    classes = {n for n, v in vars(zoo.errors).items()
               if isinstance(v, type) and issubclass(v, zoo.errors.ZooError)}
    assert classes and classes <= documented, classes - documented
