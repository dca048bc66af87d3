"""The torch side of ``ssf`` (:mod:`.ssf`): where the scale and shift go, the hooks that
apply them, and the :class:`~zoo.strategy.ModelChange` that merges them into the weights.

SSF (Lian et al., NeurIPS 2022) multiplies the output of a layer by a learnable per-channel
scale ``γ`` and adds a shift ``β``.  After a layer that computes ``W x + b`` per output
channel (``nn.Linear``, ``nn.Conv*d``, a normalisation layer's affine) this is exactly
``(γ W) x + (γ b + β)``: merged into the layer's own weight and bias at the end, the saved
model is the provider's architecture again and loads with its provider alone.

Three traps, each handled here (and said in the plan notes):

* **Copies.** ``auto`` (and the LR range test) deep-copy the adapted model.  The scale and
  shift are parameters *of the adapted module itself* (``ssf_scale``/``ssf_shift``) and the
  hooks are module-level functions that read them from the ``module`` argument, so a deep
  copy's hooks use the copy's parameters, never the original's (a closure over the original
  parameters would silently train the wrong tensors in every copy).
* **nn.MultiheadAttention.** Its ``out_proj`` never runs its own ``forward`` (the attention
  reads ``out_proj.weight`` directly), so a hook there never fires: the site is the MHA
  module itself (its first output is ``out_proj``'s output) and merges into ``out_proj``.
  Its packed ``in_proj`` (q, k, v) is left as is.  Any other layer whose forward a model
  bypasses is found by a dry run (:func:`sites_that_run`) and left out.
* **Fused norm + activation** (timm's ``BatchNormAct2d``, ``GroupNormAct``, ...: norm →
  drop → act in one module).  A scale after the module would follow the activation and could
  not merge; the site is a forward pre-hook on the module's ``act`` child (its input is the
  norm's output), and the merge goes into the norm's weight and bias.

A site without a bias (``Linear(bias=False)``, RMSNorm) gets a scale only (a shift would
need a bias tensor the provider's architecture lacks); a conv without bias is left out (a
norm layer follows it in every provider's models, and per-channel affines compose, so that
norm's SSF covers it); a norm without affine parameters is left out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo.strategy import ModelChange

SCALE, SHIFT = "ssf_scale", "ssf_shift"
_DIM, _KIND = "_zoo_ssf_dim", "_zoo_ssf_kind"
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
          nn.modules.instancenorm._InstanceNorm)


@dataclass
class Site:
    """One place SSF scales and shifts: ``path`` (the hooked module, relative to the body),
    ``kind`` (``self``: output hook; ``act``: pre-hook on a fused norm's activation;
    ``mha``: output hook on nn.MultiheadAttention), channel ``dim``, ``channels``, ``shift``."""

    path: str
    kind: str
    dim: int
    channels: int
    shift: bool
    target: str  # the module whose weight/bias the merge changes


def _is_norm(module: nn.Module) -> bool:
    """A normalisation layer with a per-channel weight (timm's RmsNorm included)."""
    if isinstance(module, _NORMS):
        return True
    name = type(module).__name__
    weight = getattr(module, "weight", None)
    return "Norm" in name and isinstance(weight, nn.Parameter) and weight.dim() == 1


def _norm_dim(module: nn.Module) -> int:
    """The channel dim of a norm's output: 1 for BN/GN/instance norm and timm's ``*2d``
    norms (channels-first), -1 for LayerNorm/RMSNorm over the last dim."""
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                           nn.modules.instancenorm._InstanceNorm)):
        return 1
    return 1 if "2d" in type(module).__name__.lower() else -1


