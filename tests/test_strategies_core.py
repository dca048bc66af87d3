"""Strategy plumbing through real runs: the register_strategies hook, frozen tensors and
BatchNorm statistics bitwise (linear-probe vs finetune, the three BN policies), the LR of
every optimizer group per epoch as planned, metrics and best-epoch selection by nll.

Tiny everywhere: timm's ``test_resnet`` (BatchNorm, 470k params), demo data with 20 images
per class at 32×32, 1-2 epochs, one torch thread (conftest).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zoo.api import load_job, run
from zoo.jobspec import deep_merge

TINY = {"model": "timm:test_resnet", "device": "cpu", "metrics": ["accuracy"],
        "train": {"epochs": 2, "batch_size": 32, "scheduler": "constant", "warmup_epochs": 0},
        "data": {"name": "demo", "params": {"per_class": 20}, "num_workers": 0}}


@pytest.fixture(scope="module")
def source_weights(tmp_path_factory) -> Path:
    """A test_resnet checkpoint in timm's own naming: the run's 'source weights'."""
    import timm

    torch.manual_seed(123)
    model = timm.create_model("test_resnet")
    path = tmp_path_factory.mktemp("weights") / "test_resnet_source.pth"
    torch.save(model.state_dict(), path)
    return path


def tiny_run(tmp_path, name, strategy, weights, sets=(), plans=None, **over):
    job = load_job(flags=deep_merge(TINY, {"out": str(tmp_path), "name": name,
                                           "weights": str(weights),
                                           "strategy": {"name": strategy}, **over}),
                   sets=list(sets))
    summary = run(job, on_plan=(plans.append if plans is not None else None))
    history = [json.loads(x) for x in
               (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    return summary, history


def final_backbone(summary) -> dict:
    from safetensors.torch import load_file

    state = load_file(str(Path(summary["run_dir"]) / "model.safetensors"))
    return {k: v for k, v in state.items() if k.startswith("backbone.body.")}


def source_backbone(path) -> dict:
    state = torch.load(path, weights_only=True)
    return {f"backbone.body.{k}": v for k, v in state.items() if not k.startswith("fc.")}


def is_bn_stat(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def is_bn_affine(key: str, state: dict) -> bool:
    # BatchNorm weights/biases are the 1-d tensors next to a running_mean
    stem = key.rsplit(".", 1)[0]
    return key.endswith((".weight", ".bias")) and f"{stem}.running_mean" in state


# -- the hook ---------------------------------------------------------------------------------
CUSTOM = """
from zoo.hookspecs import hookimpl


class HeadThenAll:
    '''Two phases: the head alone, then everything (a test strategy).'''

    name = "head-then-all"
    defaults = {"head_epochs": 1}

    def plan(self, model, groups, job, ctx=None):
        from zoo.strategy import Phase, StrategyPlan, all_groups

        n = int({**self.defaults, **job.strategy.params}["head_epochs"])
        return StrategyPlan(self.name, [
            Phase("head", n, all_groups(groups, trainable=False), bn="freeze-all"),
            Phase("all", job.train.epochs, all_groups(groups))], ["custom plan"])


@hookimpl
def register_strategies(register):
    register("head-then-all", HeadThenAll(), description="a test strategy")
