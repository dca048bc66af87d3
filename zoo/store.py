"""zoo's weight store: ``$ZOO_HOME/weights`` (default ``~/.cache/zoo/weights``).

Layout (``docs/weights.md``)::

    $ZOO_HOME/weights/
      manifest.json                          every stored file: model, tag, sha256, size, ...
      .lock                                  fcntl.flock'ed by every writer
      timm__resnet18/weights.safetensors     provider:arch  → provider__arch
      timm__resnet18.a1_in1k/weights.safetensors   with a tag

Every file holds the backbone's tensors in the *provider's original naming* (what
``Backbone.source_state_dict()`` returns: ``conv1.weight``, ``fc.weight``, ...), so the
store is a plain cache of source weights, readable by anything that reads safetensors.

Concurrency: writers take an exclusive ``flock`` on ``.lock`` for the whole
read-modify-write of a file plus the manifest, and every file is written to a temp file and
renamed into place (:mod:`zoo.atomic`), so two ``zoo weights pull`` running at once never
leave a half-written file or lose each other's manifest entries.  Readers take no lock:
they only ever see complete files.

The management operations used by ``zoo weights`` (``pull``, ``import``, ``verify``, ...)
live here; :class:`zoo.weights.WeightStore` is the object the resolver and plugins see, and
delegates to these functions.
"""
from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from . import atomic
from .errors import WeightsError

MANIFEST = "manifest.json"
LOCK = ".lock"
SCHEMA = 1
FILE_NAME = "weights.safetensors"


def entry_key(model: str, tag: str | None) -> str:
    """The manifest key of ``model`` (``provider:arch``) with ``tag``."""
    return f"{model}.{tag}" if tag else model


def folder_name(model: str, tag: str | None) -> str:
    safe = model.replace(":", "__").replace("/", "_")
    return f"{safe}.{tag}" if tag else safe


# -- locking and the manifest --------------------------------------------------------------
@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Exclusive lock on ``root/.lock`` (POSIX ``flock``; blocks until it is free)."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: temp+rename still keeps files whole
        yield
        return
    with open(root / LOCK, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_manifest(root: Path) -> dict:
    """``{"schema": 1, "weights": {key: entry}}``; an absent manifest is an empty one."""
    path = root / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"schema": SCHEMA, "weights": {}}
    except OSError as exc:
        raise WeightsError(f"cannot read the weight store manifest {path}: "
                           f"{exc.strerror or exc}") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
            raise ValueError("no 'weights' mapping")
    except ValueError as exc:
        raise WeightsError(f"the weight store manifest {path} is unreadable ({exc}) — delete "
                           "it and `zoo weights pull`/`import` again") from None
    return data


def write_manifest(root: Path, manifest: dict) -> None:
    manifest = {"schema": SCHEMA, "weights": dict(sorted(manifest["weights"].items()))}
    atomic.write_json(root / MANIFEST, manifest)


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# -- operations on a store root --------------------------------------------------------------
def put(root: Path, model: str, tag: str | None, tensors: dict, source: str,
        metadata: dict | None = None, extra: dict | None = None) -> dict:
    """Store ``tensors`` for ``model``/``tag`` (replacing any previous file); return its entry."""
    import hashlib

    from safetensors.torch import save

    clean, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        if v.data_ptr() in seen and v.numel():  # tied weights: safetensors wants copies
            v = v.clone()
        seen.add(v.data_ptr())
        clean[k] = v
    meta = {"zoo_store": json.dumps({"model": model, "tag": tag, "source": source})}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, default=atomic._jsonable)
    data = save(clean, metadata=meta)
    rel = f"{folder_name(model, tag)}/{FILE_NAME}"
    entry = {"model": model, "tag": tag, "file": rel,
             "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
             "tensors": len(clean), "source": source, "created": now(), **(extra or {})}
    with locked(root):
        manifest = read_manifest(root)
        atomic.write_bytes(root / rel, data)
        manifest["weights"][entry_key(model, tag)] = entry
        write_manifest(root, manifest)
    return entry


def entries(root: Path) -> list[dict]:
    return [dict(e, key=k) for k, e in sorted(read_manifest(root)["weights"].items())]


def entry(root: Path, model: str, tag: str | None) -> dict | None:
    found = read_manifest(root)["weights"].get(entry_key(model, tag))
    return dict(found, key=entry_key(model, tag)) if found else None


def remove(root: Path, model: str, tag: str | None) -> dict:
    """Delete the file and the manifest entry of ``model``/``tag``; return the entry."""
    key = entry_key(model, tag)
    with locked(root):
        manifest = read_manifest(root)
        found = manifest["weights"].pop(key, None)
        path = root / (found["file"] if found else f"{folder_name(model, tag)}/{FILE_NAME}")
        if found is None and not path.is_file():
            raise WeightsError(f"{key} is not in the weight store ({root}) — `zoo weights "
                               "list` shows what is")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        write_manifest(root, manifest)
    return found or {"model": model, "tag": tag, "file": str(path.relative_to(root))}


