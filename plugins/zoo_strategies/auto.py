"""``auto``: choose a strategy for *this* data by short, budgeted trials, and say why.

Procedure (docs/strategies.md has the measurements behind it):

1. **No source weights** (random init): ``finetune``, no trials.  Frozen random features
   are not worth probing; every layer must learn, at the full LR.
2. **No val split**: ``lp-ft`` (Kumar et al. 2022: as good as fine-tuning in distribution,
   better out of it), no trials — there is nothing to measure them on.
3. Otherwise **trials on the train split, scored on the val split**, on copies of the model
   (the run's model is untouched):

   - ``linear-probe``: the backbone's features of train (un-augmented, as ``linear-probe``
     sees them) and val are computed once, then the head trains on them for
     ``train.epochs`` epochs at ``probe_lr`` — nearly free.
   - ``lp-ft``: from that probe's head, every layer fine-tunes for ``t`` epochs at
     ``lr × 0.1`` (the lp-ft fine-tune phase).
   - ``finetune``: from a fresh head, ``t`` epochs of the finetune plan.

   The trials that train the backbone share a budget of ``budget × train.epochs`` epochs
   (default 0.4: with two of them, ``t`` is 1 epoch of 5; below one epoch each, they see
   a random subset of the train split).  The best val accuracy wins; candidates within
   one val image of it count as tied and the lowest val loss among them wins.

Then ``auto`` plans the chosen strategy's phases for the full run (its defaults; a
linear probe at ``probe_lr`` on un-augmented images — the run's train split gets the val
transform, as ``linear-probe``'s registry default ``data.augment: none`` would give) and its
notes say what it measured.  The trials cost about
``budget`` plus one feature pass of a fine-tune run; the chosen run itself costs at most a
fine-tune run, so ``auto`` stays under ~1.5× a single fine-tune run.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time

from .base import Finetune, LinearProbe, Strategy, has_source_weights

TRIALS = ("linear-probe", "finetune", "lp-ft")


@dataclasses.dataclass
class TrialResult:
    strategy: str
    accuracy: float
    loss: float
    seconds: float
    detail: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Auto(Strategy):
    """Choose linear-probe, finetune or lp-ft by short budgeted trials on the val split; explains why."""

    name = "auto"
    defaults = {"candidates": ",".join(TRIALS), "budget": 0.4, "probe_lr": 0.01}

    def __init__(self):
        self._bundle = None
        self._device = None
        self.last_trials: list[TrialResult] = []   # of the latest plan (tests, compare)

    def prepare(self, bundle=None, device=None, **_ignored):
        """Called by the runner before every plan: the run's splits and device."""
        self._bundle = bundle
        self._device = device

    # -- the plan ----------------------------------------------------------------------------
    def candidates(self, p: dict) -> list[str]:
        from zoo.errors import ConfigError, did_you_mean

        raw = p["candidates"]
        names = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
        names = [str(n).strip() for n in names if str(n).strip()]
        for n in names:
            if n not in TRIALS:
                raise ConfigError(f"strategy 'auto': candidate '{n}' cannot be trialled"
                                  f"{did_you_mean(n, TRIALS)} (choose from {', '.join(TRIALS)})")
        if not names:
            raise ConfigError("strategy 'auto': 'candidates' names no strategy")
        return list(dict.fromkeys(names))

    def plan(self, model, groups, job):
        from zoo.strategy import StrategyPlan

        p = self.params(job)
        cands = self.candidates(p)
        budget = self.number(p, "budget", float, 0.0, 10.0)
        probe_lr = self.number(p, "probe_lr", float, 0.0)
        self.last_trials = []
        bundle = self._bundle
        n_train = len(bundle.train) if bundle is not None else 0
        n_val = len(bundle.val) if bundle is not None and bundle.val is not None else 0
        data_note = []
        if bundle is not None:
            k = len(bundle.classes)
            data_note = [f"data: {k} classes, {n_train / max(1, k):.0f} train and "
                         f"{n_val / max(1, k):.0f} val images per class"]
        if not has_source_weights(model):
            chosen = _prefer(cands, ("finetune", "lp-ft", "linear-probe"))
            why = ("no source weights (random init): frozen random features are not worth "
                   "probing, every layer has to learn at the full LR; no trials run")
            extra = []
        elif bundle is None or n_val == 0:
            chosen = _prefer(cands, ("lp-ft", "finetune", "linear-probe"))
            why = ("no val split to score trials on: lp-ft is the safe default with source "
                   "weights (Kumar et al. 2022); set data.val_split to let auto measure")
            extra = []
        elif len(cands) == 1:
            chosen, why, extra = cands[0], "it is the only candidate", []
        else:
            trials, seconds, detail = run_trials(model, groups, job, bundle, self._device,
                                                 cands, budget, probe_lr)
            self.last_trials = trials
            chosen, why = choose(trials, n_val)
            extra = [f"trials ({seconds:.1f}s; {detail}): " + " · ".join(
                f"{t.strategy} acc {t.accuracy:.3f} loss {t.loss:.3f} ({t.detail})"
                for t in trials)]
        plan = self.delegate(chosen, model, groups, job, probe_lr)
        if chosen == "linear-probe" and job.data.augment != "none" and bundle is not None:
            # like `--strategy linear-probe` (registry: data.augment none): a probe fits
            # fixed features best; a plan cannot change job.data, so the run's train split
            # gets the val transform here (prepare() handed over this run's splits)
            if _set_train_transform(bundle):
                plan.notes.append(f"trains on un-augmented images (data.augment "
                                  f"{job.data.augment} applies to fine-tuning only)")
        notes = [f"auto chose '{chosen}': {why}", *extra, *data_note,
                 *[f"{chosen}: {n}" for n in plan.notes]]
        return StrategyPlan(self.name, plan.phases, notes)

    @staticmethod
    def delegate(chosen: str, model, groups, job, probe_lr: float):
        """The chosen strategy's own plan for the full run (its default parameters)."""
        from .schedules import LpFt

        sub = dataclasses.replace(job, strategy=dataclasses.replace(job.strategy, name=chosen,
                                                                     params={}))
        strategy = {"linear-probe": LinearProbe, "finetune": Finetune, "lp-ft": LpFt}[chosen]()
        plan = strategy.plan(model, groups, sub)
        if chosen == "linear-probe":
            for phase in plan.phases:
                phase.lr = probe_lr
            plan.notes.append(f"head at probe_lr {probe_lr:g}")
        return plan


