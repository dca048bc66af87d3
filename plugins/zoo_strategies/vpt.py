"""``vpt``: Visual Prompt Tuning (Jia et al., ECCV 2022) for ViT-family backbones.

``tokens`` learnable prompt tokens (default 10) are inserted after the class token before
the first transformer block (*shallow*), or a new set before every block with ``deep: true``
(*deep*); the backbone's own weights stay frozen and the head trains.  Backbones: timm's
``VisionTransformer`` family (ViT, DeiT, ...) and open_clip ViT image towers; any other is
a one-line error naming the fix.
Prompts cannot be merged into the weights: the run folder's ``model.safetensors`` keeps
them and records the change, and ``zoo eval/predict/export`` re-apply it through
:meth:`VPT.restore_change` (:mod:`.vpt_layers`).  Imports no torch at import time.
"""
from __future__ import annotations

from zoo.errors import ConfigError
from zoo.plan import Selection, StrategyPlan

from .base import Strategy

JOB_DEFAULTS: dict[str, dict] = {
    # 10 prompt tokens, shallow (the paper sweeps 1..200; 10 is a common small setting)
    "vpt": {"strategy": {"params": {"tokens": 10, "deep": False, "prompt_lr_mult": 1.0}}},
}


class VPT(Strategy):
    """Visual prompt tuning: learnable prompt tokens in a ViT, shallow or deep (Jia et al., ECCV 2022)."""

    name = "vpt"
    defaults = {"tokens": 10, "deep": False, "prompt_lr_mult": 1.0}

    def plan(self, model, groups, job, ctx=None):
        from .peft import _head_phase  # lazy: the pack's shared phase (imports torch on call)
        from .vpt_layers import VPTPrompts, vit_blocks  # lazy: torch

        p = self.params(job)
        tokens = self.number(p, "tokens", int, 1)
        deep = self.flag(p, "deep")
        mult = self.number(p, "prompt_lr_mult", float, 0.0)
        found = vit_blocks(model.backbone.body)
        if found is None:
            raise ConfigError(f"strategy 'vpt' needs a ViT-family backbone (timm "
                              f"VisionTransformer: vit_*, deit_*; open_clip ViT towers); "
                              f"{model.backbone.provider}:"
                              f"{model.backbone.name} is not one — try lora or ssf")
        blocks, prefix, dim, _, _ = found
        change = VPTPrompts(tokens, deep, seed=job.seed, strategy=self.name)
        count = tokens * dim * (len(blocks) if deep else 1)
        sel = Selection("prompts", params=("backbone.body.*vpt_prompt",), lr_mult=mult,
                        weight_decay=0.0)
        where = (f"new ones before each of the {len(blocks)} blocks" if deep else
                 f"before the first of the {len(blocks)} blocks")
        notes = [f"VPT-{'deep' if deep else 'shallow'}: {tokens} prompt tokens after the "
                 f"{prefix} class/register token(s), {where} ({count} parameters), removed "
                 "after the last block; the backbone's own weights stay frozen",
                 "prompts cannot merge into the weights: model.safetensors keeps them and "
                 "records the change; zoo eval/predict/export re-apply it when loading"]
        phase = _head_phase(self.name, groups, job, [sel])
        return StrategyPlan(self.name, [phase], notes, model_changes=[change])

    def restore_change(self, state: dict):
        """The change recorded in a run's ``model.safetensors`` (``unmerged``), rebuilt."""
        from .vpt_layers import VPTPrompts  # lazy: torch

        if not isinstance(state, dict) or not isinstance(state.get("tokens"), int) or \
                not isinstance(state.get("deep"), bool) or not 1 <= state["tokens"] <= 10_000:
            raise ConfigError(f"strategy 'vpt': a recorded prompt change {state!r} is not "
                              "{tokens: int, deep: bool}")
        return VPTPrompts(state["tokens"], state["deep"], strategy=self.name)
