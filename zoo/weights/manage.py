"""What ``zoo weights`` does beyond the store itself: pull from a provider's hub or a plugin,
import a local file, and the per-model store operations the CLI shows.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zoo.contracts import create_backbone
from zoo.errors import WeightsError
from zoo.weights.resolve import (ResolvedWeights, WeightStore, _from_plugins, apply_pretrained_cfg,
                                 load_into_backbone, pretrained_cfg_of, read_checkpoint,
                                 sha256_file)
from zoo.weights.store import (FILE_NAME, check_name, entry_file, entry_key,  # noqa: F401
                               folder_name)


def _split_ref(catalog, name: str, tag: str | None):
    """``(ref, model, tag)`` for a user's MODEL argument (``[provider:]arch[.tag]``)."""
    ref = catalog.resolve_model(name)
    tag = tag or ref.tag
    check_name(f"{ref.provider}:{ref.arch}", tag)  # before any work: `--tag ../x` never writes
    return ref, f"{ref.provider}:{ref.arch}", tag


def pull(catalog, name: str, tag: str | None = None, *, source: str = "auto",
         force: bool = False, store=None) -> dict:
    """Fetch ``name``'s pretrained weights (plugins, then the provider's hub) into the store.

    :param source: ``auto`` (plugins, then hub), ``plugin`` or ``hub``.
    Returns the manifest entry plus ``"status"`` (``stored`` or ``present``).
    """
    store = store or WeightStore()
    ref, model, tag = _split_ref(catalog, name, tag)
    key = entry_key(model, tag)
    if not force:
        existing = store.entry(model, tag)
        found = entry_file(store.root, key, existing) if existing else None
        if found is not None and found.is_file():
            return dict(existing, status="present", path=str(found))
    looked: list[str] = []
    backbone, origin = None, None
    if source in ("auto", "plugin"):
        found = _from_plugins(catalog, model, tag, store, looked)
        if found is not None:
            backbone = create_backbone(catalog, ref.provider, ref.arch, ref.tag, False)
            load_into_backbone(backbone, found)
            apply_pretrained_cfg(backbone, found.info.get("pretrained_cfg"))
            origin = found.source
    if backbone is None and source in ("auto", "hub"):
        try:
            backbone = create_backbone(catalog, ref.provider, ref.arch, tag, True)
            origin = f"hub:{ref.provider}"
        except WeightsError as exc:
            looked.append(f"{ref.provider} hub: {str(exc).split(' — ')[0]}")
    if backbone is None:
        quiet = [x[len("plugin "):] for x in looked if x.startswith("plugin ") and " " not in
                 x[len("plugin "):]]
        rest = [x for x in looked if x[len("plugin "):] not in quiet]
        if quiet:
            rest.insert(0, f"no resolve_weights plugin has them (asked {', '.join(quiet)})")
        where = "; ".join(rest) or "nowhere (no plugin answered)"
        raise WeightsError(f"cannot pull {key}: {where} — run `zoo weights pull {key}` where "
                           f"there is network (or set HF_ENDPOINT / TORCH_HOME to a mirror or "
                           f"a cache), or `zoo weights import FILE --model {key}`")
    state = backbone.source_state_dict()
    entry_ = store.put(model, tag, state, origin,
                       metadata={"pretrained_cfg": backbone.pretrained_cfg.as_dict()})
    return dict(entry_, key=key, status="stored", path=str(store.root / entry_["file"]))


def import_file(catalog, path: str | Path, name: str, tag: str | None = None, *,
                force: bool = False, store=None) -> dict:
    """Map a foreign checkpoint onto ``name``'s backbone and store it as safetensors.

    ``.safetensors`` files and ``.pth``/``.pt`` state dicts (read with
    ``torch.load(weights_only=True)``: a pickle that needs code is refused).  Keys are matched
    by name, after stripping known prefixes (``module.``, ``model.``, ``backbone.``, ...), or
    by order when every shape matches; a zoo run's ``model.safetensors`` works too.  Returns
    the manifest entry plus the mapping report (``missing``, ``unexpected``, ``mismatched``).
    """
    store = store or WeightStore()
    path = Path(os.path.expanduser(str(path)))
    ref, model, tag = _split_ref(catalog, name, tag)
    key = entry_key(model, tag)
    tensors, meta = read_checkpoint(path)
    if not tensors:
        raise WeightsError(f"{path} holds no tensors")
    if not force and store.entry(model, tag):
        raise WeightsError(f"{key} is already in the weight store — pass --force to replace it, "
                           f"or --tag NAME to keep both")
    digest = sha256_file(path)
    found = ResolvedWeights(f"file:{path}", tensors, digest, str(path), tag, meta)
    backbone = create_backbone(catalog, ref.provider, ref.arch, ref.tag, False)
    report = load_into_backbone(backbone, found)  # CheckpointError when it does not fit
    apply_pretrained_cfg(backbone, pretrained_cfg_of(meta))
    missing_source = {_source_name(backbone, k) for k in report["missing"]}
    state = {k: v for k, v in backbone.source_state_dict().items() if k not in missing_source}
    entry_ = store.put(model, tag, state, f"import:{path.name}",
                       metadata={"pretrained_cfg": backbone.pretrained_cfg.as_dict()},
                       extra={"original": {"file": str(path.resolve()), "sha256": digest}})
    return dict(entry_, key=key, status="stored", path=str(store.root / entry_["file"]),
                report={"loaded": len(state), "missing": report["missing"],
                        "unexpected": report["unexpected"],
                        "mismatched": report["mismatched"]})


def _source_name(backbone, key: str) -> str:
    """A key of the backbone's own state dict (``body.x``) in source naming (``x``)."""
    if key.startswith("body."):
        return key[5:]
    if key.startswith("source_classifier.") and backbone.classifier_name:
        return backbone.classifier_name + "." + key[len("source_classifier."):]
    return key


def store_path(catalog, name: str, tag: str | None = None, store=None) -> Path:
    store = store or WeightStore()
    _, model, tag = _split_ref(catalog, name, tag)
    path = store.path_for(model, tag)
    if not path.is_file():
        raise WeightsError(f"{entry_key(model, tag)} is not in the weight store ({store.root}) "
                           f"— `zoo weights pull {entry_key(model, tag)}` or `zoo weights "
                           f"import FILE --model {entry_key(model, tag)}`")
    return path


def remove_model(catalog, name: str, tag: str | None = None, store=None) -> dict:
    store = store or WeightStore()
    try:
        _, model, tag = _split_ref(catalog, name, tag)
    except Exception:  # the provider/model may be gone: remove by the raw key
        model, _, raw_tag = name.partition(".")
        tag = tag or raw_tag or None
    return store.remove(model, tag)  # checks the names and every path against the store


def describe(e: dict) -> dict[str, Any]:
    """A manifest entry for display."""
    return {"model": e.get("model"), "tag": e.get("tag"), "size": e.get("size"),
            "sha256": e.get("sha256"), "source": e.get("source"), "created": e.get("created")}