def _plain_train(bundle):
    """The train split with the val transform (no augmentation), or None if unknown."""
    train, val = bundle.train, bundle.val
    if not (hasattr(train, "transform") and hasattr(val, "transform")):
        return None
    view = copy.copy(train)
    view.transform = val.transform
    return view


def _set_train_transform(bundle) -> bool:
    if not (hasattr(bundle.train, "transform") and hasattr(bundle.val, "transform")):
        return False
    bundle.train.transform = bundle.val.transform
    return True


def _prefer(cands: list[str], order: tuple) -> str:
    for name in order:
        if name in cands:
            return name
    return cands[0]


def choose(trials: list[TrialResult], n_val: int) -> tuple[str, str]:
    """Best val accuracy; within one val image of it, the lowest val loss."""
    best = max(t.accuracy for t in trials)
    tol = 1.0 / max(1, n_val) + 1e-9
    tied = [t for t in trials if t.accuracy >= best - tol]
    winner = min(tied, key=lambda t: t.loss)
    others = [t for t in trials if t is not winner]
    if len(tied) > 1:
        why = (f"val accuracy {winner.accuracy:.3f} ties with "
               + ", ".join(f"{t.strategy} {t.accuracy:.3f}" for t in tied if t is not winner)
               + f" (within one of {n_val} val images); lowest val loss {winner.loss:.3f}")
    else:
        runner = max(others, key=lambda t: t.accuracy)
        why = (f"best val accuracy in short trials, {winner.accuracy:.3f} vs "
               f"{runner.strategy} {runner.accuracy:.3f} "
               f"(+{100 * (winner.accuracy - runner.accuracy):.1f} points; one val image is "
               f"{100 / max(1, n_val):.1f})")
    return winner.strategy, why


