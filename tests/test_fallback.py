"""A plan's fallback (zoo.plan.Fallback): validated as epoch 0, kept unless an epoch beats it.

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
    key missing)."""

    name = "with-fallback"
    defaults = {"head": "double"}

    def plan(self, model, groups, job, ctx=None):
        how = self.params(job)["head"]
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for k in [k for k in weights if k.startswith("head.")]:
            if how == "double":
                weights[k] = weights[k] * 2
            elif how == "zero":
                weights[k] = torch.zeros_like(weights[k])
            else:
                del weights[k]
        phase = Phase("all", job.train.epochs, all_groups(groups, trainable=True))
        return StrategyPlan(self.name, [phase], fallback=Fallback(f"head {how}", weights))


class Plugin:
    name = "fallback-test"

    @hookimpl
    def register_strategies(self, register):
        register(WithFallback.name, WithFallback(), description="test strategy")


def _run(cat, out, how: str, lr: float, epochs: int = 2, **kw):
    return run_tiny(cat, out, strategy={"name": "with-fallback", "params": {"head": how}},
                    train={"epochs": epochs, "lr": lr}, **kw)


def _head(run_dir) -> dict:
    saved = load_file(str(Path(run_dir) / "model.safetensors"))
    return {k: v for k, v in saved.items() if k.startswith("head.")}


@pytest.fixture(scope="module")
def cat():
    return make_catalog(Plugin())


def test_a_fallback_no_epoch_beats_is_the_model_the_run_keeps(cat, tmp_path):
    # at a negligible LR no epoch changes the predictions: val accuracy ties with the
    # fallback's (the doubled head predicts the same), and a tie keeps the fallback
    summary = _run(cat, tmp_path, "double", lr=1e-12)
    fb = summary["fallback"]
    assert fb["kept"] is True and summary["best_epoch"] == 0 and fb["from"] == "head double"
    history = [json.loads(line) for line in
               (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert fb["val"]["accuracy"] == pytest.approx(history[0]["val"]["accuracy"])
    assert summary["monitor"]["best"] == pytest.approx(fb["val"]["accuracy"])
    plain = run_tiny(cat, tmp_path / "plain", strategy={"name": "finetune"},
                     train={"epochs": 2, "lr": 1e-12})
    kept, trained = _head(summary["run_dir"]), _head(plain["run_dir"])
    assert kept.keys() == trained.keys() and kept
    for k in kept:  # the file holds the fallback's (doubled) head, not the trained one
        assert torch.allclose(kept[k], 2 * trained[k], atol=1e-6)


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


def test_a_kept_fallback_survives_an_interrupt_and_resume(cat, tmp_path, monkeypatch):
    from zoo.engine.pipeline import run as run_job
    from zoo.errors import RunInterrupted

    def job(name):
        return complete_job(tiny_job(
            out=str(tmp_path), name=name, train={"epochs": 3, "lr": 1e-12},
            strategy={"name": "with-fallback", "params": {"head": "double"}}), cat)

    full = run_job(job("full"), cat, quiet=True)
    monkeypatch.setenv("ZOO_FAULT", "interrupt_after_epoch:2")
    with pytest.raises(RunInterrupted):
        run_job(job("part"), cat, quiet=True)
    monkeypatch.delenv("ZOO_FAULT")
    resumed = run_job(job("part"), cat, quiet=True, resume=str(tmp_path / "part"))
    assert resumed["status"] == "completed" and resumed["best_epoch"] == 0
    assert resumed["fallback"]["kept"] is True and resumed["test"] == full["test"]
    for k, v in _head(full["run_dir"]).items():
        assert torch.equal(v, _head(resumed["run_dir"])[k])
