"""``auto``'s trials: one (strategy, LR) candidate trained on a budget, scored on val.

:class:`Trials` holds what every trial shares — the splits, the loaders, one
:class:`~zoo.engine.features.FeatureCache` per labeled data set (the un-augmented train split
and val through the untouched backbone, computed once: every frozen-backbone phase of every
trial trains on it), the accuracy metric — and :meth:`Trials.run` trains a *copy* of the
model with :func:`zoo.engine.loop.fit` (the run's model is never touched).  Only the train
and val splits are read: a trial never sees a test label.

Imported only when ``auto`` plans (it imports torch).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any

import torch
from torchmetrics.classification import MulticlassAccuracy

from zoo.engine.data import eval_view, make_loader
from zoo.engine.features import FeatureCache
from zoo.engine.loop import fit
from zoo.engine.runtime import Runtime
from zoo.engine.lr_range import range_test

from .head_change import plan_with_changes

PAID = ("partial", "full")   # costs that count against the budget (the backbone runs)


@dataclasses.dataclass
class Candidate:
    """One (strategy, LR) pair; ``scores[rung] = (val accuracy, val loss, seconds)``."""

    strategy: str
    obj: Any
    cost: str
    job: Any              # the strategy's own job: its params, train.lr = this candidate's LR
    trains_on: str        # "target" (the job's data) or "source" (UDA: source_data)
    lr: float | None = None
    lr_from: str = ""     # "default", "default × 3", "lr-find", ...
    scores: dict = dataclasses.field(default_factory=dict)
    changes: list = dataclasses.field(default_factory=list)  # model changes (its own head)
    # its latest trial's weights (CPU), kept for the last rung: the run's head start
    trained: dict | None = dataclasses.field(default=None, repr=False)
    trained_for: str = ""  # what those weights trained: "2 epoch(s) on 90% of train"
    trained_diff: bool = False  # ``trained`` holds only the tensors the trial changed
    changes_model: bool = False  # its plan declares model changes (adapters): set by a trial

    @property
    def label(self) -> str:
        return self.strategy if self.lr is None else f"{self.strategy} @ {self.lr:.2g}"

    def as_dict(self) -> dict:
        """A trial's record for ``summary.json`` (``auto.trials``): scores by rung."""
        return {"strategy": self.strategy, "lr": self.lr, "lr_from": self.lr_from,
                "cost": self.cost, "trains_on": self.trains_on,
                "scores": {str(r): list(s) for r, s in self.scores.items()}}


