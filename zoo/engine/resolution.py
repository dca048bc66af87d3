"""Transfer at an input size other than the pretrained one, for ViT-family backbones.

A ViT's position embeddings are a fixed grid (224 px / 16 = 14×14).  CNNs and ViTs built
with timm's ``dynamic_img_size`` take any size as they are; a fixed-size ViT refuses any
other.  :func:`fit_input_size` resamples the grid once, with the library's own code:

* timm (``VisionTransformer`` and every model with ``set_input_size``: DeiT, Swin, EVA, ...):
  ``model.set_input_size(img_size=(S, S))`` — position embeddings interpolated, patch
  embedding's expected size updated;
* torchvision ``VisionTransformer``: ``torchvision.models.vision_transformer
  .interpolate_embeddings`` and its ``image_size`` attribute.

The run's size is ``data.image_size`` and ``model.safetensors`` records it (``image_size``):
``zoo eval/predict/export`` rebuild the model at that size (:func:`fit_input_size` again,
before the weights load), preprocess at it, and export at it.
"""
from __future__ import annotations

from zoo.errors import ConfigError


def _fixed_size(body) -> tuple | None:
    """The input size a fixed-size ViT body insists on, or None (any size works)."""
    patch_embed = getattr(body, "patch_embed", None)
    if patch_embed is not None and hasattr(body, "set_input_size"):
        if getattr(body, "dynamic_img_size", False) or not getattr(
                patch_embed, "strict_img_size", True):
            return None
        size = getattr(patch_embed, "img_size", None)
        return tuple(size) if size is not None else None
    try:
        from torchvision.models.vision_transformer import VisionTransformer  # lazy: torchvision
    except ImportError:
        return None
    if isinstance(body, VisionTransformer):
        return (body.image_size, body.image_size)
    return None


def fit_input_size(backbone, size: int) -> str | None:
    """Resample ``backbone``'s position embeddings for ``size`` px when it is a fixed-size
    ViT at another size; returns a note saying what changed (None: nothing to do)."""
    body = backbone.body
    current = _fixed_size(body)
    if current is None or current == (size, size):
        return None
    what = f"{backbone.provider}:{backbone.name}"
    try:
        if hasattr(body, "set_input_size"):
            body.set_input_size(img_size=(size, size))
        else:
            _torchvision_vit(body, size)
    except Exception as exc:  # noqa: BLE001 - the library refusing this size
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise ConfigError(f"{what} cannot run at {size} px ({type(exc).__name__}: {first}) — "
                          f"pick data.image_size {current[0]} or a multiple of its patch "
                          "size") from None
    return (f"{what}: position embeddings resampled from {current[0]} px to {size} px "
            "(the library's own interpolation)")


def _torchvision_vit(body, size: int) -> None:
    import torch  # lazy: torch
    from torchvision.models.vision_transformer import interpolate_embeddings  # lazy

    if size % body.patch_size:
        raise ValueError(f"{size} is not a multiple of the patch size {body.patch_size}")
    state = {"encoder.pos_embedding": body.encoder.pos_embedding.detach()}
    new = interpolate_embeddings(size, body.patch_size, state)["encoder.pos_embedding"]
    body.encoder.pos_embedding = torch.nn.Parameter(
        new, requires_grad=body.encoder.pos_embedding.requires_grad)
    body.image_size = size
