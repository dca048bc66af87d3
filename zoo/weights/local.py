"""A local weights file or model folder, read once for every provider and plugin.

What providers and weight plugins kept re-implementing (a safe read of a ``.safetensors`` /
foreign ``.pth``, the folder's ``config.json``, which tensors are the source classifier and
what its classes are called, a cached Hugging Face file) lives here:

- :func:`load_local_weights` takes a weights file or a model folder (timm's / transformers'
  Hub layout, open_clip's, a zoo ``export --format hf`` folder, a run folder) and returns
  :class:`LocalWeights`: tensors in file order, metadata, config, the source classifier's key
  prefix and class names, sha256, and a :class:`ResolvedWeights` for zoo's loader.
- :func:`hf_cached_file`: a file of a Hub repo already in the local Hugging Face cache, or
  ``None`` (never touches the network).

Nothing here unpickles: safetensors, or ``torch.load(weights_only=True)`` for a ``.pth``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from zoo.errors import WeightsError
from zoo.weights.formats import ResolvedWeights, read_checkpoint, sha256_file

#: weight files of a model folder, in the order they are preferred (safetensors first)
WEIGHT_FILES = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin",
                "open_clip_pytorch_model.bin", "pytorch_model.pth", "model.pth")


@dataclass
class LocalWeights:
    """One weights file read from disk, with what its folder says about it."""

    path: Path                          # the weights file itself
    tensors: dict                       # name → tensor, in the file's order
    metadata: dict = field(default_factory=dict)   # safetensors ``__metadata__``
    config: dict = field(default_factory=dict)     # the folder's config.json ({} if none)
    classifier: str | None = None       # key prefix of the source classifier ("fc.")
    classes: list | None = None         # that classifier's class names, when recorded
    sha256: str | None = None

    @property
    def pretrained_cfg(self) -> dict | None:
        """Preprocessing recorded with the weights (config.json's ``pretrained_cfg``)."""
        cfg = self.config.get("pretrained_cfg")
        return cfg if isinstance(cfg, dict) else None

    @property
    def architecture(self) -> str | None:
        arch = self.config.get("architecture")  # timm's / zoo's exports name it
        return arch if isinstance(arch, str) else None

    def resolved(self, source: str, tag: str | None = None) -> ResolvedWeights:
        """What zoo's weight loader (``zoo.weights.resolve``) takes."""
        info = {"pretrained_cfg": self.pretrained_cfg, "config": self.config,
                "classes": self.classes}
        return ResolvedWeights(source, self.tensors, self.sha256, str(self.path), tag, info)


def weights_file(folder: Path, what: str) -> Path:
    """The weights file of a model folder (see :data:`WEIGHT_FILES`)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"{what} holds no weights file (looked for {', '.join(WEIGHT_FILES)})"
                       " — export one with `zoo export RUN --format hf`, or pass the file")


def load_local_weights(path: str | Path, what: str | None = None,
                       sha256: str | None = None) -> LocalWeights:
    """Read a weights file, or the weights of a model folder, with its config and classifier.

    ``what`` names the source in errors (default: the path); ``sha256``, when the caller has
    already checked the file's digest, saves hashing it again.
    """
    path = Path(os.path.expanduser(str(path)))
    what = what or str(path)
    if path.is_dir():
        folder, file = path, weights_file(path, what)
    elif path.is_file():
        folder, file = path.parent, path
    else:
        raise WeightsError(f"{what} does not exist — pass a weights file or a model folder")
    tensors, metadata = read_checkpoint(file)
    config = _read_config(folder / "config.json") if path.is_dir() else {}
    prefix, classes = _source_classifier(tensors, config)
    return LocalWeights(file, tensors, metadata, config, prefix, classes,
                        sha256 or sha256_file(file))


def _read_config(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not valid JSON ({exc}) — re-export or re-download "
                           "the folder") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{path} is not a JSON object — re-export or re-download the folder")
    return config


def _source_classifier(tensors: dict, config: dict) -> tuple[str | None, list | None]:
    """The classifier's key prefix (as the config names it) and its class names."""
    cfg = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else {}
    name = cfg.get("classifier") or config.get("classifier")
    prefix = f"{name}." if isinstance(name, str) and f"{name}.weight" in tensors else None
    labels = config.get("label_names") or cfg.get("label_names")
    if isinstance(labels, dict):  # timm allows {index: name} when indices have gaps
        labels = [labels[k] for k in sorted(labels, key=int)]
    classes = [str(x) for x in labels] if isinstance(labels, (list, tuple)) else None
    if prefix and classes is not None:
        if len(classes) != int(tensors[prefix + "weight"].shape[0]):
            classes = None  # names of another classifier: not this one's
    return prefix, classes


def hf_cached_file(repo: str, filenames, revision: str | None = None,
                   cache_dir: str | None = None) -> str | None:
    """The first of ``filenames`` of Hub repo ``repo`` found in the local HF cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache  # lazy: optional (the hf extra)
    except ImportError:
        return None
    for name in filenames:
        try:
            found = try_to_load_from_cache(repo, name, revision=revision or None,
                                           cache_dir=cache_dir)
        except Exception:  # a malformed repo id or cache entry: not cached
            found = None
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None
