"""Names: a third-party plugin's ``bitfit`` next to zoo's — addressable as ``acme:bitfit``,
warned about when shadowed, chosen by ``registry.yaml``, recorded in ``summary.json``."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from plugin_fixtures import make_plugin
from zoo_cli_helpers import TINY_FLAGS, assert_one_line_error, cli

ACME = """
from zoo.hookspecs import hookimpl


class AcmeBitfit:
    name = "bitfit"
    defaults = {"acme_marker": 7}
    description = "acme's bias fine-tuning (older than zoo's)"

    def plan(self, model, groups, job, ctx=None):
        from zoo.catalog import get_catalog
        from dataclasses import replace

        probe = get_catalog().get("strategies", "strategies:linear-probe").obj
        job = replace(job, strategy=replace(job.strategy, params={}))
        return probe.plan(model, groups, job)


@hookimpl
def register_strategies(register):
    register("bitfit", AcmeBitfit(), description="acme's bitfit")
"""
RUN = ["timm:test_resnet", "--epochs", "1", *TINY_FLAGS, "--json"]


@pytest.fixture
def acme(tmp_path, monkeypatch):
    site = tmp_path / "site"
    make_plugin(site, "zoo-acme", "zoo_acme_mod", ACME, ep_name="acme", version="2.3.4")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return site


def _strategy(summary: dict) -> dict:
    (entry,) = summary["components"]["strategies"]
    return entry


def test_bare_name_keeps_the_builtin_and_warns_naming_both(acme, capsys, tmp_path):
    code, out, err = cli(capsys, "run", *RUN, "-s", "bitfit", "--out", tmp_path)
    assert code == 0, err
    summary = json.loads(out)
    assert _strategy(summary)["plugin"] == "strategies"
    assert _strategy(summary)["distribution"] == "zoo"
    shadow = [w for w in summary["warnings"] if "strategy 'bitfit'" in w]
    assert shadow and "'strategies', 'acme'" in shadow[0] and "acme:bitfit" in shadow[0]
    # every component the run used, with its plugin and version
    kinds = summary["components"]
    assert kinds["providers"][0] == {"name": "timm", "registered_as": "timm", "plugin": "timm",
                                     "distribution": "zoo", "version": kinds["providers"][0][
                                         "version"]}
    assert kinds["datasets"][0]["name"] == "demo" and kinds["heads"][0]["plugin"] == "heads"
    # the job's metrics and those every run computes (always=True)
    assert {m["name"] for m in kinds["metrics"]} >= {"accuracy", "confusion"}


def test_qualified_name_runs_the_third_party_strategy(acme, capsys, tmp_path):
    code, out, err = cli(capsys, "run", *RUN, "-s", "acme:bitfit", "--out", tmp_path)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["strategy"] == "acme:bitfit"
    assert _strategy(summary) == {"name": "acme:bitfit", "registered_as": "bitfit",
                                  "plugin": "acme", "distribution": "zoo-acme",
                                  "version": "2.3.4"}
    assert not [w for w in summary["warnings"] if "registered by plugins" in w]
    # acme's plan is a linear probe: only the head trains
    assert [p["name"] for p in summary["phases"]] == ["probe"]
    # --set takes the qualified name too; the built-in is addressable the same way
    code, out, err = cli(capsys, "run", *RUN, "--set", "strategy.name=strategies:bitfit",
                         "--out", tmp_path)
    assert code == 0, err
    assert _strategy(json.loads(out))["plugin"] == "strategies"


def test_registry_choose_makes_the_third_party_one_the_bare_name(acme, capsys, tmp_path):
    registry = tmp_path / "reg.yaml"
    registry.write_text("choose:\n  strategies: {bitfit: acme}\n")
    code, out, err = cli(capsys, "run", *RUN, "-s", "bitfit", "--registry", registry,
                         "--out", tmp_path)
    assert code == 0, err
    summary = json.loads(out)
    assert _strategy(summary)["plugin"] == "acme"
    shadow = [w for w in summary["warnings"] if "strategy 'bitfit'" in w]
    assert shadow and "'acme', 'strategies'" in shadow[0]
    bad = tmp_path / "bad.yaml"  # registries are cached by path
    bad.write_text("choose:\n  bogus: {bitfit: acme}\n")
    code, _, err = cli(capsys, "run", *RUN, "--registry", bad, "--out", tmp_path)
    assert "'choose' maps a kind" in assert_one_line_error(err, code)


def test_listing_and_unknown_qualified_names(acme, capsys, tmp_path):
    code, out, _ = cli(capsys, "plugins")
    assert code == 0 and "'strategies' answers the bare name, acme:bitfit names the other" in \
        " ".join(out.split())
    code, out, _ = cli(capsys, "strategies", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["bitfit"]["plugin"] == "strategies" and rows["acme:bitfit"]["plugin"] == "acme"
    code, _, err = cli(capsys, "run", *RUN, "-s", "acme:finetune", "--out", tmp_path)
    assert "unknown strategy 'acme:finetune'" in assert_one_line_error(err, code)
    code, _, err = cli(capsys, "run", *RUN, "--head", "heads:linear", "-s", "linear-probe",
                       "--out", tmp_path, "--name", "h")
    assert code == 0, err


def test_compare_takes_qualified_strategies_and_their_sets(acme, capsys, tmp_path):
    from zoo.tools.compare import split_sets

    per = split_sets(["train.lr=0.1", "acme:bitfit:train.epochs=2"], ["acme:bitfit", "bitfit"])
    assert per == {"acme:bitfit": ["train.lr=0.1", "train.epochs=2"], "bitfit": ["train.lr=0.1"]}
    code, out, err = cli(capsys, "compare", "timm:test_resnet", "-S", "acme:bitfit,bitfit",
                         "--epochs", "1", *TINY_FLAGS, "--out", tmp_path, "--json")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    assert [(r["strategy"], r["status"]) for r in runs] == [("acme:bitfit", "completed"),
                                                           ("bitfit", "completed")]
    plugins = [json.loads((Path(r["run_dir"]) / "summary.json").read_text())["components"]
               ["strategies"][0]["plugin"] for r in runs]
    assert plugins == ["acme", "strategies"]


def test_the_testing_kit_exercises_the_plugin_under_test(acme):
    """A third-party bitfit's own tests (zoo.testing's catalog) get its bitfit, not zoo's."""
    from zoo.testing import make_catalog

    module = importlib.import_module("zoo_acme_mod")
    catalog = make_catalog(module)
    assert catalog.get("strategies", "bitfit").plugin == "acme"
    assert catalog.get("strategies", "strategies:bitfit").obj.__class__.__name__ != "AcmeBitfit"
    assert make_catalog().get("strategies", "bitfit").plugin == "strategies"
