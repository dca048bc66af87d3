"""Built-ins equal to plugins: components declare their job defaults, their kind's default,
the paths they serve, the files they write; loggers are a component kind.

The precedence tested here is the one docs/jobs.md states::

    built-in defaults ← component defaults (dataset's, then strategy's) ← registry defaults
    ← registry per-component ← preset ← config ← flags ← --set
"""
from __future__ import annotations

import pytest

from zoo.errors import ConfigError, UnknownComponentError
from zoo.hookspecs import hookimpl
from zoo.jobspec import JobSpec, Layer
from zoo.kit.testing import make_catalog, run_tiny
from zoo.layering import build_job, complete_job
from zoo.registry import Registry


class _Strategy:
    defaults: dict = {}

    def plan(self, model, groups, job, ctx=None):  # never called here
        raise AssertionError


class Components:
    """A dataset and a strategy that set the same key (train.lr): the strategy must win."""

    name = "defaults-plugin"

    @hookimpl
    def register_datasets(self, register):
        register("ds", lambda spec, split, transform, seed: None, job_defaults={
            "train": {"lr": 0.5, "weight_decay": 0.3}, "data": {"image_size": 40}})

    @hookimpl
    def register_strategies(self, register):
        register("st", _Strategy(), job_defaults={"train": {"lr": 0.25, "epochs": 7}})

    @hookimpl
    def register_heads(self, register):
        register("hd", lambda i, n: None, job_defaults={"train": {"label_smoothing": 0.1}})


def _job(*trees, registry=None, catalog=None):
    catalog = catalog or make_catalog(Components(), testing=False)
    return build_job([Layer(f"layer{i}", t) for i, t in enumerate(trees)],
                     registry or Registry(), catalog)


BOTH = {"data": {"name": "ds"}, "strategy": {"name": "st"}, "model": "timm:resnet18"}


def test_component_defaults_apply_and_the_strategy_wins_a_tie():
    job = _job(BOTH)
    assert job.train.lr == 0.25                # dataset 0.5, strategy 0.25: the strategy wins
    assert job.train.weight_decay == 0.3       # only the dataset sets it
    assert job.data.image_size == 40 and job.train.epochs == 7
    assert JobSpec().train.lr not in (0.25, 0.5)   # (the built-in default is something else)
    only_dataset = _job({"data": {"name": "ds"}, "model": "timm:resnet18"})
    assert only_dataset.train.lr == 0.5        # the strategy's defaults apply only when chosen


def test_a_head_s_defaults_apply_when_it_is_chosen():
    assert _job(BOTH, {"head": {"name": "hd"}}).train.label_smoothing == 0.1
    assert _job(BOTH).train.label_smoothing == 0.0


def test_precedence_registry_preset_config_flags_set():
    reg = Registry(defaults={"train": {"lr": 0.125, "batch_size": 8, "epochs": 3}},
                   strategies={"st": {"train": {"batch_size": 9}}},
                   datasets={"ds": {"image_size": 48}},
                   presets={"p": {"train": {"epochs": 4, "warmup_epochs": 1}}})
    job = _job(BOTH, registry=reg)
    assert job.train.lr == 0.125               # registry defaults over both components
    assert job.train.batch_size == 9           # registry per-strategy over registry defaults
    assert job.data.image_size == 48           # registry per-dataset over the dataset's own
    assert job.train.epochs == 3
    layered = _job(reg.preset("p"), {"train": {"warmup_epochs": 2, "momentum": 0.5}},
                   BOTH | {"train": {"momentum": 0.6, "lr": 0.01}},
                   {"train": {"lr": 0.02}}, registry=reg)   # preset, config, flags, --set
    assert layered.train.epochs == 4           # preset over registry
    assert layered.train.warmup_epochs == 2    # config over preset
    assert layered.train.momentum == 0.6       # flags over config
    assert layered.train.lr == 0.02            # --set over flags


def test_a_user_registry_per_dataset_section_still_works():
    reg = Registry(datasets={"ds": {"augment": "strong"}},
                   strategies={"st": {"data": {"augment": "none"}}})
    assert _job(BOTH, registry=reg).data.augment == "none"   # per-strategy wins here too


def test_names_left_out_are_the_catalog_s_defaults():
    job = _job({}, catalog=make_catalog(testing=False))
    assert job.model == "timm:resnet18"        # zoo_timm: default_model="resnet18"
    assert job.data.name == "demo" and job.data.image_size == 32   # demo's job_defaults
    assert (job.head.name, job.strategy.name) == ("linear", "finetune")
    assert job.metrics == ["accuracy", "top5", "f1"] and job.monitor.metric == "accuracy"
    assert job.strategy.params == {"backbone_lr_mult": "auto"}   # finetune's job_defaults
    lp = _job({"strategy": {"name": "linear-probe"}}, catalog=make_catalog(testing=False))
    assert (lp.data.augment, lp.train.lr, lp.train.weight_decay) == ("none", 0.01, 0.0)


def test_the_registry_chooses_another_default():
    reg = Registry(defaults={"head": {"name": "mlp"}, "metrics": ["f1"]})
    job = _job({}, registry=reg, catalog=make_catalog(testing=False))
    assert job.head.name == "mlp" and job.metrics == ["f1"]
    assert job.monitor.metric == "accuracy"    # the default monitor stays the default metric


