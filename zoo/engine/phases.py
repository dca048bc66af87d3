"""What the loop needs for the wider strategy contract: extra data streams and phases
without gradient steps.

* :class:`StreamFeeder` — one batch of each stream a phase declares (``Phase.streams``:
  ``target_unlabeled``, ``source``) per training step, on the device, labels dropped; the
  stream loaders cycle (a small target set is seen again rather than ending the epoch) and
  are re-seeded per epoch, so a resumed run reads the same batches.
* :func:`run_fit_phase` — a ``steps="none"`` phase: ``phase.fit(PhaseContext)`` with the
  frozen backbone's features of a split (one backbone pass per split, through the
  :class:`~zoo.engine.features.FeatureCache`) and the loaders of train/val/streams.
* :class:`PhaseStats` — per phase, optimizer steps and backbone passes, for
  ``summary.json``'s ``phases``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from zoo.engine.evaluation import evaluate
from zoo.engine.features import extract_features
from zoo.engine.state import EpochResult
from zoo.errors import ConfigError
from zoo.strategy import PhaseContext

STREAM_HINT = {"target_unlabeled": "name unlabeled target images with the job key target_data "
                                   "(without it, the job's own train split is read unlabeled)",
               "source": "name the source task with --source-data (job key source_data)"}


def missing_stream(phase, loaders: dict) -> str | None:
    """The first stream ``phase`` declares that ``loaders`` lacks, or None."""
    return next((s for s in phase.streams if loaders.get(s) is None), None)


def require_streams(phase, loaders: dict) -> None:
    name = missing_stream(phase, loaders)
    if name is not None:
        raise ConfigError(f"phase '{phase.name}' reads the data stream '{name}', which this "
                          f"job does not have — {STREAM_HINT.get(name, 'name it in the job')}")


class StreamFeeder:
    """Cycles the loaders of a phase's streams; :meth:`next` gives one batch of each."""

    def __init__(self, phase, loaders: dict, to_device: Callable):
        require_streams(phase, loaders)
        self.loaders = {s: loaders[s] for s in phase.streams}
        self.to_device = to_device
        self.iters: dict[str, Any] = {}

    def start_epoch(self, seed: int, epoch: int) -> None:
        for i, (name, loader) in enumerate(self.loaders.items()):
            gen = getattr(loader, "generator", None)
            if gen is not None:  # same batches after a resume
                gen.manual_seed(seed * 100_003 + epoch + 7_919 * (i + 1))
        self.iters = {}

    def next(self) -> dict:
        out = {}
        for name, loader in self.loaders.items():
            it = self.iters.get(name)
            batch = next(it, None) if it is not None else None
            if batch is None:  # start (again): streams cycle independently of the epoch
                self.iters[name] = it = iter(loader)
                batch = next(it)
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            out[name] = self.to_device(inputs)
        return out


@dataclass
class PhaseStats:
    """One phase's record in ``summary.json``."""

    name: str
    steps: str
    epochs: int = 0
    optimizer_steps: int = 0
    backbone_passes: dict = field(default_factory=dict)   # split/stream -> images through it

    def record(self) -> dict:
        return {"name": self.name, "steps": self.steps, "epochs": self.epochs,
                "optimizer_steps": self.optimizer_steps,
                "backbone_passes": dict(self.backbone_passes)}


def run_fit_phase(phase, model, job, classes: list, loaders: dict, device,
                  features: Callable[[str], tuple | None] | None, stats: PhaseStats,
                  log: Callable = print) -> None:
    """Run a ``steps="none"`` phase: its ``fit(ctx)`` does closed-form work, no optimizer.

    ``ctx.features(split)`` is the frozen backbone's ``(features, labels)`` of ``"train"``,
    ``"val"`` or a stream: from the feature cache where ``features(split)`` has them, else
    one backbone pass here; ``ctx.loader(name)`` a DataLoader.
    """
    for p in model.parameters():  # nothing takes a gradient step in this phase
        p.requires_grad_(False)
    model.eval()

    def loader(name: str):
        if name not in ("train", "val") and name not in phase.streams:
            raise ConfigError(f"phase '{phase.name}' asked for the data stream '{name}' "
                              f"without declaring it in Phase.streams")
        if loaders.get(name) is None:
            raise ConfigError(f"phase '{phase.name}' reads the data '{name}', which this job "
                              f"does not have — {STREAM_HINT.get(name, 'name it in the job')}")
        return loaders[name]

    def feats(split: str):
        loader(split)  # declared and present
        out = features(split) if features is not None and split in ("train", "val") else None
        if out is None:
            out = extract_features(model.backbone, loaders[split], device,
                                   job.train.precision, job.train.channels_last)
        stats.backbone_passes[split] = int(len(out[0]))
        return out

    ctx = PhaseContext(model=model, job=job, device=device, classes=list(classes),
                       features=feats, loader=loader, log=log)
    with torch.enable_grad():  # fit may use autograd internally (e.g. a few solver steps)
        phase.fit(ctx)
    for p in model.parameters():
        p.requires_grad_(False)


