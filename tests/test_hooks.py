"""The non-registration hooks, each called through the plugin manager by real zoo code paths:
``resolve_weights`` (weights resolution in a run), ``register_commands`` (the CLI at start-up),
``on_epoch_end`` and ``on_run_end`` (the runner's observers).  Fake plugins are registered
with :func:`zoo.testing.make_catalog` (in-process) or as on-disk distributions (CLI)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from plugin_fixtures import make_plugin
from zoo.hookspecs import hookimpl
from zoo.testing import TinyProvider, make_catalog, run_tiny


# -- resolve_weights -------------------------------------------------------------------------
class PassingWeights:
    """Answers nothing (zoo must ask the next plugin)."""

    name = "zoo-pass-weights"

    def __init__(self):
        self.calls = []

    @hookimpl
    def resolve_weights(self, backbone, tag, store):
        self.calls.append(backbone)
        return None


class FakeWeights:
    """Returns a state dict (provider naming) for testing:tiny_cnn: every tensor 0.25."""

    name = "zoo-fake-weights"

    def __init__(self):
        self.calls = []

    @hookimpl
    def resolve_weights(self, backbone, tag, store):
        self.calls.append((backbone, tag, store))
        if backbone != "testing:tiny_cnn":
            return None
        import torch

        state = TinyProvider().create("tiny_cnn").source_state_dict()
        return {k: torch.full_like(v, 0.25) if v.is_floating_point() else v
                for k, v in state.items()}


def test_resolve_weights_state_dict_is_loaded_and_recorded(tmp_path):
    from zoo.catalog import ModelRef
    from zoo.weights import WeightStore, resolve_and_load

    passing, fake = PassingWeights(), FakeWeights()
    cat = make_catalog(passing, fake)
    warnings: list[str] = []
    backbone, summary = resolve_and_load(cat, ModelRef("testing", "tiny_cnn"), "auto", warnings)
    assert summary["source"] == "plugin:zoo-fake-weights" and not warnings
    # firstresult: a None answer passes on; whichever order they are asked in, the state
    # dict wins and nothing is asked after it
    assert passing.calls in ([], ["testing:tiny_cnn"])
    (name, tag, store), = fake.calls
    assert name == "testing:tiny_cnn" and tag is None and isinstance(store, WeightStore)
    conv = backbone.body.stem[0].weight.detach()
    assert float(conv.min()) == float(conv.max()) == 0.25   # the plugin's tensors were loaded


def test_resolve_weights_source_in_run_summary(tmp_path):
    fake = FakeWeights()
    summary = run_tiny(make_catalog(fake), tmp_path, weights="auto")
    assert summary["status"] == "completed"
    assert summary["weights"]["source"] == "plugin:zoo-fake-weights"
    assert json.loads((tmp_path / os.listdir(tmp_path)[0] / "summary.json").read_text())[
        "weights"]["source"] == "plugin:zoo-fake-weights"


def test_resolve_weights_not_asked_for_weights_none(tmp_path):
    fake = FakeWeights()
    summary = run_tiny(make_catalog(fake), tmp_path, weights="none")
    assert fake.calls == [] and summary["weights"]["source"] == "none"


# -- register_commands -----------------------------------------------------------------------
COMMANDS = """
import click
from zoo.hookspecs import hookimpl

@hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("who")
    @click.option("--shout", is_flag=True)
    def hello(who, shout):
        '''Say hello from a plugin.'''
        text = f"hello {who} from a plugin"
        click.echo(text.upper() if shout else text)
"""

BROKEN_COMMANDS = """
from zoo.hookspecs import hookimpl

@hookimpl
def register_commands(cli):
    raise RuntimeError("no commands today")
