"""``auto``: choose a strategy and its LR for *this* data by successive halving, and say why.

Candidates (docs/strategies.md, "auto"): every strategy of the catalog whose ``auto``
attribute is a :class:`zoo.strategy.AutoCandidate` (cost ``free``/``cheap``/``partial``/
``full``, ``needs_source_weights``, ``needs`` streams) and whose needs this job meets —
PEFT, training-free and UDA strategies join without editing ``auto``; a name two plugins
register joins twice (the winner by its name, the other as ``PLUGIN:NAME``); ``candidates`` (a
list of names) overrides discovery.  A candidate whose job defaults name its own head
(``ncm``, ``knn``) is planned with that head (:class:`.head_change.ReplaceHead`, then a model
change of the final plan).  A candidate whose plan fails on this model (``lora`` without
peft) is skipped with the reason.  LRs per strategy: its
default LR (its job defaults' ``train.lr``, else the job's) and ×/÷ ``lr_factor``, or with
``lr=auto`` the LR range test's suggestion (:mod:`zoo.engine.lr_range`).

Procedure:

1. **No source weights**: ``finetune`` (or the first full-cost candidate), no trials.
2. **No val split**: ``lp-ft`` (Kumar et al. 2022), no trials — nothing to score them on.
3. Otherwise: ``free`` and ``cheap`` candidates are scored once, trained as the run
   will train them (cached features); the paid ones (``partial``/``full``) compete among
   themselves by **successive halving** (Jamieson & Talwalkar 2016; one Hyperband
   bracket) on copies of the model for rung budgets ``b, b·eta, ...`` epochs, the top
   ``1/eta`` by val accuracy going on, as many as ``budget`` fine-tune runs afford
   (:mod:`.auto_halving`).  The paid finalist is then compared with the best cheap/free
   candidate **at equal budgets**, its gap to it extended in log-epochs to the run's
   epochs (short trials under-rate slow learners); a tie goes to the measured one.
4. **When it cannot tell** (the finalist catches up with the measured one but is predicted
   short) — and whenever a paid finalist wins — the finalist trains the whole run with the
   best measured candidate whose weights fit the model as the run's **fallback**
   (:class:`zoo.plan.Fallback`, :func:`.auto_halving.best_fallback`): validated as epoch 0,
   kept unless an epoch matches or beats it, so val decides at the end.

Then ``auto`` plans the winner for the full run at its LR (a normal plan: the run folder is
ordinary) and its notes hold the candidates × rungs table.  A paid winner's run starts from
its last-rung trial's weights (``reuse_trial``; :func:`_reuse_trial`).  Every candidate is
scored on the val split of the labeled data it trains on (a UDA job: the source's) — never
a test label.
"""
from __future__ import annotations

import dataclasses

from zoo.catalog import get_catalog
from zoo.errors import ConfigError, did_you_mean
from zoo.plan import AutoCandidate, Choice, Fallback, PlanContext, StrategyPlan
from .base import Strategy, has_source_weights

FALLBACK_NO_WEIGHTS = ("finetune", "lp-ft", "linear-probe")
FALLBACK_NO_VAL = ("lp-ft", "finetune", "linear-probe")
STREAM_SOURCES = {"target_unlabeled": ("target_data", "source_data"),
                  "source": ("source_data",)}


