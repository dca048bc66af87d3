"""Parameter-efficient transfer: ``bitfit``, ``norm-tuning``, ``lora``, ``dora``.

* ``bitfit`` (Ben Zaken, Ravfogel & Goldberg, ACL 2022): every bias of the backbone and the
  head train, nothing else — a :class:`zoo.strategy.Selection` of kind ``bias``.
* ``norm-tuning``: the affine parameters of the normalisation layers (BatchNorm, LayerNorm,
  GroupNorm) and the head — kind ``norm``.
* ``lora`` (Hu et al., ICLR 2022) and ``dora`` (Liu et al., ICML 2024) through Hugging Face
  ``peft`` (an extra: ``pip install 'zoo[peft]'``, imported only when such a plan is made):
  a declared :class:`zoo.strategy.ModelChange` injects the adapters before training and,
  after it, saves them in peft's format under ``adapter/`` and merges them, so
  ``model.safetensors`` loads with its provider alone.  Target modules per architecture
  (:mod:`.peft_targets`), overridable with ``strategy.params.targets``.

The backbone's own weights stay frozen in all four (BatchNorm statistics fixed); none of
them runs on cached features — part of the backbone trains.  Imports no torch at import
time (the pack's rule).
"""
from __future__ import annotations

from zoo.errors import ConfigError
from zoo.plan import AutoCandidate, Phase, Selection, StrategyPlan, all_groups, resolve_bn

from .base import Strategy

JOB_DEFAULTS: dict[str, dict] = {
    # biases and norm parameters take no weight decay (timm's habit); only the head decays
    "bitfit": {"strategy": {"params": {"bias_lr_mult": 1.0}}},
    "norm-tuning": {"strategy": {"params": {"norm_lr_mult": 1.0}}},
    # r=8, α=16 (α/r = 2), no dropout: the LoRA paper's and peft's usual starting point
    # grouped: depthwise/grouped convs adapted where r is divisible by groups (unmergeable)
    "lora": {"strategy": {"params": {"r": 8, "alpha": 16, "dropout": 0.0, "rslora": False,
                                     "targets": "auto", "grouped": True}}},
    "dora": {"strategy": {"params": {"r": 8, "alpha": 16, "dropout": 0.0, "rslora": False,
                                     "targets": "auto", "grouped": True}}},
}


def _auto_partial():
    return AutoCandidate(cost="partial")


def _head_phase(name: str, groups, job, select: list):
    # every backbone group frozen (eval mode: BatchNorm statistics fixed), the head trains;
    # the selection adds the parameters the method trains
    return Phase(name, job.train.epochs, all_groups(groups, trainable=False),
                 bn=resolve_bn(job, "freeze-stats"), select=select)


class _Selective(Strategy):
    kind = "bias"
    mult_key = "bias_lr_mult"
    what = "biases"

    @property
    def auto(self):
        return _auto_partial()

    def plan(self, model, groups, job, ctx=None):
        p = self.params(job)
        mult = self.number(p, self.mult_key, float, 0.0)
        sel = Selection(self.what, kinds=(self.kind,), lr_mult=mult)
        picked = [n for n in sel.matches(model) if n.startswith("backbone.")]
        notes = [f"{len(picked)} {self.what} tensors of the backbone and the head train; "
                 "every other backbone parameter is frozen"]
        if not picked:
            notes.append(f"{model.backbone.provider}:{model.backbone.name} has no "
                         f"{self.what}: only the head trains")
        return StrategyPlan(self.name, [_head_phase(self.name, groups, job, [sel])], notes)


class BitFit(_Selective):
    """Only the biases (and the head) train (Ben Zaken et al., ACL 2022)."""

    name = "bitfit"
    defaults = {"bias_lr_mult": 1.0}


class NormTuning(_Selective):
    """Only the normalisation layers' affine parameters (and the head) train."""

    name = "norm-tuning"
    defaults = {"norm_lr_mult": 1.0}
    kind, mult_key, what = "norm", "norm_lr_mult", "norm parameters"


class LoRA(Strategy):
    """Low-rank adapters on the backbone via peft, merged after training (Hu et al., ICLR 2022)."""

    name = "lora"
    defaults = {"r": 8, "alpha": 16, "dropout": 0.0, "rslora": False, "targets": "auto",
                "grouped": True}
    dora = False

    @property
    def auto(self):
        return _auto_partial()

    def plan(self, model, groups, job, ctx=None):
        from .adapter_budget import check_adapter_budget  # lazy: torch
        from .peft_targets import PeftAdapters, choose_targets, grouped_targets  # lazy: torch

        p = self.params(job)
        r = self.number(p, "r", int, 1)
        alpha = self.number(p, "alpha", float, 0.0)
        dropout = self.number(p, "dropout", float, 0.0, 1.0)
        rslora = self.flag(p, "rslora")
        body = model.backbone.body
        targets, notes = choose_targets(body, p["targets"], self.name, r, self.flag(p, "grouped"))
        check_adapter_budget(body, targets, r, self.name, self.dora)
        change = PeftAdapters(targets, r=r, alpha=alpha, dropout=dropout, rslora=rslora,
                              dora=self.dora, excluded_notes=notes,
                              grouped=grouped_targets(body, targets))
        sel = Selection("adapters", params=("backbone.body.*lora_*",))
        notes = [f"{'DoRA' if self.dora else 'LoRA'} r={r}, α={alpha:g}"
                 f"{' (rsLoRA: α/√r)' if rslora else ''} on {len(targets)} modules; the "
                 "backbone's own weights stay frozen; after training the adapters are saved "
                 "in peft's format (adapter/) and "
                 + ("kept unmerged in model.safetensors (grouped convs; re-applied on load)"
                    if change.grouped else "merged into model.safetensors"), *notes]
        phase = _head_phase(self.name, groups, job, [sel])
        return StrategyPlan(self.name, [phase], notes, model_changes=[change])

    def restore_change(self, state: dict):
        """The unmerged adapters recorded in a run's ``model.safetensors`` (grouped-conv
        targets), rebuilt so ``zoo eval/predict/export`` load the run."""
        from .peft_targets import PeftAdapters  # lazy: torch

        ok = (isinstance(state, dict) and isinstance(state.get("targets"), list)
              and all(isinstance(t, str) for t in state["targets"])
              and isinstance(state.get("r"), int) and state["r"] >= 1
              and all(isinstance(state.get(k), (int, float)) for k in ("alpha", "dropout"))
              and all(isinstance(state.get(k), bool) for k in ("rslora", "dora")))
        if not ok:
            raise ConfigError(f"strategy '{self.name}': a recorded adapter change is not "
                              "{targets, r, alpha, dropout, rslora, dora}")
        return PeftAdapters(state["targets"], r=state["r"], alpha=float(state["alpha"]),
                            dropout=float(state["dropout"]), rslora=state["rslora"],
                            dora=state["dora"])


class DoRA(LoRA):
    """Weight-decomposed low-rank adapters via peft, merged after training (Liu et al., ICML 2024)."""

    name = "dora"
    dora = True
