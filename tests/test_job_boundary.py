"""Issue 23, points 1 and 7: a job is built and completed once, at the API boundary, with an
explicit catalog (the engine builds neither); the kit's tiny runs take that same path; every
environment variable is read by one settings module with one set of rules."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from zoo_cli_helpers import assert_one_line_error, cli

ROOT = Path(__file__).resolve().parents[1]


def _runtime_imports(path: Path) -> set[str]:
    """Modules a file imports outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_the_engine_never_imports_the_job_builder_or_the_catalog():
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _runtime_imports(p)
                                            if m in ("zoo.catalog", "zoo.layering"))
           for p in (ROOT / "zoo" / "engine").glob("*.py")}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_the_import_check_can_fail(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from zoo.catalog import Catalog\nfrom zoo.layering import load_job\n")
    assert _runtime_imports(path) == {"typing", "zoo.layering"}


def test_the_engine_runs_a_given_job_without_building_one(tmp_path, monkeypatch):
    """The engine is handed a complete job and a catalog: completing a job, building one or
    constructing a catalog inside it fails this test."""
    import zoo.catalog
    import zoo.layering
    from zoo.engine.pipeline import plan_job, run
    from zoo.kit.testing import make_catalog, tiny_job

    catalog = make_catalog()
    job = zoo.layering.complete_job(tiny_job(out=str(tmp_path)), catalog)

    def refuse(*args, **kwargs):
        raise AssertionError("the engine built a job or a catalog")

    for name in ("complete_job", "build_job", "load_job"):
        monkeypatch.setattr(zoo.layering, name, refuse)
    monkeypatch.setattr(zoo.catalog, "get_catalog", refuse)
    monkeypatch.setattr(zoo.catalog.Catalog, "__init__", refuse)
    summary = run(job, catalog, quiet=True)
    assert summary["status"] == "completed" and summary["strategy"] == job.strategy.name
    assert plan_job(job, catalog)["strategy"] == job.strategy.name


def test_run_tiny_applies_component_job_defaults_like_the_cli(tmp_path):
    """linear-probe's job_defaults set train.lr 0.01 and weight_decay 0: a plugin's test sees
    the job its users get (before, the kit's runs skipped job_defaults)."""
    from zoo.jobspec import TrainSpec
    from zoo.kit.testing import make_catalog, run_tiny

    assert TrainSpec().lr != 0.01
    summary = run_tiny(make_catalog(), tmp_path, strategy={"name": "linear-probe"})
    saved = yaml.safe_load((Path(summary["run_dir"]) / "job.yaml").read_text())
    assert saved["train"]["lr"] == 0.01 and saved["train"]["weight_decay"] == 0.0
    # what the job names still wins over a component's default
    summary = run_tiny(make_catalog(), tmp_path, name="given",
                       strategy={"name": "linear-probe"}, train={"lr": 0.05})
    saved = yaml.safe_load((Path(summary["run_dir"]) / "job.yaml").read_text())
    assert saved["train"]["lr"] == 0.05


# -- settings (point 7) ----------------------------------------------------------------------
@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("YES", True),
                                            ("on", True), ("0", False), ("false", False),
                                            ("no", False), ("off", False), ("", False)])
def test_one_truthiness_rule(monkeypatch, value, expected):
    from zoo import settings

    monkeypatch.setenv("ZOO_STRICT_PLUGINS", value)
    assert settings.flag("ZOO_STRICT_PLUGINS") is expected
    from zoo.plugins import strict_plugins

    assert strict_plugins() is expected


def test_a_malformed_flag_is_an_error(monkeypatch):
    from zoo import settings

    monkeypatch.setenv("ZOO_OFFLINE", "maybe")
    with pytest.raises(settings.SettingsError, match="ZOO_OFFLINE='maybe'"):
        settings.flag("ZOO_OFFLINE")


def test_zoo_home_has_one_default(monkeypatch, tmp_path):
    from zoo import modelcache, settings
    from zoo.weights import formats

    monkeypatch.delenv("ZOO_HOME", raising=False)
    assert settings.zoo_home() == Path.home() / ".cache" / "zoo"
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    assert formats.zoo_home() == tmp_path
    assert modelcache.cache_root() == tmp_path / "cache" / "models"
    # no other module computes the default itself
    offenders = [str(p.relative_to(ROOT)) for p in list((ROOT / "zoo").rglob("*.py"))
                 + list((ROOT / "plugins").rglob("*.py"))
                 if ".cache" in p.read_text() and '"zoo"' in p.read_text()
                 and p.name != "settings.py" and "tests" not in p.parts]
    assert not offenders, offenders


def test_only_the_settings_module_reads_zoo_variables():
    reads = []
    for path in list((ROOT / "zoo").rglob("*.py")) + list((ROOT / "plugins").rglob("*.py")):
        if path.name == "settings.py" or "tests" in path.parts:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if ("environ.get(\"ZOO_" in line or "environ[\"ZOO_" in line
                    or "getenv(\"ZOO_" in line):
                reads.append(f"{path.relative_to(ROOT)}:{i}")
    assert not reads, reads


@pytest.mark.parametrize("value", ["interrupt_at:1", "nan_at:x:1", "signal_at:1:2:NOPE",
                                   "explode"])
def test_a_malformed_fault_is_a_one_line_error(capsys, monkeypatch, value):
    monkeypatch.setenv("ZOO_FAULT", value)
    code, out, err = cli(capsys, "list")
    assert_one_line_error(err, code)
    assert "ZOO_FAULT" in err


@pytest.mark.parametrize("value", ["interrupt_after_epoch:2", "interrupt_at:1:3",
                                   "signal_at:1:2", "signal_at:1:2:TERM", "nan_at:1:1",
                                   "nan_always", "crash_rank:1", "kill_during_write:x.json:2",
                                   "kill_during_write:summary.json", "abort_in_export"])
def test_every_documented_fault_is_accepted(monkeypatch, value):
    from zoo import settings

    monkeypatch.setenv("ZOO_FAULT", value)
    assert settings.fault() == value
    assert f"`{value.split(':')[0]}" in (ROOT / "docs" / "reliability.md").read_text()


def test_a_malformed_debug_flag_exits_2(capsys, monkeypatch):
    monkeypatch.setenv("ZOO_DEBUG", "loud")
    code, out, err = cli(capsys, "list")
    assert_one_line_error(err, code)
    assert "ZOO_DEBUG" in err


def test_docs_cli_lists_every_variable():
    from zoo import settings

    assert settings.markdown_table() in (ROOT / "docs" / "cli.md").read_text()
    assert len(settings.VARIABLES) >= 15
    assert {"ZOO_HOME", "ZOO_FAULT", "ZOO_REGISTRY"} <= {v.name for v in settings.VARIABLES}


def test_a_job_is_completed_once_at_the_api_boundary(monkeypatch):
    """prepare_job completes a JobSpec with unset names; a job built from layers (the CLI's
    load_job) is complete already and passes through untouched."""
    import zoo.api
    from zoo.kit.testing import make_catalog, tiny_job

    catalog = make_catalog()
    bare = tiny_job()
    assert bare.strategy.name is None and bare.head.name is None  # names left unset
    done, cat = zoo.api.prepare_job(bare, catalog=catalog)
    assert cat is catalog and done.strategy.name and done.head.name
    calls = []
    monkeypatch.setattr(zoo.api, "complete_job", lambda *a: calls.append(a))
    again, _ = zoo.api.prepare_job(done, catalog=catalog)
    assert again is done and calls == []
