"""Fine-tuning with an extra loss term: ``l2-sp``, ``lwf`` and ``joint``.

Each plans one fine-tune phase (every group trains, backbone at ``lr × backbone_lr_mult``)
whose ``loss_terms`` hold the regularizer (:mod:`.terms`, imported inside ``plan`` so that
importing this module imports no torch).
"""
from __future__ import annotations

from zoo.engine.data import make_loader
from zoo.errors import ConfigError
from zoo.plan import Phase, StrategyPlan, all_groups, resolve_bn
from .base import Strategy, backbone_lr_mult, has_source_weights


def _finetune_phase(strategy, name, model, groups, job, p, notes, terms):
    mult = backbone_lr_mult(strategy, p, model, notes)
    return Phase(name, job.train.epochs, all_groups(groups, trainable=True, lr_mult=mult),
                 bn=resolve_bn(job, "train"), loss_terms=terms)


class L2SP(Strategy):
    """Fine-tune with ``α/2·‖w − w_source‖²`` on the backbone and ``β/2·‖w_head‖²`` (Li et al. 2018)."""

    name = "l2-sp"
    defaults = {"alpha": 0.1, "beta": 0.01, "backbone_lr_mult": "auto"}

    def plan(self, model, groups, job, ctx=None):
        from .terms import L2SPTerm  # lazy: imports torch

        p = self.params(job)
        alpha = self.number(p, "alpha", float, 0.0)
        beta = self.number(p, "beta", float, 0.0)
        notes = [f"penalty α/2·‖w − w_source‖² (α={alpha:g}) on the backbone + "
                 f"β/2·‖w_head‖² (β={beta:g}); it replaces weight decay (registry sets "
                 f"train.weight_decay 0; now {job.train.weight_decay:g})"]
        if not has_source_weights(model):
            notes.append("no source weights: the penalty pulls towards the random init")
        term = L2SPTerm(model, alpha, beta)
        phase = _finetune_phase(self, "l2-sp", model, groups, job, p, notes, [term])
        return StrategyPlan(self.name, [phase], notes)


class LwF(Strategy):
    """Fine-tune while keeping the source model's outputs: + λ·T²·KL(source ‖ current) (Li & Hoiem 2016)."""

    name = "lwf"
    defaults = {"lam": 1.0, "temperature": 2.0, "backbone_lr_mult": "auto"}

    def plan(self, model, groups, job, ctx=None):
        p = self.params(job)
        lam = self.number(p, "lam", float, 0.0)
        temperature = self.number(p, "temperature", float, 1e-6)
        backbone = model.backbone
        if backbone.source_classifier is None:
            why = getattr(backbone, "no_source_reason", None)  # e.g. CLIP: contrastive, no classes
            raise ConfigError(f"strategy 'lwf' needs a source classifier, but "
                              f"{backbone.provider}:{backbone.name} has none ("
                              + (why or "its provider dropped it or the model has no "
                                 "classification head") + ") — use l2-sp or finetune instead")
        from .terms import LwFTerm  # lazy: imports torch

        notes = [f"distills the frozen source model ({backbone.num_source_classes or '?'} "
                 f"source classes) into the current backbone: λ={lam:g}, T={temperature:g}"]
        if not has_source_weights(model):
            notes.append("no source weights: the 'source model' is the random init")
        term = LwFTerm(backbone, lam, temperature)
        phase = _finetune_phase(self, "lwf", model, groups, job, p, notes, [term])
        return StrategyPlan(self.name, [phase], notes)


class Joint(Strategy):
    """Train on source and target together: L_target + λ·L_source, a second head (needs --source-data)."""

    name = "joint"
    defaults = {"lam": 1.0, "source_batch_size": "auto", "backbone_lr_mult": "auto"}

    def plan(self, model, groups, job, ctx=None):
        p = self.params(job)
        lam = self.number(p, "lam", float, 0.0)
        source = ctx.source if ctx is not None else None  # the source task's splits
        if source is None or job.source_data is None:
            raise ConfigError("strategy 'joint' trains on a source task too: give it with "
                              "`--source-data DATA` (a dataset name or folder; job key "
                              "source_data:)")
        n = len(source.train)
        if p["source_batch_size"] == "auto":
            bs = job.train.batch_size
        else:
            bs = self.number(p, "source_batch_size", int, 1)
        bs = max(1, min(bs, n))

        from .terms import JointSourceTerm  # lazy: imports torch

        loader = make_loader(source.train, bs, True, job.seed, job.source_data.num_workers,
                             getattr(ctx.device, "type", None) or "cpu")
        term = JointSourceTerm(model.backbone.feature_dim, len(source.classes), loader, lam)
        src = job.source_data.path or job.source_data.name
        notes = [f"source task {src}: {n} train images, {len(source.classes)} classes, its own "
                 f"head ({sum(q.numel() for q in term.parameters()):,} params, trained at the "
                 f"base lr); each step adds λ·CE on the next source batch of {bs} (λ={lam:g})"]
        phase = _finetune_phase(self, "joint", model, groups, job, p, notes, [term])
        return StrategyPlan(self.name, [phase], notes)
