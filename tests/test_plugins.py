"""Plugin loading: failures are recorded not fatal, strict mode, filtering, duplicates,
validation, and every hook spec is exercised through the plugin manager."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from plugin_fixtures import make_plugin
from zoo import hookspecs
from zoo.catalog import Catalog
from zoo.errors import DuplicateComponentError, PluginError
from zoo.plugins import load_plugin_manager

GOOD_HEAD = """
from zoo.hookspecs import hookimpl

def tiny_head(in_features, num_classes):
    from torch import nn
    return nn.Linear(in_features, num_classes)

@hookimpl
def register_heads(register):
    register("tiny-head", tiny_head, description="a test head")
"""


def _sys_path(monkeypatch, path):
    monkeypatch.syspath_prepend(str(path))
    importlib.invalidate_caches()


def test_builtins_load_through_entry_points():
    pm = load_plugin_manager()
    names = {r.name for r in pm.records.values() if r.builtin and r.status == "loaded"}
    assert {"timm", "torchvision", "heads", "strategies", "metrics", "datasets"} <= names


def test_broken_plugin_is_recorded_and_rest_works(tmp_path, monkeypatch):
    make_plugin(tmp_path, "zoo-broken", "zoo_broken_mod", "raise RuntimeError('boom')\n")
    _sys_path(monkeypatch, tmp_path)
    cat = Catalog()
    rec = cat.pm.records["zoo-broken"]
    assert rec.status == "failed" and "boom" in rec.error
    assert "linear" in cat.names("heads")  # everything else still works


def test_strict_mode_makes_failure_fatal(tmp_path, monkeypatch):
    make_plugin(tmp_path, "zoo-broken2", "zoo_broken2_mod", "raise RuntimeError('boom')\n")
    _sys_path(monkeypatch, tmp_path)
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="boom"):
        load_plugin_manager()


def test_load_plugins_filter(monkeypatch):
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", "heads,metrics")
    pm = load_plugin_manager()
    assert set(pm.records) == {"heads", "metrics"}
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", "")
    assert load_plugin_manager().records == {}


def test_duplicate_component_rejected_naming_both(tmp_path, monkeypatch):
    code = GOOD_HEAD.replace('"tiny-head"', '"linear"')
    make_plugin(tmp_path, "zoo-dup", "zoo_dup_mod", code)
    _sys_path(monkeypatch, tmp_path)
    cat = Catalog()
    assert cat.get("heads", "linear").plugin == "heads"
    assert any("'heads'" in d and "'zoo-dup'" in d for d in cat.duplicates)
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    with pytest.raises(DuplicateComponentError, match="zoo-dup"):
        Catalog()


def test_third_party_component_attributed(tmp_path, monkeypatch):
    make_plugin(tmp_path, "zoo-tiny", "zoo_tiny_mod", GOOD_HEAD)
    _sys_path(monkeypatch, tmp_path)
    cat = Catalog()
    comp = cat.get("heads", "tiny-head")
    assert comp.plugin == "zoo-tiny"
    rec = cat.pm.records["zoo-tiny"]
    assert rec.builtin is False and rec.version == "0.1.0"
    assert rec.components == {"heads": ["tiny-head"]}


@pytest.mark.parametrize("code, needle", [
    ("from zoo.hookspecs import hookimpl\n@hookimpl\ndef register_heads(register, bogus):\n"
     "    pass\n", "bogus"),
    ("from zoo.hookspecs import hookimpl\n@hookimpl\ndef register_hedas(register):\n"
     "    pass\n", "register_hedas"),
    ("from zoo.hookspecs import hookimpl\n@hookimpl\ndef register_heads(register):\n"
     "    raise ValueError('bad register')\n", "bad register"),
])
def test_invalid_plugins_reported_against_their_name(tmp_path, monkeypatch, code, needle):
    make_plugin(tmp_path, "zoo-invalid", f"zoo_invalid_{abs(hash(code))}", code)
    _sys_path(monkeypatch, tmp_path)
    cat = Catalog()
    rec = cat.pm.records["zoo-invalid"]
    assert rec.status == "failed" and needle in rec.error
    assert "linear" in cat.names("heads")


def test_optionalhook_allowed(tmp_path, monkeypatch):
    code = ("from zoo.hookspecs import hookimpl\n@hookimpl(optionalhook=True)\n"
            "def some_future_hook(x):\n    pass\n")
    make_plugin(tmp_path, "zoo-opt", "zoo_opt_mod", code)
    _sys_path(monkeypatch, tmp_path)
    assert Catalog().pm.records["zoo-opt"].status == "loaded"


def test_zoo_plugins_shows_failure_exit_zero(tmp_path):
    make_plugin(tmp_path, "zoo-broken3", "zoo_broken3_mod", "raise ImportError('nope')\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "zoo", "plugins", "--json"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import json

    recs = {r["name"]: r for r in json.loads(out.stdout) if r["name"]}
    assert recs["zoo-broken3"]["status"] == "failed"
    assert recs["heads"]["status"] == "loaded"


# -- every hook spec is called through the plugin manager in some test -----------------
HOOK_TESTS = {
    "register_backbone_providers": "test_catalog.py",
    "register_heads": "test_plugins.py",
    "register_strategies": "test_strategies_core.py",
    "register_metrics": "test_run_e2e.py",
    "register_datasets": "test_run_e2e.py",
    "register_loggers": "test_component_defaults.py",
    "resolve_weights": "test_hooks.py",
    "register_commands": "test_hooks.py",
    "on_epoch_end": "test_hooks.py",
    "on_run_end": "test_hooks.py",
}


def test_every_hook_has_a_test():
    specs = {n for n in dir(hookspecs) if n.startswith(("register_", "on_", "resolve_"))}
    assert specs == set(HOOK_TESTS), f"add tests for {specs ^ set(HOOK_TESTS)}"
    from pathlib import Path

    here = Path(__file__).parent
    for hook, filename in HOOK_TESTS.items():
        assert hook in (here / filename).read_text(), f"{filename} does not exercise {hook}"


def test_hooks_doc_lists_every_hook_with_arguments():
    import inspect
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "hooks.md").read_text()
    for name in dir(hookspecs):
        fn = getattr(hookspecs, name)
        if name.startswith(("register_", "on_", "resolve_")):
            sig = f"{name}({', '.join(inspect.signature(fn).parameters)})"
            assert sig in doc, f"docs/hooks.md must show `{sig}`"
