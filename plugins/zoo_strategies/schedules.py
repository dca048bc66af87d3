"""Strategies that differ in *what* trains *when* and at which learning rate.

``lp-ft`` (probe, then fine-tune everything at a lower LR), ``gradual-unfreeze`` (one more
layer group per epoch, top first), ``partial`` (only the last k groups), ``layer-decay``
(LR shrinking geometrically towards the input).  No loss terms: the loop's plain task loss.
Imports no torch.
"""
from __future__ import annotations

from zoo.errors import ConfigError

from .base import Strategy, auto_candidate, backbone_groups, backbone_lr_mult


class LpFt(Strategy):
    """Linear probe (backbone frozen) at ``probe_lr``, then fine-tune everything at ``lr × ft_lr_mult`` (Kumar et al. 2022)."""

    name = "lp-ft"
    # the probe phase trains what `linear-probe` trains and takes its LR (0.01), not the
    # job's: the job's LR is a fine-tuning LR, and ×10 of it (the old default) made a 0.1
    # probe that diverged at lr 1e-2 (digits-large: lp-ft 76.6 % test, 90.3 % at 0.01)
    defaults = {"probe_epochs": "auto", "probe_lr": 0.01, "probe_lr_mult": "none",
                "ft_lr_mult": 0.1}

    @property
    def auto(self):  # one of auto's candidates (its fine-tune phase trains every layer)
        return auto_candidate("full")

    def plan(self, model, groups, job, ctx=None):
        # lazy: imports torch
        from zoo.strategy import GroupSetting, Phase, StrategyPlan, all_groups, resolve_bn

        p = self.params(job)
        total = job.train.epochs
        notes = []
        if p["probe_epochs"] == "auto":
            probe = max(1, round(total * 0.4))
            notes.append(f"probe_epochs auto → {probe} (40% of {total} epochs)")
        else:
            probe = self.number(p, "probe_epochs", int, 1)
            if probe >= total:  # never stretch the job past train.epochs silently
                raise ConfigError(f"strategy 'lp-ft': probe_epochs ({probe}) must be less than "
                                  f"train.epochs ({total}) — the fine-tune phase needs at "
                                  "least one epoch; lower probe_epochs or raise --epochs")
        ft = max(1, total - probe)
        if probe + ft != total:
            notes.append(f"lp-ft trains {probe} probe + {ft} fine-tune epochs = {probe + ft} "
                         f"(train.epochs is {total}; each phase needs at least one)")
        ft_mult = self.number(p, "ft_lr_mult", float, 0.0)
        base = job.train.lr
        if p["probe_lr_mult"] in (None, "none", ""):
            probe_lr = self.number(p, "probe_lr", float, 0.0)
        else:  # relative to the job's LR, when asked for
            probe_lr = base * self.number(p, "probe_lr_mult", float, 0.0)
        probe_phase = Phase("probe", probe, all_groups(groups, trainable=False),
                            bn="freeze-all", lr=probe_lr)
        ft_settings = {g.name: GroupSetting(True, 1.0) for g in groups}
        ft_phase = Phase("finetune", ft, ft_settings, bn=resolve_bn(job, "train"),
                         lr=base * ft_mult)
        notes.append(f"probe: head only at lr {probe_lr:g} (backbone and its "
                     f"BatchNorm frozen); finetune: every group at lr {base * ft_mult:g}")
        return StrategyPlan(self.name, [probe_phase, ft_phase], notes)


class GradualUnfreeze(Strategy):
    """Unfreeze one layer group per stage from the top: head, +last group, ... (ULMFiT)."""

    name = "gradual-unfreeze"
    defaults = {"epochs_per_stage": 1, "backbone_lr_mult": "auto"}

    def plan(self, model, groups, job, ctx=None):
        # lazy: imports torch
        from zoo.strategy import GroupSetting, Phase, StrategyPlan, resolve_bn

        p = self.params(job)
        per_stage = self.number(p, "epochs_per_stage", int, 1)
        notes: list = []
        mult = backbone_lr_mult(self, p, model, notes)
        bn = resolve_bn(job, "train")
        body = backbone_groups(groups)
        remaining = job.train.epochs
        phases = []
        trainable: set[str] = {"head"}
        order = list(reversed(body))  # top (output side) first
        for stage in range(len(order) + 1):
            if remaining <= 0:
                break
            if stage:
                trainable.add(order[stage - 1].name)
            last = stage == len(order)
            epochs = remaining if last else min(per_stage, remaining)
            settings = {g.name: GroupSetting(g.name in trainable,
                                             1.0 if g.name == "head" else mult)
                        for g in groups}
            name = "head" if stage == 0 else f"+{order[stage - 1].name}"
            phases.append(Phase(name, epochs, settings,
                                bn="freeze-all" if stage == 0 else bn))
            remaining -= epochs
        if remaining > 0:  # no backbone groups at all
            phases[-1].epochs += remaining
        frozen = [g.name for g in body if g.name not in trainable]
        if frozen:
            notes.append(f"{job.train.epochs} epochs end before every group is unfrozen: "
                         f"{', '.join(frozen)} stay frozen (raise --epochs to "
                         f"{(len(order) + 1) * per_stage} to unfreeze all)")
        notes.append("each stage is a phase with its own optimizer and LR schedule")
        return StrategyPlan(self.name, phases, notes)


class Partial(Strategy):
    """Only the last ``k`` layer groups (and the head) train; the rest stay frozen."""

    name = "partial"
    defaults = {"k": 1, "backbone_lr_mult": "auto"}

    def plan(self, model, groups, job, ctx=None):
        # lazy: imports torch
        from zoo.strategy import GroupSetting, Phase, StrategyPlan, resolve_bn

        p = self.params(job)
        body = backbone_groups(groups)
        k = self.number(p, "k", int, 0)
        if k > len(body):
            raise ConfigError(f"strategy 'partial': k={k} but {model.backbone.name} has only "
                              f"{len(body)} layer groups ({', '.join(g.name for g in body)})")
        notes: list = []
        mult = backbone_lr_mult(self, p, model, notes)
        top = {g.name for g in body[len(body) - k:]} if k else set()
        settings = {g.name: GroupSetting(g.name in top or g.name == "head",
                                         1.0 if g.name == "head" else mult) for g in groups}
        bn = resolve_bn(job, "train") if k else "freeze-all"
        notes.append(f"training the last {k} of {len(body)} groups"
                     + (f" ({', '.join(g.name for g in body if g.name in top)})" if k else "")
                     + " and the head")
        return StrategyPlan(self.name, [Phase("partial", job.train.epochs, settings, bn=bn)],
                            notes)


class LayerDecay(Strategy):
    """Layer-wise LR decay: group i of d trains at ``lr × decay^(d − i)``, the head at lr (BEiT)."""

    name = "layer-decay"
    defaults = {"decay": 0.7}

    def plan(self, model, groups, job, ctx=None):
        # lazy: imports torch
        from zoo.strategy import GroupSetting, Phase, StrategyPlan, resolve_bn

        p = self.params(job)
        decay = self.number(p, "decay", float, 0.0, 1.0)
        body = backbone_groups(groups)
        depth = len(body)
        settings = {g.name: GroupSetting(True, decay ** (depth - i)) for i, g in enumerate(body)}
        settings["head"] = GroupSetting(True, 1.0)
        notes = ["lr multipliers from input to head: "
                 + ", ".join(f"{g.name} {decay ** (depth - i):.3g}" for i, g in enumerate(body))
                 + ", head 1"]
        return StrategyPlan(self.name, [Phase("layer-decay", job.train.epochs, settings,
                                              bn=resolve_bn(job, "train"))], notes)
