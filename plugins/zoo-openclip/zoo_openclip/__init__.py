"""zoo-openclip: open_clip's vision-language models as zoo backbones.

The provider ``openclip`` lists open_clip's architectures (``openclip:ViT-B-32``) and their
pretrained tags (``openclip:ViT-B-32.laion2b_s34b_b79k``).  A backbone is the model's *image
tower*, an ordinary :class:`zoo.backbones.Backbone` whose ``feature_dim`` is the projected
image embedding (the space the text tower shares), so every strategy, ``zoo list``/``info``/
``rank`` work on it.  Its text tower is reachable by strategies through two attributes of the
backbone (docs/zero_shot.md):

- ``backbone.encode_text(texts: list[str]) -> Tensor (N, feature_dim)``: tokenised with the
  model's own tokenizer, run on the backbone's device, not normalised;
- ``backbone.logit_scale -> float``: the model's learned temperature (``exp`` of the log).

Weights come through open_clip's own download path (the Hugging Face hub), after zoo's fast
network check: offline, a copy in the HF cache is used, else it fails in well under a second
with a message saying what to run where there is network.

Lazy-import rule: importing this module imports neither torch nor open_clip.
"""
from __future__ import annotations

from zoo.hookspecs import hookimpl

from .provider import PROVIDER, OpenClipProvider

__version__ = "0.1.0"
__all__ = ["PROVIDER", "OpenClipProvider", "register_backbone_providers"]


@hookimpl
def register_backbone_providers(register):
    register(PROVIDER, OpenClipProvider(),
             description="open_clip vision-language models (image tower; text tower for zero-shot)")
