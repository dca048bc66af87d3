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
renamed into place (:mod:`zoo.io.atomic`), so two ``zoo weights pull`` running at once never
leave a half-written file or lose each other's manifest entries.  Readers take no lock:
they only ever see complete files.

:class:`WeightStore` is the object the resolver and plugins see; the ``zoo weights``
operations that also need providers (``pull``, ``import``) are :mod:`zoo.weights.manage`.
"""
from __future__ import annotations

import contextlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from zoo.io import atomic
from zoo.errors import WeightsError
from zoo.weights.formats import ResolvedWeights, read_safetensors, sha256_file, zoo_home

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


class WeightStore:
    """zoo's own weight store: ``$ZOO_HOME/weights`` (the layout, manifest and lock
    above; ``zoo weights`` manages it through :mod:`zoo.weights.manage`).

    ``model`` is ``provider:arch`` throughout; ``tag`` the provider's weights tag or None.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else zoo_home() / "weights"

    def path_for(self, model: str, tag: str | None = None) -> Path:
        return self.root / folder_name(model, tag) / FILE_NAME

    def get(self, model: str, tag: str | None = None) -> ResolvedWeights | None:
        """The stored weights (checked against the manifest's sha256), or None."""
        path = self.path_for(model, tag)
        if not path.is_file():
            return None
        digest = sha256_file(path)
        entry = self.entry(model, tag)
        if entry and entry.get("sha256") and entry["sha256"] != digest:
            key = entry_key(model, tag)
            raise WeightsError(f"stored weights {path} do not match their sha256 in the "
                               f"manifest (corrupt file) — `zoo weights rm {key}` then `zoo "
                               f"weights pull {key}` (or import them again)")
        tensors, meta = read_safetensors(path)
        info = dict(meta)
        if entry:
            info["store_entry"] = entry
        return ResolvedWeights("store", tensors, digest, str(path), tag, info)

    # -- management (zoo.weights.store does the work: lock + manifest + atomic files) -------------
    def put(self, model: str, tag: str | None, tensors: dict, source: str,
            metadata: dict | None = None, extra: dict | None = None) -> dict:
        """Store ``tensors`` (source naming) for ``model``/``tag``; return the manifest entry."""
        return put(self.root, model, tag, tensors, source, metadata, extra)

    def entry(self, model: str, tag: str | None = None) -> dict | None:
        return entry(self.root, model, tag)

    def entries(self) -> list[dict]:
        return entries(self.root)

    def remove(self, model: str, tag: str | None = None) -> dict:
        return remove(self.root, model, tag)

    def verify(self) -> list[dict]:
        return verify(self.root)
