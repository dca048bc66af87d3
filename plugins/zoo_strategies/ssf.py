"""``ssf``: scale and shift the deep features (Lian et al., NeurIPS 2022).

A learnable per-channel scale (≈1) and shift (≈0) after every linear, conv (with bias) and
normalisation layer of the backbone; the backbone's own weights stay frozen (BatchNorm
statistics fixed) and the head trains.  After training the scale and shift are merged into
the layers' weights and biases exactly, so ``model.safetensors`` is the provider's
architecture and loads with its provider alone — any provider's model (timm, torchvision,
open_clip, third-party plugins), since the sites are found by module type.  The torch side
(:mod:`.ssf_layers`) explains the three traps it handles: deep copies, nn.MultiheadAttention
and fused norm+activation layers.  Imports no torch at import time (the pack's rule).
"""
from __future__ import annotations

from zoo.errors import ConfigError
from zoo.plan import Selection, StrategyPlan

from .base import Strategy

JOB_DEFAULTS: dict[str, dict] = {
    # the paper initialises γ ~ N(1, 0.02), β ~ N(0, 0.02); the scale and shift take no
    # weight decay (a decay would pull γ towards 0, not towards the identity)
    "ssf": {"strategy": {"params": {"init_std": 0.02, "ssf_lr_mult": 1.0}}},
}


def example_input(model, job):
    """One zero image at the run's input size and channels (the dry run's input)."""
    import torch  # lazy: torch, only when a plan is made

    cfg = model.backbone.pretrained_cfg
    channels = int(getattr(cfg, "channels", 3) or 3)
    size = int(job.data.image_size or cfg.input_size)
    return torch.zeros(1, channels, size, size)


class SSF(Strategy):
    """Per-channel scale and shift after every layer, merged into the weights (Lian et al., NeurIPS 2022)."""

    name = "ssf"
    defaults = {"init_std": 0.02, "ssf_lr_mult": 1.0}

    def plan(self, model, groups, job, ctx=None):
        from .peft import _head_phase  # lazy: the pack's shared phase (imports torch on call)
        from .ssf_layers import SSFAdapters, find_sites, sites_that_run  # lazy: torch

        p = self.params(job)
        init_std = self.number(p, "init_std", float, 0.0)
        mult = self.number(p, "ssf_lr_mult", float, 0.0)
        body = model.backbone.body
        sites, notes = find_sites(body)
        try:
            running = sites_that_run(body, sites, example_input(model, job))
        except Exception as exc:  # a backbone the zero image does not fit: keep every site
            running = sites
            notes.append(f"dry run skipped ({type(exc).__name__}): every site kept")
        skipped = [s.path for s in sites if s not in running]
        if skipped:
            notes.append(f"{len(skipped)} layers whose forward the model bypasses (it reads "
                         f"their weights directly) left out, e.g. {skipped[0]}")
        if not running:
            raise ConfigError(f"strategy 'ssf': {model.backbone.provider}:"
                              f"{model.backbone.name} has no linear, conv or norm layer to "
                              "scale and shift; try bitfit or finetune")
        change = SSFAdapters(running, init_std=init_std, seed=job.seed, notes=notes)
        sel = Selection("ssf", params=("backbone.body.*ssf_s*",), lr_mult=mult,
                        weight_decay=0.0)
        params = change.describe()["params"]
        notes = [f"SSF: scale and shift at {len(running)} layers ({params} parameters); the "
                 "backbone's own weights stay frozen; after training they are merged into "
                 "the layers' weights and biases (model.safetensors is the provider's "
                 "architecture)", *notes]
        phase = _head_phase(self.name, groups, job, [sel])
        return StrategyPlan(self.name, [phase], notes, model_changes=[change])