# -- trials ----------------------------------------------------------------------------------
def run_trials(model, groups, job, bundle, device, cands: list[str], budget: float,
               probe_lr: float) -> tuple[list[TrialResult], float, str]:
    """Short runs of the candidates on copies of ``model``; ``(results, seconds, detail)``."""
    import torch

    from zoo.engine.data import make_loader
    from zoo.engine.features import FeatureCache
    from zoo.engine.loop import fit
    from zoo.strategy import StrategyPlan

    from .schedules import LpFt

    device = device or torch.device("cpu")
    started = time.perf_counter()
    epochs = job.train.epochs
    training = [c for c in cands if c in ("finetune", "lp-ft")]
    per = budget * epochs / max(1, len(training))
    t_epochs = max(1, math.floor(per))
    fraction = min(1.0, per) if per < 1 else 1.0
    bs = max(1, min(job.train.batch_size, len(bundle.train)))
    workers = job.data.num_workers

    train_ds = bundle.train
    if fraction < 1.0:
        g = torch.Generator().manual_seed(job.seed + 7)
        keep = max(bs, int(round(fraction * len(train_ds))))
        idx = torch.randperm(len(train_ds), generator=g)[:keep].tolist()
        train_ds = _Subset(bundle.train, idx)
    plain = _plain_train(bundle)  # the probe sees un-augmented images, as linear-probe does
    full_loaders = {"train": make_loader(plain if plain is not None else bundle.train, bs, True,
                                         job.seed, workers, device.type),
                    "val": make_loader(bundle.val, bs, False, job.seed, workers, device.type)}
    trial_loaders = {"train": make_loader(train_ds, bs, True, job.seed, workers, device.type),
                     "val": full_loaders["val"]}
    from torchmetrics.classification import MulticlassAccuracy

    metrics = {"accuracy": MulticlassAccuracy(num_classes=len(bundle.classes),
                                              average="micro", validate_args=False).to(device)}

    def trial_job(n_epochs: int, **train_over):
        train = dataclasses.replace(job.train, epochs=n_epochs, early_stop_patience=None,
                                    **train_over)
        return dataclasses.replace(
            job, train=train, monitor=dataclasses.replace(job.monitor, metric="accuracy",
                                                          mode="max"),
            strategy=dataclasses.replace(job.strategy, params={}))

    def quiet(*_a, **_k):
        return None

    def result(name, state, seconds, detail) -> TrialResult:
        rec = state.history[state.best_epoch - 1]["val"] if state.best_epoch else {}
        return TrialResult(name, float(rec.get("accuracy", 0.0)),
                           float(rec.get("loss", float("inf"))), round(seconds, 3), detail)

    results: list[TrialResult] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.seed)
        probe_head = None
        if "linear-probe" in cands or "lp-ft" in cands:
            t0 = time.perf_counter()
            m = copy.deepcopy(model).to(device)
            lp_job = trial_job(epochs, weight_decay=0.0)
            plan = LinearProbe().plan(m, groups, lp_job)
            for phase in plan.phases:
                phase.lr = probe_lr
            cache = FeatureCache(m.backbone, full_loaders, device, lp_job)
            cached = cache.fits_budget()

            def feature_loaders(phase):
                if not cached or not phase.backbone_frozen():
                    return None
                return {"train": cache.loader("train", True, bs),
                        "val": cache.loader("val", False, bs)}

            state = fit(m, groups, plan, full_loaders, metrics, lp_job, device,
                        feature_loaders=feature_loaders, log=quiet)
            if state.best_state is not None:
                m.load_state_dict(state.best_state)
            probe_head = copy.deepcopy(m.head.state_dict())
            if "linear-probe" in cands:
                results.append(result("linear-probe", state, time.perf_counter() - t0,
                                      f"{epochs} epochs" + (" on cached features"
                                                            if cached else "")))
            lp_seconds = time.perf_counter() - t0
            del m
        if "lp-ft" in cands:
            t0 = time.perf_counter()
            m = copy.deepcopy(model).to(device)
            m.head.load_state_dict(probe_head)
            sub = trial_job(t_epochs + 1)
            ft_phase = LpFt().plan(m, groups, sub).phases[-1]
            ft_phase.epochs = t_epochs
            state = fit(m, groups, StrategyPlan("lp-ft", [ft_phase]), trial_loaders, metrics,
                        sub, device, log=quiet)
            results.append(result("lp-ft", state, time.perf_counter() - t0 + lp_seconds,
                                  f"probe + {t_epochs} fine-tune epoch(s)"))
            del m
        if "finetune" in cands:
            t0 = time.perf_counter()
            m = copy.deepcopy(model).to(device)
            sub = trial_job(t_epochs)
            plan = Finetune().plan(m, groups, sub)
            state = fit(m, groups, plan, trial_loaders, metrics, sub, device, log=quiet)
            results.append(result("finetune", state, time.perf_counter() - t0,
                                  f"{t_epochs} epoch(s)"))
            del m
    order = {n: i for i, n in enumerate(cands)}
    results.sort(key=lambda r: order[r.strategy])
    share = "" if fraction >= 1.0 else f" on {fraction:.0%} of the train split"
    detail = (f"budget {budget:g} × {epochs} epochs: {t_epochs} trial epoch(s){share} for "
              f"each of {', '.join(training) or 'none'}")
    return results, time.perf_counter() - started, detail


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