def verify(root: Path) -> list[dict]:
    """Re-hash every stored file against the manifest.

    One row per manifest entry (``status``: ``ok``, ``missing``, ``size mismatch``,
    ``sha256 mismatch``) plus one per ``weights.safetensors`` the manifest does not know
    (``untracked``).
    """
    from .weights import sha256_file

    manifest = read_manifest(root)
    rows = []
    known = set()
    for key, e in sorted(manifest["weights"].items()):
        path = root / e["file"]
        known.add(path.resolve())
        row = {"key": key, "model": e.get("model"), "tag": e.get("tag"), "file": str(path),
               "expected_sha256": e.get("sha256")}
        if not path.is_file():
            row.update(status="missing", sha256=None)
        elif path.stat().st_size != e.get("size"):
            row.update(status="size mismatch", sha256=sha256_file(path),
                       size=path.stat().st_size, expected_size=e.get("size"))
        else:
            digest = sha256_file(path)
            row.update(status="ok" if digest == e.get("sha256") else "sha256 mismatch",
                       sha256=digest)
        rows.append(row)
    if root.is_dir():
        for path in sorted(root.glob(f"*/{FILE_NAME}")):
            if path.resolve() not in known:
                rows.append({"key": path.parent.name, "model": None, "tag": None,
                             "file": str(path), "status": "untracked",
                             "sha256": sha256_file(path), "expected_sha256": None})
    return rows


# -- pull / import: what ``zoo weights`` does ------------------------------------------------
def _split_ref(catalog, name: str, tag: str | None):
    """``(ref, model, tag)`` for a user's MODEL argument (``[provider:]arch[.tag]``)."""
    ref = catalog.resolve_model(name)
    tag = tag or ref.tag
    return ref, f"{ref.provider}:{ref.arch}", tag


def pull(catalog, name: str, tag: str | None = None, *, source: str = "auto",
         force: bool = False, store=None) -> dict:
    """Fetch ``name``'s pretrained weights (plugins, then the provider's hub) into the store.

    :param source: ``auto`` (plugins, then hub), ``plugin`` or ``hub``.
    Returns the manifest entry plus ``"status"`` (``stored`` or ``present``).
    """
    from .weights import WeightStore, _from_plugins, apply_pretrained_cfg, load_into_backbone

    store = store or WeightStore()
    ref, model, tag = _split_ref(catalog, name, tag)
    key = entry_key(model, tag)
    if not force:
        existing = store.entry(model, tag)
        if existing and (store.root / existing["file"]).is_file():
            return dict(existing, status="present", path=str(store.root / existing["file"]))
    provider = catalog.provider(ref.provider)
    looked: list[str] = []
    backbone, origin = None, None
    if source in ("auto", "plugin"):
        found = _from_plugins(catalog, model, tag, store, looked)
        if found is not None:
            backbone = provider.create(ref.arch, ref.tag, pretrained=False)
            load_into_backbone(backbone, found)
            apply_pretrained_cfg(backbone, found.info.get("pretrained_cfg"))
            origin = found.source
    if backbone is None and source in ("auto", "hub"):
        try:
            backbone = provider.create(ref.arch, tag, pretrained=True)
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
    from .weights import (ResolvedWeights, WeightStore, apply_pretrained_cfg, load_into_backbone,
                          pretrained_cfg_of, read_checkpoint, sha256_file)

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
    backbone = catalog.provider(ref.provider).create(ref.arch, ref.tag, pretrained=False)
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
    from .weights import WeightStore

    store = store or WeightStore()
    _, model, tag = _split_ref(catalog, name, tag)
    path = store.path_for(model, tag)
    if not path.is_file():
        raise WeightsError(f"{entry_key(model, tag)} is not in the weight store ({store.root}) "
                           f"— `zoo weights pull {entry_key(model, tag)}` or `zoo weights "
                           f"import FILE --model {entry_key(model, tag)}`")
    return path


def remove_model(catalog, name: str, tag: str | None = None, store=None) -> dict:
    from .weights import WeightStore

    store = store or WeightStore()
    try:
        _, model, tag = _split_ref(catalog, name, tag)
    except Exception:  # the provider/model may be gone: remove by the raw key
        model, _, raw_tag = name.partition(".")
        tag = tag or raw_tag or None
    return store.remove(model, tag)


def describe(e: dict) -> dict[str, Any]:
    """A manifest entry for display."""
    return {"model": e.get("model"), "tag": e.get("tag"), "size": e.get("size"),
            "sha256": e.get("sha256"), "source": e.get("source"), "created": e.get("created")}