def find_sites(body: nn.Module) -> tuple[list[Site], list[str]]:
    """Every SSF site of ``body`` and notes on what was left out and why."""
    mods = dict(body.named_modules())
    mha = [n for n, m in mods.items() if isinstance(m, nn.MultiheadAttention)]
    inside_mha = {n for n in mods for a in mha if n.startswith(a + ".")}
    sites: list[Site] = []
    no_bias_convs, no_affine, fused = [], [], 0
    for name, m in mods.items():
        if not name or name in inside_mha:
            continue
        if isinstance(m, nn.MultiheadAttention):
            out = m.out_proj
            sites.append(Site(name, "mha", -1, out.out_features, out.bias is not None,
                              f"{name}.out_proj"))
        elif isinstance(m, nn.Linear):
            sites.append(Site(name, "self", -1, m.out_features, m.bias is not None, name))
        elif isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            if m.bias is None:
                no_bias_convs.append(name)
                continue
            sites.append(Site(name, "self", 1, m.out_channels, True, name))
        elif _is_norm(m):
            weight = getattr(m, "weight", None)
            if not isinstance(weight, nn.Parameter):
                no_affine.append(name)
                continue
            bias = getattr(m, "bias", None)
            act = getattr(m, "act", None)
            if isinstance(act, nn.Module):  # fused norm → drop → act: before the activation
                fused += 1
                sites.append(Site(f"{name}.act", "act", _norm_dim(m), weight.numel(),
                                  isinstance(bias, nn.Parameter), name))
            else:
                sites.append(Site(name, "self", _norm_dim(m), weight.numel(),
                                  isinstance(bias, nn.Parameter), name))
    notes = []
    if mha:
        notes.append(f"{len(mha)} nn.MultiheadAttention: SSF on the attention output (its "
                     "out_proj never runs its own forward), merged into out_proj; the packed "
                     "q/k/v projection is left as is")
    if fused:
        notes.append(f"{fused} fused norm+activation layers: the scale and shift go before "
                     "the activation (a pre-hook on .act), so they merge exactly into the norm")
    if no_bias_convs:
        notes.append(f"{len(no_bias_convs)} convs without bias left out (the norm after each "
                     f"takes SSF; per-channel affines compose), e.g. {no_bias_convs[0]}")
    if no_affine:
        notes.append(f"{len(no_affine)} norm layers without affine parameters left out")
    scale_only = sum(1 for s in sites if not s.shift)
    if scale_only:
        notes.append(f"{scale_only} layers without a bias get a scale only (a shift could "
                     "not merge into them)")
    return sites, notes


def sites_that_run(body: nn.Module, sites: list[Site], example: torch.Tensor) -> list[Site]:
    """The sites whose hook fires in one eval-mode forward pass of ``example`` (a model that
    reads a layer's weight directly, bypassing its forward, would never apply its SSF)."""
    ran: set[str] = set()
    handles = []
    for site in sites:
        module = body.get_submodule(site.path)
        if site.kind == "act":
            handles.append(module.register_forward_pre_hook(
                lambda *_, p=site.path: ran.add(p)))
        else:
            handles.append(module.register_forward_hook(lambda *_, p=site.path: ran.add(p)))
    modes = {m: m.training for m in body.modules()}
    try:
        body.eval()
        with torch.no_grad():
            body(example)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return [s for s in sites if s.path in ran]