class Rival:
    """A third-party plugin claiming defaults the built-ins already claim."""

    name = "rival"

    @hookimpl
    def register_heads(self, register):
        register("rival-head", lambda i, n: None, default=True)

    @hookimpl
    def register_datasets(self, register):
        register("rival-data", lambda *a: None, default=True, serves_paths=True)


def test_first_claim_in_plugin_load_order_wins():
    cat = make_catalog(Rival(), testing=False)
    assert cat.default_name("heads") == "linear" and cat.path_dataset() == "folder"
    alone = make_catalog(Rival(), builtins=False, testing=False)
    assert alone.default_name("heads") == "rival-head"
    assert alone.resolve_dataset_arg("some/dir") == {"name": "rival-data", "path": "some/dir"}


def test_no_default_anywhere_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"no head chosen .* set 'head.name'"):
        _job({"model": "m", "data": {"name": "ds"}, "strategy": {"name": "st"},
              "metrics": ["x"]}, catalog=make_catalog(Components(), builtins=False,
                                                      testing=False))


def test_a_path_goes_to_the_dataset_that_serves_paths():
    job = _job({"data": {"path": "/some/images"}}, catalog=make_catalog(testing=False))
    assert (job.data.name, job.data.path) == ("folder", "/some/images")


class BadDefaults:
    name = "bad-defaults"

    @hookimpl
    def register_heads(self, register):
        register("typo-head", lambda i, n: None, job_defaults={"trian": {"lr": 1.0}})


def test_job_defaults_with_an_unknown_key_fail_the_plugin():
    with pytest.raises(AssertionError, match=r"plugin 'bad-defaults' failed: .*unknown key "
                                             r"'trian' \(head 'typo-head' job_defaults\)"):
        make_catalog(BadDefaults(), testing=False)


class ChoosyDefaults:
    name = "choosy"

    @hookimpl
    def register_heads(self, register):
        register("choosy-head", lambda i, n: None, job_defaults={"strategy": {"name": "x"}})


def test_job_defaults_may_not_choose_components():
    with pytest.raises(AssertionError, match=r"may not choose components.*strategy.name"):
        make_catalog(ChoosyDefaults(), testing=False)


def test_complete_job_fills_only_unset_names():
    cat = make_catalog(testing=False)
    done = complete_job(JobSpec(), cat)
    assert (done.head.name, done.strategy.name, done.data.name) == ("linear", "finetune", "demo")
    assert done.data.image_size is None        # no component defaults: the job is complete
    assert complete_job(done, cat) == done


# -- loggers -----------------------------------------------------------------------------------
class Recorder:
    """A third-party logger registered through register_loggers."""

    name = "recorder-plugin"
    calls: list = []

    @hookimpl
    def register_loggers(self, register):
        calls = self.calls

        class Logger:
            def __init__(self, run, first_epoch):
                calls.append(("start", first_epoch, run.job.loggers))

            def log_epoch(self, epoch, metrics):
                calls.append(("epoch", epoch, metrics["train"]["loss"]))

            def close(self, summary):
                calls.append(("close", summary["status"]))

        register("recorder", Logger, description="records calls")


def test_a_third_party_logger_works_like_a_built_in(tmp_path):
    Recorder.calls.clear()
    summary = run_tiny(make_catalog(Recorder()), tmp_path, loggers=["recorder", "csv"],
                       train={"epochs": 2})
    assert summary["status"] == "completed" and not summary["warnings"]
    kinds = [c[0] for c in Recorder.calls]
    assert kinds == ["start", "epoch", "epoch", "close"]
    assert Recorder.calls[0][1] == 1 and Recorder.calls[-1] == ("close", "completed")
    assert (tmp_path / summary["run_dir"].split("/")[-1] / "log.csv").is_file()


def test_unknown_logger_in_a_job_is_an_error_with_did_you_mean():
    cat = make_catalog(Recorder(), testing=False)
    with pytest.raises(UnknownComponentError, match="unknown logger 'recordr' — did you mean"):
        _job({"loggers": ["recordr"]}, catalog=cat)
    assert _job({"loggers": ["recorder"]}, catalog=cat).loggers == ["recorder"]


# -- metrics that are always computed and write their own files ---------------------------------
def test_always_metrics_and_their_writers(tmp_path):
    import torch

    from zoo.engine.metric_files import add_always_metrics, write_metric_files

    cat = make_catalog(testing=False)
    assert cat.always_metrics() == ["confusion"]
    assert cat.default_metrics() == ["accuracy", "top5", "f1"]
    metrics = add_always_metrics(cat, {}, 3, torch.device("cpu"))
    assert list(metrics) == ["confusion"]
    warnings: list = []
    write_metric_files(cat, tmp_path, {"confusion": torch.tensor([[2, 1, 0], [0, 3, 0],
                                                                  [0, 0, 1]]),
                                       "per-class": torch.tensor([0.5, 1.0, 0.25]),
                                       "accuracy": 0.7}, ["a", "b", "c"], warnings)
    assert not warnings
    assert (tmp_path / "confusion.csv").read_text().splitlines()[:2] == ["true\\pred,a,b,c",
                                                                        "a,2,1,0"]
    assert (tmp_path / "confusion.png").is_file()
    assert (tmp_path / "per_class.csv").read_text().splitlines()[1] == "a,0.500000"


def test_zoo_loggers_lists_them_like_zoo_heads():
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "zoo", "loggers", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["csv"]["plugin"] == rows["tensorboard"]["plugin"] == "loggers"
    assert "log.csv" in rows["csv"]["description"]
