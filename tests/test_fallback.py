"""A plan's fallback (zoo.plan.Fallback): validated as epoch 0, kept unless an epoch matches or
beats it.

``auto`` hands a run it cannot predict (a slow fine-tune against a measured probe) the
probe's weights as its fallback; any strategy may do the same through the public plan
vocabulary.  These tests use a third-party strategy that sets one, so the run path
(loop, checkpoint, resume, summary, model file) is tested apart from auto's choice.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zoo.hookspecs import hookimpl
from zoo.kit.testing import make_catalog
from zoo.kit.testing.components import complete_job, run_tiny, tiny_job
from zoo.plan import Fallback, Phase, StrategyPlan, all_groups
from zoo.strategy_base import Strategy


class WithFallback(Strategy):
    """Fine-tunes at the job's LR; its fallback is the model with the head changed by
    ``head`` (``double``: same predictions, other weights; ``zero``: chance; ``drop``: a
    key missing; ``file``: every tensor of the model file ``path`` holds)."""

    name = "with-fallback"
    defaults = {"head": "double", "path": None}

    def plan(self, model, groups, job, ctx=None):
        p = self.params(job)
        how = p["head"]
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if how == "file":
            weights.update({k: v for k, v in load_file(p["path"]).items() if k in weights})
        for k in [k for k in weights if k.startswith("head.") and how != "file"]:
            if how == "double":
                weights[k] = weights[k] * 2
            elif how == "zero":
                weights[k] = torch.zeros_like(weights[k])
            elif how == "junk":  # not a tensor: refused like a missing key
                weights[k] = [1.0, 2.0]
            else:
                del weights[k]
        phase = Phase("all", job.train.epochs, all_groups(groups, trainable=True))
        return StrategyPlan(self.name, [phase], fallback=Fallback(f"head {how}", weights))


class Plugin:
    name = "fallback-test"

    @hookimpl
    def register_strategies(self, register):
        register(WithFallback.name, WithFallback(), description="test strategy")


def _run(cat, out, how: str, lr: float, epochs: int = 2, path=None, **kw):
    return run_tiny(cat, out, strategy={"name": "with-fallback", "params": {
        "head": how, "path": path}}, train={"epochs": epochs, "lr": lr}, **kw)


@pytest.fixture(scope="module")
def trained(cat, tmp_path_factory):
    """A fine-tuned tiny model (val accuracy well above chance): a fallback to keep."""
    summary = run_tiny(cat, tmp_path_factory.mktemp("src"), strategy={"name": "finetune"},
                       train={"epochs": 4, "lr": 0.05})
    assert summary["monitor"]["best"] > 0.5
    return summary


def _head(run_dir) -> dict:
    saved = load_file(str(Path(run_dir) / "model.safetensors"))
    return {k: v for k, v in saved.items() if k.startswith("head.")}


@pytest.fixture(scope="module")
def cat():
    return make_catalog(Plugin())


def test_a_fallback_no_epoch_beats_is_the_model_the_run_keeps(cat, tmp_path, trained):
    # at a negligible LR from random init no epoch comes near the fine-tuned fallback
    weights = str(Path(trained["run_dir"]) / "model.safetensors")
    summary = _run(cat, tmp_path, "file", lr=1e-12, path=weights)
    fb = summary["fallback"]
    assert fb["kept"] is True and summary["best_epoch"] == 0 and fb["from"] == "head file"
    history = [json.loads(line) for line in
               (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert all(h["val"]["accuracy"] < fb["val"]["accuracy"] for h in history)
    assert summary["monitor"]["best"] == pytest.approx(fb["val"]["accuracy"])
    assert fb["val"]["accuracy"] == pytest.approx(trained["monitor"]["best"])  # same validator
    kept, source = load_file(str(Path(summary["run_dir"]) / "model.safetensors")), \
        load_file(weights)
    assert kept.keys() == source.keys()
    assert all(torch.equal(kept[k], source[k]) for k in kept)  # the fallback's, bit for bit
    assert summary["test"]["accuracy"] == pytest.approx(trained["test"]["accuracy"])


def test_a_tie_with_the_fallback_goes_to_the_trained_model(cat, tmp_path):
    # the doubled head predicts what the model predicts: at a negligible LR every epoch
    # ties with it on val accuracy, and a tie keeps the trained epoch, not the fallback
    summary = _run(cat, tmp_path, "double", lr=1e-12)
    fb = summary["fallback"]
    assert fb["kept"] is False and summary["best_epoch"] == 1
    assert summary["monitor"]["best"] == pytest.approx(fb["val"]["accuracy"])
    plain = run_tiny(cat, tmp_path / "plain", strategy={"name": "finetune"},
                     train={"epochs": 2, "lr": 1e-12})
    kept, trained = _head(summary["run_dir"]), _head(plain["run_dir"])
    assert kept.keys() == trained.keys() and kept
    assert all(torch.allclose(kept[k], trained[k]) for k in kept)  # not the doubled head


def test_an_epoch_that_beats_the_fallback_replaces_it(cat, tmp_path):
    summary = _run(cat, tmp_path, "zero", lr=0.05, epochs=3)
    fb = summary["fallback"]
    assert fb["kept"] is False and summary["best_epoch"] >= 1
    assert summary["monitor"]["best"] > fb["val"]["accuracy"]
    assert any(v.abs().sum() > 0 for v in _head(summary["run_dir"]).values())


def test_a_fallback_that_does_not_fit_the_model_is_not_used_and_says_why(cat, tmp_path):
    summary = _run(cat, tmp_path, "drop", lr=0.05)
    fb = summary["fallback"]
    assert summary["status"] == "completed" and fb["kept"] is False
    assert fb["note"].startswith("not used: its weights do not fit the model ('head.")
    assert summary["best_epoch"] >= 1


def test_a_kept_fallback_survives_an_interrupt_and_resume(cat, tmp_path, monkeypatch,
                                                          trained):
    from zoo.engine.pipeline import run as run_job
    from zoo.errors import RunInterrupted

    weights = str(Path(trained["run_dir"]) / "model.safetensors")

    def job(name):
        return complete_job(tiny_job(
            out=str(tmp_path), name=name, train={"epochs": 3, "lr": 1e-12},
            strategy={"name": "with-fallback", "params": {"head": "file", "path": weights}}),
            cat)

    full = run_job(job("full"), cat, quiet=True)
    assert full["fallback"]["kept"] is True
    monkeypatch.setenv("ZOO_FAULT", "interrupt_after_epoch:2")
    with pytest.raises(RunInterrupted):
        run_job(job("part"), cat, quiet=True)
    monkeypatch.delenv("ZOO_FAULT")
    resumed = run_job(job("part"), cat, quiet=True, resume=str(tmp_path / "part"))
    assert resumed["status"] == "completed" and resumed["best_epoch"] == 0
    assert resumed["fallback"]["kept"] is True and resumed["test"] == full["test"]
    for k, v in _head(full["run_dir"]).items():
        assert torch.equal(v, _head(resumed["run_dir"])[k])


def test_a_fallback_holding_junk_is_not_used_and_the_run_completes(cat, tmp_path):
    summary = _run(cat, tmp_path, "junk", lr=0.05)
    assert summary["status"] == "completed" and summary["fallback"]["kept"] is False
    assert summary["fallback"]["note"].startswith("not used: its weights do not fit the model")
