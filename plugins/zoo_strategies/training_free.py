"""Transfer without gradient steps: ``ncm``, ``knn`` (any backbone) and ``zero-shot``
(vision-language backbones).

Each plans one phase with ``steps="none"``: the loop calls its ``fit(ctx)`` once instead of
running an optimizer (:class:`zoo.strategy.PhaseContext`).  ``ncm`` and ``knn`` read the
frozen backbone's train features (``ctx.features("train")``: one backbone pass, cached) and
fill a *fitted head* (``ncm`` / ``knn`` heads of zoo_heads, chosen by these strategies' job
defaults), so the run folder is an ordinary one: ``predict``, ``export``, ``eval`` work.
``zero-shot`` reads no training data at all: the head is built from the class names through
the backbone's text tower (:mod:`zoo.engine.text_head`).

- ``ncm``: SimpleShot's CL2N (Wang et al. 2019): centre on the train mean, L2-normalise,
  nearest class mean by Euclidean distance.
- ``knn``: k nearest train features by cosine similarity, votes ``exp(sim / T)`` (Wu et al.
  2018; DINO's k-NN evaluation, Caron et al. 2021: k=20, T=0.07).  ``k``, ``temperature``
  are head parameters (``--set head.params.k=50``): prediction needs them too.
- ``zero-shot``: CLIP's prompt-ensembled zero-shot classifier (Radford et al. 2021).
- ``wise-ft``: WiSE-FT (Wortsman et al., CVPR 2022): the zero-shot model, fine-tuned end to
  end, then averaged with itself in weight space (``alpha``); its two averaging/initialising
  phases have no gradient steps, the fine-tune between them does.

Imports no torch at import time (the pack's rule).
"""
from __future__ import annotations

from zoo.engine.prompts import load_templates
from zoo.errors import ConfigError
from zoo.plan import AutoCandidate, GroupSetting, Phase, StrategyPlan, all_groups, resolve_bn

from .base import Strategy, has_source_weights


def _frozen_phase(name: str, groups, fit):
    settings = {g.name: GroupSetting(False) for g in groups if g.name != "head"}
    # the head is what fit() writes: it counts as the phase's trainable part
    settings["head"] = GroupSetting(True, 1.0)
    return Phase(name, 1, settings, bn="freeze-all", steps="none", fit=fit)


def _auto_free():
    return AutoCandidate(cost="free")


class _Fitted(Strategy):
    """Base of ``ncm`` / ``knn``: check the head, fit it on the cached train features."""

    head = "?"
    defaults: dict = {}

    @property
    def auto(self):
        return _auto_free()

    def plan(self, model, groups, job, ctx=None):
        self.params(job)
        if getattr(model.head, "fitted", None) != self.head:
            raise ConfigError(f"strategy '{self.name}' fills head '{self.head}', but the job's "
                              f"head is '{job.head.name or type(model.head).__name__}' — use "
                              f"--head {self.head} (this "
                              "strategy's default) or another strategy")
        notes = [f"no gradient steps: the '{self.head}' head is fitted on the frozen "
                 "backbone's train features (one backbone pass per split)"]
        if job.strategy.bn not in (None, "freeze-all"):
            notes.append(f"strategy.bn={job.strategy.bn} ignored: the backbone is frozen")
        return StrategyPlan(self.name, [_frozen_phase(self.name, groups, self.fit)], notes)

    def fit(self, ctx) -> None:
        features, labels = ctx.features("train")
        info = ctx.model.head.fit_features(features, labels)
        ctx.log(f"{self.name}: fitted on {info['samples']} train features")
        if info.get("empty_classes"):
            ctx.log(f"{self.name}: {info['empty_classes']} classes have no train image; "
                    "they are never predicted")


class NCM(_Fitted):
    """Nearest class mean on centred, L2-normalised frozen features (SimpleShot CL2N); no gradient steps."""

    name = "ncm"
    head = "ncm"


class KNN(_Fitted):
    """k nearest neighbours (cosine, temperature-weighted votes) on frozen features; no gradient steps."""

    name = "knn"
    head = "knn"