"""


def _zoo(args, path, **kw):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path)), "NO_COLOR": "1",
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "zoo", *args], env=env, capture_output=True,
                          text=True, timeout=120, **kw)


def test_register_commands_adds_a_runnable_command(tmp_path):
    make_plugin(tmp_path, "zoo-hello", "zoo_hello_cmds", COMMANDS)
    helped = _zoo(["--help"], [tmp_path])
    assert helped.returncode == 0, helped.stderr
    assert "hello" in helped.stdout and "Say hello from a plugin." in helped.stdout
    ran = _zoo(["hello", "world", "--shout"], [tmp_path])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "HELLO WORLD FROM A PLUGIN"
    plugins = json.loads(_zoo(["plugins", "--json", "--hook", "register_commands"],
                              [tmp_path]).stdout)
    assert "zoo-hello" in [r["name"] for r in plugins if r["name"]]
    assert all("register_commands" in r["hooks"] for r in plugins if r["name"])


def test_register_commands_failure_is_recorded_and_zoo_starts(tmp_path):
    make_plugin(tmp_path, "zoo-badcmds", "zoo_badcmds_mod", BROKEN_COMMANDS)
    helped = _zoo(["--help"], [tmp_path])
    assert helped.returncode == 0 and "run" in helped.stdout
    out = _zoo(["plugins", "--json"], [tmp_path])
    rec = {r["name"]: r for r in json.loads(out.stdout) if r["name"]}["zoo-badcmds"]
    assert rec["status"] == "failed" and "no commands today" in rec["error"]


# -- on_epoch_end / on_run_end -----------------------------------------------------------------
class Observer:
    name = "zoo-observer"

    def __init__(self):
        self.epochs, self.ends = [], []

    @hookimpl
    def on_epoch_end(self, run, epoch, metrics):
        self.epochs.append((run, epoch, metrics))

    @hookimpl
    def on_run_end(self, run, summary):
        self.ends.append((run, summary))


class SubsetObserver:
    """An implementation may take a subset of the spec's arguments."""

    name = "zoo-subset-observer"

    def __init__(self):
        self.seen = []

    @hookimpl
    def on_epoch_end(self, epoch):
        self.seen.append(("epoch", epoch))

    @hookimpl
    def on_run_end(self, summary):
        self.seen.append(("end", summary["status"]))


def test_on_epoch_end_and_on_run_end_observe_a_run(tmp_path):
    from pathlib import Path

    from zoo.engine.pipeline import RunContext

    obs, subset = Observer(), SubsetObserver()
    summary = run_tiny(make_catalog(obs, subset), tmp_path, train={"epochs": 2}, name="observed")
    run_dir = Path(summary["run_dir"])
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert [e for _, e, _ in obs.epochs] == [1, 2]
    for (run, epoch, metrics), line in zip(obs.epochs, lines):
        assert isinstance(run, RunContext)
        assert run.dir == run_dir and run.rank == 0
        assert run.job.train.epochs == 2 and run.job.name == "observed"
        assert metrics == line and metrics["epoch"] == epoch
        assert "accuracy" in metrics["val"] and "loss" in metrics["train"]

    (run, final), = obs.ends
    assert run is obs.epochs[0][0]                          # one context for the whole run
    assert final == summary and final["status"] == "completed"
    assert final == json.loads((run_dir / "summary.json").read_text())
    assert subset.seen == [("epoch", 1), ("epoch", 2), ("end", "completed")]


class NanStrategy:
    """Trains the head with a loss term that is NaN: the loop stops the run."""

    name = "zoo-nan"

    @hookimpl
    def register_strategies(self, register):
        register("nan-loss", self)

    def plan(self, model, groups, job, ctx=None):
        import torch

        from zoo.strategy import LossTerm, Phase, StrategyPlan, all_groups

        class Nan(LossTerm):
            name = "nan"
            needs_features = False

            def forward(self, ctx):
                return torch.tensor(float("nan"))

        return StrategyPlan("nan-loss", [Phase("p", job.train.epochs, all_groups(groups),
                                               loss_terms=[Nan()])])


def test_on_run_end_sees_a_failed_run(tmp_path):
    from zoo.errors import TrainingError

    obs = Observer()
    with pytest.raises(TrainingError):
        run_tiny(make_catalog(NanStrategy(), obs), tmp_path, strategy={"name": "nan-loss"})
    (_, summary), = obs.ends
    assert summary["status"] == "failed" and "loss" in summary["error"].lower()
    assert obs.epochs == []