def trains_on(plan, job) -> str:
    """Where the supervised loss trains: ``"source"`` or ``"target"`` (``plan.train_on``).

    ``"auto"`` (the default) is ``"source"`` when a phase reads unlabeled target images
    (``target_unlabeled``) and the job names a source task (``source_data``) — unsupervised
    domain adaptation: labels only in the source, the target's test split reports — else
    ``"target"`` (the job's own data).
    """
    choice = getattr(plan, "train_on", "auto")
    if choice == "auto":
        uda = any("target_unlabeled" in p.streams for p in plan.phases)
        return "source" if uda and job.source_data is not None else "target"
    if choice == "source" and job.source_data is None:
        raise ConfigError(f"strategy '{plan.strategy}' trains on the source task, and the job "
                          "names none — add --source-data (job key source_data)")
    return choice


def data_streams(prep, plan, job, batch_size: int, workers, device_type: str,
                 make_loader: Callable) -> dict:
    """Loaders the plan needs beyond train/val/test: its streams and, when it trains on the
    source, the source's train and val splits in place of the job's (``trains_on``)."""
    wanted = {s for p in plan.phases for s in p.streams}
    out: dict = {}
    if "target_unlabeled" in wanted:  # labels are dropped by the stream feeder
        images = prep.target.train if prep.target is not None else prep.bundle.train
        out["target_unlabeled"] = make_loader(images, min(batch_size, len(images)), True,
                                              job.seed + 1, workers, device_type)
    source = prep.source
    if source is not None and ("source" in wanted or trains_on(plan, job) == "source"):
        out["source"] = make_loader(source.train, min(batch_size, len(source.train)), True,
                                    job.seed + 2, workers, device_type)
    if trains_on(plan, job) == "source":
        if list(source.classes) != list(prep.bundle.classes):
            raise ConfigError(f"the source task's classes {source.classes[:5]} differ from the "
                              f"target's {prep.bundle.classes[:5]}: training on the source "
                              "needs the same label space (same class folder names)")
        out["train"] = out["source"]
        out["val"] = (make_loader(source.val, batch_size, False, job.seed, workers,
                                  device_type) if len(source.val) else None)
    return out


def phase_records(plan, history: list) -> list[dict]:
    """``summary.json``'s ``phases``: per planned phase, epochs run, optimizer steps and
    images through the backbone (by split or stream), summed from the epoch records."""
    out = []
    for phase in plan.phases:
        stats = PhaseStats(phase.name, phase.steps)
        for rec in history:
            if rec.get("phase") != phase.name:
                continue
            stats.epochs += 1
            stats.optimizer_steps += int((rec.get("train") or {}).get("optimizer_steps", 0))
            for k, v in (rec.get("backbone_passes") or {}).items():
                stats.backbone_passes[k] = stats.backbone_passes.get(k, 0) + int(v)
        out.append(stats.record())
    return out


def closed_form_epoch(phase, epoch: int, model, job, loaders: dict, metrics: dict, rt, state,
                      cached: dict | None, log) -> EpochResult:
    """One epoch of a ``steps="none"`` phase: ``phase.fit(ctx)``, then val like an epoch.

    Its result is always kept as the best state: a closed-form step (a fitted head,
    re-estimated statistics) is the method's answer, which the val split does not veto.
    """
    start = time.perf_counter()

    def from_cache(split: str):
        loader = (cached or {}).get(split)
        return tuple(loader.dataset.tensors) if loader is not None else None

    stats = PhaseStats(phase.name, phase.steps)
    run_fit_phase(phase, model, job, loaders["train"].dataset.classes, loaders, rt.device,
                  from_cache, stats, log)
    model.eval()
    val: dict = {}
    val_loader = loaders.get("val")
    if val_loader is not None and len(val_loader.dataset) > 0:
        val_raw, _ = evaluate(model, val_loader, metrics, rt.device, job.train.precision,
                              job.train.channels_last)
        val = {k: v for k, v in val_raw.items() if isinstance(v, float)}
        stats.backbone_passes["val"] = len(val_loader.dataset)
    elapsed = time.perf_counter() - start
    result = EpochResult(epoch, phase.name, 0.0, val, [], elapsed, 0.0, 0, cached is not None,
                         0, stats.backbone_passes)
    state.epoch = epoch
    state.history.append(result.record())
    state.best_value = val.get(job.monitor.metric, val.get("loss")) if val else 0.0
    state.best_epoch, state.bad_epochs = epoch, 0
    state.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.optimizer_state = None
    return result
