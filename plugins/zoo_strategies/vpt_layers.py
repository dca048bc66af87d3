"""The torch side of ``vpt`` (:mod:`.vpt`): prompt tokens in a ViT's blocks, by hooks.

Visual Prompt Tuning (Jia et al., ECCV 2022) prepends ``P`` learnable tokens after the
class/register tokens.  *Shallow*: one set, inserted before the first block.  *Deep*: a new
set before every block (replacing what the previous block made of the last set).  The
prompts are removed after the last block, so the final norm and the pooling (class token,
average or attention pooling) see exactly the tokens they always saw.

Backbones: timm's ``VisionTransformer`` family and open_clip image towers
(:func:`vit_blocks`).  Each block holds its own prompts (``blocks.{i}.vpt_prompt``,
``(P, D)``) and a forward
pre-hook (the last block also an output hook); hooks are module-level functions reading the
module they are called with, so a deep copy (``auto``'s trials) trains its own prompts.  The
provider's parameter names are unchanged; the prompts are extra keys.  Prompt tokens change
the computation itself, so they cannot be merged into the weights: ``finalize`` records the
change in the model (``zoo_unmerged``), ``model.safetensors`` keeps the prompts, and
``zoo eval/predict/export`` re-apply the change (:meth:`.vpt.VPT.restore_change`) before
loading it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from zoo.strategy import ModelChange

PROMPT = "vpt_prompt"
_FIRST, _PREFIX, _COUNT, _DIM = ("_zoo_vpt_first", "_zoo_vpt_prefix", "_zoo_vpt_count",
                                 "_zoo_vpt_dim")


def vit_blocks(body: nn.Module):
    """``(blocks, num_prefix_tokens, embed_dim, patch_area, token_dim)`` of a ViT-family body
    — timm's ``VisionTransformer`` family, or an open_clip image tower (``transformer.
    resblocks`` after a class token; tokens on dim 0 when it is not batch-first) — or None
    when ``body`` is neither (its tokens do not pass a plain list of blocks)."""
    tower = getattr(body, "transformer", None)
    if (hasattr(body, "class_embedding") and hasattr(body, "positional_embedding")
            and isinstance(getattr(tower, "resblocks", None), nn.ModuleList)):  # open_clip
        patch = getattr(body, "patch_size", (16, 16))
        token_dim = 1 if getattr(tower, "batch_first", True) else 0
        return tower.resblocks, 1, int(tower.width), int(math.prod(patch)), token_dim
    try:
        from timm.models.vision_transformer import VisionTransformer  # lazy: timm
    except ImportError:
        return None
    if not isinstance(body, VisionTransformer):
        return None
    patch = getattr(body.patch_embed, "patch_size", (16, 16))
    return body.blocks, int(body.num_prefix_tokens), int(body.embed_dim), \
        int(math.prod(patch)), 1


def _pre_hook(block, inputs):
    x = inputs[0]
    d = getattr(block, _DIM)  # the token dim: 1 (batch-first) or 0
    prompt = block._parameters[PROMPT].to(x.dtype)  # (P, D)
    if d == 1:  # (B, L, D)
        prompt = prompt.unsqueeze(0).expand(x.shape[0], -1, -1)
    else:  # (L, B, D)
        prompt = prompt.unsqueeze(1).expand(-1, x.shape[1], -1)
    n, length = getattr(block, _PREFIX), x.shape[d]
    if getattr(block, _FIRST):  # insert after the class/register tokens
        rest = x.narrow(d, n, length - n)
    else:  # deep: this block's prompts replace the previous block's outputs at their place
        p = prompt.shape[d]
        rest = x.narrow(d, n + p, length - n - p)
    x = torch.cat([x.narrow(d, 0, n), prompt, rest], dim=d)
    return (x, *inputs[1:])


def _last_hook(block, inputs, output):
    n, count, d = getattr(block, _PREFIX), getattr(block, _COUNT), getattr(block, _DIM)
    length = output.shape[d]
    return torch.cat([output.narrow(d, 0, n), output.narrow(d, n + count, length - n - count)],
                     dim=d)


_HOOKS = (_pre_hook, _last_hook)


class VPTPrompts(ModelChange):
    """``tokens`` prompt tokens in ``model.backbone.body``'s blocks (first only, or every
    block with ``deep``); see the module docstring."""

    name = "vpt"

    def __init__(self, tokens: int, deep: bool, seed: int = 0, strategy: str = "vpt"):
        self.tokens, self.deep, self.seed, self.strategy = int(tokens), bool(deep), seed, strategy

    def apply(self, model) -> None:
        found = vit_blocks(model.backbone.body)
        if found is None:
            raise TypeError("vpt needs a timm VisionTransformer or an open_clip image tower")
        blocks, prefix, dim, area, token_dim = found
        if PROMPT in blocks[0]._parameters:
            return  # applied already (this model, or the copy it was made from)
        gen = torch.Generator().manual_seed(self.seed)
        bound = math.sqrt(6.0 / float(3 * area + dim))  # the paper's (Xavier-style) init
        device = next(blocks[0].parameters()).device
        for i, block in enumerate(blocks):
            if i > 0 and not self.deep:
                break
            p = (torch.rand(self.tokens, dim, generator=gen) * 2 - 1) * bound
            block.register_parameter(PROMPT, nn.Parameter(p.to(device)))
            setattr(block, _FIRST, i == 0)
            setattr(block, _PREFIX, prefix)
            setattr(block, _DIM, token_dim)
            block.register_forward_pre_hook(_pre_hook)
        last = blocks[len(blocks) - 1]
        setattr(last, _PREFIX, prefix)
        setattr(last, _DIM, token_dim)
        setattr(last, _COUNT, self.tokens)
        last.register_forward_hook(_last_hook)

    def describe(self) -> dict:
        return {"name": self.name, "tokens": self.tokens, "deep": self.deep,
                "merges": False}

    def state(self) -> dict:
        """What :meth:`.vpt.VPT.restore_change` needs to rebuild this change."""
        return {"tokens": self.tokens, "deep": self.deep}

    def finalize(self, model, run_dir):
        # prompts cannot merge: model.safetensors keeps them, and says how to re-apply them
        record = {"strategy": self.strategy, "state": self.state()}
        model.__dict__.setdefault("zoo_unmerged", []).append(record)
        return None
