"""The best epoch's weights kept in the checkpoint file, not copied in memory
(zoo.engine.best_weights, issue 27 §3)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo.api import load_job, run
from zoo.engine import best_weights
from zoo.engine.checkpoint import Saver, load_checkpoint
from zoo.engine.state import FitState


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    model[0].weight.requires_grad_(False)  # a frozen parameter: shared, never read back
    return model


def _saver(tmp_path: Path, model) -> Saver:
    return Saver(tmp_path, model, {"model": "test"}, [], contextlib.nullcontext)


def _record(epoch: int) -> dict:
    return {"epoch": epoch, "phase": "train", "train": {"loss": 1.0}, "val": {}, "lr": [0.1]}


def _train_a_little(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
        model[1].running_mean.add_(2.0)


def test_the_checkpoint_keeps_the_best_weights_and_memory_holds_no_copy(tmp_path):
    model = _model()
    at_best = {k: v.clone() for k, v in model.state_dict().items()}
    state = FitState(epoch=1, best_value=0.5, best_epoch=1, history=[_record(1)],
                     best_state=best_weights.live(model))
    _saver(tmp_path, model)(state)
    best = state.best_state
    assert isinstance(best, best_weights.BestOnDisk)
    folder = tmp_path / "checkpoint"
    assert (folder / "best.safetensors").samefile(folder / "last.safetensors")
    # the trained tensors and buffers live in the file; the frozen one is the model's own
    assert set(best.shared) == {"0.weight"}
    assert best.shared["0.weight"].data_ptr() == model[0].weight.data_ptr()
    assert set(best.stored) == set(at_best) - {"0.weight"}

    _train_a_little(model)  # the model moves on; the best epoch's weights do not
    for k, v in best.materialize().items():
        assert torch.equal(v, at_best[k]), k
    assert torch.equal(best["2.bias"], at_best["2.bias"]) and len(best) == len(at_best)

    # a later epoch that does not improve: its checkpoint stores the best epoch's tensors
    # (read back from the file) apart from the model's, and the link still holds epoch 1
    state.epoch = 2
    state.history.append(_record(2))
    _saver(tmp_path, model)(state)
    assert not (folder / "best.safetensors").samefile(folder / "last.safetensors")
    model_state, loaded, _ = load_checkpoint(tmp_path)
    assert loaded.best_epoch == 1
    for k, v in at_best.items():
        assert torch.equal(loaded.best_state[k], v), k
    assert not torch.equal(model_state["2.bias"], at_best["2.bias"])
    assert torch.equal(best.materialize()["2.bias"], at_best["2.bias"])


def test_without_hard_links_the_best_weights_are_copied_in_memory(tmp_path, monkeypatch):
    model = _model()
    state = FitState(epoch=1, best_value=0.5, best_epoch=1, history=[_record(1)],
                     best_state=best_weights.live(model))

    def no_links(*a, **k):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    _saver(tmp_path, model)(state)
    best = state.best_state
    assert type(best) is dict and not (tmp_path / "checkpoint" / "best.safetensors").exists()
    assert best["2.weight"].data_ptr() != model[2].weight.data_ptr()  # a copy
    before = best["2.weight"].clone()
    _train_a_little(model)
    assert torch.equal(best["2.weight"], before)


def test_a_removed_best_file_is_a_one_line_error_naming_the_fix(tmp_path):
    from zoo.errors import CheckpointError

    model = _model()
    state = FitState(epoch=1, best_value=0.5, best_epoch=1, history=[_record(1)],
                     best_state=best_weights.live(model))
    _saver(tmp_path, model)(state)
    (tmp_path / "checkpoint" / "best.safetensors").unlink()
    with pytest.raises(CheckpointError, match="do not remove or change a running job's"):
        state.best_state.materialize()


def _job(tmp_path, name):
    # early stopping's patience writes a checkpoint after every epoch
    return load_job(flags={
        "model": "timm:test_resnet", "weights": "none", "seed": 2, "out": str(tmp_path),
        "name": name, "strategy": {"name": "finetune"},
        "train": {"epochs": 4, "batch_size": 16, "lr": 0.1, "early_stop_patience": 10},
        "data": {"name": "demo", "augment": "none", "num_workers": 0,
                 "params": {"per_class": 10}}})


def test_a_best_file_changed_under_the_run_is_refused_not_loaded(tmp_path):
    from safetensors.torch import save_file
    from zoo.errors import CheckpointError

    model = _model()
    state = FitState(epoch=1, best_value=0.5, best_epoch=1, history=[_record(1)],
                     best_state=best_weights.live(model))
    _saver(tmp_path, model)(state)
    path = tmp_path / "checkpoint" / "best.safetensors"
    path.unlink()  # a new file in its place (the generation itself stays intact)
    save_file({k: torch.zeros(2) for k in state.best_state.stored.values()}, str(path))
    with pytest.raises(CheckpointError, match=r"is \(2,\) torch.float32, was written as \("):
        state.best_state.materialize()


def _pinned_pick():
    """The loop's monitored value, pinned: epoch 2 scores best, so the end restores
    weights the model has moved away from, and epochs 3 and 4's checkpoints store them
    read back from the file."""
    calls = []

    def pick(ema, val, monitor, mode, value):
        calls.append(1)
        return (0.9 if len(calls) == 2 else 0.1), False
    return pick


def test_a_run_restores_the_same_best_weights_from_disk_as_from_memory(tmp_path, monkeypatch):
    from zoo.engine import ema
    from zoo.weights import read_safetensors

    kept = []
    real = best_weights.keep_on_disk
    monkeypatch.setattr(best_weights, "keep_on_disk",
                        lambda *a, **k: kept.append(real(*a, **k)) or kept[-1])
    monkeypatch.setattr(ema, "pick", _pinned_pick())
    on_disk = run(_job(tmp_path, "disk"), quiet=True)
    assert len(kept) == 2 and all(isinstance(b, best_weights.BestOnDisk) for b in kept)
    assert on_disk["best_epoch"] == 2
    assert not (tmp_path / "disk" / "checkpoint" / "best.safetensors").exists()

    monkeypatch.setattr(Saver, "keeps_best", False)  # the in-memory copy, as before
    monkeypatch.setattr(ema, "pick", _pinned_pick())
    in_memory = run(_job(tmp_path, "memory"), quiet=True)
    assert on_disk["test"] == in_memory["test"]
    assert in_memory["best_epoch"] == 2 and len(kept) == 2
    a, _ = read_safetensors(tmp_path / "disk" / "model.safetensors")
    b, _ = read_safetensors(tmp_path / "memory" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