"""


def test_register_strategies_hook_adds_a_strategy_that_runs(tmp_path, monkeypatch):
    """A third-party plugin's register_strategies: listed, attributed, plannable, runnable."""
    import importlib

    import zoo.api
    from plugin_fixtures import make_plugin

    make_plugin(tmp_path / "site", "zoo-head-then-all", "zoo_head_then_all", CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    zoo.catalog._CATALOG = None
    cat = zoo.api.get_catalog(refresh=True)
    comp = cat.get("strategies", "head-then-all")
    assert comp.plugin == "zoo-head-then-all"
    # the hook called directly through the plugin manager registers the pack's strategies too
    seen = []
    cat.pm.hook.register_strategies(register=lambda name, obj, **kw: seen.append(name))
    assert {"head-then-all", "finetune", "linear-probe", "lp-ft", "gradual-unfreeze",
            "partial", "layer-decay", "l2-sp", "lwf", "joint", "auto"} <= set(seen)
    job = load_job(flags=deep_merge(TINY, {"out": str(tmp_path), "name": "custom",
                                           "weights": "none",
                                           "strategy": {"name": "head-then-all"},
                                           "train": {"epochs": 1}}))
    summary = run(job)  # zoo.api.run: the process catalog, which has the plugin
    phases = [json.loads(x)["phase"] for x in
              (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["head", "all"]


def test_strategy_pack_imports_no_torch():
    from zoo.testing import check_lazy_import

    check_lazy_import("zoo_strategies")


# -- frozen tensors and BatchNorm statistics, bitwise, through the real loop ------------------
def test_linear_probe_keeps_backbone_and_bn_stats_bitwise(tmp_path, source_weights):
    summary, history = tiny_run(tmp_path, "lp", "linear-probe", source_weights,
                                data={"augment": "light"})  # no feature cache: real steps
    assert not history[0]["cached_features"]
    final, source = final_backbone(summary), source_backbone(source_weights)
    assert set(final) == set(source)
    for key, value in source.items():
        assert torch.equal(final[key], value), key


def test_linear_probe_on_cached_features_keeps_backbone(tmp_path, source_weights):
    summary, history = tiny_run(tmp_path, "lpc", "linear-probe", source_weights)
    assert history[0]["cached_features"]
    final, source = final_backbone(summary), source_backbone(source_weights)
    assert all(torch.equal(final[k], v) for k, v in source.items())


def test_finetune_changes_backbone_and_bn_stats(tmp_path, source_weights):
    summary, _ = tiny_run(tmp_path, "ft", "finetune", source_weights)
    final, source = final_backbone(summary), source_backbone(source_weights)
    weights = [k for k in source if not is_bn_stat(k)]
    stats = [k for k in source if k.endswith("running_mean")]
    assert all(not torch.equal(final[k], source[k]) for k in weights)
    assert all(not torch.equal(final[k], source[k]) for k in stats)


@pytest.mark.parametrize("bn", ["train", "freeze-stats", "freeze-all"])
def test_bn_policy_through_the_loop(tmp_path, source_weights, bn):
    summary, _ = tiny_run(tmp_path, f"bn-{bn}", "finetune", source_weights,
                          sets=[f"strategy.bn={bn}"], train={"epochs": 1})
    final, source = final_backbone(summary), source_backbone(source_weights)
    stats = [k for k in source if is_bn_stat(k) and not k.endswith("num_batches_tracked")]
    affine = [k for k in source if is_bn_affine(k, source)]
    convs = [k for k in source if k.endswith(".weight") and source[k].dim() == 4]
    assert stats and affine and convs
    stats_moved = [not torch.equal(final[k], source[k]) for k in stats]
    affine_moved = [not torch.equal(final[k], source[k]) for k in affine]
    assert all(not torch.equal(final[k], source[k]) for k in convs)  # always trains
    if bn == "train":
        assert all(stats_moved) and all(affine_moved)
    elif bn == "freeze-stats":
        assert not any(stats_moved) and all(affine_moved)
    else:
        assert not any(stats_moved) and not any(affine_moved)


def test_partial_freezes_lower_groups_and_their_bn(tmp_path, source_weights):
    plans: list = []
    summary, _ = tiny_run(tmp_path, "partial", "partial", source_weights, plans=plans,
                          sets=["strategy.params.k=2"], train={"epochs": 1})
    groups = {g["name"]: g for g in plans[0]["phases"][0]["groups"]}
    assert [n for n, g in groups.items() if g["trainable"]] == ["blocks.2", "blocks.3", "head"]
    final, source = final_backbone(summary), source_backbone(source_weights)
    for key, value in source.items():
        top = key.startswith(("backbone.body.layer3.", "backbone.body.layer4."))
        if not top:  # stem, layer1, layer2: weights and BN statistics bitwise unchanged
            assert torch.equal(final[key], value), key
        elif key.endswith("running_mean") or (key.endswith("weight") and value.dim() == 4):
            assert not torch.equal(final[key], value), key


# -- LR of every optimizer group at every epoch, as planned -----------------------------------
def _check_lrs(plan: dict, history: list[dict]):
    phase_of_epoch = []
    for phase in plan["phases"]:
        phase_of_epoch += [phase] * phase["epochs"]
    assert len(history) == len(phase_of_epoch) == plan["epochs"]
    for rec, phase in zip(history, phase_of_epoch):
        assert rec["phase"] == phase["name"]
        planned = [g["lr"] for g in phase["groups"] if g["trainable"]]
        assert rec["lr"][:len(planned)] == pytest.approx(planned, rel=1e-9), rec["epoch"]


@pytest.mark.parametrize("strategy,sets,epochs", [
    ("lp-ft", ["strategy.params.probe_epochs=1"], 3),
    ("layer-decay", ["strategy.params.decay=0.5"], 1),
    ("gradual-unfreeze", [], 3),
    ("finetune", ["strategy.params.backbone_lr_mult=0.25"], 1),
])
def test_lr_per_group_per_epoch_as_planned(tmp_path, source_weights, strategy, sets, epochs):
    plans: list = []
    _, history = tiny_run(tmp_path, strategy, strategy, source_weights, sets=sets,
                          plans=plans, train={"epochs": epochs})
    plan = plans[0]
    _check_lrs(plan, history)
    lr = 0.01 if strategy == "linear-probe" else load_job(
        flags=deep_merge(TINY, {"strategy": {"name": strategy}})).train.lr
    if strategy == "lp-ft":
        probe, ft = plan["phases"]
        # the probe at linear-probe's LR (probe_lr 0.01), the fine-tune at the job's × 0.1
        assert probe["base_lr"] == pytest.approx(0.01) and ft["base_lr"] == pytest.approx(
            lr * 0.1)
        assert [g["lr"] for g in ft["groups"]] == pytest.approx([lr * 0.1] * len(ft["groups"]))
        assert [g["name"] for g in probe["groups"] if g["trainable"]] == ["head"]
    if strategy == "layer-decay":
        lrs = [g["lr"] for g in plan["phases"][0]["groups"]]
        depth = len(lrs) - 1
        assert lrs == pytest.approx([lr * 0.5 ** (depth - i) for i in range(depth)] + [lr])
    if strategy == "finetune":
        lrs = [g["lr"] for g in plan["phases"][0]["groups"]]
        assert lrs == pytest.approx([lr * 0.25] * (len(lrs) - 1) + [lr])


# -- metrics: ece, nll, per-class, confusion; best epoch by min nll ---------------------------
def test_metrics_and_best_epoch_by_min_nll(tmp_path, source_weights):
    summary, history = tiny_run(
        tmp_path, "metrics", "finetune", source_weights,
        metrics=["accuracy", "ece", "nll", "per-class", "confusion"],
        monitor={"metric": "nll", "mode": "min"}, train={"epochs": 3, "lr": 0.05})
    assert {"accuracy", "ece", "nll", "loss"} <= set(summary["test"])
    assert 0.0 <= summary["test"]["ece"] <= 1.0
    assert summary["test"]["nll"] == pytest.approx(summary["test"]["loss"], rel=1e-4)
    run_dir = Path(summary["run_dir"])
    for name in ("per_class.csv", "confusion.csv", "confusion.png", "curves.png"):
        assert (run_dir / name).is_file(), name
    nll = [r["val"]["nll"] for r in history]
    assert summary["best_epoch"] == 1 + nll.index(min(nll))
    assert summary["monitor"] == {"metric": "nll", "mode": "min", "best": pytest.approx(min(nll))}