@dataclasses.dataclass
class TrialResult:
    """A candidate's latest score (``strategy`` is its label)."""

    strategy: str
    accuracy: float
    loss: float
    seconds: float
    detail: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Subset:
    """A subset of a dataset that keeps ``classes`` (the loop and caches read it)."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices
        self.classes = getattr(dataset, "classes", None)
        targets = getattr(dataset, "targets", None)
        self.targets = [targets[i] for i in indices] if targets is not None else None
        self.in_memory = getattr(dataset, "in_memory", False)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def trial_job(job, epochs: int):
    """``job`` for a short trial: ``epochs`` epochs, no early stop, monitor val accuracy."""
    train = dataclasses.replace(job.train, epochs=epochs, early_stop_patience=None)
    return dataclasses.replace(job, train=train, monitor=dataclasses.replace(
        job.monitor, metric="accuracy", mode="max"))


class Trials:
    """Runs candidates on copies of ``model``; ``data`` maps "target"/"source" to bundles."""

    def __init__(self, model, groups, job, data: dict, device, streams: dict, ctx=None):
        self.model, self.groups, self.job, self.data = model, groups, job, data
        self.ctx = ctx  # the run's PlanContext: candidates plan with it
        self.device = device or torch.device("cpu")
        self.streams = streams            # stream name -> dataset (target_unlabeled, source)
        self.workers = job.data.num_workers
        self.snapshot = copy.deepcopy(model.backbone)  # the features every cache is of
        self.caches: dict[str, FeatureCache] = {}
        self.val_loaders = {k: make_loader(b.val, self._bs(b.val), False, job.seed,
                                           self.workers, self.device.type)
                            for k, b in data.items()}
        classes = len(next(iter(data.values())).classes)
        self.metrics = {"accuracy": MulticlassAccuracy(num_classes=classes, average="micro",
                                                       validate_args=False).to(self.device)}

    def _bs(self, dataset) -> int:
        return max(1, min(self.job.train.batch_size, len(dataset)))

    def cache(self, where: str) -> FeatureCache | None:
        if where not in self.caches:
            b = self.data[where]
            plain = eval_view(b.train, b.val)
            loaders = {"train": make_loader(plain, self._bs(plain), False, self.job.seed,
                                            self.workers, self.device.type),
                       "val": self.val_loaders[where]}
            self.caches[where] = FeatureCache(self.snapshot, loaders, self.device, self.job)
        c = self.caches[where]
        return c if c.fits_budget() else None

    def epochs_for(self, cand: Candidate, budget: float,
                   equal_budget: bool = False) -> tuple[int, float]:
        """``(epochs, fraction of the train split)`` for ``budget`` epochs of ``cand``; a
        free or cheap candidate trains all of the run's epochs (they cost next to nothing:
        it is scored as it will run) unless ``equal_budget`` (compared with a paid one)."""
        if cand.cost not in PAID and not equal_budget:
            return max(1, cand.job.train.epochs), 1.0
        # ceil(budget) epochs on a share of the train split: exactly ``budget`` epochs of
        # images (1.8 is 2 epochs of 90%, not 1 epoch), each epoch a full schedule step
        epochs = max(1, math.ceil(budget - 1e-9))
        return epochs, min(1.0, budget / epochs)

    def run(self, cand: Candidate, budget: float, equal_budget: bool = False,
            keep_weights: bool = False) -> TrialResult:
        """Train a copy of the model with ``cand``'s plan on ``budget`` epochs; score on val;
        ``keep_weights``: the trained weights go to ``cand.trained`` (the run may start from
        them)."""
        t0 = time.perf_counter()
        epochs, fraction = self.epochs_for(cand, budget, equal_budget)
        job = trial_job(cand.job, epochs)
        b = self.data[cand.trains_on]
        train, subset = b.train, None
        if fraction < 1.0:  # below one epoch: a random subset (never fewer than a batch)
            g = torch.Generator().manual_seed(self.job.seed + 7)
            keep = max(self._bs(train), int(round(fraction * len(train))))
            subset = torch.randperm(len(train), generator=g)[:keep].tolist()
            train = _Subset(train, subset)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.job.seed)
            model = copy.deepcopy(self.model).to(self.device)
            groups = copy.deepcopy(self.groups)
            plan = plan_with_changes(cand.obj, model, groups, job, cand.changes, self.ctx)
            cand.changes_model = bool(plan.model_changes)
            cache = self.cache(cand.trains_on)
            backbone_changed = any(c.touches_backbone for c in plan.model_changes)
            frozen_so_far = {id(p): all(q.backbone_frozen() and q.steps == "gradient"
                                        for q in plan.phases[:i])
                             for i, p in enumerate(plan.phases)}

            def feature_loaders(phase):
                # un-augmented cached features for a frozen phase while the backbone is
                # still the source one (trials approximate the run: speed over augmentation)
                if (cache is None or backbone_changed or not phase.backbone_frozen()
                        or not frozen_so_far[id(phase)]
                        or any(getattr(t, "needs_features", True) for t in phase.loss_terms)):
                    return None
                features = cache.loader("train", True, self._bs(train))
                if subset is not None:  # the same images as the subset above (equal budgets)
                    features = make_loader(_Subset(features.dataset, subset), self._bs(train),
                                           True, self.job.seed, 0, "cpu")
                return {"train": features, "val": cache.loader("val", False, self._bs(b.val))}

            loaders = {"train": make_loader(train, self._bs(train), True, self.job.seed,
                                            self.workers, self.device.type),
                       "val": self.val_loaders[cand.trains_on]}
            for name, images in self.streams.items():
                loaders[name] = make_loader(images, self._bs(images), True, self.job.seed + 1,
                                            self.workers, self.device.type)
            state = fit(model, groups, plan, loaders, self.metrics, job,
                        Runtime.for_job(job, self.device),
                        feature_loaders=feature_loaders, log=lambda *a, **k: None)
        rec = state.history[state.best_epoch - 1]["val"] if state.best_epoch else {}
        share = "" if fraction >= 1 else f" on {fraction:.0%} of train"
        if keep_weights:  # the weights as scored (its best epoch's): the run may start from
            # them (a paid winner) or fall back to them (a measured rival); a frozen-backbone
            # candidate keeps only what it changed (its head), not a copy of the backbone
            best = state.best_state if state.best_state is not None else model.state_dict()
            source = self.model.state_dict() if cand.cost not in PAID else {}
            cand.trained = {k: v.detach().to("cpu", copy=True) for k, v in best.items()
                            if k not in source or source[k].shape != v.shape
                            or not torch.equal(source[k], v.to(source[k].device))}
            cand.trained_diff = cand.cost not in PAID
            cand.trained_for = f"{epochs} epoch(s){share} at lr {cand.lr:.2g}" \
                if cand.lr is not None else f"{epochs} epoch(s){share}"
        return TrialResult(cand.label, float(rec.get("accuracy", 0.0)),
                           float(rec.get("loss", float("inf"))),
                           round(time.perf_counter() - t0, 3), f"{epochs} epoch(s){share}")

    def find_lr(self, cand: Candidate, steps: int = 60) -> dict:
        """The LR range test (:mod:`zoo.engine.lr_range`) of ``cand``'s plan, on a copy."""
        job = dataclasses.replace(cand.job, train=dataclasses.replace(cand.job.train, lr=1.0))
        b = self.data[cand.trains_on]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.job.seed)
            model = copy.deepcopy(self.model)
            groups = copy.deepcopy(self.groups)
            plan = plan_with_changes(cand.obj, model, groups, job, cand.changes, self.ctx)
            train = eval_view(b.train, b.val) if cand.cost == "cheap" else b.train
            return range_test(model, groups, plan, train, job, self.device, steps=steps)
