"""Plugin management from the outside: ``zoo plugins`` (table, --json, --hook, --requirements),
``ZOO_TRACE_PLUGINS``, load-time validation reported against the plugin, a provider whose
listing raises, a strategy returning the wrong type, registry ``requires:``, and the built-in
loggers plugin (the worked example of the observer hooks)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from plugin_fixtures import make_plugin
from zoo.errors import PluginError, ZooError
from zoo.hookspecs import hookimpl
from zoo.testing import make_catalog, run_tiny

HEAD = """
from zoo.hookspecs import hookimpl

def tiny_head(in_features, num_classes):
    from torch import nn
    return nn.Linear(in_features, num_classes)

@hookimpl
def register_heads(register):
    register("cli-head", tiny_head, description="a test head")
"""

BAD_PROVIDER = """
from zoo.hookspecs import hookimpl

class Broken:
    def list_models(self, pretrained=False):
        raise RuntimeError("catalog server down")
    def info(self, arch):
        return {}
    def create(self, arch, tag=None, pretrained=False):
        raise AssertionError("never")
    def layer_groups(self, backbone):
        return []

@hookimpl
def register_backbone_providers(register):
    register("brokenprov", Broken())
"""


def zoo(args, path=(), env=None, timeout=300, cwd=None):
    full = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250",
            "PYTHONPATH": os.pathsep.join(map(str, path)), **(env or {})}
    return subprocess.run([sys.executable, "-m", "zoo", *args], env=full, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


@pytest.fixture
def head_plugin(tmp_path):
    return make_plugin(tmp_path / "head", "zoo-cli-head", "zoo_cli_head_mod", HEAD,
                       version="1.2.3")


# -- zoo plugins ---------------------------------------------------------------------------
def test_plugins_table_lists_builtins_and_third_party(head_plugin):
    out = zoo(["plugins"], [head_plugin])
    assert out.returncode == 0, out.stderr
    for name in ("timm", "torchvision", "heads", "strategies", "metrics", "datasets",
                 "loggers", "zoo-cli-head"):
        assert name in out.stdout
    assert "(built-in)" in out.stdout and "1.2.3" in out.stdout and "cli-head" in out.stdout


def test_plugins_json(head_plugin):
    out = zoo(["plugins", "--json"], [head_plugin])
    assert out.returncode == 0, out.stderr
    recs = {r["name"]: r for r in json.loads(out.stdout) if r["name"]}
    rec = recs["zoo-cli-head"]
    assert rec["status"] == "loaded" and rec["builtin"] is False
    assert rec["distribution"] == "zoo-cli-head" and rec["version"] == "1.2.3"
    assert rec["hooks"] == ["register_heads"]
    assert rec["components"] == {"heads": ["cli-head"]}
    assert recs["heads"]["builtin"] is True and recs["heads"]["components"]["heads"]
    assert "register_loggers" in recs["loggers"]["hooks"]
    assert recs["loggers"]["components"]["loggers"] == ["csv", "tensorboard"]


def test_plugins_hook_filter(head_plugin):
    out = zoo(["plugins", "--json", "--hook", "register_heads"], [head_plugin])
    assert out.returncode == 0, out.stderr
    recs = [r for r in json.loads(out.stdout) if r["name"]]
    assert {"heads", "zoo-cli-head"} <= {r["name"] for r in recs}
    assert all("register_heads" in r["hooks"] for r in recs)     # only plugins with the hook
    assert not {"metrics", "timm", "loggers"} & {r["name"] for r in recs}
    observers = zoo(["plugins", "--json", "--hook", "on_epoch_end"])
    assert observers.returncode == 0, observers.stderr
    listed = [r for r in json.loads(observers.stdout) if r["name"]]
    assert all("on_epoch_end" in r["hooks"] for r in listed)
    assert "loggers" not in {r["name"] for r in listed}  # loggers are a kind, not observers
    bad = zoo(["plugins", "--hook", "register_head"])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "unknown hook 'register_head'" in bad.stderr and "register_heads" in bad.stderr


def test_plugins_requirements(head_plugin):
    out = zoo(["plugins", "--requirements"], [head_plugin])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "zoo-cli-head==1.2.3" in lines
    assert not any(line.startswith("zoo==") for line in lines)   # built-ins are not pinned
    assert all("==" in line for line in lines)


def test_failed_plugin_shown_with_its_error(tmp_path, head_plugin):
    broken = make_plugin(tmp_path / "broken", "zoo-cli-broken", "zoo_cli_broken_mod",
                         "import torch_that_does_not_exist\n")
    out = zoo(["plugins"], [head_plugin, broken])
    assert out.returncode == 0, out.stderr
    assert "failed" in out.stdout
    assert "zoo-cli-broken: import failed: ModuleNotFoundError" in " ".join(out.stdout.split())
    heads = zoo(["heads", "--json"], [head_plugin, broken])     # everything else still works
    assert {h["name"] for h in json.loads(heads.stdout)} >= {"linear", "cli-head"}
    strict = zoo(["heads"], [head_plugin, broken], env={"ZOO_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2 and "zoo-cli-broken" in strict.stderr


def test_trace_plugins_prints_hook_calls_on_stderr(head_plugin):
    out = zoo(["heads", "--json"], [head_plugin], env={"ZOO_TRACE_PLUGINS": "1"})
    assert out.returncode == 0, out.stderr
    trace = [line for line in out.stderr.splitlines() if line.startswith("[zoo trace]")]
    assert any("zoo-cli-head.register_heads" in line and " ms" in line for line in trace)
    assert any("heads.register_heads" in line for line in trace)
    json.loads(out.stdout)                                     # stdout stays clean JSON
    quiet = zoo(["heads", "--json"], [head_plugin])
    assert "[zoo trace]" not in quiet.stderr


# -- validation at load, reported against the plugin ----------------------------------------
def test_invalid_implementations_reported_by_zoo_plugins(tmp_path):
    extra = make_plugin(tmp_path / "a", "zoo-extra-arg", "zoo_extra_arg_mod",
                        "from zoo.hookspecs import hookimpl\n@hookimpl\n"
                        "def register_heads(register, colour):\n    pass\n")
    typo = make_plugin(tmp_path / "b", "zoo-typo-hook", "zoo_typo_hook_mod",
                       "from zoo.hookspecs import hookimpl\n@hookimpl\n"
                       "def on_epoch_ends(run):\n    pass\n")
    out = zoo(["plugins", "--json"], [extra, typo])
    assert out.returncode == 0, out.stderr
    recs = {r["name"]: r for r in json.loads(out.stdout) if r["name"]}
    assert recs["zoo-extra-arg"]["status"] == "failed"
    assert "colour" in recs["zoo-extra-arg"]["error"]
    assert recs["zoo-typo-hook"]["status"] == "failed"
    assert "unknown hook on_epoch_ends" in recs["zoo-typo-hook"]["error"]
    assert "optionalhook" in recs["zoo-typo-hook"]["error"]


class BrokenProviderPlugin:
    name = "zoo-broken-provider"

    @hookimpl
    def register_backbone_providers(self, register):
        class Broken:
            def list_models(self, pretrained=False):
                raise RuntimeError("catalog server down")

        register("brokenprov", Broken())


def test_provider_whose_listing_raises_is_skipped_and_reported(capsys, monkeypatch):
    cat = make_catalog(BrokenProviderPlugin())
    refs = cat.list_models("tiny_cnn*", providers=["brokenprov", "testing"])
    assert [r.full for r in refs] == ["testing:tiny_cnn", "testing:tiny_cnn_wide"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: provider 'brokenprov' (plugin "
                                                   "'zoo-broken-provider')")
    assert "catalog server down" in err
    assert "catalog server down" in cat.pm.records["zoo-broken-provider"].error
    assert cat.resolve_model("tiny_cnn").full == "testing:tiny_cnn"   # others still resolve
    with pytest.raises(PluginError, match="plugin 'zoo-broken-provider'.*server down"):
        cat.resolve_model("brokenprov:anything")
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="server down"):
        make_catalog(BrokenProviderPlugin()).list_models("x*")


def test_zoo_list_survives_a_broken_provider(tmp_path):
    bad = make_plugin(tmp_path, "zoo-bad-provider", "zoo_bad_provider_mod", BAD_PROVIDER)
    out = zoo(["list", "test_resnet", "--json"], [bad])
    assert out.returncode == 0, out.stderr
    assert [m["name"] for m in json.loads(out.stdout)] == ["test_resnet"]
    assert "provider 'brokenprov' (plugin 'zoo-bad-provider') could not list its models: " \
           "RuntimeError: catalog server down" in out.stderr
    named = zoo(["list", "brokenprov:*"], [bad])
    assert named.returncode == 2 and "zoo-bad-provider" in named.stderr


class WrongPlanPlugin:
    name = "zoo-wrong-plan"

    @hookimpl
    def register_strategies(self, register):
        class Wrong:
            def plan(self, model, groups, job, ctx=None):
                return {"phases": []}

        register("wrong-plan", Wrong())


def test_strategy_returning_the_wrong_type_names_its_plugin(tmp_path):
    with pytest.raises(ZooError, match=r"plugin 'zoo-wrong-plan' broke the strategy contract "
                                       r"in its strategy 'wrong-plan': plan\(\) returned dict, "
                                       r"not a zoo.strategy.StrategyPlan"):
        run_tiny(make_catalog(WrongPlanPlugin()), tmp_path, strategy={"name": "wrong-plan"})


def test_make_catalog_reports_a_failing_plugin_under_test():
    class Raises:
        name = "zoo-raises"

        @hookimpl
        def register_heads(self, register):
            raise ValueError("bad head table")

    with pytest.raises(AssertionError, match="zoo-raises.*bad head table"):
        make_catalog(Raises())


# -- registry requires: --------------------------------------------------------------------
RUN = ["run", "timm:test_resnet", "--weights", "none", "--epochs", "1",
       "--set", "data.params.per_class=20", "--plan"]


def test_registry_requires_missing_plugin_is_a_plugin_error(tmp_path):
    reg = tmp_path / "registry.yaml"
    reg.write_text('requires: ["zoo-definitely-not-installed>=0.1"]\n')
    out = zoo([*RUN, "--registry", str(reg)], cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "requires plugin 'zoo-definitely-not-installed', which is not installed" in out.stderr
    assert "pip install 'zoo-definitely-not-installed>=0.1'" in out.stderr
    env = zoo(RUN, env={"ZOO_REGISTRY": str(reg)}, cwd=tmp_path)
    assert env.returncode == 2 and "zoo-definitely-not-installed" in env.stderr


def test_registry_requires_too_old_plugin(tmp_path, head_plugin):
    reg = tmp_path / "registry.yaml"
    reg.write_text('requires: ["zoo-cli-head>=2.0"]\n')
    out = zoo([*RUN, "--registry", str(reg)], [head_plugin], cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "requires 'zoo-cli-head>=2.0' but zoo-cli-head 1.2.3 is installed" in out.stderr
    assert "pip install -U" in out.stderr


@pytest.mark.slow
def test_registry_requires_satisfied_runs(tmp_path, head_plugin):
    reg = tmp_path / "registry.yaml"
    reg.write_text('requires: ["zoo-cli-head>=1.2"]\n')
    out = zoo([*RUN, "--json", "--head", "cli-head", "--registry", str(reg)], [head_plugin],
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["phases"]


# -- the loggers plugin --------------------------------------------------------------------
def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_logger_writes_one_row_per_epoch(tmp_path):
    summary = run_tiny(make_catalog(), tmp_path, loggers=["csv"], train={"epochs": 2})
    run_dir = Path(summary["run_dir"])
    rows = _read_csv(run_dir / "log.csv")
    history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"phase", "train.loss", "val.accuracy", "val.loss", "seconds"} <= set(rows[0])
    for row, rec in zip(rows, history):
        assert float(row["train.loss"]) == pytest.approx(rec["train"]["loss"])
        assert float(row["val.accuracy"]) == pytest.approx(rec["val"]["accuracy"])
    assert not summary["warnings"]


def test_no_loggers_no_files(tmp_path):
    summary = run_tiny(make_catalog(), tmp_path)
    assert not (Path(summary["run_dir"]) / "log.csv").exists()


def test_unknown_logger_is_a_warning_with_did_you_mean(tmp_path):
    """A JobSpec handed to the API as it is (not built from layers) gets a warning for an
    unknown logger; built from layers, as the CLI and the kit's run_tiny build it, the job
    is refused before any work (the next test)."""
    from zoo import api
    from zoo.kit.testing import tiny_job

    summary = api.run(tiny_job(out=str(tmp_path), loggers=["csvv", "csv"]),
                      catalog=make_catalog())
    msg = [w for w in summary["warnings"] if "logger" in w]
    (line,) = msg
    assert line.startswith("WARNING: unknown logger 'csvv' — did you mean csv? (known: csv, ")
    assert "tensorboard" in line and line.endswith("; ignored")
    assert (Path(summary["run_dir"]) / "log.csv").is_file()      # the known one still logs
    from zoo_loggers import known_loggers

    assert set(known_loggers()) == {"csv", "tensorboard"}


def test_run_tiny_refuses_an_unknown_logger_as_the_cli_does(tmp_path):
    from zoo.errors import UnknownComponentError

    with pytest.raises(UnknownComponentError, match="csvv.*did you mean csv"):
        run_tiny(make_catalog(), tmp_path, loggers=["csvv", "csv"])


def test_tensorboard_missing_is_a_one_line_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # import fails
    summary = run_tiny(make_catalog(), tmp_path, loggers=["tensorboard"])
    assert summary["status"] == "completed"
    (msg,) = [w for w in summary["warnings"] if "tensorboard" in w]
    assert "pip install tensorboard" in msg and "\n" not in msg


def test_tensorboard_logger_writes_scalars(tmp_path, monkeypatch):
    writers = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir, self.scalars, self.closed = log_dir, [], False
            writers.append(self)

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            self.closed = True

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    summary = run_tiny(make_catalog(), tmp_path, loggers=["tensorboard"], train={"epochs": 2})
    (w,) = writers
    assert w.log_dir == str(Path(summary["run_dir"]) / "tensorboard") and w.closed
    tags = {(tag, step) for tag, _, step in w.scalars}
    assert {("train/loss", 1), ("train/loss", 2), ("val/accuracy", 1), ("val/accuracy", 2),
            ("test/accuracy", 2)} <= tags
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v, _ in w.scalars)


@pytest.mark.slow
def test_cli_set_loggers_csv(tmp_path):
    out = zoo(["run", "timm:test_resnet", "--weights", "none", "--epochs", "2",
               "--set", "data.params.per_class=20", "--set", "loggers=[csv]",
               "--out", str(tmp_path), "--name", "logged", "--json"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = _read_csv(tmp_path / "logged" / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and "val.accuracy" in rows[0]