class Auto(Strategy):
    """Choose strategy and LR by successive halving on the val split (candidates: every strategy that declares auto); explains why."""

    name = "auto"
    defaults = {"candidates": "auto", "eta": 3, "rungs": 3, "budget": 0.4, "lr": "grid",
                "lr_factor": 3.0, "reuse_trial": True}

    # -- candidates ------------------------------------------------------------------------
    @staticmethod
    def _catalog(ctx: PlanContext):
        """The run's catalog; planned outside a run (tests): the installed one."""
        return ctx.catalog if ctx.catalog is not None else get_catalog()

    def discover(self, model, groups, job, names: list[str] | None, ctx: PlanContext):
        """``(candidates [(name, obj, AutoCandidate, sub-job, trains_on, model changes)],
        skipped {name: why}, starts_frozen {name: its first phase freezes the backbone})``."""
        from zoo.engine.phases import trains_on  # lazy: imports torch

        from .head_change import head_change, plan_with_changes  # lazy: imports torch

        catalog = self._catalog(ctx)
        starts_frozen: dict = {}
        given = {"source_data": ctx.source, "target_data": ctx.target}
        available = {s for s, keys in STREAM_SOURCES.items()
                     if any(given.get(k) is not None for k in keys)}
        explicit = names is not None
        pool = names if explicit else [n for n in catalog.names("strategies") if n != self.name]
        if not explicit:  # a name two plugins share: the other's is a candidate as PLUGIN:NAME
            pool += [f"{c.plugin}:{n}" for n, comps in sorted(catalog.shadowed["strategies"].items())
                     for c in comps if n != self.name]
        found, skipped = [], {}
        for name in pool:
            if name == self.name:
                raise ConfigError("strategy 'auto': 'auto' cannot be its own candidate")
            if not catalog.has("strategies", name):
                raise ConfigError(f"strategy 'auto': candidate '{name}' is not a strategy"
                                  f"{did_you_mean(name, catalog.names('strategies'))}")
            obj = catalog.get("strategies", name).obj
            decl = getattr(obj, "auto", None)
            if decl is None and explicit:
                decl = AutoCandidate()  # named by the user: a full-cost candidate
            if decl is None:
                continue  # the strategy does not offer itself
            if not isinstance(decl, AutoCandidate):
                skipped[name] = "its auto attribute is not a zoo.strategy.AutoCandidate"
                continue
            if decl.needs_source_weights and not has_source_weights(model):
                skipped[name] = "needs source weights"
                continue
            missing = [s for s in decl.needs if s not in available]
            if missing:
                skipped[name] = (f"needs the data stream {missing[0]} (job key "
                                 f"{' or '.join(STREAM_SOURCES.get(missing[0], ('?',)))})")
                continue
            sub = self.sub_job(catalog, job, name)
            try:  # planned once here: a plan that fails on this model is no candidate
                change = head_change(catalog, model, job, catalog.job_defaults(
                    "strategies", name), ctx.num_classes)
                changes = [change] if change is not None else []
                if change is not None:  # its own head (ncm, knn): the sub-job says so
                    sub = dataclasses.replace(sub, head=dataclasses.replace(
                        job.head, name=change.head, params=dict(change.params)))
                plan = plan_with_changes(obj, model, groups, sub, changes, ctx)
                where = trains_on(plan, sub)
                starts_frozen[name] = bool(plan.phases) and plan.phases[0].backbone_frozen()
            except ConfigError as exc:
                skipped[name] = str(exc).splitlines()[0]
                continue
            found.append((name, obj, decl, sub, where, changes))
        if any(f[4] == "source" for f in found):  # a UDA job: target labels never train
            for f in [f for f in found if f[4] != "source"]:
                skipped[f[0]] = "trains on the target's labels; this job adapts from the source"
                found.remove(f)
        return found, skipped, starts_frozen

    @staticmethod
    def sub_job(catalog, job, name: str):
        """``job`` as strategy ``name`` would run it: its params; its own LR and weight
        decay when its job defaults set them (linear-probe: lr 0.01)."""
        own = catalog.job_defaults("strategies", name)
        train = own.get("train") or {}
        params = dict((own.get("strategy") or {}).get("params") or {})
        t = dataclasses.replace(job.train, **{k: train[k] for k in ("lr", "weight_decay")
                                              if k in train})
        return dataclasses.replace(job, train=t, strategy=dataclasses.replace(
            job.strategy, name=name, params=params))

    def names(self, p: dict) -> list[str] | None:
        raw = p["candidates"]
        if raw in (None, "auto", ""):
            return None
        names = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
        names = list(dict.fromkeys(str(n).strip() for n in names if str(n).strip()))
        if not names:
            raise ConfigError("strategy 'auto': 'candidates' names no strategy")
        return names

    # -- the plan ----------------------------------------------------------------------------
    def plan(self, model, groups, job, ctx=None):
        ctx = ctx if ctx is not None else PlanContext()
        p = self.params(job)
        eta = self.number(p, "eta", int, 2, 100)
        rungs = self.number(p, "rungs", int, 1, 10)
        budget = self.number(p, "budget", float, 0.0, 10.0)
        factor = self.number(p, "lr_factor", float, 1.0, 1000.0)
        reuse = self.flag(p, "reuse_trial")
        if p["lr"] not in ("grid", "auto"):
            raise ConfigError(f"strategy 'auto': parameter 'lr' is {p['lr']!r}; use grid (the "
                              "default LR ×/÷ lr_factor) or auto (the LR range test)")
        found, skipped, starts_frozen = self.discover(model, groups, job, self.names(p), ctx)
        if not found:
            raise ConfigError("strategy 'auto': no candidate fits this job ("
                              + "; ".join(f"{k}: {v}" for k, v in skipped.items())
                              + ") — name candidates with --set strategy.params.candidates=A,B")
        bundle = ctx.data
        names = [f[0] for f in found]
        n_val = len(bundle.val) if bundle is not None and bundle.val is not None else 0
        data_note = []
        if bundle is not None:
            k = len(bundle.classes)
            data_note = [f"data: {k} classes, {len(bundle.train) / max(1, k):.0f} train and "
                         f"{n_val / max(1, k):.0f} val images per class"]
        table: list[str] = []
        trials: list = []
        winner = rival = None
        if not has_source_weights(model):
            chosen = _prefer(names, FALLBACK_NO_WEIGHTS, found, "full")
            why = ("no source weights (random init): frozen random features are not worth "
                   "probing, every layer has to learn at the full LR; no trials run")
            lr = None
        elif bundle is None or n_val == 0:
            chosen = _prefer(names, FALLBACK_NO_VAL, found, "full")
            why = ("no val split to score trials on: lp-ft is the safe default with source "
                   "weights (Kumar et al. 2022); set data.val_split to let auto measure")
            lr = None
        elif len(found) == 1 and p["lr"] == "grid" and factor == 1.0:
            chosen, why, lr = names[0], "it is the only candidate", None
        else:
            from .auto_halving import halve  # lazy: the trials import torch

            winner, why, table, trials, rival = halve(
                ctx, starts_frozen, model, groups, job, found, eta=eta, rungs=rungs,
                budget=budget, factor=factor, lr_mode=p["lr"])
            chosen, lr = winner.strategy, winner.lr
        entry = next(f for f in found if f[0] == chosen)
        plan = self.delegate(entry, model, groups, lr, ctx)
        # the fallback's weights are the source model's with the rival's head: taken before
        # the winner's trial weights are loaded
        fallback = _fallback(rival, model) if rival is not None else None
        start = _reuse_trial(winner, entry, plan, model, reuse) if winner is not None else None
        augment = plan.augment
        if all(ph.backbone_frozen() for ph in plan.phases) and job.data.augment != "none":
            # like `--strategy linear-probe` (registry: data.augment none): a probe fits fixed
            # features best; a plan cannot change job.data, so it declares it (the run reads
            # its train split through the val transform)
            augment = False
            plan.notes.append(f"trains on un-augmented images (data.augment "
                              f"{job.data.augment} applies to fine-tuning only)")
        at = f" at lr {lr:.3g}" if lr is not None else ""
        if entry[5]:  # the winner's own head replaces the job's before training
            plan.notes.insert(0, f"head '{entry[5][0].replaces or 'default'}' → "
                              f"'{entry[5][0].head}' (model change: this strategy's own head)")
        not_candidates = (["not candidates: " + "; ".join(f"{k} ({v})"
                                                            for k, v in skipped.items())]
                          if skipped else [])
        notes = [f"auto chose '{chosen}'{at}: {why}", *([start] if start else []), *table,
                 *not_candidates, *data_note,
                 *[f"{chosen}: {n}" for n in plan.notes]]
        final_lr = lr if lr is not None else entry[3].train.lr
        return StrategyPlan(self.name, plan.phases, notes, model_changes=plan.model_changes,
                            train_on=plan.train_on, fallback=fallback, augment=augment,
                            choice=Choice(chosen, final_lr, trials, skipped))

    @staticmethod
    def delegate(entry, model, groups, lr: float | None, ctx: PlanContext | None = None):
        """The chosen strategy's own plan for the full run, at ``lr`` (None: its default)."""
        from .head_change import plan_with_changes  # lazy: imports torch

        _name, obj, _decl, sub, _where, changes = entry
        if lr is not None:
            sub = dataclasses.replace(sub, train=dataclasses.replace(sub.train, lr=lr))
        plan = plan_with_changes(obj, model, groups, sub, changes, ctx)
        for phase in plan.phases:  # the run's train.lr is auto's job's: pin the chosen one
            if phase.lr is None and phase.steps == "gradient":
                phase.lr = sub.train.lr
        return plan


