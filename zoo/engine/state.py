"""What :func:`zoo.engine.loop.fit` keeps between epochs: the per-epoch record, the resumable
state, the best-epoch snapshot and the checkpoint pacing."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass
class EpochResult:
    epoch: int
    phase: str
    train_loss: float
    val: dict
    lr: list
    seconds: float
    images_per_second: float
    skipped_steps: int = 0
    cached_features: bool = False
    optimizer_steps: int = 0
    backbone_passes: dict = field(default_factory=dict)  # images through the backbone

    def record(self) -> dict:
        return {"epoch": self.epoch, "phase": self.phase,
                "train": {"loss": self.train_loss, "images_per_second": self.images_per_second,
                          "skipped_steps": self.skipped_steps,
                          "optimizer_steps": self.optimizer_steps},
                "val": self.val, "lr": self.lr, "seconds": round(self.seconds, 4),
                "cached_features": self.cached_features,
                "backbone_passes": dict(self.backbone_passes)}


@dataclass
class FitState:
    """Everything needed to resume: saved after every complete epoch."""

    epoch: int = 0                 # epochs completed
    best_value: float | None = None
    best_epoch: int = 0
    best_state: dict | None = None
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    optimizer_state: dict | None = None  # of the phase in progress
    stopped_early: bool = False    # early stopping ended the run: a resume trains no more
    term_states: dict | None = None  # loss terms' saved tensors (zoo.engine.checkpoint)
    ema: object = None             # train.ema: the weights' average (zoo.engine.ema)


CHECKPOINT_SHARE = 0.02  # of an epoch: the most a checkpoint may cost to be written every epoch


class CheckpointPacer:
    """Decides when an epoch's checkpoint is worth writing.

    Always when it costs at most :data:`CHECKPOINT_SHARE` (2%) of the epoch it protects,
    and at least every ``max_gap`` seconds; a 10 ms cached-feature epoch is not made 4×
    slower by a 40 ms checkpoint.  The loop also saves at the end of every phase but the
    last (its results follow within seconds), and a skipped epoch is held in memory for a
    signal or a failure to flush, so an interrupt loses no epoch and a SIGKILL at most
    ``max_gap`` seconds of work.  2%, not more: a whole run is to cost
    at most 10% over a plain loop that saves once (docs/benchmarks.md), and checkpoints
    must not spend that budget alone (a 0.11 s checkpoint of a 3.5 s epoch was 3%).
    """

    def __init__(self, max_gap: float = 5.0):
        self.cost = 0.0
        self.max_gap = max_gap
        self.last = time.perf_counter()

    def due(self, epoch_seconds: float) -> bool:
        return (self.cost <= CHECKPOINT_SHARE * epoch_seconds
                or time.perf_counter() - self.last >= self.max_gap)

    def save(self, checkpoint: Callable, state) -> None:
        start = time.perf_counter()
        checkpoint(state)
        self.last = time.perf_counter()
        self.cost = self.last - start

    def hold(self, checkpoint: Callable, state, model: nn.Module) -> None:
        """A skipped checkpoint, kept in memory: ``checkpoint.hold`` (when the callable
        has one) gets a copy of the state and the model's weights, which the pipeline
        writes if a signal stops the run — so a signal loses no completed epoch even when
        pacing skipped its checkpoint (SIGKILL still can: the ``max_gap`` window)."""
        keep = getattr(checkpoint, "hold", None)
        if keep is None:
            return
        opt = state.optimizer_state
        if opt is not None:  # the live optimizer mutates its tensors in place
            opt = {"param_groups": [dict(g) for g in opt["param_groups"]],
                   "state": {i: {k: (v.detach().clone() if torch.is_tensor(v) else v)
                                 for k, v in e.items()} for i, e in opt["state"].items()}}
        copy = FitState(epoch=state.epoch, best_value=state.best_value,
                        best_epoch=state.best_epoch, best_state=state.best_state,
                        bad_epochs=state.bad_epochs, history=list(state.history),
                        optimizer_state=opt, stopped_early=state.stopped_early)
        copy.ema = state.ema.copy() if hasattr(state.ema, "copy") else state.ema
        keep(copy, snapshot(model))


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def snapshot(model: nn.Module) -> dict:
    """The model's state for "best epoch so far": trainable parameters and buffers are
    copied; frozen parameters are shared (they cannot change during this phase, and
    :func:`fit` copies them before a later phase trains them) — a frozen backbone is not
    duplicated in memory."""
    train = trainable_names(model)
    params = {n for n, _ in model.named_parameters()}
    return {k: (v.detach().clone() if k in train or k not in params else v.detach())
            for k, v in model.state_dict().items()}
