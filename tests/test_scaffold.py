"""``zoo new-plugin``: every kind writes an installable package that zoo loads, that works in a
real ``zoo run``, and whose own generated tests pass.

No pip install: each generated package gets a ``.dist-info`` built from *its own*
``pyproject.toml`` (name, version, ``[project.entry-points.zoo]``) next to it, and its folder
goes on PYTHONPATH — what an editable install amounts to for zoo's entry-point loading.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.kit.scaffold import KINDS, new_plugin, plugin_names

PREFIX = "scaf"   # component names scaf-head, scaf-strategy ... (not taken by anything else)


def _zoo(args, env_path=(), cwd=None, timeout=300):
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join(map(str, env_path))}
    return subprocess.run([sys.executable, "-m", "zoo", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def install_as_dist_info(root: Path) -> str:
    """Write ``<name>-<version>.dist-info`` for the package at ``root`` from its pyproject."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    eps = project["entry-points"]["zoo"]
    (info / "entry_points.txt").write_text(
        "[zoo]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    return name


# -- names and refusals (fast, no torch) -----------------------------------------------------
def test_names():
    n = plugin_names("cosine-head")
    assert (n.component, n.dist, n.package, n.entry_point, n.cls) == (
        "cosine-head", "zoo-cosine-head", "zoo_cosine_head", "cosine-head", "CosineHead")
    assert plugin_names("zoo-foo").dist == "zoo-foo" and plugin_names("zoo-foo").component == "foo"


@pytest.mark.parametrize("bad", ["Bad", "my head", "1st", "a--b", "-a", "a-", "a_b", "zoo",
                                 "zoo-", "x" * 41, "über", "testing"])
def test_bad_names_are_one_line_errors(bad, tmp_path):
    with pytest.raises(ZooError):
        new_plugin(bad, "head", tmp_path, check_catalog=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_errors_exit_2_one_line(tmp_path):
    bad = _zoo(["new-plugin", "Bad Name", "--kind", "head", "--dir", str(tmp_path)])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: plugin name 'Bad Name' is not usable")
    (tmp_path / "zoo-taken").mkdir()
    (tmp_path / "zoo-taken" / "keep.txt").write_text("mine")
    taken = _zoo(["new-plugin", "taken", "--kind", "metric", "--dir", str(tmp_path)])
    assert taken.returncode == 2 and "already exists and is not empty" in taken.stderr
    assert taken.stderr.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "zoo-taken").iterdir()) == ["keep.txt"]
    kind = _zoo(["new-plugin", "x", "--kind", "optimizer", "--dir", str(tmp_path)])
    assert kind.returncode == 2 and "--kind" in kind.stderr
    dup = _zoo(["new-plugin", "linear", "--kind", "head", "--dir", str(tmp_path)])
    assert dup.returncode == 2 and "already registered by plugin 'heads'" in dup.stderr


def test_empty_existing_dir_is_fine(tmp_path):
    (tmp_path / "zoo-empty").mkdir()
    root, files = new_plugin("empty", "head", tmp_path, check_catalog=False)
    assert root == tmp_path / "zoo-empty" and len(files) == 4


@pytest.mark.parametrize("kind", KINDS)
def test_generated_package_shape(kind, tmp_path):
    root, files = new_plugin(f"{PREFIX}-{kind}", kind, tmp_path)
    pkg = f"zoo_{PREFIX}_{kind}"
    assert sorted(str(p.relative_to(root)) for p in files) == sorted(
        ["pyproject.toml", "README.md", f"{pkg}/__init__.py", f"tests/test_{pkg}.py"])
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == f"zoo-{PREFIX}-{kind}"
    assert project["project"]["entry-points"]["zoo"] == {f"{PREFIX}-{kind}": pkg}
    assert project["tool"]["setuptools"]["packages"] == [pkg]
    for path in files:
        if path.suffix == ".py":
            compile(path.read_text(), str(path), "exec")
        assert "__" + "COMPONENT" not in path.read_text()   # every placeholder filled
    assert f"zoo-{PREFIX}-{kind}" in (root / "README.md").read_text()


# -- the generated plugins, loaded and used ----------------------------------------------------
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Every kind generated (via the CLI) and 'installed' as dist-infos."""
    base = tmp_path_factory.mktemp("scaffold")
    roots = {}
    for kind in KINDS:
        proc = _zoo(["new-plugin", f"{PREFIX}-{kind}", "--kind", kind, "--dir", str(base)])
        assert proc.returncode == 0, proc.stderr
        assert "created" in proc.stdout and "pip install -e ." in proc.stdout
        roots[kind] = base / f"zoo-{PREFIX}-{kind}"
        install_as_dist_info(roots[kind])
    return base, roots


def test_generated_plugins_load_through_entry_points(generated, monkeypatch):
    from zoo.testing import make_catalog

    _, roots = generated
    for root in roots.values():
        monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    cat = make_catalog(entry_points=True)
    table = {"backbone": "providers", "head": "heads", "strategy": "strategies",
             "metric": "metrics", "dataset": "datasets", "logger": "loggers"}
    for kind in KINDS:
        rec = cat.pm.records[f"{PREFIX}-{kind}"]
        assert rec.status == "loaded", rec.error
        assert rec.distribution == f"zoo-{PREFIX}-{kind}" and not rec.builtin
        assert rec.components == {table[kind]: [f"{PREFIX}-{kind}"]}
    assert [r.full for r in
            cat.list_models(f"{PREFIX}-backbone:*")] == [
        f"{PREFIX}-backbone:convnet_s", f"{PREFIX}-backbone:convnet_m"]


@pytest.mark.slow
def test_zoo_run_uses_every_generated_kind(generated, tmp_path):
    _, roots = generated
    out = tmp_path / "runs"
    proc = _zoo(["run", f"{PREFIX}-backbone:convnet_s", "--weights", "none",
                 "--head", f"{PREFIX}-head", "--strategy", f"{PREFIX}-strategy",
                 "--metrics", f"accuracy,{PREFIX}-metric", "--data", f"{PREFIX}-dataset",
                 "--set", f"loggers=[{PREFIX}-logger]",
                 "--set", "data.params.per_class=20", "--epochs", "2", "--batch-size", "16",
                 "--device", "cpu", "--out", str(out), "--name", "scaffolded", "--json"],
                env_path=roots.values(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "completed"
    assert summary["provider"] == f"{PREFIX}-backbone"
    assert summary["model"] == f"{PREFIX}-backbone:convnet_s"
    assert summary["strategy"] == f"{PREFIX}-strategy"
    assert 0.0 <= summary["test"][f"{PREFIX}-metric"] <= 1.0
    assert summary["num_classes"] == 4                      # the dataset template's default
    assert {f"{PREFIX}-{k}" for k in KINDS} <= set(summary["versions"]["plugins"])
    job = (out / "scaffolded" / "job.yaml").read_text()
    assert f"name: {PREFIX}-head" in job and f"name: {PREFIX}-dataset" in job
    lines = (out / "scaffolded" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["phase"] for x in lines] == ["head", "top-1"]  # the strategy's plan
    logged = (out / "scaffolded" / f"{PREFIX}-logger.jsonl").read_text().splitlines()
    assert [json.loads(x).get("epoch") for x in logged] == [1, 2, None]  # the logger's file
    assert f"weight_decay: {1e-4}" in job or "weight_decay: 0.0001" in job  # job_defaults


@pytest.mark.slow
def test_generated_tests_pass(generated):
    base, roots = generated
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(r) for r in roots.values())}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *[str(r / "tests") for r in roots.values()]],
                          cwd=base, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