# -- the hooks: module-level functions reading the module they are called with -------------
def _affine(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    scale = module._parameters[SCALE]
    shift = module._parameters.get(SHIFT)
    dim = getattr(module, _DIM)
    if dim != -1 and x.dim() > 2:  # channels-first: (C, 1, 1, ...)
        view = (-1,) + (1,) * (x.dim() - 2)
        scale = scale.view(view)
        shift = shift.view(view) if shift is not None else None
    x = x * scale
    return x + shift if shift is not None else x


def _output_hook(module, inputs, output):
    return _affine(module, output)


def _pre_hook(module, inputs):
    return (_affine(module, inputs[0]), *inputs[1:])


def _mha_hook(module, inputs, output):
    return (_affine(module, output[0]), *output[1:])


_HOOKS = (_output_hook, _pre_hook, _mha_hook)


def add_site(body: nn.Module, site: Site, generator: torch.Generator, init_std: float) -> None:
    """Register ``site``'s scale (≈1) and shift (≈0) on its module, and its hook."""
    module = body.get_submodule(site.path)
    ref = body.get_submodule(site.target)
    weight = getattr(ref, "weight", None)
    like = dict(dtype=weight.dtype if weight is not None else torch.float32,
                device=weight.device if weight is not None else "cpu")
    scale = 1.0 + init_std * torch.randn(site.channels, generator=generator)
    module.register_parameter(SCALE, nn.Parameter(scale.to(**like)))
    if site.shift:
        shift = init_std * torch.randn(site.channels, generator=generator)
        module.register_parameter(SHIFT, nn.Parameter(shift.to(**like)))
    setattr(module, _DIM, site.dim)
    setattr(module, _KIND, site.kind)
    if site.kind == "act":
        module.register_forward_pre_hook(_pre_hook)
    else:
        module.register_forward_hook(_mha_hook if site.kind == "mha" else _output_hook)


def _remove_hooks(module: nn.Module) -> None:
    for table in (module._forward_hooks, module._forward_pre_hooks):
        for key in [k for k, fn in table.items() if fn in _HOOKS]:
            del table[key]
            for extra in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                          "_forward_pre_hooks_with_kwargs"):
                getattr(module, extra, {}).pop(key, None)


@torch.no_grad()
def merge_all(body: nn.Module) -> int:
    """Fold every SSF site of ``body`` into its layer's weight and bias; remove the
    parameters and hooks.  The result is the provider's architecture.  Returns the count."""
    count = 0
    for name, module in list(body.named_modules()):
        if SCALE not in module._parameters:
            continue
        kind = getattr(module, _KIND)
        if kind == "act":
            target = body.get_submodule(name.rsplit(".", 1)[0]) if "." in name else body
        elif kind == "mha":
            target = module.out_proj
        else:
            target = module
        scale = module._parameters.pop(SCALE).detach()
        shift = module._parameters.pop(SHIFT, None)
        w = target.weight
        w.mul_(scale.to(w.dtype).view((-1,) + (1,) * (w.dim() - 1)))
        if target.bias is not None:
            target.bias.mul_(scale.to(w.dtype))
            if shift is not None:
                target.bias.add_(shift.detach().to(w.dtype))
        _remove_hooks(module)
        for attr in (_DIM, _KIND):
            module.__dict__.pop(attr, None)
        count += 1
    return count


class SSFAdapters(ModelChange):
    """Per-channel scale and shift at ``sites`` of ``model.backbone.body``, merged after
    training (:func:`merge_all`): ``model.safetensors`` is the provider's architecture."""

    name = "ssf"

    def __init__(self, sites: list[Site], *, init_std: float, seed: int,
                 notes: list[str] | None = None):
        self.sites = list(sites)
        self.init_std, self.seed = init_std, seed
        self.notes = list(notes or [])

    def apply(self, model) -> None:
        body = model.backbone.body
        if any(SCALE in m._parameters for m in body.modules()):
            return  # applied already (this model, or the copy it was made from)
        gen = torch.Generator().manual_seed(self.seed)  # the same init on resume and copies
        for site in self.sites:
            add_site(body, site, gen, self.init_std)

    def describe(self) -> dict:
        params = sum(s.channels * (2 if s.shift else 1) for s in self.sites)
        kinds = {k: sum(1 for s in self.sites if s.kind == k) for k in ("self", "act", "mha")}
        return {"name": self.name, "sites": len(self.sites), "params": params,
                "fused_norm_act": kinds["act"], "multihead_attention": kinds["mha"],
                "init_std": self.init_std, "notes": self.notes}

    def finalize(self, model, run_dir):
        merge_all(model.backbone.body)
        return None
