"""Unsupervised domain adaptation, labels only in the source: ``adabn``, ``dann``, ``mcc``.

A UDA job trains the supervised loss on labeled source images and reads unlabeled target
images as the extra stream ``target_unlabeled`` (``Phase.streams``); the target's labeled
test split is used only to report.  The strategies (torch parts in :mod:`.domain_terms`):

* ``source-only``: the baseline — fine-tune on the source, test on the target.
* ``adabn`` (Li et al. 2016): the source-only fine-tune, then one phase without gradient
  steps that re-estimates every BatchNorm layer's statistics on the target.
* ``dann`` (Ganin & Lempitsky 2015): fine-tune + a domain classifier behind a gradient
  reversal layer on the backbone features.
* ``mcc`` (Jin et al. 2020, minimum class confusion): fine-tune + the class-confusion
  loss of the target predictions; it beats DANN on Office-31/Office-Home/VisDA.

Model selection never looks at target labels: the validator is the **source val
accuracy** (the loop's ``monitor`` on the val split of the labeled data the supervised
loss trains on); each plan's notes say so.
"""
from __future__ import annotations

from zoo.plan import AutoCandidate, GroupSetting, Phase, StrategyPlan, all_groups, resolve_bn

from .base import Strategy, backbone_lr_mult, has_source_weights

STREAM = "target_unlabeled"
VALIDATOR = ("model selection: source val accuracy (the monitor on the labeled source's val "
             "split); target labels are read only by the final test")


def _auto(cost: str):
    return AutoCandidate(cost=cost, needs_source_weights=True, needs=(STREAM,))


def _finetune_phase(strategy, name, model, groups, job, p, notes, terms):
    mult = backbone_lr_mult(strategy, p, model, notes)
    return Phase(name, job.train.epochs, all_groups(groups, trainable=True, lr_mult=mult),
                 bn=resolve_bn(job, "train"), loss_terms=terms, streams=(STREAM,))


class SourceOnly(Strategy):
    """The UDA baseline: fine-tune on the labeled source only, test on the target (needs --source-data)."""

    name = "source-only"
    defaults = {"backbone_lr_mult": "auto"}

    def plan(self, model, groups, job, ctx=None):
        p = self.params(job)
        notes: list = []
        mult = backbone_lr_mult(self, p, model, notes)
        phase = Phase("source", job.train.epochs, all_groups(groups, trainable=True,
                                                              lr_mult=mult),
                      bn=resolve_bn(job, "train"))
        notes.append("trains on the source task only (no target image is read before the "
                     "test): the baseline every UDA method must beat")
        notes.append(VALIDATOR)
        return StrategyPlan(self.name, [phase], notes, train_on="source")


class AdaBN(Strategy):
    """Source-only fine-tune, then BatchNorm statistics re-estimated on unlabeled target images (Li et al. 2016)."""

    name = "adabn"
    defaults = {"base": "finetune", "backbone_lr_mult": "auto", "max_batches": None}

    @property
    def auto(self):
        return _auto("full")

    def plan(self, model, groups, job, ctx=None):
        from zoo.errors import ConfigError  # lazy: keeps this module's imports torch-free

        from .domain_terms import adabn_fit, batchnorm_layers  # lazy: imports torch

        p = self.params(job)
        base = p["base"]
        if base not in ("finetune", "linear-probe"):
            raise ConfigError(f"strategy 'adabn': parameter 'base' must be finetune or "
                              f"linear-probe (how the source phase trains), got {base!r}")
        max_batches = (None if p["max_batches"] in (None, "none")
                       else self.number(p, "max_batches", int, 1))
        notes: list = []
        phases = []
        if base == "finetune":
            mult = backbone_lr_mult(self, p, model, notes)
            phases.append(Phase("source", job.train.epochs,
                                all_groups(groups, trainable=True, lr_mult=mult),
                                bn=resolve_bn(job, "train")))
        else:  # linear-probe
            phases.append(Phase("source", job.train.epochs, all_groups(groups, False),
                                bn="freeze-all"))
        n_bn = len(batchnorm_layers(model.backbone))
        if n_bn:
            notes.append(f"after the {base} phase on the source, {n_bn} BatchNorm layers get "
                         "the target's statistics (no gradient step)")
        else:
            notes.append(f"{model.backbone.provider}:{model.backbone.name} has no BatchNorm "
                         "layer: adabn does nothing beyond the source training "
                         "(it only adapts BatchNorm statistics)")
        notes.append(VALIDATOR + "; the adabn phase's result is kept whatever the source "
                     "val says (re-estimated statistics are meant for the target)")
        if not has_source_weights(model):
            notes.append("no source weights: the backbone trains from random init")

        def fit(ctx):
            adabn_fit(ctx, max_batches)

        nothing = {g.name: GroupSetting(False) for g in groups}  # no parameter moves
        phases.append(Phase("adabn", 1, nothing, bn="freeze-all", steps="none", fit=fit,
                            streams=(STREAM,)))
        return StrategyPlan(self.name, phases, notes)


class DANN(Strategy):
    """Fine-tune + domain classifier behind gradient reversal on the features (Ganin & Lempitsky 2015)."""

    name = "dann"
    defaults = {"lam": 1.0, "hidden": 256, "backbone_lr_mult": "auto"}

    @property
    def auto(self):
        return _auto("full")

    def plan(self, model, groups, job, ctx=None):
        from .domain_terms import DANNTerm  # lazy: imports torch

        p = self.params(job)
        lam = self.number(p, "lam", float, 0.0)
        hidden = self.number(p, "hidden", int, 1)
        term = DANNTerm(model.backbone.feature_dim, hidden, lam, job.train.epochs)
        notes = [f"domain classifier {model.backbone.feature_dim}→{hidden}→{hidden}→1 behind a "
                 f"gradient reversal layer, λ={lam:g} × 2/(1+exp(−10p))−1 over the run; "
                 "each step adds its loss on the source batch and one unlabeled target batch",
                 VALIDATOR]
        phase = _finetune_phase(self, "dann", model, groups, job, p, notes, [term])
        return StrategyPlan(self.name, [phase], notes)


class MCC(Strategy):
    """Fine-tune + minimum class confusion on unlabeled target predictions (Jin et al. 2020)."""

    name = "mcc"
    defaults = {"mu": 1.0, "temperature": 2.5, "backbone_lr_mult": "auto"}

    @property
    def auto(self):
        return _auto("full")

    def plan(self, model, groups, job, ctx=None):
        from .domain_terms import MCCTerm  # lazy: imports torch

        p = self.params(job)
        mu = self.number(p, "mu", float, 0.0)
        temperature = self.number(p, "temperature", float, 1e-6)
        notes = [f"each step adds μ·L_MCC (μ={mu:g}, T={temperature:g}) on one unlabeled "
                 "target batch: the entropy-weighted class confusion of its predictions",
                 VALIDATOR]
        phase = _finetune_phase(self, "mcc", model, groups, job, p, notes,
                                [MCCTerm(mu, temperature)])
        return StrategyPlan(self.name, [phase], notes)
