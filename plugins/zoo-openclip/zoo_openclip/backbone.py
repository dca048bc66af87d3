"""The image tower of an open_clip model as a zoo :class:`~zoo.backbones.Backbone`, with
the text tower kept beside it (not a submodule).

Why beside: a run's ``model.safetensors`` then holds only what classifies images (image
tower + head), ``.to(device)`` and the optimizer never see the text tower, and layer groups
are the image tower's.  Strategies reach the text tower through :meth:`ClipBackbone.
encode_text` and :attr:`ClipBackbone.logit_scale`.  For the weight store, though, the *source*
state dict is the whole CLIP model in open_clip's own naming (``visual.*`` + text keys), so
``zoo weights pull/import`` keep both towers and a stored copy restores zero-shot exactly.

Imports torch (the provider imports this module only when it builds a model).
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.backbones import Backbone
from zoo.errors import WeightsError

NO_SOURCE = ("a CLIP model is trained contrastively on image-text pairs, without a "
             "classifier over source classes; its text tower builds one: strategy zero-shot, "
             "or head.init=text")


class _TextTower:
    """The CLIP model without its image tower, and its tokenizer (a plain holder)."""

    def __init__(self, model: nn.Module, tokenizer):
        self.model = model
        self.tokenizer = tokenizer


class ClipBackbone(Backbone):
    """``body`` = the CLIP image tower (features = projected image embedding)."""

    no_source_reason = NO_SOURCE

    def __init__(self, clip: nn.Module, *, name: str, provider: str, pretrained_cfg=None):
        import open_clip  # lazy: open_clip imports torch

        visual = clip.visual
        with torch.no_grad():
            size = int(visual.image_size[0]) if isinstance(
                getattr(visual, "image_size", None), (tuple, list)) else 224
            dim = _output_dim(visual, clip, size)
        super().__init__(visual, dim, name=name, provider=provider,
                         pretrained_cfg=pretrained_cfg)
        clip.visual = nn.Identity()  # the holder must not own (or move) the image tower
        clip.eval().requires_grad_(False)
        self._text = _TextTower(clip, open_clip.get_tokenizer(name))

    # -- the text tower ----------------------------------------------------------------------
    @property
    def logit_scale(self) -> float:
        """The model's softmax temperature: ``exp(logit_scale)`` (100 for trained CLIPs)."""
        return float(self._text.model.logit_scale.detach().exp())

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings ``(len(texts), feature_dim)`` on this backbone's device."""
        device = next(self.body.parameters()).device
        model = self._text.model.to(device)
        tokens = self._text.tokenizer(list(texts)).to(device)
        return model.encode_text(tokens).float()

    # -- source state dict: the whole CLIP model in open_clip's naming -----------------------
    def source_state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"visual.{k}": v for k, v in self.body.state_dict().items()}
        out.update(self._text.model.state_dict())
        return out

    def load_source_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True):
        body = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        text = {k: v for k, v in state.items() if not k.startswith("visual.")}
        result = self.body.load_state_dict(body, strict=strict)
        if text or strict:
            self._text.model.load_state_dict(text, strict=strict)
        return result

    def source_logits(self, features: torch.Tensor) -> torch.Tensor:
        raise WeightsError(f"{self.provider}:{self.name}: {NO_SOURCE}")


def _output_dim(visual: nn.Module, clip: nn.Module, size: int) -> int:
    dim = getattr(visual, "output_dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    proj = getattr(clip, "text_projection", None)
    if proj is not None and hasattr(proj, "shape"):
        return int(proj.shape[-1])
    was = visual.training
    out = visual.eval()(torch.zeros(1, 3, size, size))
    visual.train(was)
    return int(out.shape[-1])
