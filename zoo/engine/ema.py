"""An exponential moving average of the weights (``train.ema: DECAY``), beside the model.

After every optimizer step the average moves toward the model::

    decay_t = min(decay, (1 + t) / (10 + t))      # t: updates so far (warm-up, as in
    ema = decay_t * ema + (1 - decay_t) * model   # TensorFlow's ExponentialMovingAverage)

The warm-up keeps a short run's average from being mostly the starting weights.  Every
floating-point tensor of the model's ``state_dict`` is averaged (BatchNorm's running
statistics too; integer buffers stay the model's); only trainable parameters and buffers are
updated per step — a frozen tensor's average already equals it.  After each epoch's
validation the average is validated too (its values are in ``metrics.jsonl`` as ``ema_*``);
when it is better on the monitored metric than the model, the best-epoch weights are the
average's, and ``summary.json`` says which (``ema.best_from``).  The average is checkpointed in
the same file as the model (``ema.*`` tensors, ``ema`` in the JSON state) and resumed exactly.

A ``steps="none"`` phase (a closed-form fit: NCM, AdaBN) resets the average to its result.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from zoo.engine import best_weights
from zoo.engine.state import snapshot

PREFIX = "ema_"   # of the average's val metrics in an epoch record


class WeightEMA:
    """The averaged tensors (``shadow``), how many updates made them, and which weights —
    the model's or the average's — the best epoch kept (``best_from``)."""

    def __init__(self, model: nn.Module | None, decay: float):
        self.decay, self.updates, self.best_from = float(decay), 0, "model"
        self.shadow: dict[str, torch.Tensor] = {}
        if model is not None:
            self.reset(model)

    def reset(self, model: nn.Module) -> None:
        """The average := the model (the start, or after a closed-form phase, whose result
        is then the best epoch's weights)."""
        self.best_from = "model"
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()
                       if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        moving = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        moving += [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
        names = [n for n, _ in moving if n in self.shadow]
        live = dict(moving)
        torch._foreach_lerp_([self.shadow[n] for n in names],
                             [live[n].detach() for n in names], 1.0 - decay)

    @contextmanager
    def applied(self, model: nn.Module):
        """The model carries the average's weights inside the block, its own after."""
        current = model.state_dict()
        backup = {k: current[k].detach().clone() for k in self.shadow}
        with torch.no_grad():
            for k, v in self.shadow.items():
                current[k].copy_(v)
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in backup.items():
                    current[k].copy_(v)

    def best_snapshot(self, model: nn.Module) -> dict:
        """The model's state with the average's tensors: the best epoch's weights."""
        return {**snapshot(model), **{k: v.clone() for k, v in self.shadow.items()}}

    def copy(self) -> "WeightEMA":
        """A frozen copy (a paced checkpoint held in memory)."""
        other = WeightEMA(None, self.decay)
        other.updates, other.best_from = self.updates, self.best_from
        other.shadow = {k: v.detach().clone() for k, v in self.shadow.items()}
        return other

    # -- the checkpoint ------------------------------------------------------------------
    def tensors(self) -> dict:
        return {f"ema.{k}": v for k, v in self.shadow.items()}

    def info(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "best_from": self.best_from}


def start(model: nn.Module, job, state) -> WeightEMA | None:
    """The run's average (``None`` without ``train.ema``), kept on ``state.ema``: restored
    from a resumed checkpoint (``{"tensors", "info"}`` there), else begun at the model."""
    decay = getattr(job.train, "ema", None)
    saved = getattr(state, "ema", None)
    if decay is None:
        return None
    if isinstance(saved, WeightEMA):
        return saved
    ema = WeightEMA(None if isinstance(saved, dict) else model, decay)
    if isinstance(saved, dict):
        device = next(iter(model.state_dict().values())).device
        ema.shadow = {k[4:]: v.to(device).clone() for k, v in saved["tensors"].items()}
        info = saved.get("info") or {}
        ema.updates = int(info.get("updates") or 0)
        ema.best_from = str(info.get("best_from") or "model")
        missing = set(k for k, v in model.state_dict().items() if v.is_floating_point()) \
            - set(ema.shadow)
        if missing:  # a checkpoint from before train.ema was set: begin at the model
            ema.reset(model)
    state.ema = ema
    return ema


def validate(ema: WeightEMA, model: nn.Module, run_eval, val: dict) -> None:
    """Validate the average (``run_eval()`` → the metrics dict of the model as it is now)
    and add its scalar values to ``val`` as ``ema_<metric>``."""
    with ema.applied(model):
        raw = run_eval()
    val.update({f"{PREFIX}{k}": v for k, v in raw.items() if isinstance(v, float)})


def pick(ema: WeightEMA | None, val: dict, monitor: str, mode: str, value):
    """``(value, from_ema)``: the average's monitored value when it beats the model's."""
    if ema is None or not val:
        return value, False
    key = monitor if monitor in val else "loss"
    mine = val.get(f"{PREFIX}{key}")
    if mine is None or value is None:
        return value, False
    # the loop's own rule (zoo.engine.loop.fit) for what "better" means
    better = mine > value if (mode == "max" or monitor not in val) else mine < value
    return (mine, True) if better else (value, False)


def keep_best(ema: WeightEMA | None, model: nn.Module, from_ema: bool,
              live: bool = False) -> dict:
    """The best epoch's weights: the average's or the model's (recorded on ``ema``).
    ``live``: the model's, uncopied, for the checkpoint written next to keep on disk
    (:mod:`zoo.engine.best_weights`); the average's are always a copy."""
    if ema is not None:
        ema.best_from = "ema" if from_ema else "model"
        if from_ema:
            return ema.best_snapshot(model)
    return best_weights.live(model) if live else snapshot(model)


def summary_of(state) -> dict:
    """``{"ema": {...}}`` for ``summary.json`` (empty without an average)."""
    ema = getattr(state, "ema", None)
    if not isinstance(ema, WeightEMA):
        return {}
    return {"ema": {"decay": ema.decay, "updates": ema.updates, "best_from": ema.best_from}}
