"""``train.ema``: an exponential moving average of the weights, validated every epoch,
checkpointed in the same file, resumed exactly, and saved when it is the better one on val."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo.api import load_job, run
from zoo.engine.ema import WeightEMA, keep_best, pick
from zoo.errors import ConfigError, RunInterrupted


def job(tmp_path, name, **train):
    return load_job(flags={
        "model": "timm:test_resnet", "weights": "none", "seed": 2, "out": str(tmp_path),
        "name": name, "strategy": {"name": "lp-ft", "params": {"probe_epochs": 1}},
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.01, "ema": 0.9, **train},
        "data": {"name": "demo", "augment": "light", "num_workers": 0,
                 "params": {"per_class": 20}}})


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_update_is_the_warmed_up_exponential_average():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model[1].weight.requires_grad_(False)  # frozen: not updated, stays equal
    ema = WeightEMA(model, decay=0.9)
    expected = {k: v.clone() for k, v in ema.shadow.items()}
    for t in range(1, 4):
        with torch.no_grad():
            model[0].weight.add_(1.0)
            model[1].running_mean.add_(0.5)
        ema.update(model)
        decay = min(0.9, (1 + t) / (10 + t))
        for k in ("0.weight", "1.running_mean"):
            expected[k] = decay * expected[k] + (1 - decay) * model.state_dict()[k]
    for k in ("0.weight", "1.running_mean", "1.weight"):
        assert torch.allclose(ema.shadow[k], expected[k], atol=1e-6), k
    assert "1.num_batches_tracked" not in ema.shadow and ema.updates == 3
    before = model[0].weight.detach().clone()
    with ema.applied(model):
        assert torch.equal(model[0].weight, ema.shadow["0.weight"])
    assert torch.equal(model[0].weight, before)  # the model's own weights are back


def test_the_better_of_model_and_average_is_kept():
    model = nn.Linear(2, 2)
    ema = WeightEMA(model, 0.5)
    with torch.no_grad():
        ema.shadow["weight"].fill_(7.0)
    value, from_ema = pick(ema, {"accuracy": 0.5, "ema_accuracy": 0.75}, "accuracy", "max", 0.5)
    assert (value, from_ema) == (0.75, True)
    best = keep_best(ema, model, from_ema)
    assert torch.equal(best["weight"], torch.full((2, 2), 7.0)) and ema.best_from == "ema"
    assert pick(ema, {"accuracy": 0.8, "ema_accuracy": 0.75}, "accuracy", "max", 0.8) == (
        0.8, False)
    assert pick(ema, {"loss": 0.8, "ema_loss": 0.5}, "loss", "min", 0.8) == (0.5, True)
    assert torch.equal(keep_best(ema, model, False)["weight"], model.weight)
    assert ema.best_from == "model"


def test_a_run_validates_and_keeps_the_better_weights(tmp_path):
    summary = run(job(tmp_path, "ema"), quiet=True)
    hist = _history(tmp_path / "ema")
    assert all("ema_accuracy" in r["val"] and "ema_loss" in r["val"] for r in hist)
    info = summary["ema"]
    assert info["decay"] == 0.9
    assert info["updates"] == sum(r["train"]["optimizer_steps"] for r in hist)
    # the best epoch is the best of both, and the summary names the one it kept
    scores = [(max(r["val"]["accuracy"], r["val"]["ema_accuracy"]), r) for r in hist]
    best_value, best = max(scores, key=lambda s: s[0])
    assert summary["monitor"]["best"] == best_value
    kept = "ema" if best["val"]["ema_accuracy"] > best["val"]["accuracy"] else "model"
    assert info["best_from"] == kept
    # without train.ema: no ema_* values and no ema block
    plain = run(job(tmp_path, "plain", ema=None), quiet=True)
    assert "ema" not in plain and "ema_accuracy" not in _history(tmp_path / "plain")[0]["val"]
    assert [r["val"]["accuracy"] for r in _history(tmp_path / "plain")] == [
        r["val"]["accuracy"] for r in hist]  # the average never changes the training itself


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    full = run(job(tmp_path, "full"), quiet=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_FAULT", "interrupt_after_epoch:2")
        with pytest.raises(RunInterrupted):
            run(job(tmp_path, "part"), quiet=True)
    from zoo.weights import read_safetensors

    tensors, meta = read_safetensors(tmp_path / "part" / "checkpoint" / "last.safetensors")
    info = json.loads(meta["zoo_checkpoint"])
    assert info["ema"]["updates"] > 0 and any(k.startswith("ema.") for k in tensors)
    resumed = run(job(tmp_path, "part"), quiet=True, resume=str(tmp_path / "part"))
    assert resumed["test"] == full["test"] and resumed["ema"] == full["ema"]
    assert _history(tmp_path / "part") == [
        {**r, "seconds": p["seconds"], "train": {**r["train"], "images_per_second":
                                                  p["train"]["images_per_second"]}}
        for r, p in zip(_history(tmp_path / "full"), _history(tmp_path / "part"))]


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1])
def test_decay_must_be_in_the_open_unit_interval(tmp_path, bad):
    with pytest.raises(ConfigError, match="train.ema"):
        job(tmp_path, "x", ema=bad)