class ZeroShot(Strategy):
    """Zero-shot: a head built from the class names through the text tower (CLIP); no training."""

    name = "zero-shot"
    defaults = {"templates": "imagenet80"}

    @property
    def auto(self):
        return _auto_free()

    def plan(self, model, groups, job, ctx=None):
        from zoo.engine.text_head import require_text_head, require_text_tower  # lazy: torch

        p = self.params(job)
        require_text_tower(model.backbone, "strategy 'zero-shot'")
        require_text_head(model.head, job.head.name)
        templates = load_templates(p["templates"])  # a bad file fails now, not after caching
        p["templates"] = templates

        def fit(ctx) -> None:
            from zoo.engine.text_head import init_head_from_text  # lazy: torch

            init_head_from_text(ctx.model, ctx.classes, ctx.job, templates=templates,
                                log=ctx.log)

        notes = [f"no training: the head is the text classifier of the class names "
                 f"({len(templates)} prompt templates each, ensembled), scaled by the model's "
                 "logit scale; train images are not used"]
        if not has_source_weights(model):
            notes.append("WARNING: the model has no pretrained weights (random init): its text "
                         "tower knows no words, zero-shot predictions are at chance level")
        return StrategyPlan(self.name, [_frozen_phase(self.name, groups, fit)], notes)


class WiseFt(Strategy):
    """WiSE-FT: zero-shot head, fine-tune everything, then average zero-shot and fine-tuned weights."""

    name = "wise-ft"
    defaults = {"alpha": 0.5, "templates": "imagenet80", "backbone_lr_mult": 1.0}

    def plan(self, model, groups, job, ctx=None):
        """Three phases: ``zero-shot`` (steps none: the text head; the zero-shot weights θ₀
        are kept), ``finetune`` (every group, ``train.epochs``), ``wise`` (steps none:
        θ = (1 − α)·θ₀ + α·θ₁ over every floating-point tensor; Wortsman et al., CVPR 2022)."""
        from zoo.engine.text_head import require_text_head, require_text_tower  # lazy: torch

        p = self.params(job)
        alpha = self.number(p, "alpha", float, 0.0, 1.0)
        mult = self.number(p, "backbone_lr_mult", float, 0.0)
        require_text_tower(model.backbone, "strategy 'wise-ft'")
        require_text_head(model.head, job.head.name)
        templates = load_templates(p["templates"])
        kept: dict = {}
        # the model as planned: source weights (plan() runs before a resume loads its
        # checkpoint), so a run resumed after the zero-shot phase can rebuild θ₀ — the
        # source towers plus the text head, both deterministic; dropped once θ₀ is kept
        source = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

        def zero_shot(ctx) -> None:
            from zoo.engine.text_head import init_head_from_text  # lazy: torch

            init_head_from_text(ctx.model, ctx.classes, ctx.job, templates=templates,
                                log=ctx.log)
            kept.update({k: v.detach().to("cpu", copy=True)
                         for k, v in ctx.model.state_dict().items()})
            source.clear()

        def ensemble(ctx) -> None:
            if not kept:  # resumed after the zero-shot phase: θ₀ again, from the source
                tuned = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
                ctx.model.load_state_dict(source)
                zero_shot(ctx)
                ctx.model.load_state_dict(tuned)
                ctx.log("wise-ft: zero-shot weights rebuilt from the source weights (resumed)")
            state = ctx.model.state_dict()
            mixed = {k: (((1 - alpha) * kept[k].to(v) + alpha * v)
                         if v.is_floating_point() else v) for k, v in state.items()}
            ctx.model.load_state_dict(mixed)
            ctx.log(f"wise-ft: weights = {1 - alpha:g}·zero-shot + {alpha:g}·fine-tuned")

        finetune = Phase("finetune", job.train.epochs,
                         all_groups(groups, trainable=True, lr_mult=mult),
                         bn=resolve_bn(job, "train"))
        notes = [f"zero-shot head from {len(templates)} templates; fine-tune every group "
                 f"(backbone at lr × {mult:g}); then the weight-space ensemble with "
                 f"alpha={alpha:g} (0: zero-shot, 1: fine-tuned)"]
        return StrategyPlan(self.name, [_frozen_phase("zero-shot", groups, zero_shot),
                                        finetune,
                                        _frozen_phase("wise", groups, ensemble)], notes)


#: job defaults of these strategies (register(..., job_defaults=...)): the heads they fill,
#: and un-augmented images (cached features are exact only for deterministic inputs)
JOB_DEFAULTS: dict[str, dict] = {
    "ncm": {"head": {"name": "ncm"}, "data": {"augment": "none"}},
    "knn": {"head": {"name": "knn"}, "data": {"augment": "none"}},
    "zero-shot": {"head": {"name": "linear", "params": {"normalize": True}},
                  "data": {"augment": "none"}},
    # WiSE-FT's fine-tuning: AdamW at a small LR (3e-5 in the paper), the zero-shot head
    "wise-ft": {"head": {"name": "linear", "params": {"normalize": True}},
                "train": {"lr": 3e-5, "optimizer": "adamw"}},
}