def _reuse_trial(winner, entry, plan, model, reuse: bool) -> str | None:
    """Start the run from the paid winner's last-rung trial weights: a note, or ``None``.

    Successive halving trains the finalist for a fifth of the run or more; throwing that
    away is what ASHA avoids by promoting trials from their checkpoints (Li et al., MLSys
    2020).  Here the run's own schedule starts over from those weights (a warm restart,
    Loshchilov & Hutter 2017).  Loaded *after* the winner planned, so what a plan snapshots
    of the model (a source anchor, wise-ft's θ₀) is still the source weights.  Free and
    cheap winners were trained as the run will train them: nothing to reuse.  A winner
    whose trial model differs from the run's (its own head, adapters) starts from the
    source weights."""
    from .auto_trials import PAID  # lazy: imports torch

    trained, winner.trained = winner.trained, None
    if not reuse or winner.cost not in PAID or trained is None:
        return None
    if entry[5] or plan.model_changes:
        return (f"starts from the source weights: its trial's model ({winner.label}) has "
                "model changes the run applies later")
    own = model.state_dict()
    misfit = sorted(set(own) ^ set(trained)) or [
        k for k in own if tuple(own[k].shape) != tuple(trained[k].shape)]
    if misfit:  # checked first: load_state_dict copies what fits before it raises
        return (f"starts from the source weights: its trial's weights do not fit the model "
                f"({misfit[0]!r} differs)")
    model.load_state_dict(trained)
    return (f"starts from its trial's weights ({winner.trained_for}; "
            "strategy.params.reuse_trial=false starts from the source weights)")


def _fallback(rival, model) -> Fallback | None:
    """The run's :class:`zoo.plan.Fallback`: the model's (source) weights with what the
    rival's trial changed (its trained head), on the model's device; ``None`` when what it
    changed is not in this model."""
    changed, rival.trained = rival.trained, None
    own = model.state_dict()
    if any(k not in own or tuple(own[k].shape) != tuple(v.shape) for k, v in changed.items()):
        return None
    weights = {k: (changed[k] if k in changed else v).detach().to(v.device, copy=True)
               for k, v in own.items()}
    return Fallback(f"{rival.label} (auto's trial, trained as it would run)", weights)


def _prefer(names: list[str], order: tuple, found, cost: str) -> str:
    for name in order:
        if name in names:
            return name
    by_cost = [f[0] for f in found if f[2].cost == cost]
    return (by_cost or names)[0]
