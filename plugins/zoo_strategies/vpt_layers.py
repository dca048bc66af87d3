"""The torch side of ``vpt`` (:mod:`.vpt`): prompt tokens in a ViT's blocks, by hooks.

Visual Prompt Tuning (Jia et al., ECCV 2022) prepends ``P`` learnable tokens after the
class/register tokens.  *Shallow*: one set, inserted before the first block.  *Deep*: a new
set before every block (replacing what the previous block made of the last set).  The
prompts are removed after the last block, so the final norm and the pooling (class token,
average or attention pooling) see exactly the tokens they always saw.

Each block holds its own prompts (``blocks.{i}.vpt_prompt``, ``(P, D)``) and a forward
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
_FIRST, _PREFIX, _LAST, _COUNT = "_zoo_vpt_first", "_zoo_vpt_prefix", "_zoo_vpt_last", \
    "_zoo_vpt_count"


def vit_blocks(body: nn.Module):
    """``(blocks, num_prefix_tokens, embed_dim, patch_area)`` of a timm VisionTransformer-family
    body, or None when ``body`` is not one (its tokens do not pass a plain ``blocks``)."""
    try:
        from timm.models.vision_transformer import VisionTransformer  # lazy: timm
    except ImportError:
        return None
    if not isinstance(body, VisionTransformer):
        return None
    patch = getattr(body.patch_embed, "patch_size", (16, 16))
    return body.blocks, int(body.num_prefix_tokens), int(body.embed_dim), \
        int(math.prod(patch))


def _pre_hook(block, inputs):
    x = inputs[0]
    prompt = block._parameters[PROMPT].to(x.dtype).expand(x.shape[0], -1, -1)
    n = getattr(block, _PREFIX)
    if getattr(block, _FIRST):  # insert after the class/register tokens
        x = torch.cat([x[:, :n], prompt, x[:, n:]], dim=1)
    else:  # deep: this block's prompts replace the previous block's outputs at their place
        x = torch.cat([x[:, :n], prompt, x[:, n + prompt.shape[1]:]], dim=1)
    return (x, *inputs[1:])


def _last_hook(block, inputs, output):
    n, count = getattr(block, _PREFIX), getattr(block, _COUNT)
    return torch.cat([output[:, :n], output[:, n + count:]], dim=1)


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
            raise TypeError("vpt needs a timm VisionTransformer body")
        blocks, prefix, dim, area = found
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
            block.register_forward_pre_hook(_pre_hook)
        last = blocks[len(blocks) - 1]
        setattr(last, _PREFIX, prefix)
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
